"""TensorBoard's event-file format, written (and read back) without TensorFlow or protobuf.

An event file (``events.out.tfevents.<time>.<host>.<pid>``) is a sequence of records::

    uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)

(little-endian; TFRecord's framing), where ``data`` is one serialised ``tensorboard.Event``
protobuf. The few fields the tool writes are encoded by hand below: an ``Event`` holds a wall time
(field 1, double), a step (2, varint) and either the file version (3, string) or a ``Summary``
(5) of one ``Summary.Value``: a tag (1) with a float ``simple_value`` (2), or a ``tensor`` (8)
with its plugin's ``metadata`` (9). The CRC is CRC-32C (Castagnoli), masked as TensorFlow does
so that a CRC of data holding CRCs stays well distributed. Readers (TensorBoard's own) drop a
record whose CRC is wrong and stop at a record cut short, so a crash costs at most the event
being written; ``read_records`` here does the same.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator
from dataclasses import dataclass


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # the reversed Castagnoli polynomial
        table.append(crc)
    return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data``: byte by byte for short data, in numpy chunks for long (same value)."""
    return crc32c_bytewise(data) if len(data) < _NUMPY_FROM else crc32c_chunked(data)


def crc32c_bytewise(data: bytes, crc: int = 0xFFFFFFFF, final: int = 0xFFFFFFFF) -> int:
    """The plain definition: the register, one table step per byte."""
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ final


_NUMPY_FROM = 8 << 10  # measured: numpy's fixed cost per call pays off from about 8 KiB


