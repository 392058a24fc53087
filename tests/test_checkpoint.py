"""Checkpoints: round trip, atomic writes, and refusal of every kind of bad file."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mlp_cli import atomic
from mlp_cli.errors import CheckpointError, MissingFileError
from mlp_cli.nn.network import init_params
from mlp_cli.training.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint

META = {"config": {"model": {"hidden": 8}}, "epoch": 3, "step": 150,
        "preprocessing": {"method": "scale", "mean": 0.0, "std": 255.0}}


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.npz"
    params = init_params(8, np.random.default_rng(0))
    save_checkpoint(path, params, {"velocity.W1": np.ones((784, 8), np.float32)}, META)
    return path


def rewrite(src: Path, dst: Path, change) -> Path:
    with np.load(src, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    change(arrays)
    np.savez(dst, **arrays)
    return dst


def test_round_trip(good: Path) -> None:
    ckpt = load_checkpoint(good)
    assert ckpt.epoch == 3 and ckpt.step == 150 and ckpt.params.hidden == 8
    assert ckpt.meta["format_version"] == FORMAT_VERSION and "tool_version" in ckpt.meta
    np.testing.assert_array_equal(ckpt.optimizer_state["velocity.W1"], 1.0)
    expected = init_params(8, np.random.default_rng(0))
    np.testing.assert_array_equal(ckpt.params.W1, expected.W1)


def test_write_is_atomic_and_leaves_no_temporary_files(good: Path, monkeypatch) -> None:
    before = good.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("mlp_cli.atomic.os.replace", boom)
    with pytest.raises(OSError):
        save_checkpoint(good, init_params(8, np.random.default_rng(1)), {}, META)
    assert good.read_bytes() == before
    assert sorted(p.name for p in good.parent.iterdir()) == ["good.npz"]


def test_a_successful_write_removes_the_temporary_files_of_killed_writers(good: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)  # that process has exited: its pid is free
    here = atomic._WHERE  # this machine and process-id space
    killed = good.parent / f".good.npz.{here}-{dead_pid}.x1y2z3.tmp"  # what a SIGKILLed save leaves
    alive = good.parent / f".good.npz.{here}-{os.getppid()}.a1b2c3.tmp"  # a save still in progress
    other = good.parent / f".other.npz.{here}-{dead_pid}.q1w2e3.tmp"  # another destination's
    elsewhere = good.parent / f".good.npz.0badc0de-{dead_pid}.r1t2y3.tmp"  # another container's: unseen
    odd = good.parent / f".good.npz.{here}-{'9' * 30}.u1i2o3.tmp"  # not a pid at all
    for path in (killed, alive, other, elsewhere, odd):
        path.write_bytes(b"partial")

    save_checkpoint(good, init_params(8, np.random.default_rng(1)), {}, META)

    kept = ["good.npz", alive.name, other.name, elsewhere.name, odd.name]
    assert sorted(p.name for p in good.parent.iterdir()) == sorted(kept)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"model": {"hidden": "abc"}}, "its stored config is invalid: model.hidden"),
        ({"model": {"hidden": 100}}, "model.hidden = 100 but W1 has 8 columns"),
        ({"model": {"hidden": 8, "dtype": "float64"}}, "model.dtype = float64 but the weights are float32"),
        ({"model": {"hidden": 8}, "data": {"dev_size": -1}}, "its stored config is invalid: data.dev_size"),
    ],
)
def test_a_stored_config_that_does_not_describe_the_weights_is_refused(tmp_path: Path, config, fragment) -> None:
    path = tmp_path / "tampered.npz"
    save_checkpoint(path, init_params(8, np.random.default_rng(1)), {}, {**META, "config": config})
    with pytest.raises(CheckpointError, match=re.escape(fragment)):
        load_checkpoint(path)


def meta_with(**changes) -> np.ndarray:
    meta = {"format_version": FORMAT_VERSION, **META, **changes}
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


@pytest.mark.parametrize(
    ("name", "change", "fragment"),
    [
        ("missing", lambda a: a.pop("param/W2"), "missing arrays"),
        ("shape", lambda a: a.update({"param/b1": np.zeros(9, np.float32)}), "b1 has shape (9,)"),
        ("dtype", lambda a: a.update({"param/b2": np.zeros(10, np.float64)}), "b2 has dtype float64"),
        ("intdtype", lambda a: a.update({"param/W1": np.zeros((784, 8), np.int32)}), "W1 has dtype int32"),
        ("w1shape", lambda a: a.update({"param/W1": np.zeros((100, 8), np.float32)}), "expected (784, hidden)"),
        # W1 cut to fewer columns: b1, W2 and the stored config still agree on 8; W1 is the one to blame
        ("w1cut", lambda a: a.update({"param/W1": a["param/W1"][:, :5]}),
         "W1 has shape (784, 5); expected (784, 8)"),
        ("w2cut", lambda a: a.update({"param/W2": np.zeros((5, 10), np.float32)}),
         "W2 has shape (5, 10); expected (8, 10)"),
        ("nan", lambda a: a["param/W1"].__setitem__((0, 0), np.nan), "W1 contains NaN"),
        ("future", lambda a: a.update({"meta": meta_with(format_version=99)}), "newer than this mlp"),
        ("nometa", lambda a: a.update({"meta": np.frombuffer(b"{}", np.uint8)}), "no format version"),
        ("badjson", lambda a: a.update({"meta": np.frombuffer(b"{not json", np.uint8)}), "not valid JSON"),
        ("lacks", lambda a: a.update({"meta": np.frombuffer(b'{"format_version": 1}', np.uint8)}), "lacks 'config'"),
    ],
)
def test_tampered_checkpoints_are_refused(good: Path, tmp_path: Path, name, change, fragment) -> None:
    def apply(arrays):
        arrays["param/W1"] = arrays["param/W1"].copy()
        change(arrays)

    bad = rewrite(good, tmp_path / f"{name}.npz", apply)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    assert fragment in str(info.value) and str(bad) in str(info.value)


def test_pickled_objects_are_refused_and_never_unpickled(good: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (marker.write_text, ("x",))

    arrays = dict(np.load(good, allow_pickle=False))
    arrays["param/W1"] = np.array([Evil()], dtype=object)
    path = tmp_path / "evil.npz"
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match="pickled objects"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_and_non_zip_files(good: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "text.npz"
    text.write_text("hello")
    other = tmp_path / "other.npz"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("readme.txt", "not numpy")
    other.write_bytes(buffer.getvalue())
    for path in (truncated, text, other):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)
    for path in (tmp_path / "missing.npz", tmp_path):  # no file at all: a usage error (exit 2)
        with pytest.raises(MissingFileError) as missing:
            load_checkpoint(path)
        assert str(path) in str(missing.value) and missing.value.exit_code == 2
