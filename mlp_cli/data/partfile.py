"""The ``.part`` file a transfer writes into, and the ``.part.json`` note of where it came from.

A shared cache directory may hold anything another user put there, so nothing here follows a
link: a ``.part`` that is not a regular file is removed (the link, not its target), a fresh one
is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and an existing one is reopened for appending
with ``O_NOFOLLOW``. The note records a digest of the URL, never the URL itself, which may carry
a password.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from mlp_cli.errors import DownloadError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)


def part_size(part: Path) -> int:
    """Bytes in ``part``; 0 when absent. Anything but a regular file there is removed first."""
    try:
        info = os.lstat(part)
    except FileNotFoundError:
        return 0
    except OSError as err:
        raise unwritable(part.parent, err) from err
    if not stat.S_ISREG(info.st_mode):
        write_guard(part.parent, remove, part)
        return 0
    return info.st_size


def open_part(part: Path, append: bool) -> BinaryIO:
    """``part`` opened for appending, or created afresh (whatever was there removed first)."""
    if append:
        flags = os.O_WRONLY | os.O_APPEND
    else:
        write_guard(part.parent, remove, part)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(part, flags | _NOFOLLOW | _BINARY, 0o644)
    except OSError as err:
        raise unwritable(part.parent, err) from err
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # pragma: no cover  (O_NOFOLLOW refused links)
        os.close(fd)
        raise DownloadError(f"{part} is not a regular file; remove it and try again")
    return open(fd, "ab" if append else "wb")  # builtins.open: tests fill the disk through it


def discard(part: Path) -> None:
    """Remove ``part`` and its note."""
    write_guard(part.parent, remove, part)
    write_guard(part.parent, remove, meta_path(part))


def meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def url_id(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def read_meta(part: Path) -> dict[str, str]:
    """Where a ``.part`` came from, so a later run resumes it only from the same URL."""
    path = meta_path(part)
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode) or os.lstat(path).st_size > 4096:
            return {}
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def write_meta(part: Path, url: str, headers: Any) -> None:
    from mlp_cli.atomic import atomic_write_text  # mkstemp: O_EXCL | O_NOFOLLOW, then a rename

    etag = headers.get("ETag") or ""
    validator = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified", "")
    note = {"url_sha256": url_id(url), "validator": str(validator)[:512]}
    write_guard(part.parent, atomic_write_text, meta_path(part), json.dumps(note))


def write_guard(directory: Path, action: Any, *args: Any) -> Any:
    """Run a file-system write; turn OSError into a DownloadError naming ``directory``."""
    try:
        return action(*args)
    except OSError as err:
        raise unwritable(directory, err) from err


def unwritable(directory: Path, err: OSError) -> DownloadError:
    return DownloadError(
        f"cannot write to the data directory {directory}: {err.strerror or err}; "
        "choose a writable one with --data-dir or MLP_DATA_DIR"
    )


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
