"""Reading the IDX files of MNIST-style datasets, trusting nothing in them.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the items as
unsigned bytes in C order::

    images: 0x00000803  n  rows  cols  then n*rows*cols pixels   -> (n, 28, 28) uint8
    labels: 0x00000801  n              then n labels in 0..9     -> (n,) uint8

The byte after the two leading zeros (0x08) says "unsigned byte"; the last byte is the number
of dimensions. The datasets ship gzip-compressed, sometimes (when a server compressed a ``.gz``
again on the wire) twice; :func:`open_payload` peels those layers.

Every check failure raises :class:`~mlp_cli.errors.DataError` naming the file and the problem;
arbitrary bytes never raise anything else.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import numpy as np

from mlp_cli.errors import DataError
from mlp_cli.nn.network import CLASSES as NUM_CLASSES  # the shapes are the network's
from mlp_cli.nn.network import IMAGE_SIDE

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

GZIP_MAGIC = b"\x1f\x8b"
MAX_GZIP_LAYERS = 2
_GZIP_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


def parse_images(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decoded image bytes -> (n, 28, 28) uint8 array (a read-only view of ``data``)."""
    (count, rows, cols), body = _parse_header(data, source, IMAGES_MAGIC, "images")
    if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(
            f"{source}: images are {rows}x{cols}, expected {IMAGE_SIDE}x{IMAGE_SIDE}"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(count, rows, cols)  # (n, 28, 28)


def parse_labels(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decoded label bytes -> (n,) uint8 array with every value in 0..9."""
    (_count,), body = _parse_header(data, source, LABELS_MAGIC, "labels")
    labels = np.frombuffer(body, dtype=np.uint8)  # (n,)
    largest = int(labels.max())
    if largest >= NUM_CLASSES:
        where = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError(
            f"{source}: label {largest} at index {where} is outside 0..{NUM_CLASSES - 1}"
        )
    return labels


def read_images(path: str | os.PathLike[str], max_bytes: int | None = None) -> np.ndarray:
    """A gzip-compressed IDX image file -> (n, 28, 28) uint8."""
    return parse_images(read_payload(path, max_bytes), source=str(path))


def read_labels(path: str | os.PathLike[str], max_bytes: int | None = None) -> np.ndarray:
    """A gzip-compressed IDX label file -> (n,) uint8."""
    return parse_labels(read_payload(path, max_bytes), source=str(path))


def read_payload(path: str | os.PathLike[str], max_bytes: int | None = None) -> bytes:
    """The decompressed content of ``path`` (peeling up to two gzip layers); never more than
    ``max_bytes`` of it are decompressed (DataError when there is more)."""
    with open_payload(path) as stream:
        try:
            data = stream.read() if max_bytes is None else stream.read(max_bytes + 1)
        except _GZIP_ERRORS as err:
            raise _corrupt_gzip(path, err) from err
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_large(path, max_bytes)
    return data


@contextmanager
def open_payload(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open ``path`` as a stream of its decompressed bytes.

    A gzip layer is recognised by its magic bytes; an IDX payload starts with two zero bytes,
    so the two can never be confused. Read errors inside the stream are the caller's to map
    (``read_payload`` and :func:`sha256_of_payload` do).
    """
    try:
        raw = open(path, "rb")  # closed in the finally below; gzip layers wrap it
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from err
    stream: BinaryIO = raw
    try:
        for _ in range(MAX_GZIP_LAYERS):
            if _peek(stream, path) != GZIP_MAGIC:
                break
            stream = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
        yield stream
    finally:
        raw.close()


def sha256_of_payload(
    path: str | os.PathLike[str], chunk_size: int = 1 << 20, max_bytes: int | None = None
) -> str:
    """SHA-256 hex digest of the decompressed content of ``path``, read in chunks; never more
    than ``max_bytes`` are decompressed (DataError when there is more: a gzip bomb)."""
    import hashlib

    digest = hashlib.sha256()
    total = 0
    with open_payload(path) as stream:
        try:
            for chunk in iter(lambda: stream.read(chunk_size), b""):
                total += len(chunk)
                if max_bytes is not None and total > max_bytes:
                    raise _too_large(path, max_bytes)
                digest.update(chunk)
        except _GZIP_ERRORS as err:
            raise _corrupt_gzip(path, err) from err
    return digest.hexdigest()


def _too_large(path: str | os.PathLike[str], max_bytes: int) -> DataError:
    return DataError(f"{path}: decompresses to more than the {max_bytes} bytes the file has")


def _parse_header(
    data: bytes, source: str, magic: int, what: str
) -> tuple[tuple[int, ...], memoryview]:
    """Check magic, dimensions and length; return the dimensions and the item bytes."""
    if len(data) < 4:
        raise DataError(f"{source}: only {len(data)} bytes, too short for an IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        dtype, ndim = data[2], data[3]
        if data[:2] != b"\x00\x00":
            why = "not an IDX file"
        elif dtype != magic >> 8:
            why = f"data type 0x{dtype:02x} is not unsigned byte (0x08)"
        else:
            plural = "" if ndim == 1 else "s"
            why = f"{ndim} dimension{plural}, IDX {what} have {magic & 0xFF}"
        raise DataError(f"{source}: magic number 0x{found:08x} is not 0x{magic:08x}: {why}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: {len(data)} bytes, header alone needs {header}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if dims[0] == 0:
        raise DataError(f"{source}: holds no {what}")
    expected = header + math.prod(dims)
    if len(data) != expected:
        shape = "x".join(str(d) for d in dims)
        raise DataError(
            f"{source}: {len(data)} bytes, but a {shape} {what} file has {expected} "
            f"({'truncated' if len(data) < expected else 'trailing bytes'})"
        )
    return dims, memoryview(data)[header:]


def _peek(stream: Any, path: str | os.PathLike[str]) -> bytes:
    """The first two bytes of ``stream`` without consuming them (files and GzipFiles peek)."""
    try:
        return bytes(stream.peek(len(GZIP_MAGIC))[: len(GZIP_MAGIC)])
    except _GZIP_ERRORS as err:
        raise _corrupt_gzip(path, err) from err


def _corrupt_gzip(path: str | os.PathLike[str], err: BaseException) -> DataError:
    reason = str(err) or type(err).__name__
    return DataError(f"{path}: not a valid gzip file ({reason})")
