"""Builders of hostile inputs: well-formed files made to exhaust memory, disk or time.

Shared by the tests/test_hostile_*.py files and benchmarks/hostile.py (which measures each one
on the code before and after the bounds). Every builder streams what it compresses, so making
a bomb costs the test little memory.
"""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

MiB = 1 << 20


def good_checkpoint(path: Path, hidden: int = 16, w2_fill: float | None = None) -> Path:
    """A valid checkpoint of a 784-h-10 network (epoch 1), made without training; ``w2_fill``
    sets W2 to +-that value (float32's largest finite is 3.4e38: the scores then overflow)."""
    from mlp_cli.config_file import load_config
    from mlp_cli.nn.network import init_params
    from mlp_cli.training.checkpoint import save_checkpoint

    config = load_config(None, {"model.hidden": hidden, "train.epochs": 3})
    params = init_params(hidden, np.random.default_rng(0))
    if w2_fill is not None:
        params["W2"][...] = w2_fill
        params["W2"][:, ::2] *= -1
    meta = {"config": config.to_dict(), "epoch": 1, "step": 20, "best_epoch": 1, "best_accuracy": 0.5,
            "preprocessing": {"method": "standardize", "mean": 33.3, "std": 78.6}}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, params, {}, meta)
    return path


def _zeros_into(archive: zipfile.ZipFile, name: str, head: bytes, zeros: int) -> None:
    """A deflated member: ``head`` then ``zeros`` zero bytes, streamed."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with archive.open(info, "w", force_zip64=True) as member:
        member.write(head)
        chunk = bytes(MiB)
        for _ in range(zeros // MiB):
            member.write(chunk)


def with_members(good: Path, out: Path, replace: dict[str, bytes] | None = None,
                 bombs: dict[str, tuple[bytes, int]] | None = None) -> Path:
    """A copy of ``good`` with members replaced, and members of (head, zero bytes) added."""
    replace, bombs = replace or {}, bombs or {}
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename in bombs:
                continue
            dst.writestr(info.filename, replace.get(info.filename, src.read(info)))
        for name, (head, zeros) in bombs.items():
            _zeros_into(dst, name, head, zeros)
    return out


def zip_bomb_checkpoint(good: Path, out: Path, mib: int = 256) -> Path:
    """``good`` plus one extra member that inflates to ``mib`` MiB (a few hundred KB on disk)."""
    return with_members(good, out, bombs={"extra.npy": (b"", mib * MiB)})


def lying_w1_checkpoint(good: Path, out: Path, mib: int = 256) -> Path:
    """W1's member: a correct .npy header and data, then ``mib`` MiB more that nothing reads."""
    with zipfile.ZipFile(good) as src:
        w1 = src.read("param/W1.npy")
    return with_members(good, out, bombs={"param/W1.npy": (w1, mib * MiB)})


def npy_of(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def meta_checkpoint(good: Path, out: Path, meta_text: str) -> Path:
    """``good`` with its metadata replaced by ``meta_text``."""
    raw = np.frombuffer(meta_text.encode("utf-8"), dtype=np.uint8)
    return with_members(good, out, replace={"meta.npy": npy_of(raw)})


def deep_meta(depth: int = 200_000) -> str:
    return '{"format_version": 1, "x": ' + "[" * depth + "]" * depth + "}"


def long_number_meta(digits: int = 5000) -> str:
    return '{"format_version": 1, "epoch": ' + "9" * digits + "}"


ALIAS_BOMB = """\
model:
  hidden: [
    &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"],
    &b [*a, *a, *a, *a, *a, *a, *a, *a, *a],
    &c [*b, *b, *b, *b, *b, *b, *b, *b, *b],
    &d [*c, *c, *c, *c, *c, *c, *c, *c, *c],
    &e [*d, *d, *d, *d, *d, *d, *d, *d, *d],
    &f [*e, *e, *e, *e, *e, *e, *e, *e, *e],
    &g [*f, *f, *f, *f, *f, *f, *f, *f, *f],
    &h [*g, *g, *g, *g, *g, *g, *g, *g, *g],
    [*h, *h, *h, *h, *h, *h, *h, *h, *h]]
"""  # model.hidden holds 9**9 strings once expanded, and rendering it would never end


def big_png(path: Path, side: int = 13000) -> Path:
    """A ``side`` x ``side`` RGBA PNG of transparent pixels: under 1 MB on disk for 13000."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(1 + 4 * side)  # filter byte 0, then RGBA zeros
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


POSTSCRIPT = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 100 100
newpath 10 10 moveto 90 90 lineto stroke
showpage
"""


def digit_image(path: Path, side: int = 280) -> Path:
    """A dark bar on white paper, saved by Pillow in the format ``path``'s suffix names."""
    from PIL import Image

    pixels = np.full((side, side), 255, dtype=np.uint8)
    pixels[side // 5 : 4 * side // 5, side // 2 - side // 20 : side // 2 + side // 20] = 0
    Image.fromarray(pixels).save(path)
    return path


def metrics_lines(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def good_row(epoch: int) -> str:
    return json.dumps({"epoch": epoch, "step": 10 * epoch, "train_loss": 1.0 / epoch, "train_accuracy": 0.5,
                       "dev_loss": 1.1 / epoch, "dev_accuracy": 0.5, "lr": 0.5, "seconds": 1.0})
