"""Making the user's images look like MNIST: inversion, crop, 20-pixel box, centre of mass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlp_cli.data.cache import load_dataset
from mlp_cli.data.images import ImageError, load_digit, to_mnist
from mlp_cli.errors import MissingFileError


def ink_box(pixels: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(pixels.any(axis=1)), np.flatnonzero(pixels.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def centre_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    p = pixels.astype(np.float64)
    return float(np.arange(28) @ p.sum(axis=1) / p.sum()), float(np.arange(28) @ p.sum(axis=0) / p.sum())


def dark_bar_on_paper() -> np.ndarray:
    """A 300 x 200 light-grey page with a dark 120 x 40 bar off to one corner."""
    page = np.full((300, 200), 230.0)
    page[20:140, 130:170] = 20.0
    return page


def test_dark_on_light_is_inverted_cropped_scaled_and_centred() -> None:
    pixels, inverted = to_mnist(dark_bar_on_paper())
    assert inverted
    assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
    assert ink_box(pixels) == (20, 7)  # 120 x 40 -> larger side 20, aspect 3:1 kept (6.67 -> 7)
    assert pixels.max() == 255 and pixels[0].max() == 0 and pixels[:, 0].max() == 0  # black field
    cy, cx = centre_of_mass(pixels)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_light_on_dark_is_not_inverted_and_gives_the_same_digit() -> None:
    pixels, inverted = to_mnist(255.0 - dark_bar_on_paper())
    assert not inverted
    np.testing.assert_array_equal(pixels, to_mnist(dark_bar_on_paper())[0])


def test_wide_digit_keeps_its_aspect_ratio() -> None:
    page = np.zeros((100, 400))
    page[40:60, 100:300] = 255.0  # 20 x 200
    assert ink_box(to_mnist(page)[0]) == (2, 20)


def test_faint_noise_is_background() -> None:
    rng = np.random.default_rng(0)
    page = 10.0 + rng.uniform(0, 15, (200, 200))  # noisy dark paper
    page[50:150, 90:110] = 250.0
    pixels, _ = to_mnist(page)
    assert ink_box(pixels) == (20, 4)  # the noise neither widened the box nor survived


def test_blank_image_has_no_digit() -> None:
    with pytest.raises(ValueError, match="no digit"):
        to_mnist(np.full((50, 50), 128.0))


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)
    return path


def test_files_in_several_modes_give_the_same_digit(tmp_path: Path) -> None:
    gray = dark_bar_on_paper().astype(np.uint8)
    expected = to_mnist(gray)[0]
    for name, mode in (("a.png", "L"), ("b.png", "RGB"), ("c.bmp", "RGB"), ("d.gif", "P")):
        digit = load_digit(save(tmp_path / name, gray, mode))
        np.testing.assert_array_equal(digit.pixels, expected, err_msg=name)
        assert digit.inverted and digit.size == (200, 300)
    jpeg = load_digit(save(tmp_path / "e.jpg", gray, "RGB"))  # lossy: close, not equal
    assert np.abs(jpeg.pixels.astype(int) - expected).mean() < 8


def test_transparent_backgrounds(tmp_path: Path) -> None:
    alpha = np.zeros((300, 200), dtype=np.uint8)
    alpha[20:140, 130:170] = 255
    expected = to_mnist(dark_bar_on_paper())[0]
    for ink in (0, 255):  # black ink, then white ink, on a transparent background
        rgba = np.zeros((300, 200, 4), dtype=np.uint8)
        rgba[..., :3] = ink
        rgba[..., 3] = alpha
        digit = load_digit(save(tmp_path / f"ink{ink}.png", rgba))
        assert ink_box(digit.pixels) == ink_box(expected), ink


def test_16_bit_grayscale(tmp_path: Path) -> None:
    deep = (dark_bar_on_paper() * 257).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    np.testing.assert_array_equal(load_digit(path).pixels, to_mnist(dark_bar_on_paper())[0])


def test_bad_files_are_one_line_errors_naming_them(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    good = save(tmp_path / "good.png", dark_bar_on_paper().astype(np.uint8))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    blank = save(tmp_path / "blank.png", np.full((40, 40), 200, dtype=np.uint8))
    cases = {
        tmp_path / "missing.png": ("not found", MissingFileError, 2),  # nothing there: a usage error
        tmp_path: ("is a directory", MissingFileError, 2),
        text: ("not an image file", ImageError, 1),  # a file whose content is unusable
        truncated: ("cannot be read", ImageError, 1),
        blank: ("no digit", ImageError, 1),
    }
    for path, (message, kind, code) in cases.items():
        with pytest.raises(kind, match=message) as caught:
            load_digit(path)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
        assert caught.value.exit_code == code


def test_an_mnist_digit_survives_the_round_trip(mnist_data_dir: Path, tmp_path: Path) -> None:
    """A real test digit, drawn 10x larger in black on white, comes back close to the original."""
    images, _ = load_dataset("mnist", "test", data_dir=mnist_data_dir)
    for i in range(5):
        original = np.asarray(images[i])
        big = Image.fromarray(255 - original).resize((280, 280), Image.Resampling.BICUBIC)
        digit = load_digit(save(tmp_path / f"{i}.png", np.asarray(big)))
        assert digit.inverted
        a, b = original.astype(float).ravel(), digit.pixels.astype(float).ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.85, i


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_float_image_with_non_finite_pixels_is_refused_in_one_line(tmp_path: Path, bad: float,
                                                                      recwarn: pytest.WarningsRecorder) -> None:
    values = np.zeros((28, 28), np.float32)
    values[8:20, 12:16] = 200.0  # a bar: a digit-like stroke, readable without the bad pixel
    good, broken = tmp_path / "good.tif", tmp_path / "broken.tif"
    Image.fromarray(values, mode="F").save(good)
    values[0, 0] = bad
    Image.fromarray(values, mode="F").save(broken)

    assert load_digit(good).pixels.max() > 0  # a finite float TIFF is read and scaled
    with pytest.raises(ImageError, match=r"broken\.tif cannot be read: .*not finite numbers \(NaN or infinity\)"):
        load_digit(broken)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]  # numpy said nothing
