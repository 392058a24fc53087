"""Hostile images given to ``mlp predict``: a PostScript file named .png (which Pillow would hand
to Ghostscript), a 756 KB PNG of 13000 x 13000 pixels, a huge JPEG, a FIFO. Each run is a child
process under a 1 GiB address space cap and a time limit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hostile_inputs import POSTSCRIPT, big_png, digit_image, good_checkpoint
from limits import GiB, mlp_command, run_limited


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return good_checkpoint(tmp_path_factory.mktemp("ckpt") / "run" / "best.npz")


def predict(checkpoint: Path, *images: Path, env: dict[str, str] | None = None):
    return run_limited(mlp_command("predict", checkpoint, *images, "--json"), memory=1 * GiB, seconds=60, env=env)


def failure_of(outcome) -> str:
    assert "Traceback" not in outcome.output and outcome.code == 1, outcome.output
    (error,) = json.loads(outcome.stdout)["errors"]
    return error["error"]


def test_postscript_named_png_is_refused_and_ghostscript_never_runs(checkpoint, tmp_path):
    trap = tmp_path / "bin"
    trap.mkdir()
    marker = tmp_path / "gs-ran"
    fake_gs = trap / "gs"
    fake_gs.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake_gs.chmod(0o755)
    innocent = tmp_path / "innocent.png"
    innocent.write_bytes(POSTSCRIPT)

    outcome = predict(checkpoint, innocent, env={"PATH": f"{trap}:{os.environ['PATH']}"})

    assert "is not an image file mlp reads (PNG, JPEG, BMP, GIF, TIFF or WebP)" in failure_of(outcome)
    assert not marker.exists()


def test_a_small_png_of_huge_dimensions_is_refused_from_its_header(checkpoint, tmp_path):
    png = big_png(tmp_path / "big.png", side=13000)
    assert png.stat().st_size < 1 << 20

    outcome = predict(checkpoint, png)

    assert "is 13000 x 13000 pixels, more than the 24 megapixels" in failure_of(outcome)
    assert outcome.seconds < 15 and outcome.peak_mib < 300
    assert len(outcome.stderr.strip().splitlines()) == 1  # the refusal alone: no warning of Pillow's beside it


def test_an_image_past_pillows_warning_size_is_refused_in_one_line(checkpoint, tmp_path):
    png = big_png(tmp_path / "big.png", side=9500)  # 90 MP: Pillow warns (over 89 MP) but does not refuse

    outcome = run_limited(mlp_command("predict", checkpoint, png), memory=1 * GiB, seconds=60)

    line = outcome.error_line()  # exactly one line on stderr
    assert outcome.code == 1 and "is 9500 x 9500 pixels, more than the 24 megapixels" in line


def test_a_huge_jpeg_is_decoded_reduced_and_classified(checkpoint, tmp_path):
    jpeg = digit_image(tmp_path / "photo.jpg", side=8000)  # 64 megapixels, over the cap undecoded

    outcome = predict(checkpoint, jpeg)

    assert outcome.code == 0, outcome.output
    (result,) = json.loads(outcome.stdout)["predictions"]
    assert result["image"] == str(jpeg)
    assert outcome.peak_mib < 600


def test_an_image_that_is_not_a_regular_file_is_refused_without_blocking(checkpoint, tmp_path):
    fifo = tmp_path / "digit.png"
    os.mkfifo(fifo)

    outcome = predict(checkpoint, fifo)

    assert f"image {fifo} is not a regular file" in failure_of(outcome)
    assert outcome.seconds < 15
