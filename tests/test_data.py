"""The cache and the loading API: where data lives, the .npy fast path, the registry, real MNIST."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from mlp_cli.data import registry as datasets
from mlp_cli.data.cache import (
    dataset_checksums,
    dataset_dir,
    ensure_dataset,
    load_dataset,
    resolve_data_dir,
)
from mlp_cli.errors import DataError, DownloadError, UsageError

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# -- the cache directory ----------------------------------------------------------------------


def test_data_dir_argument_beats_env_beats_user_cache(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.setenv("MLP_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("MLP_DATA_DIR")
    assert resolve_data_dir() == Path(platformdirs.user_cache_dir("mlp"))
    assert dataset_dir("fashion-mnist", tmp_path) == tmp_path / "fashion-mnist"


def test_uncreatable_data_dir_is_a_download_error_naming_it(tiny_mnist, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    with pytest.raises(DownloadError, match="cannot create the data directory") as caught:
        ensure_dataset("mnist", blocker / "cache", ["file:///nowhere/"])
    assert str(blocker / "cache" / "mnist") in str(caught.value)


# -- the registry -----------------------------------------------------------------------------


def test_mirrors_are_user_then_env_then_defaults():
    spec = datasets.get_spec("mnist")
    environ = {"MLP_MNIST_MIRROR": " https://e1.example/a, https://e2.example/b/\nhttp://e3.example/ "}

    mirrors = datasets.mirror_list(spec, ["https://u.example/x", "https://e2.example/b/"], environ)

    assert mirrors == (
        "https://u.example/x/",
        "https://e2.example/b/",  # named twice: tried once, at its first place
        "https://e1.example/a/",
        "http://e3.example/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    )
    assert not any("lecun" in m for m in mirrors)


@pytest.mark.parametrize("value", ["http://user:Zq7,xK9@host.example/mnist/", "http://user:Zq7 xK9@host.example/",
                                   "http://Zq7 xK9:Wp4@host.example/", "https://a.example/, http://u:Zq7,xK9@b.example/"])
def test_a_mirror_variable_cut_inside_a_password_is_refused_without_showing_it(value):
    # the entries split at the password's comma or space: no piece of it is shown
    with pytest.raises(UsageError, match="percent-encode") as caught:
        datasets.mirror_list(datasets.get_spec("mnist"), (), {"MLP_MNIST_MIRROR": value})
    assert not any(piece in str(caught.value) for piece in ("Zq7", "xK9", "Wp4", "example"))


@pytest.mark.parametrize("value", ["http://u:p%2Cq@host.example/", "http://host.example:8080/m/", "http://[::1]:80/",
                                   "file:///data/x@y/", "/data/x@y"])
def test_a_mirror_variable_with_ports_encoded_passwords_or_at_signs_in_paths_is_taken(value):
    assert len(datasets.mirror_list(datasets.get_spec("mnist"), (), {"MLP_MNIST_MIRROR": value})) == 3


def test_fashion_mnist_has_its_own_env_var_and_default():
    spec = datasets.get_spec("fashion-mnist")
    environ = {"MLP_FASHION_MNIST_MIRROR": "https://f.example/", "MLP_MNIST_MIRROR": "https://x/"}

    assert datasets.mirror_list(spec, (), environ) == (
        "https://f.example/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    )


def test_a_local_directory_is_a_file_mirror(tmp_path):
    assert datasets.normalize_mirror(str(tmp_path)) == tmp_path.as_uri() + "/"


@pytest.mark.parametrize("mirror", ["ftp://example.org/mnist/", "s3://bucket/mnist/"])
def test_unsupported_mirror_scheme_is_a_usage_error(mirror):
    with pytest.raises(UsageError, match="unsupported scheme"):
        datasets.mirror_list(datasets.get_spec("mnist"), [mirror], {})


def test_unknown_dataset_and_split_are_usage_errors():
    with pytest.raises(UsageError, match="unknown dataset 'cifar'.*fashion-mnist, mnist"):
        load_dataset("cifar")
    with pytest.raises(UsageError, match="unknown split 'dev'"):
        load_dataset("mnist", "dev")


def test_checksums_are_of_the_decompressed_files():
    assert dataset_checksums("mnist") == {
        "train-images-idx3-ubyte.gz":
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte.gz":
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte.gz":
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte.gz":
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    }
    fashion = dataset_checksums("fashion-mnist")
    assert fashion["train-images-idx3-ubyte.gz"].startswith("c59f468a")
    assert fashion["t10k-labels-idx1-ubyte.gz"].startswith("0402a96d")
    dataset_checksums("mnist").clear()  # a copy: the registry is untouched
    assert len(dataset_checksums("mnist")) == 4


# -- loading ----------------------------------------------------------------------------------


def test_load_downloads_when_the_cache_is_empty(tiny_mnist, mirror_server):
    url = mirror_server.add("m", tiny_mnist.gz)

    images, labels = load_dataset("mnist", "test", mirrors=[url])  # MLP_DATA_DIR from conftest

    assert images.shape == (3, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (3,) and labels.dtype == np.int64
    assert not images.flags.writeable
    np.testing.assert_array_equal(images, tiny_mnist.images["test"])
    np.testing.assert_array_equal(labels, tiny_mnist.labels["test"])
    assert (Path(os.environ["MLP_DATA_DIR"]) / "mnist" / "train-images.npy").is_file()
    assert len(mirror_server.hits) == 4  # all four files, so the next split is ready too


def test_load_without_download_on_empty_cache_says_what_to_run(tiny_mnist, tmp_path):
    with pytest.raises(DataError, match="mlp download-data --dataset mnist") as caught:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert str(tmp_path / "mnist") in str(caught.value)


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(b"garbage"),
        lambda path: path.write_bytes(path.read_bytes()[:-10]),  # truncated
        lambda path: np.save(path, np.zeros((5, 28, 27), np.uint8)),  # wrong shape
        lambda path: np.save(path, np.zeros((5, 28, 28), np.float32)),  # wrong dtype
        lambda path: path.unlink(),
    ],
)
def test_bad_npy_is_rebuilt_from_the_verified_gz(tiny_mnist, mirror_server, tmp_path, damage):
    url = mirror_server.add("m", tiny_mnist.gz)
    ensure_dataset("mnist", tmp_path, [url])
    damage(tmp_path / "mnist" / "train-images.npy")
    hits = len(mirror_server.hits)

    images, labels = load_dataset("mnist", "train", data_dir=tmp_path, download=False)

    np.testing.assert_array_equal(images, tiny_mnist.images["train"])
    assert len(mirror_server.hits) == hits  # rebuilt locally, no request
    assert np.load(tmp_path / "mnist" / "train-images.npy").shape == (5, 28, 28)


def test_labels_out_of_range_in_npy_are_rebuilt(tiny_mnist, mirror_server, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)
    ensure_dataset("mnist", tmp_path, [url])
    np.save(tmp_path / "mnist" / "test-labels.npy", np.full(3, 12, np.uint8))

    _, labels = load_dataset("mnist", "test", data_dir=tmp_path, download=False)

    np.testing.assert_array_equal(labels, tiny_mnist.labels["test"])


def test_ensure_rebuilds_missing_arrays_without_downloading(tiny_mnist, mirror_server, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)
    ensure_dataset("mnist", tmp_path, [url])
    (tmp_path / "mnist" / "test-labels.npy").unlink()

    report = ensure_dataset("mnist", tmp_path, [url])

    assert report.rebuilt == ("test",) and report.requests == 0
    assert report.arrays["test"][1].is_file()


# -- real MNIST (from the offline copy) --------------------------------------------------------


def test_real_mnist_shapes_and_first_labels(mnist_data_dir):
    train_images, train_labels = load_dataset("mnist", "train", data_dir=mnist_data_dir)
    test_images, test_labels = load_dataset("mnist", "test", data_dir=mnist_data_dir)

    assert train_images.shape == (60000, 28, 28) and train_images.dtype == np.uint8
    assert test_images.shape == (10000, 28, 28)
    assert train_labels.tolist()[:5] == [5, 0, 4, 1, 9]
    assert test_labels.tolist()[:5] == [7, 2, 1, 0, 4]
    assert np.bincount(train_labels).min() > 5000  # every digit well represented
    assert 0 < train_images.mean() < 255


def test_real_mnist_cached_train_split_loads_fast(mnist_data_dir):
    load_dataset("mnist", "train", data_dir=mnist_data_dir)  # warm the page cache
    start = time.perf_counter()
    load_dataset("mnist", "train", data_dir=mnist_data_dir, download=False)
    assert time.perf_counter() - start < 0.1


def test_real_mnist_is_verified_and_a_rerun_is_offline(mnist_data_dir, reporter):
    report = ensure_dataset("mnist", mnist_data_dir, reporter=reporter)  # no mirror given

    assert report.cached == tuple(dataset_checksums("mnist")) and report.requests == 0
    assert report.rebuilt == ()
    assert "no network request" in reporter.notes


def test_real_fashion_mnist_from_the_system_package(tmp_path, reporter):
    if not (FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").is_file():
        reason = f"{FASHION_MNIST} missing (apt-get install dataset-fashion-mnist)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)

    report = ensure_dataset("fashion-mnist", tmp_path, [str(FASHION_MNIST)], reporter=reporter)
    images, labels = load_dataset("fashion-mnist", "test", data_dir=tmp_path, download=False)

    assert report.downloaded == tuple(dataset_checksums("fashion-mnist"))
    assert images.shape == (10000, 28, 28)
    assert labels.tolist()[:5] == [9, 2, 1, 1, 6]  # ankle boot, pullover, trouser, trouser, shirt


def test_the_suite_finds_mnist_in_the_named_dir_or_the_users_cache(tmp_path, monkeypatch):
    """Without ../shared, the real-data tests use $MLP_TEST_MNIST, else the cache `make train` filled."""
    import helpers

    files = datasets.DATASETS["mnist"].files
    named, cache = tmp_path / "named", tmp_path / "cache"
    for directory in (named, cache / "mnist"):
        directory.mkdir(parents=True)
        for name in files:
            (directory / name).write_bytes(b"x")
    monkeypatch.setattr(helpers, "OFFLINE_MNIST", tmp_path / "absent")
    monkeypatch.setattr(helpers, "USER_DATA_DIR", str(cache))
    monkeypatch.setenv(helpers.TEST_MNIST_ENV, str(named))
    assert helpers.find_mnist_copy() == named
    monkeypatch.delenv(helpers.TEST_MNIST_ENV)
    assert helpers.find_mnist_copy() == cache / "mnist"
    (cache / "mnist" / files[0]).unlink()  # an incomplete cache is no copy
    assert helpers.find_mnist_copy() is None
