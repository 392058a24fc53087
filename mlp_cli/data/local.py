"""One file from a ``file://`` mirror into a ``.part``: a bounded copy from disk.

Only regular files are read (a named pipe or a device would never end), and never more than
``cap`` bytes, the most a faithful gzip of the known file can be.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlp_cli.data.http import MirrorFailed
from mlp_cli.data.partfile import open_part, write_guard
from mlp_cli.record_files import NotRegular, open_regular

CHUNK = 1 << 20


def copy_local(url: str, shown: str, filename: str, part: Path, cap: int, reporter: Any) -> None:
    """Copy the file at ``url`` into ``part``, or raise :class:`MirrorFailed`."""
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise MirrorFailed(f"file URL with host {parsed.netloc!r} is not supported")
    from urllib.request import url2pathname  # here: urllib.request costs ~30 ms to import

    source = Path(url2pathname(parsed.path))
    try:  # without blocking: opening a FIFO would wait for a writer, the cache lock held all along
        src, info = open_regular(source, follow_links=True)  # the user's mirror: its links are theirs
    except FileNotFoundError:
        raise MirrorFailed("not found") from None
    except NotRegular:
        raise MirrorFailed("not a regular file") from None
    except OSError as err:
        raise MirrorFailed(f"cannot read ({err.strerror or err})") from err
    with src:
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
