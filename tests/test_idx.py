"""IDX parsing: valid files round-trip, every kind of corruption is a DataError naming the file."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from helpers import idx_images, idx_labels, sha256
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp_cli.data import idx
from mlp_cli.errors import DataError

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (4, 28, 28), dtype=np.uint8)
LABELS = np.array([5, 0, 4, 9], dtype=np.uint8)


def test_valid_files_round_trip():
    images = idx.parse_images(idx_images(IMAGES), "x")
    labels = idx.parse_labels(idx_labels(LABELS), "y")

    assert images.dtype == np.uint8 and images.shape == (4, 28, 28)
    np.testing.assert_array_equal(images, IMAGES)
    np.testing.assert_array_equal(labels, LABELS)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "too short"),
        (b"\x00\x00\x08", "too short"),
        (idx_labels(LABELS), "0x00000801 is not 0x00000803: 1 dimension, IDX images have 3"),
        (b"\x00\x00\x09\x03" + idx_images(IMAGES)[4:], "data type 0x09 is not unsigned byte"),
        (b"PK\x03\x04" + idx_images(IMAGES)[4:], "not an IDX file"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x04", "header alone needs 16"),
        (idx_images(IMAGES)[:-1], "truncated"),
        (idx_images(IMAGES) + b"\x00", "trailing bytes"),
        (idx_images(np.zeros((0, 28, 28), np.uint8)), "holds no images"),
        (idx_images(np.zeros((2, 28, 27), np.uint8)), "28x27, expected 28x28"),
    ],
)
def test_corrupt_images_name_file_and_problem(data, problem):
    with pytest.raises(DataError, match=problem) as caught:
        idx.parse_images(data, "train-images.gz")
    assert str(caught.value).startswith("train-images.gz: ")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (idx_images(IMAGES), "0x00000803 is not 0x00000801: 3 dimensions, IDX labels have 1"),
        (idx_labels(LABELS)[:-2], "truncated"),
        (idx_labels(np.array([1, 10, 3], np.uint8)), "label 10 at index 1 is outside 0..9"),
        (idx_labels(np.array([255], np.uint8)), "label 255"),
    ],
)
def test_corrupt_labels_name_file_and_problem(data, problem):
    with pytest.raises(DataError, match=problem) as caught:
        idx.parse_labels(data, "labels.gz")
    assert str(caught.value).startswith("labels.gz: ")


def test_gzip_files_are_read_with_one_or_two_layers(tmp_path: Path):
    payload = idx_images(IMAGES)
    once, twice = tmp_path / "once.gz", tmp_path / "twice.gz"
    once.write_bytes(gzip.compress(payload))
    twice.write_bytes(gzip.compress(gzip.compress(payload)))

    for path in (once, twice):
        np.testing.assert_array_equal(idx.read_images(path), IMAGES)
        assert idx.sha256_of_payload(path) == sha256(payload)


@pytest.mark.parametrize(
    "content",
    [
        b"\x1f\x8b\x08\x00garbage",  # gzip magic, broken header
        gzip.compress(idx_labels(LABELS))[:-6],  # cut inside the trailer
        gzip.compress(idx_labels(LABELS))[:-8] + b"\x00" * 8,  # wrong CRC and size
    ],
)
def test_corrupt_gzip_is_a_data_error_naming_the_file(tmp_path: Path, content: bytes):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(content)

    with pytest.raises(DataError, match="not a valid gzip file") as caught:
        idx.read_labels(path)
    assert str(path) in str(caught.value)
    with pytest.raises(DataError, match="not a valid gzip file"):
        idx.sha256_of_payload(path)


def test_missing_file_is_a_data_error(tmp_path: Path):
    with pytest.raises(DataError, match="cannot read"):
        idx.read_images(tmp_path / "absent.gz")


def _only_data_errors(action, *args) -> None:
    try:
        action(*args)
    except DataError:
        pass


header_prefixes = st.sampled_from([b"", b"\x00\x00\x08\x03", b"\x00\x00\x08\x01", b"\x1f\x8b"])


@settings(max_examples=150, deadline=None)
@given(prefix=header_prefixes, rest=st.binary(max_size=64))
def test_random_bytes_only_ever_raise_data_error(prefix: bytes, rest: bytes):
    _only_data_errors(idx.parse_images, prefix + rest, "fuzz")
    _only_data_errors(idx.parse_labels, prefix + rest, "fuzz")


@settings(max_examples=60, deadline=None)
@given(prefix=header_prefixes, rest=st.binary(max_size=64), wrap=st.booleans())
def test_random_files_only_ever_raise_data_error(tmp_path_factory, prefix, rest, wrap):
    path = tmp_path_factory.mktemp("fuzz") / "f.gz"
    data = prefix + rest
    path.write_bytes(gzip.compress(data) if wrap else data)
    _only_data_errors(idx.read_images, path)
    _only_data_errors(idx.read_labels, path)
    _only_data_errors(idx.sha256_of_payload, path)
