"""Augmentation: each distortion does what it says, exactly where it can be exact; the random
draws are reproducible; the fast elastic fields are Simard's fields; the config keys are strict."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import numpy as np
import pytest

from mlp_cli.config import AugmentConfig, Config
from mlp_cli.config_file import load_config
from mlp_cli.data.augment import (
    Distortions,
    augment,
    batch_rng,
    bilinear,
    distort,
    elastic_fields,
    is_identity,
    sample_distortions,
    smoothing_matrix,
    source_coordinates,
)
from mlp_cli.errors import ConfigError
from mlp_cli.reports.preview import grid_image, preview_pairs

ALL = AugmentConfig(enabled=True, shift=2.0, rotate=15.0, scale=0.15, shear=15.0, elastic_alpha=34.0)
AFFINE = dataclasses.replace(ALL, elastic_alpha=0.0)


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def blob(n: int = 1) -> np.ndarray:
    """A smooth digit-sized blob well inside the frame (no ink near the border), (n, 28, 28)."""
    y, x = np.mgrid[0:28, 0:28]
    image = 255.0 * np.exp(-(((y - 13.0) / 4.0) ** 2 + ((x - 14.5) / 3.0) ** 2))
    return np.repeat(image[None], n, axis=0)


def only(n: int, **values: float) -> Distortions:
    """Distortions of n images with every part at its identity except ``values``."""
    return dataclasses.replace(Distortions.identity(n), **{k: np.full(n, float(v)) for k, v in values.items()})


def mnist(mnist_data_dir: Path, n: int) -> np.ndarray:
    from mlp_cli.data.cache import load_dataset

    images, _ = load_dataset("mnist", "train", data_dir=mnist_data_dir)
    return np.asarray(images[:n])


# --- the contract of augment() ----------------------------------------------------------------


def test_same_seed_same_output_and_different_seed_different_output() -> None:
    images = random_images(20)
    a = augment(images, ALL, np.random.default_rng(7))
    b = augment(images, ALL, np.random.default_rng(7))
    c = augment(images, ALL, np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_output_is_float32_of_the_same_shape_and_range() -> None:
    for images in (random_images(30), random_images(30).astype(np.float64), blob(30).astype(np.float32)):
        out = augment(images, ALL, np.random.default_rng(0))
        assert out.shape == images.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= images.max() + 1e-3  # only mixes pixels with background 0
        assert out.max() > 100  # not blanked


@pytest.mark.parametrize("settings", [
    AugmentConfig(),  # disabled
    dataclasses.replace(ALL, enabled=False),  # disabled, whatever the amounts
    AugmentConfig(enabled=True),  # enabled, every amount 0
    dataclasses.replace(ALL, probability=0.0),  # enabled, applied to no image
], ids=["default", "disabled", "all-zero", "probability-0"])
def test_identity_settings_return_the_input_exactly_without_drawing(settings: AugmentConfig) -> None:
    images = random_images(10)
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    out = augment(images, settings, rng)
    assert is_identity(settings)
    assert out.dtype == np.float32 and np.array_equal(out, images)
    assert rng.bit_generator.state == state  # nothing drawn: a disabled run's random streams are untouched


def test_identity_distortions_are_exact_through_the_resampler() -> None:
    images = random_images(10)
    assert np.array_equal(distort(images, Distortions.identity(10)), images)
    zero_field = dataclasses.replace(Distortions.identity(10), field=np.zeros((10, 2, 28, 28), np.float32))
    assert np.array_equal(distort(images, zero_field), images)


def test_elastic_with_alpha_zero_is_identity() -> None:
    images = random_images(5)
    settings = AugmentConfig(enabled=True, elastic_alpha=0.0, elastic_sigma=2.0)
    assert np.array_equal(augment(images, settings, np.random.default_rng(0)), images)
    assert np.array_equal(elastic_fields(5, 4.0, np.random.default_rng(0), alpha=0.0), np.zeros((5, 2, 28, 28)))


def test_probability_distorts_that_fraction_and_leaves_the_rest_exactly() -> None:
    images = random_images(400)
    out = augment(images, dataclasses.replace(ALL, probability=0.25), np.random.default_rng(0))
    unchanged = np.array([np.array_equal(o, i) for o, i in zip(out, images, strict=True)])
    assert 0.15 < 1 - unchanged.mean() < 0.35


# --- each transform does what it says ------------------------------------------------------------


@pytest.mark.parametrize(("dx", "dy"), [(3, 0), (0, -2), (-4, 5), (1, 1)])
def test_integer_shift_moves_the_image_exactly(dx: int, dy: int) -> None:
    images = random_images(4)
    out = distort(images, only(4, shift_x=dx, shift_y=dy))
    expected = np.zeros_like(images)
    rows_to, rows_from = slice(max(dy, 0), 28 + min(dy, 0)), slice(max(-dy, 0), 28 + min(-dy, 0))
    cols_to, cols_from = slice(max(dx, 0), 28 + min(dx, 0)), slice(max(-dx, 0), 28 + min(-dx, 0))
    expected[:, rows_to, cols_to] = images[:, rows_from, cols_from]  # + x is right, + y is down
    assert np.array_equal(out, expected)


def test_rotation_by_90_degrees_is_rot90_anticlockwise() -> None:
    images = random_images(3)
    out = distort(images, only(3, rotate=90))
    assert np.allclose(out, np.rot90(images, k=1, axes=(1, 2)), atol=1e-3)
    assert np.allclose(distort(images, only(3, rotate=-90)), np.rot90(images, k=-1, axes=(1, 2)), atol=1e-3)
    assert np.allclose(distort(images, only(3, rotate=180)), images[:, ::-1, ::-1], atol=1e-3)


def test_a_pattern_with_fourfold_symmetry_is_unchanged_by_90_degrees() -> None:
    y, x = np.mgrid[0:28, 0:28] - 13.5
    ring = np.where((np.hypot(y, x) > 5) & (np.hypot(y, x) < 9) | ((abs(x) < 2) & (abs(y) < 2)), 255, 0)
    pattern = np.maximum(ring, np.where((abs(x) == 12.5) | (abs(y) == 12.5), 255, 0)).astype(np.uint8)[None]
    assert np.allclose(distort(pattern, only(1, rotate=90)), pattern, atol=1e-3)
    assert not np.allclose(distort(pattern, only(1, rotate=45)), pattern, atol=1.0)


def test_scale_about_the_centre_multiplies_size_and_mass() -> None:
    image = blob()
    for s in (0.8, 1.25):
        out = distort(image, only(1, scale=s))
        assert out.sum() == pytest.approx(s**2 * image.sum(), rel=0.01)  # area grows with s^2
        assert centre_of_mass(out) == pytest.approx(centre_of_mass(image) * s + 13.5 * (1 - s), abs=0.05)


def test_shear_slants_a_vertical_stroke_by_tan_angle() -> None:
    image = np.zeros((1, 28, 28))
    image[0, 4:24, 13:15] = 255.0  # a vertical bar centred on column 13.5
    out = distort(image, only(1, shear=20))[0]
    rows = np.arange(6, 22)
    centres = [np.average(np.arange(28), weights=out[r]) for r in rows]
    slope = np.polyfit(rows, centres, 1)[0]
    assert slope == pytest.approx(np.tan(np.radians(20)), abs=0.01)  # lower rows lean right: x + tan(phi) y


def test_affine_and_elastic_distortions_roughly_preserve_ink(mnist_data_dir: Path) -> None:
    images = mnist(mnist_data_dir, 500)
    mass = images.sum(axis=(1, 2))  # (n,)
    # Shifts, rotations and shears keep areas (determinant 1): each digit keeps its ink.
    affine = augment(images, dataclasses.replace(AFFINE, scale=0.0), np.random.default_rng(0))
    assert np.percentile(np.abs(affine.sum(axis=(1, 2)) / mass - 1), 95) < 0.03
    # Elastic fields stretch some strokes and squeeze others: the ink is kept on average.
    elastic = augment(images, AugmentConfig(enabled=True, elastic_alpha=34.0), np.random.default_rng(0))
    ratio = elastic.sum(axis=(1, 2)) / mass
    assert abs(np.mean(ratio) - 1) < 0.03 and 0.5 < ratio.min() and ratio.max() < 2
    for out in (affine, elastic):
        assert (np.abs(out - images).mean(axis=(1, 2)) > 5).mean() > 0.9  # and they did move


def test_matches_scipy_map_coordinates() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    images = random_images(40)
    d = sample_distortions(40, ALL, np.random.default_rng(1))
    qy, qx = source_coordinates(d, (28, 28))
    batch = np.broadcast_to(np.arange(40.0)[:, None, None], qy.shape)
    expected = ndimage.map_coordinates(
        images.astype(np.float64), np.stack([batch, qy, qx]), order=1, mode="grid-constant", cval=0.0
    )
    assert np.abs(distort(images, d) - expected).max() < 1e-3
    outside = np.full((2, 3, 3), -50.0, np.float32), np.full((2, 3, 3), 70.0, np.float32)
    far = bilinear(images[:2].astype(np.float32), *outside)
    assert np.array_equal(far, np.zeros((2, 3, 3)))  # far outside: background


# --- the random draws ---------------------------------------------------------------------------


def test_parameters_are_drawn_uniformly_within_their_ranges() -> None:
    d = sample_distortions(5000, ALL, np.random.default_rng(0))
    for values, lo, hi in (
        (d.shift_x, -2, 2), (d.shift_y, -2, 2), (d.rotate, -15, 15), (d.scale, 0.85, 1.15), (d.shear, -15, 15),
    ):
        assert lo <= values.min() < lo + 0.05 * (hi - lo) and hi - 0.05 * (hi - lo) < values.max() <= hi
        assert np.mean(values) == pytest.approx((lo + hi) / 2, abs=0.03 * (hi - lo))
    assert d.field is not None and d.field.shape == (5000, 2, 28, 28) and d.field.dtype == np.float32


def test_changing_one_amount_leaves_the_other_draws_alone() -> None:
    a = sample_distortions(50, ALL, np.random.default_rng(5))
    b = sample_distortions(50, dataclasses.replace(ALL, rotate=0.0), np.random.default_rng(5))
    assert np.array_equal(a.shift_x, b.shift_x) and np.array_equal(a.field, b.field)
    assert np.array_equal(b.rotate, np.zeros(50))


def test_batch_rng_is_a_pure_function_of_seed_epoch_and_batch() -> None:
    draw = lambda *key: batch_rng(*key).random(4)  # noqa: E731
    assert np.array_equal(draw(0, 1, 2), draw(0, 1, 2))
    keys = [(0, 1, 2), (1, 1, 2), (0, 2, 2), (0, 1, 3)]
    assert len({tuple(draw(*k)) for k in keys}) == len(keys)
    assert not np.array_equal(draw(0, 1, 0), np.random.default_rng([0, 1]).random(4))  # not the shuffle stream


# --- the fast elastic fields are Simard's fields -----------------------------------------------------


@pytest.mark.parametrize("sigma", [0.7, 2.0, 4.0, 6.0])
def test_smoothing_matrix_is_scipys_gaussian_filter(sigma: float) -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    expected = ndimage.gaussian_filter1d(np.eye(28), sigma, axis=0, mode="constant")
    assert np.allclose(smoothing_matrix(28, sigma), expected, atol=1e-12)


@pytest.mark.parametrize("sigma", [1.0, 4.0, 8.0])
def test_fields_have_the_covariance_of_smoothed_uniform_noise(sigma: float) -> None:
    """Cov(G U G^T) = (1/3) (G G^T) (x) (G G^T): the eigenbasis draw reproduces G G^T."""
    from mlp_cli.data.augment import _eigen_factor

    G = smoothing_matrix(28, sigma)
    A = _eigen_factor(28, sigma).astype(np.float64)
    assert np.abs(A @ A.T - G @ G.T).max() < 1e-5 * np.abs(G @ G.T).max()
    assert A.shape[1] < 28 or sigma < 2  # smooth fields need few components


def test_fields_match_gaussian_filtered_noise_statistically() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    fast = elastic_fields(4000, 4.0, rng, alpha=34.0)  # (n, 2, 28, 28)
    noise = rng.uniform(-1.0, 1.0, (4000, 2, 28, 28))
    exact = 34.0 * ndimage.gaussian_filter(noise, (0, 0, 4.0, 4.0), mode="constant")
    assert fast.std(axis=0).mean() == pytest.approx(exact.std(axis=0).mean(), rel=0.03)
    assert np.abs(fast.std(axis=0) / exact.std(axis=0) - 1).max() < 0.12  # per pixel, incl. the fading border
    assert np.abs(fast.mean(axis=0)).max() < 0.15
    for a, b in ((fast, exact),):  # neighbours 3 pixels apart are correlated alike
        corr = lambda f: np.corrcoef(f[:, 0, 10, 10], f[:, 0, 10, 13])[0, 1]  # noqa: E731
        assert corr(a) == pytest.approx(corr(b), abs=0.05)


def test_each_image_and_direction_gets_its_own_field() -> None:
    f = elastic_fields(3, 4.0, np.random.default_rng(0), alpha=np.array([34.0, 0.0, 34.0]))
    assert not np.allclose(f[0, 0], f[0, 1]) and not np.allclose(f[0], f[2])
    assert np.array_equal(f[1], np.zeros((2, 28, 28)))


# --- speed --------------------------------------------------------------------------------------


def test_vectorised_a_batch_is_much_faster_than_one_call_per_image() -> None:
    images = random_images(1000)

    def batched() -> float:
        start = time.perf_counter()
        augment(images, ALL, np.random.default_rng(0))
        return time.perf_counter() - start

    def one_by_one() -> float:
        start = time.perf_counter()
        for i in range(0, 1000, 4):  # 250 calls of one image, scaled to 1000
            augment(images[i : i + 1], ALL, np.random.default_rng(i))
        return 4 * (time.perf_counter() - start)

    batch_time, loop_time = min(batched() for _ in range(3)), min(one_by_one() for _ in range(3))
    assert batch_time * 2 < loop_time, (batch_time, loop_time)


# --- preview helpers ----------------------------------------------------------------------------


def test_grid_image_lays_rows_out_with_gaps() -> None:
    a, b = np.full((3, 28, 28), 10, np.uint8), np.full((3, 28, 28), 200, np.uint8)
    grid = grid_image([a, b], gap=2, fill=7)
    assert grid.shape == (2 * 28 + 2, 3 * 28 + 2 * 2)
    assert (grid[:28, :28] == 10).all() and (grid[30:, 60:] == 200).all()
    assert (grid[28:30] == 7).all() and (grid[:, 28:30] == 7).all()


def test_preview_pairs_are_reproducible_uint8_and_apply_even_when_disabled() -> None:
    images = random_images(100)
    settings = dataclasses.replace(ALL, enabled=False)
    originals, distorted = preview_pairs(images, settings, 6, seed=1)
    again = preview_pairs(images, settings, 6, seed=1)
    assert originals.dtype == distorted.dtype == np.uint8 and originals.shape == distorted.shape == (6, 28, 28)
    assert np.array_equal(originals, again[0]) and np.array_equal(distorted, again[1])
    assert any(np.array_equal(originals[0], image) for image in images)
    assert not np.array_equal(originals, distorted)


# --- config -------------------------------------------------------------------------------------


def test_augment_is_off_by_default_and_every_key_is_read() -> None:
    assert Config().augment == AugmentConfig() and not Config().augment.enabled
    values = {"enabled": True, "shift": 2.5, "rotate": 10, "scale": 0.1, "shear": 5,
              "elastic_alpha": 34, "elastic_sigma": 4.5, "probability": 0.5}
    c = load_config(None, sets=[f"augment.{k}={str(v).lower()}" for k, v in values.items()])
    assert dataclasses.asdict(c.augment) == values
    assert isinstance(c.augment.rotate, float)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("shift", -1, "[0.0, 14.0]"),
    ("rotate", 200, "[0.0, 180.0]"),
    ("scale", 1.0, "[0.0, 1.0)"),
    ("shear", 75, "[0.0, 60.0]"),
    ("elastic_alpha", -3, "[0.0, 200.0]"),
    ("elastic_sigma", 0, "(0.0, 28.0]"),
    ("probability", 1.5, "[0.0, 1.0]"),
    ("enabled", "yes", "true or false"),
    ("rotate", "ten", "a number"),
])
def test_augment_keys_are_validated(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError, match=rf"augment\.{key} = .*expected .*{re.escape(expected)}"):
        load_config(None, {f"augment.{key}": value})


def test_unknown_augment_key_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError, match="unknown key 'augment.rotation'.*did you mean 'augment.rotate'"):
        load_config(None, {"augment.rotation": 10})


def centre_of_mass(images: np.ndarray) -> np.ndarray:
    image = images[0]
    y, x = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    return np.array([np.average(y, weights=image), np.average(x, weights=image)])
