"""A tampered dataset cache: arrays replaced by zeros, bytes flipped, a link in place of a file.
Every load verifies the arrays against the registry's checksums; a mismatch is rebuilt from
the verified download, saying so in one line. The commands run in child processes under memory
and time limits on a copy of the real MNIST cache."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import good_checkpoint
from limits import GiB, mlp_command, run_limited

from mlp_cli.data.cache import load_dataset


@pytest.fixture
def cache(mnist_data_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the verified MNIST cache (a data dir)."""
    shutil.copytree(mnist_data_dir / "mnist", tmp_path / "data" / "mnist")
    return tmp_path / "data"


def overwrite(path: Path, change) -> np.ndarray:
    """Rewrite the .npy at ``path`` through ``change`` (same shape and dtype); the original."""
    original = np.load(path).copy()
    tampered = change(original.copy())
    with open(path, "r+b") as handle:  # in place, as a disk error or a hand edit would
        header = handle.read().__len__() - original.nbytes
        handle.seek(header)
        handle.write(tampered.tobytes())
    return original


def flip(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    flat[[100_000, 2_000_000]] ^= 0xFF
    return array


def run(*args):
    return run_limited(mlp_command(*args), memory=2 * GiB, seconds=120)


def test_test_images_replaced_by_zeros_are_noticed_and_rebuilt_before_eval(cache, tmp_path):
    path = cache / "mnist" / "test-images.npy"
    original = overwrite(path, np.zeros_like)
    checkpoint = good_checkpoint(tmp_path / "run" / "best.npz")

    outcome = run("eval", checkpoint, "--data-dir", cache)

    assert outcome.code == 0, outcome.output
    assert f"{path} does not match the registry's checksum of t10k-images-idx3-ubyte.gz; " \
           "rebuilding it from the verified download" in outcome.stderr
    np.testing.assert_array_equal(np.load(path), original)


def test_flipped_bytes_in_the_training_images_are_noticed_by_download_data(cache):
    path = cache / "mnist" / "train-images.npy"
    original = overwrite(path, flip)

    outcome = run("download-data", "--data-dir", cache)

    assert outcome.code == 0, outcome.output
    assert f"{path} does not match the registry's checksum of train-images-idx3-ubyte.gz" in outcome.stderr
    assert outcome.stderr.count("rebuilding it from the verified download") == 1
    np.testing.assert_array_equal(np.load(path), original)


def test_a_link_in_place_of_an_array_is_not_followed(cache, tmp_path):
    path = cache / "mnist" / "train-labels.npy"
    elsewhere = tmp_path / "labels.npy"
    shutil.move(path, elsewhere)
    path.symlink_to(elsewhere)

    outcome = run("download-data", "--data-dir", cache)

    assert outcome.code == 0, outcome.output
    assert f"{path} is not a regular file; rebuilding it" in outcome.stderr
    assert not path.is_symlink()
    np.testing.assert_array_equal(np.load(path), np.load(elsewhere))


def test_loading_the_verified_training_split_stays_under_a_tenth_of_a_second(cache):
    load_dataset("mnist", "train", data_dir=cache, download=False)  # the page cache warm
    times = []
    for _ in range(5):  # the best of five: other processes share this machine's memory bandwidth
        started = time.perf_counter()
        images, labels = load_dataset("mnist", "train", data_dir=cache, download=False)
        times.append(time.perf_counter() - started)
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    assert min(times) < 0.1, times
