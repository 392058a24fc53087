"""The train/dev split and the input normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from mlp_cli.data.preprocess import Preprocessing, fit_preprocessing, split_train_dev
from mlp_cli.errors import CheckpointError


def test_split_is_the_cs229_permutation_with_dev_first() -> None:
    train, dev = split_train_dev(60_000, 10_000, 100)
    np.random.seed(100)  # what the CS229 starter code does
    expected = np.random.permutation(60_000)
    np.testing.assert_array_equal(dev, expected[:10_000])
    np.testing.assert_array_equal(train, expected[10_000:])
    assert len(np.union1d(train, dev)) == 60_000


def test_standardize_matches_numpy_float64_statistics() -> None:
    images = np.random.default_rng(0).integers(0, 256, (12_345, 28, 28), dtype=np.uint8)
    prep = fit_preprocessing("standardize", images)
    pixels = images.astype(np.float64)
    assert prep.mean == pytest.approx(pixels.mean(), rel=1e-12)
    assert prep.std == pytest.approx(pixels.std(), rel=1e-12)
    X = prep.apply(images)
    assert X.shape == (12_345, 784) and X.dtype == np.float32
    assert abs(float(X.mean())) < 1e-3 and float(X.std()) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(("dtype", "high"), [(np.uint8, 256), (np.uint16, 65_536), (np.int32, 2**20)])
def test_standardize_statistics_are_exact_at_the_top_of_the_pixel_range(dtype, high) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(high - 3, high, (6_001, 4, 4)).astype(dtype)  # squares near the dtype's limit
    prep = fit_preprocessing("standardize", images)
    pixels = images.astype(np.float64)
    assert prep.mean == pytest.approx(pixels.mean(), rel=1e-12)
    assert prep.std == pytest.approx(pixels.std(), rel=1e-9)


def test_standardize_on_the_real_cs229_training_split(mnist_data_dir) -> None:
    from mlp_cli.data.cache import load_dataset

    images, _ = load_dataset("mnist", "train", data_dir=mnist_data_dir)
    train, _ = split_train_dev(len(images), 10_000, 100)
    subset = images[train]
    prep = fit_preprocessing("standardize", subset)
    pixels = subset.astype(np.float64)
    assert prep.mean == pytest.approx(pixels.mean(), rel=1e-12)
    assert prep.std == pytest.approx(pixels.std(), rel=1e-12)


def test_scale_and_none() -> None:
    images = np.array([[[0, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(fit_preprocessing("scale", images).apply(images), [[0.0, 1.0]])
    np.testing.assert_array_equal(fit_preprocessing("none", images).apply(images, "float64"), [[0.0, 255.0]])
    constant = np.full((3, 2, 2), 7, np.uint8)
    assert fit_preprocessing("standardize", constant).std == 1.0  # no division by zero


def test_round_trip_and_validation() -> None:
    prep = Preprocessing("standardize", 33.3, 78.5)
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    edge = Preprocessing("standardize", -3.4e38, 1.2e-38)  # at float32's limits: still representable
    assert Preprocessing.from_dict(edge.to_dict()) == edge
    for bad in ({"method": "whiten", "mean": 0, "std": 1}, {"method": "scale", "mean": 0, "std": 0},
                {"method": "scale"}, None, {"method": "scale", "mean": "nan", "std": 1},
                # finite in float64 but not in float32, the inputs' dtype: -inf inputs, or a division by 0
                {"method": "standardize", "mean": 1e300, "std": 1}, {"method": "standardize", "mean": 0, "std": 1e-300},
                {"method": "standardize", "mean": 0, "std": 1e39}, {"method": "standardize", "mean": 0, "std": "inf"}):
        with pytest.raises(CheckpointError):
            Preprocessing.from_dict(bad)


def test_limit_keeps_the_first_training_indices_and_the_same_dev_set() -> None:
    train, dev = split_train_dev(1000, 100, 7)
    small, same_dev = split_train_dev(1000, 100, 7, limit=50)
    np.testing.assert_array_equal(small, train[:50])
    np.testing.assert_array_equal(same_dev, dev)
