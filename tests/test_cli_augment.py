"""`mlp augment-preview` on real MNIST: the terminal grid, the PNG grid, and its errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers import runner

from mlp_cli.cli import app
from mlp_cli.cli.render import halfblock_lines
from mlp_cli.config import AugmentConfig
from mlp_cli.data.cache import load_dataset
from mlp_cli.reports.preview import grid_image, preview_pairs

ROTATE = ["--set", "augment.rotate=20", "--set", "augment.elastic_alpha=34"]
SETTINGS = AugmentConfig(rotate=20.0, elastic_alpha=34.0)


def preview(data_dir: Path, *args: str, columns: int = 200):
    return runner.invoke(app, ["augment-preview", "--data-dir", str(data_dir), *args], env={"COLUMNS": str(columns)})


def block_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip(" ▀▄█") == ""]


def test_terminal_shows_two_rows_of_n_images(mnist_data_dir: Path) -> None:
    result = preview(mnist_data_dir, "--n", "5", "--seed", "4", *ROTATE)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1 + 14 + 1 + 14  # a label over each row of 28 pixel rows in half blocks
    assert max(len(line) for line in lines) <= 5 * 28 + 4 * 2
    images, _ = load_dataset("mnist", "train", data_dir=mnist_data_dir)
    originals, distorted = preview_pairs(images, SETTINGS, 5, seed=4)
    expected = ["original", *halfblock_lines(grid_image([originals], gap=2)),
                "distorted", *halfblock_lines(grid_image([distorted], gap=2))]
    assert [line.rstrip() for line in lines] == [line.rstrip() for line in expected]  # which row is which
    assert "augment.enabled is false" in result.stderr  # a preview of settings training would not use


def test_terminal_wraps_into_bands_as_wide_as_the_terminal(mnist_data_dir: Path) -> None:
    result = preview(mnist_data_dir, "--n", "5", *ROTATE, columns=100)  # 3 images of 28 + 2 gaps fit
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 * 30 + 1  # two bands (3 + 2 images, each row labelled) with a blank line between
    assert [line for line in lines if line.isalpha()] == ["original", "distorted"] * 2
    assert max(len(line.rstrip()) for line in lines) <= 3 * 28 + 2 * 2


def test_png_grid_has_the_expected_size(mnist_data_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "sub" / "grid.png"
    result = preview(mnist_data_dir, "--n", "6", "--out", str(out), "--scale", "3", *ROTATE)
    assert result.exit_code == 0, result.output
    width, height = 3 * (6 * 28 + 5 * 2), 3 * (2 * 28 + 2)
    assert f"{width}x{height}" in result.stdout
    with Image.open(out) as image:
        assert image.format == "PNG" and image.mode == "L" and image.size == (width, height)
        pixels = np.asarray(image)
    top, bottom = pixels[: 3 * 28], pixels[3 * 30 :]
    assert top.max() > 200 and bottom.max() > 200 and not np.array_equal(top, bottom)


def test_config_file_is_used_and_identity_settings_get_a_note(mnist_data_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "aug.yaml"
    config.write_text("augment:\n  enabled: true\n  shift: 2.0\n")
    shifted = preview(mnist_data_dir, "--n", "2", "--config", str(config))
    assert shifted.exit_code == 0 and shifted.stderr == ""
    plain = preview(mnist_data_dir, "--n", "2")
    assert plain.exit_code == 0 and "every distortion is 0" in plain.stderr
    lines = block_lines(plain.stdout)
    # unchanged (the labels are not block lines)
    assert [line.rstrip() for line in lines[:14]] == [line.rstrip() for line in lines[14:]]
    assert block_lines(shifted.stdout)[:14] == lines[:14]  # same seed, same images


def test_errors_are_one_line_and_exit_2(mnist_data_dir: Path, tmp_path: Path) -> None:
    bad_key = preview(mnist_data_dir, "--set", "augment.rotate=500")
    assert bad_key.exit_code == 2 and "augment.rotate = 500" in bad_key.stderr
    bad_suffix = preview(mnist_data_dir, "--out", str(tmp_path / "grid.jpg"), *ROTATE)
    assert bad_suffix.exit_code == 2 and "must end in .png" in bad_suffix.stderr
    assert not (tmp_path / "grid.jpg").exists()
    too_many = preview(mnist_data_dir, "--n", "0")
    assert too_many.exit_code == 2


def test_listed_in_help_and_imports_stay_lazy() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "augment-preview" in result.stdout
    code = "import sys, mlp_cli.cli; print(sorted(m for m in ('numpy', 'scipy', 'PIL') if m in sys.modules))"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"


def test_same_seed_same_preview(mnist_data_dir: Path) -> None:
    a, b, c = (preview(mnist_data_dir, "--n", "3", "--seed", seed, *ROTATE) for seed in ("9", "9", "10"))
    assert a.stdout == b.stdout != c.stdout

