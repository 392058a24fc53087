"""`mlp predict` and `mlp eval` for what a newcomer brings: photos, doubtful answers, clothes
(Fashion-MNIST class names, garments kept whole), and arguments typed in the wrong order."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import idx_images, idx_labels, runner, sha256
from PIL import Image

from mlp_cli.cli import app
from mlp_cli.data import registry as datasets
from mlp_cli.training.checkpoint import load_checkpoint

NAMES = datasets.DATASETS["fashion-mnist"].classes


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def fashion_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny run trained with `--dataset fashion-mnist` on 60 + 20 made-up garments (registered,
    checksums included, in place of the real Fashion-MNIST); returns its best.npz."""
    rng = np.random.default_rng(0)
    real = datasets.DATASETS["fashion-mnist"]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    checksums, splits = {}, {}
    for split_name, count in (("train", 60), ("test", 20)):
        split = dataclasses.replace(real.splits[split_name], count=count)
        splits[split_name] = split
        for filename, payload in (
            (split.images, idx_images(rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))),
            (split.labels, idx_labels(np.arange(count) % 10)),
        ):
            (mirror / filename).write_bytes(gzip.compress(payload, mtime=0))
            checksums[filename] = sha256(payload)
    spec = real._replace(checksums=checksums, splits=splits, default_mirrors=())
    monkeypatch.setitem(datasets.DATASETS, "fashion-mnist", spec)
    out = tmp_path / "run"
    result = invoke("train", "--dataset", "fashion-mnist", "--mirror", mirror.as_uri() + "/", "--out", out,
                    "--hidden", "8", "--batch", "10", "--epochs", "1", "--set", "data.dev_size=10", "--quiet")
    assert result.exit_code == 0, result.output
    return out / "best.npz"


def garment_photo(path: Path) -> Path:
    """A dark coat on a light background, its light lining showing in the middle."""
    page = np.full((300, 240), 235, dtype=np.uint8)
    page[40:260, 50:190] = 70
    page[90:150, 100:140] = 220
    Image.fromarray(page).save(path)
    return path


def test_train_dataset_flag_and_eval_names_the_classes(fashion_run: Path) -> None:
    assert load_checkpoint(fashion_run).config["data"]["dataset"] == "fashion-mnist"
    data = json.loads(invoke("eval", fashion_run, "--json").stdout)
    assert data["class_names"] == list(NAMES)
    text = invoke("eval", fashion_run, "--errors", "2")
    assert text.exit_code == 0, text.output
    assert "0 T-shirt/top" in text.stdout and "9 Ankle boot" in text.stdout  # the per-class table
    assert any(f"{name} →" in text.stdout for name in NAMES)  # the mistakes, by name


def test_predict_names_the_garment_and_keeps_it_whole(fashion_run: Path, tmp_path: Path) -> None:
    photo = garment_photo(tmp_path / "coat.png")
    result = invoke("predict", fashion_run, photo, "--json")
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.stdout)["predictions"][0]
    assert prediction["name"] == NAMES[prediction["prediction"]]
    assert [t["name"] for t in prediction["top"]] == [NAMES[t["class"]] for t in prediction["top"]]
    shown = invoke("predict", fashion_run, photo, "--show")
    assert f"{photo}: {prediction['name']} (" in shown.stdout
    drawing = [line for line in shown.stdout.splitlines() if "█" in line or "▀" in line or "▄" in line]
    assert len(drawing) >= 13  # 28 rows of garment in half blocks, not a 20-pixel digit box


def test_doubtful_answers_say_so_in_text_and_json(fashion_run: Path, tmp_path: Path) -> None:
    """A network trained one epoch on 50 noise images is unsure of everything."""
    photo = garment_photo(tmp_path / "coat.png")
    prediction = json.loads(invoke("predict", fashion_run, photo, "--json").stdout)["predictions"][0]
    assert prediction["top"][0]["probability"] < 0.7
    assert prediction["uncertain"] is True and "top probability" in prediction["doubts"][0]
    text = invoke("predict", fashion_run, photo).stdout
    assert "uncertain: the top probability is only" in text


def test_swapped_arguments_get_the_right_order(tmp_path: Path) -> None:
    result = invoke("predict", tmp_path / "digit.png", tmp_path / "run" / "best.npz")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"the checkpoint comes first: mlp predict {tmp_path / 'run' / 'best.npz'} {tmp_path / 'digit.png'}" in (
        " ".join(result.stderr.split()))


def test_predict_takes_a_run_directory_and_a_misspelt_checkpoint_gets_a_suggestion(fashion_run: Path,
                                                                                  tmp_path: Path) -> None:
    photo = garment_photo(tmp_path / "coat.png")
    by_file = json.loads(invoke("predict", fashion_run, photo, "--json").stdout)["predictions"]

    by_run = invoke("predict", fashion_run.parent, photo, "--json")  # the run directory: its best.npz

    assert by_run.exit_code == 0, by_run.output
    assert json.loads(by_run.stdout)["predictions"] == by_file
    typo = invoke("predict", fashion_run.parent / "last.np", photo)
    assert typo.exit_code == 2 and f"(did you mean {fashion_run.parent / 'last.npz'}?)" in " ".join(typo.stderr.split())
    (tmp_path / "empty").mkdir()
    empty = invoke("predict", tmp_path / "empty", photo)
    assert empty.exit_code == 2 and "is a directory without best.npz" in empty.stderr