def crc32c_chunked(data: bytes) -> int:
    """The same CRC through numpy. The register update is linear over GF(2), so the data is cut
    into a head and m chunks of ``width`` bytes; every chunk's CRC from a zero register is computed
    at once, column by column (a (m,) vector per byte), and the chunks are then chained:
    ``r <- shift(r) ^ crc(chunk)``, where ``shift`` is what ``width`` zero bytes do to a register."""
    import numpy as np

    width = 1 << max(6, (len(data).bit_length() + 1) // 2)  # about sqrt(len): m and width balanced
    head = len(data) % width
    register = crc32c_bytewise(data[:head], final=0)
    chunks = np.frombuffer(data, dtype=np.uint8, offset=head).reshape(-1, width)  # (m, width)
    table = np.asarray(_TABLE, dtype=np.uint32)
    crcs = np.zeros(len(chunks), dtype=np.uint32)
    for column in range(width):
        crcs = table[(crcs ^ chunks[:, column]) & 0xFF] ^ (crcs >> 8)
    shift = _shift_tables(width)
    for crc in crcs.tolist():
        register = (shift[0][register & 0xFF] ^ shift[1][(register >> 8) & 0xFF]
                    ^ shift[2][(register >> 16) & 0xFF] ^ shift[3][register >> 24] ^ crc)
    return register ^ 0xFFFFFFFF


@functools.cache
def _shift_tables(width: int) -> tuple[list[int], ...]:
    """What ``width`` zero bytes do to a register, one 256-entry table per register byte (the
    map is linear, so a register's image is the XOR of its four bytes' images)."""
    import numpy as np

    table = np.asarray(_TABLE, dtype=np.uint32)
    registers = (np.arange(256, dtype=np.uint32)[None, :] << np.arange(0, 32, 8, dtype=np.uint32)[:, None])
    for _ in range(width):
        registers = table[registers & 0xFF] ^ (registers >> 8)
    return tuple(row.tolist() for row in registers)


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record holding ``data``."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def read_records(blob: bytes) -> Iterator[bytes]:
    """The records' data, in order; a record with a wrong CRC is skipped, one cut short ends it."""
    at, header_crcs = 0, {}  # the tool's records come in a few lengths: each header's CRC once
    while at + 12 <= len(blob):
        header, (length_crc,) = blob[at:at + 8], struct.unpack_from("<I", blob, at + 8)
        if header not in header_crcs:
            header_crcs[header] = masked_crc(header)
        if header_crcs[header] != length_crc:
            return  # the length itself is damaged: nothing after it can be located
        (length,) = struct.unpack("<Q", header)
        end = at + 12 + length
        if end + 4 > len(blob):
            return
        data, (data_crc,) = blob[at + 12:end], struct.unpack_from("<I", blob, end)
        if masked_crc(data) == data_crc:
            yield data
        at = end + 4


# --------------------------------------------------------------------------------------------
# Protobuf, the few wire types needed


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= 0xFFFFFFFFFFFFFFFF  # a negative int64 as protobuf writes it
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _bytes(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _text(field: int, text: str) -> bytes:
    return _bytes(field, text.encode("utf-8"))


def _double(field: int, value: float) -> bytes:
    return _key(field, 1) + struct.pack("<d", value)


def _float(field: int, value: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", value)


class MalformedEvent(ValueError):
    """A record whose CRC holds but whose bytes are not a protobuf message (never written by us)."""


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: an int for varints and fixed-width numbers
    (as their raw bits), bytes for length-delimited fields. Linear in ``len(data)``."""
    at = 0
    while at < len(data):
        key, at = _read_varint(data, at)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, at = _read_varint(data, at)
            yield field, value
            continue
        if wire_type in (1, 5):
            length = 8 if wire_type == 1 else 4
        elif wire_type == 2:
            length, at = _read_varint(data, at)
        else:
            raise MalformedEvent(f"unsupported protobuf wire type {wire_type}")
        if at + length > len(data):
            raise MalformedEvent("a protobuf field runs past the end of its message")
        chunk = data[at:at + length]
        yield field, chunk if wire_type == 2 else int.from_bytes(chunk, "little")
        at += length


_VARINT_BYTES = 10  # 64 bits, 7 to a byte: protobuf never writes a longer one


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint at ``at`` and the offset after it; at most 10 bytes are looked at."""
    if at < len(data) and data[at] < 0x80:
        return data[at], at + 1  # one byte: most keys and lengths
    value = 0
    for index, byte in enumerate(data[at:at + _VARINT_BYTES]):
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if value >> 64:
                raise MalformedEvent("a protobuf varint beyond 64 bits")
            return value, at + index + 1
    if len(data) - at < _VARINT_BYTES:
        raise MalformedEvent("truncated protobuf varint")
    raise MalformedEvent(f"a protobuf varint longer than {_VARINT_BYTES} bytes")


# --------------------------------------------------------------------------------------------
# Events

FILE_VERSION = "brain.Event:2"  # readers then treat a lower step as data, not a restart to purge
DT_STRING = 7  # tensorflow.DataType


def file_version_event(wall_time: float) -> bytes:
    return _double(1, wall_time) + _varint_field(2, 0) + _text(3, FILE_VERSION)


def scalar_event(wall_time: float, step: int, tag: str, value: float) -> bytes:
    """A scalar as TensorBoard's Scalars dashboard reads it (a float32 ``simple_value``)."""
    return _summary_event(wall_time, step, _text(1, tag) + _float(2, value))


def text_event(wall_time: float, step: int, tag: str, text: str) -> bytes:
    """A markdown text for the Text dashboard: a scalar string tensor tagged for its plugin."""
    tensor = _varint_field(1, DT_STRING) + _bytes(2, b"") + _bytes(8, text.encode("utf-8"))
    return _summary_event(wall_time, step, _text(1, tag) + _bytes(8, tensor) + _metadata("text", b""))


def plugin_event(wall_time: float, step: int, tag: str, plugin: str, content: bytes) -> bytes:
    """A summary that is only its plugin's data (the HParams plugin's session records)."""
    return _summary_event(wall_time, step, _text(1, tag) + _metadata(plugin, content))


def _metadata(plugin: str, content: bytes) -> bytes:
    return _bytes(9, _bytes(1, _text(1, plugin) + _bytes(2, content)))


def _summary_event(wall_time: float, step: int, value: bytes) -> bytes:
    return _double(1, wall_time) + _varint_field(2, step) + _bytes(5, _bytes(1, value))


def _varint_field(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


@dataclass(frozen=True)
class Event:
    """What the tool needs to know of an event it wrote: where it goes, and its bytes."""

    wall_time: float
    step: int
    tag: str | None  # None: the file-version event
    data: bytes


def parse_event(data: bytes) -> Event:
    wall_time, step, tag = 0.0, 0, None
    for field, value in fields(data):
        if field == 1 and isinstance(value, int):
            (wall_time,) = struct.unpack("<d", value.to_bytes(8, "little"))
        elif field == 2 and isinstance(value, int):
            step = value
        elif field == 5 and isinstance(value, bytes):
            tag = _summary_tag(value)
    return Event(wall_time, step, tag, data)


def _summary_tag(summary: bytes) -> str:
    for field, value in fields(summary):
        if field == 1 and isinstance(value, bytes):
            for inner, tag in fields(value):
                if inner == 1 and isinstance(tag, bytes):
                    return tag.decode("utf-8", "replace")
    return ""


# --------------------------------------------------------------------------------------------
# The HParams plugin's record of one run's settings (tensorboard.hparams.HParamsPluginData)

HPARAMS_TAG = "_hparams_/session_start_info"


def hparams_content(settings: dict[str, float | str | bool]) -> bytes:
    """``HParamsPluginData{version: 0, session_start_info: {hparams: settings}}``; each value a
    ``google.protobuf.Value`` (number 2, string 3, bool 4)."""
    entries = b""
    for name, value in settings.items():
        if isinstance(value, bool):
            encoded = _varint_field(4, int(value))
        elif isinstance(value, int | float):
            encoded = _double(2, float(value))
        else:
            encoded = _text(3, str(value))
        entries += _bytes(1, _text(1, name) + _bytes(2, encoded))
    return _varint_field(1, 0) + _bytes(3, entries)
