"""Reading the members of an ``.npz`` archive without trusting it.

``np.load`` decompresses whatever a member holds, however large. Here a member is looked at in
two steps: its ``.npy`` header (a few hundred bytes; dtype and shape) together with the size its
zip header declares, which the caller checks against what it expects; then, only if they agree,
its data -- never more than the declared size, which the zip reader enforces, and with the
CRC-32 checked at the end. Object (pickled) arrays are refused from the header alone.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from tokenize import TokenError
from typing import IO, Literal

import numpy as np

MAX_HEADER = 4096  # bytes of .npy header; numpy's own writer uses 128 for arrays like ours


class NpzError(Exception):
    """A member is malformed; the message says how (the caller names the file)."""


@dataclass(frozen=True)
class Member:
    name: str  # without the .npy suffix, as np.load names it
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int  # bytes of magic and header before the data

    @property
    def nbytes(self) -> int:
        count = 1
        for n in self.shape:
            count *= n
        return count * self.dtype.itemsize

    @property
    def declared(self) -> int:
        """The uncompressed size the zip header declares."""
        return self.info.file_size


def names(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Member name (``.npy`` removed) -> its zip entry; a name given twice is refused."""
    found: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if name in found:
            raise NpzError(f"member {name!r} appears twice")
        found[name] = info
    return found


def read_header(archive: zipfile.ZipFile, name: str, info: zipfile.ZipInfo) -> Member:
    """The dtype and shape a member's ``.npy`` header declares (NpzError if it has none)."""
    if not info.filename.endswith(".npy"):
        raise NpzError(f"member {name!r} is not a .npy array")
    with archive.open(info) as stream:
        shape, fortran, dtype = _header(stream, name)
        offset = stream.tell()
    if any(n < 0 for n in shape):  # pragma: no cover  (numpy's parser refuses these already)
        raise NpzError(f"member {name!r} has a negative dimension")
    return Member(name, info, tuple(shape), dtype, fortran, offset)


def read_data(archive: zipfile.ZipFile, member: Member) -> np.ndarray:
    """The array of a member whose header was checked; its declared size must match exactly."""
    if member.declared != member.offset + member.nbytes:
        raise NpzError(
            f"member {member.name!r} declares {member.declared} bytes, but a "
            f"{member.dtype} array of shape {member.shape} takes {member.offset + member.nbytes}"
        )
    with archive.open(member.info) as stream:
        stream.seek(member.offset)
        data = stream.read(member.nbytes + 1)
        stream.read()  # the rest (nothing), so that the CRC-32 is checked
    if len(data) != member.nbytes:
        raise NpzError(f"member {member.name!r} holds {len(data)} bytes of data, not {member.nbytes}")
    order: Literal["C", "F"] = "F" if member.fortran else "C"
    return np.frombuffer(bytearray(data), dtype=member.dtype).reshape(member.shape, order=order)


def _header(stream: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(stream, max_header_size=MAX_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(stream, max_header_size=MAX_HEADER)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except (ValueError, EOFError, SyntaxError, TypeError, TokenError) as err:  # TokenError: numpy tokenizes
        raise NpzError(f"member {name!r} has no valid .npy header ({err})") from None
    return tuple(shape), bool(fortran), np.dtype(dtype)
