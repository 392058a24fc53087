"""One file from a ``file://`` mirror into a ``.part``: a bounded copy from disk.

Only regular files are read (a named pipe or a device would never end), and never more than
``cap`` bytes, the most a faithful gzip of the known file can be.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlp_cli.data.http import MirrorFailed
from mlp_cli.data.partfile import open_part, write_guard

CHUNK = 1 << 20


def copy_local(url: str, shown: str, filename: str, part: Path, cap: int, reporter: Any) -> None:
    """Copy the file at ``url`` into ``part``, or raise :class:`MirrorFailed`."""
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise MirrorFailed(f"file URL with host {parsed.netloc!r} is not supported")
    from urllib.request import url2pathname  # here: urllib.request costs ~30 ms to import

    source = Path(url2pathname(parsed.path))
    try:  # without blocking: opening a FIFO would wait for a writer, the cache lock held all along
        src = open(os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb")  # closed by the with below
    except FileNotFoundError:
        raise MirrorFailed("not found") from None
    except OSError as err:
        raise MirrorFailed(f"cannot read ({err.strerror or err})") from err
    with src:
        info = os.fstat(src.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise MirrorFailed("not a regular file")
        if info.st_size > cap:
            raise MirrorFailed(f"{info.st_size} bytes, more than the {cap} the file can be")
        reporter.start(filename, info.st_size, shown)
        with open_part(part, append=False) as handle:
            copied = 0
            while True:
                try:
                    chunk = src.read(CHUNK)
                except OSError as err:
                    raise MirrorFailed(f"cannot read ({err.strerror or err})") from err
                if not chunk:
                    break
                copied += len(chunk)
                if copied > cap:  # the file grew while we read it
                    raise MirrorFailed(f"more than {cap} bytes, the most the file can be")
                write_guard(part.parent, handle.write, chunk)
                reporter.advance(len(chunk))
            handle.flush()
            os.fsync(handle.fileno())
