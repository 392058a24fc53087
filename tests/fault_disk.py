"""Disk faults for tests: a read-only mount and a full disk, simulated by patching the calls
that write (tests run as root, whom ``chmod`` does not stop)."""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path

import pytest


def read_only(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Make every write under ``root`` fail with EROFS, as on a read-only mount; reads still work.

    (Tests run as root, whom chmod does not stop, so the file system calls are patched.)
    """
    root_text = str(root.resolve())

    def under(path) -> bool:
        if isinstance(path, int):
            return False
        full = os.path.abspath(os.fsdecode(os.fspath(path)))
        return full == root_text or full.startswith(root_text + os.sep)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(os.fspath(path)))

    real = {name: getattr(os, name) for name in ("open", "mkdir", "replace", "rename", "unlink", "remove")}
    real_open = io.open
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def os_open(path, flags, *args, **kwargs):
        if under(path) and flags & writing:
            refuse(path)
        return real["open"](path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if under(path):
            if os.path.exists(path):  # as the kernel does: EEXIST before EROFS
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(path))
            refuse(path)
        return real["mkdir"](path, *args, **kwargs)

    def file_open(file, mode="r", *args, **kwargs):
        if under(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def two_paths(name):
        def call(src, dst, *args, **kwargs):
            if under(src) or under(dst):
                refuse(dst)
            return real[name](src, dst, *args, **kwargs)
        return call

    def one_path(name):
        def call(path, *args, **kwargs):
            if under(path):
                refuse(path)
            return real[name](path, *args, **kwargs)
        return call

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(builtins, "open", file_open)
    monkeypatch.setattr(io, "open", file_open)
    for name in ("replace", "rename"):
        monkeypatch.setattr(os, name, two_paths(name))
    for name in ("unlink", "remove"):
        monkeypatch.setattr(os, name, one_path(name))


class FullDisk:
    """A file that takes ``room`` more bytes, then fails every write with ENOSPC."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        fits = bytes(data[: self.room])
        self.handle.write(fits)
        self.room -= len(fits)
        if len(fits) < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return len(fits)

    def __getattr__(self, name):  # flush, fileno, close: the real file's
        return getattr(self.handle, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()
