"""Reading the records runs and sweeps leave: one rule for every one of them.

``metrics.jsonl``, ``eval.json``, ``parent.json``, ``config.yaml`` and ``spec.yaml`` are read
the same way: a regular file only (opened without blocking, so a FIFO put in its place is
refused instead of hanging the reader; a device such as ``/dev/zero`` is refused too), never
through a symbolic link (the tool writes none: one in a run's place may point at any file, a
secret among them), refused by its size before a byte is read, at most ``max_bytes`` of it, as
UTF-8, then parsed with nesting bounded (JSON and YAML parsers recurse once per level: 200 KB of
``[`` is a one-line error, not a RecursionError) and YAML without aliases. Each reader then
checks its fields' types and ranges. Every failure is one ``MlpError`` naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from mlp_cli.errors import MlpError


def read_record_text(path: str | Path, max_bytes: int, what: str, *, error: type[MlpError] = MlpError,
                     too_large: str = "not a record this tool wrote", not_found: str | None = None,
                     follow_links: bool = False) -> str:
    """The text of the file ``path`` (``what`` names it in errors: "eval record", "config"), every
    failure one ``error``: the one bounded reader of the files the tool reads back, config files too
    (``follow_links`` for a file the user names, such as a config: their link is theirs to make)."""
    data = read_record_bytes(path, max_bytes, what, error=error, too_large=too_large, not_found=not_found,
                             follow_links=follow_links)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"cannot read {what} {path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


class RefusedFile(Exception):
    """``open_regular`` will not read this path."""


class LinkRefused(RefusedFile):
    """The path is a symbolic link, and links are not followed."""


class NotRegular(RefusedFile):
    """The path is a FIFO, a device, a directory or a socket: ``mode`` is its st_mode."""

    def __init__(self, mode: int) -> None:
        super().__init__("not a regular file")
        self.mode = mode


def open_regular(path: str | Path, *, follow_links: bool = False) -> tuple[BinaryIO, os.stat_result]:
    """``path`` open for reading (the caller closes it: ``with``) and its status, once it is known
    to be a regular file: the one opening of a file the tool reads whole (its records, a checkpoint
    it sends, a ``file://`` mirror's file). Opened without blocking (a FIFO is never waited on) and,
    unless ``follow_links``, never through a symbolic link. Raises LinkRefused, NotRegular, or the
    OSError of the open (FileNotFoundError...): each caller words them for its own file."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0))
    try:
        descriptor = os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP and not follow_links:
            raise LinkRefused(str(path)) from None
        raise
    handle = open(descriptor, "rb", closefd=True)
    try:
        status = os.fstat(handle.fileno())
    except OSError:
        handle.close()
        raise
    if not stat.S_ISREG(status.st_mode):
        handle.close()
        raise NotRegular(status.st_mode)
    return handle, status


def read_record_bytes(path: str | Path, max_bytes: int, what: str, *, error: type[MlpError] = MlpError,
                      too_large: str = "not a record this tool wrote", not_found: str | None = None,
                      follow_links: bool = False) -> bytes:
    """The bytes of the file ``path``, read as ``read_record_text`` reads (TensorBoard's event files)."""
    path = Path(path)
    try:
        handle, status = open_regular(path, follow_links=follow_links)
    except FileNotFoundError:
        raise error(not_found or f"{what} {path} not found") from None
    except LinkRefused:
        raise error(f"{what} {path} is a symbolic link; mlp reads only the files it wrote, not what a "
                    "link points to: put the file itself there") from None
    except NotRegular:
        raise error(f"{what} {path} is not a regular file") from None
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror or err}") from None
    try:
        with handle:
            if status.st_size > max_bytes:  # refused by its size, before reading it
                raise error(f"{what} {path} is larger than {_size(max_bytes)}; {too_large}")
            data = handle.read(max_bytes + 1)
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise error(f"{what} {path} is larger than {_size(max_bytes)}; {too_large}")
    return data


def parse_json_text(text: str, what: str) -> Any:
    """``text`` as JSON; bad JSON, deep nesting and 5000-digit numbers are one line."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise MlpError(f"{what} is not valid JSON") from None


def read_json_record(path: str | Path, max_bytes: int, what: str) -> Any:
    return parse_json_text(read_record_text(path, max_bytes, what), f"{what} {path}")


def read_yaml_record(path: str | Path, max_bytes: int, what: str) -> Any:
    """YAML with the config files' rules (no aliases, nesting bounded, every error one line)."""
    from mlp_cli.config_file import _load_yaml  # the one YAML rule
    from mlp_cli.errors import ConfigError

    text = read_record_text(path, max_bytes, what)
    try:
        return _load_yaml(text, f"{what} {path}")
    except ConfigError as err:
        raise MlpError(str(err)) from None


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"
