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
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record holding ``data``."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def read_records(blob: bytes) -> Iterator[bytes]:
    """The records' data, in order; a record with a wrong CRC is skipped, one cut short ends it."""
    at = 0
    while at + 12 <= len(blob):
        header, (length_crc,) = blob[at:at + 8], struct.unpack_from("<I", blob, at + 8)
        if masked_crc(header) != length_crc:
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


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: an int for varints and fixed-width numbers
    (as their raw bits), bytes for length-delimited fields."""
    at = 0
    while at < len(data):
        key, at = _read_varint(data, at)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, at = _read_varint(data, at)
            yield field, value
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            yield field, int.from_bytes(data[at:at + width], "little")
            at += width
        elif wire_type == 2:
            length, at = _read_varint(data, at)
            yield field, data[at:at + length]
            at += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data):
            raise ValueError("truncated protobuf varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


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
