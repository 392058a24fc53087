"""Writing files so that a crash never leaves a half-written one behind.

Everything the tool writes (downloads, caches, checkpoints, configs, metrics snapshots) goes to a
temporary file in the destination's directory, is flushed and fsynced, then ``os.replace``d into
place, which is atomic on POSIX and Windows.

The temporary file is hidden and named after its destination, the machine and process-id space
its writer runs in, and its process id: ``.last.npz.<where>-<pid>.<random>.tmp``. A writer killed
outright (SIGKILL, power loss) cannot delete its own; the next successful write of the same
destination, from the same machine and process-id space, deletes those whose process is gone, so
a killed run leaves no litter once it is resumed. A temporary file written from another machine
or container (a shared or network directory) is never touched: its process cannot be seen.

Only a regular file is ever replaced. A device (``/dev/null``), FIFO, socket or directory at the
destination is refused with an ``OutputPathError`` and left as it is; a symbolic link is replaced
by the new file (the rename replaces the link itself), so its target is never written, which is
how the downloads treat a ``.part`` link. ``check_output`` applies the same rule to a path named on
the command line before any work starts; ``append_line`` is the rule for append-only records.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mlp_cli.errors import MlpError, OutputPathError, UsageError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO opened for writing would wait for a reader


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path``; on success move it onto ``path``, else delete it.

    An OSError (disk full, read-only file system, ...) names ``path``, not the temporary file.
    """
    path = Path(path)
    check_destination(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_WHERE}-{os.getpid()}.", suffix=".tmp")
    except OSError as err:
        raise naming(err, path) from err
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        check_destination(path)  # again: it may have changed while the file was written
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise naming(err, path) from err
        raise
    remove_orphans(path)


def check_destination(path: str | os.PathLike[str]) -> None:
    """Refuse a destination that holds anything but a regular file or a symbolic link."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise OutputPathError(f"cannot write {os.fspath(path)}: {_file_above(Path(path))} is a file, "
                              "not a directory") from None
    except OSError as err:
        raise naming(err, path) from err
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise OutputPathError(f"{os.fspath(path)} is {file_kind(mode)}, not a regular file; refusing to replace it "
                              "(choose another path)")


def check_output(path: str | os.PathLike[str], *, directory: bool = False) -> None:
    """Before any work: ``path`` (a file, or a ``directory``) can be written where it is named.

    Every existing folder above it is a directory, and what is at ``path`` is nothing, a regular
    file or a link (a file), or a directory (a ``directory``). An ``OutputPathError`` otherwise.
    """
    path = Path(path)
    above = _file_above(path)
    if above is not None:
        raise OutputPathError(f"cannot write {path}: {above} is a file, not a directory")
    if not directory:
        check_destination(path)
        return
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        raise OutputPathError(f"{path} is {file_kind(mode)}, not a directory (choose another path)")


def _file_above(path: Path) -> Path | None:
    """The first folder above ``path`` that exists as something other than a directory."""
    for ancestor in reversed(path.parents):
        if ancestor.exists() and not ancestor.is_dir():
            return ancestor
        if not ancestor.exists() and not ancestor.is_symlink():
            return None
    return None


def file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append ``line`` to a record file, whole and fsynced; a line the disk has no room for is
    taken back. The file must be a regular file (links are not followed, a FIFO is not waited on);
    anything else is an ``OutputPathError``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _NONBLOCK, 0o666)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):  # a link, a directory, a FIFO nobody reads
            check_destination(path)
            raise OutputPathError(f"{os.fspath(path)} is not a regular file; refusing to append to it") from None
        raise naming(err, path) from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OutputPathError(f"{os.fspath(path)} is {file_kind(info.st_mode)}, not a regular file; "
                                  "refusing to append to it")
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, info.st_size)
            raise naming(err, path) from err
    finally:
        os.close(fd)


def _where() -> str:
    """A short name for this machine and process-id space: pids are only comparable within it."""
    import hashlib
    import socket

    try:
        space = os.stat("/proc/self/ns/pid").st_ino  # Linux: each container has its own
    except OSError:
        space = 0
    return hashlib.sha1(f"{socket.gethostname()}/{space}".encode()).hexdigest()[:8]


_WHERE = _where()


def remove_orphans(path: Path) -> None:
    """Delete the temporary siblings of ``path`` left by writers that no longer exist.

    Only files written from this machine and process-id space, and only on POSIX, where
    ``os.kill(pid, 0)`` asks whether a process exists (on Windows it would terminate it). A file
    whose writer is alive, or whose name does not say who wrote it, is kept.
    """
    if os.name != "posix":
        return
    prefix = f".{path.name}.{_WHERE}-"  # then the pid, a random part and ".tmp"
    for orphan in glob.glob(os.path.join(glob.escape(str(path.parent)), glob.escape(prefix) + "*.tmp")):
        pid = os.path.basename(orphan)[len(prefix) :].split(".", 1)[0]
        if pid.isascii() and pid.isdigit() and len(pid) <= 9 and not _process_exists(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(orphan)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        return True
    return True


def make_parents(path: str | os.PathLike[str]) -> None:
    """Create the missing directories above ``path``. One of them that exists as a file is named
    in the error (``mkdir`` would only say "File exists")."""
    path = Path(path)
    for ancestor in reversed(path.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{ancestor} is a file, not a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)


def naming(err: OSError, path: str | os.PathLike[str]) -> OSError:
    """``err`` with ``path`` as its file name (same errno, so the same OSError subclass)."""
    if err.errno is None or err.filename == os.fspath(path):
        return err
    return OSError(err.errno, err.strerror, os.fspath(path))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_output_file(out: str | os.PathLike[str], data: bytes, error: type[MlpError] = MlpError) -> None:
    """A file a command was asked to write (``--out``): atomically, creating missing parent
    directories; a file where a folder is needed is a usage error, any other refusal one ``error``."""
    try:
        make_parents(out)
        atomic_write_bytes(out, data)
    except NotADirectoryError as err:  # a file where --out needs a directory: the path typed is wrong
        raise UsageError(f"cannot write {os.fspath(out)}: {err.strerror}") from None
    except OSError as err:
        raise error(f"cannot write {os.fspath(out)}: {err.strerror or err}") from None
