"""The Python API held to the command line's standard: the same one-line MlpErrors for a bad
config (before any training), pixels refused unless finite and within 0-255, shapes refused and
never cropped, bounded memory for large stacks, and a run directory meaning its best.npz."""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import mlp_cli
from mlp_cli.api import BATCH

SMALL = {"model.hidden": 16, "train.batch_size": 100, "data.limit": 2000, "data.dev_size": 1000}


@pytest.fixture(scope="module")
def run_dir(mnist_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose best.npz (epoch 1) is not its last.npz (epoch 2): the epoch-1 state of the
    same config, trained alone, is put in as best.npz."""
    root = tmp_path_factory.mktemp("api-strict")
    two = mlp_cli.train(None, overrides={**SMALL, "train.epochs": 2}, out=root / "two", data_dir=mnist_data_dir)
    one = mlp_cli.train(None, overrides={**SMALL, "train.epochs": 1}, out=root / "one", data_dir=mnist_data_dir)
    shutil.copyfile(one.last_checkpoint, two.best_checkpoint)
    return two.run_dir


@pytest.fixture(scope="module")
def model(run_dir: Path) -> mlp_cli.Model:
    return mlp_cli.load_model(run_dir)


def test_a_run_directory_means_its_best_checkpoint_not_its_last(run_dir: Path, model: mlp_cli.Model,
                                                                mnist_data_dir: Path) -> None:
    last = mlp_cli.load_model(run_dir / "last.npz")
    assert (model.path.name, model.checkpoint.epoch, last.checkpoint.epoch) == ("best.npz", 1, 2)
    images, _ = mlp_cli.load_dataset("mnist", "test", data_dir=mnist_data_dir)
    assert not np.array_equal(model.predict_proba(images[:100]), last.predict_proba(images[:100]))


@pytest.mark.parametrize(("config", "overrides", "message"), [
    ({"modle": {"hidden": 64}}, None, "unknown section 'modle' (did you mean 'model'?)"),
    ({"model": {"hiden": 64}}, None, "unknown key 'model.hiden' (did you mean 'model.hidden'?)"),
    ({"model": {"hidden": "64"}}, None, "model.hidden = '64' (str); expected an integer in [1, 100000]"),
    ({"model": {"hidden": 0}}, None, "model.hidden = 0; expected an integer in [1, 100000]"),
    ({"model": 64}, None, "section 'model' must be a mapping of keys to values, got 64 (int)"),
    (None, {"optimizer.lr": -1.0}, "optimizer.lr = -1.0"),
    (None, {"modle.hidden": 64}, "unknown section 'modle'"),
    (None, [("model.hidden", 64)], "overrides must map 'section.key' to a value"),
    (3.5, None, "train's config must be a path, got 3.5 (float)"),
])
def test_a_bad_config_is_the_config_files_one_line_error_before_any_training(
    config: object, overrides: object, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlp_cli.training import session

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(session, "new_session", no_training)
    with pytest.raises(mlp_cli.MlpError) as caught:
        mlp_cli.train(config, overrides=overrides, out=tmp_path / "never")  # type: ignore[arg-type]
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "never").exists()


def test_the_same_mistake_in_a_config_file_reads_the_same(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("modle:\n  hidden: 64\n")
    with pytest.raises(mlp_cli.MlpError) as from_file:
        mlp_cli.train(tmp_path / "c.yaml", out=tmp_path / "never")
    with pytest.raises(mlp_cli.MlpError) as from_mapping:
        mlp_cli.train({"modle": {"hidden": 64}}, out=tmp_path / "never")
    assert str(from_file.value) == f"config {tmp_path / 'c.yaml'}: {from_mapping.value}"


@pytest.mark.parametrize(("pixels", "shown"), [
    (np.full((2, 784), np.nan), "nan in image 0"),
    (np.concatenate([np.zeros((3, 784)), np.full((1, 784), np.inf)]), "inf in image 3"),
    (np.full((1, 28, 28), 65535, dtype=np.uint16), "65535 in image 0"),
    (np.full((1, 784), -1, dtype=np.int64), "-1 in image 0"),
    (np.full((28, 28), 255.5), "255.5 in image 0"),
])
def test_pixels_must_be_finite_and_within_0_to_255(model: mlp_cli.Model, pixels: np.ndarray, shown: str) -> None:
    for use in (model.predict, model.predict_proba, model.inputs):
        with pytest.raises(mlp_cli.MlpError, match=f"images must be pixels 0-255 \\(finite\\), got {shown}"):
            use(pixels)
    with pytest.raises(mlp_cli.MlpError, match="images must be pixels 0-255"):
        model.evaluate(pixels, np.zeros(len(pixels.reshape(-1, 784)), dtype=int))


def test_a_bad_pixel_in_a_later_batch_is_found(model: mlp_cli.Model) -> None:
    pixels = np.zeros((BATCH + 5, 784), dtype=np.float32)
    pixels[BATCH + 3, 100] = np.nan
    with pytest.raises(mlp_cli.MlpError, match=f"got nan in image {BATCH + 3}"):
        model.predict(pixels)


@pytest.mark.parametrize("shape", [(2, 28, 29), (2, 29, 28), (2, 4, 196), (2, 785), (2, 1, 784), (28, 29), (2,)])
def test_other_shapes_are_refused_never_cropped(model: mlp_cli.Model, shape: tuple[int, ...]) -> None:
    with pytest.raises(mlp_cli.MlpError, match=r"images must be \(n, 28, 28\) or \(n, 784\) pixels, got shape"):
        model.predict(np.zeros(shape, dtype=np.uint8))


@pytest.mark.parametrize("call", [
    lambda m: m.predict([[1, 2], [3]]),  # ragged
    lambda m: m.predict(np.zeros((1, 784), dtype=complex)),
    lambda m: m.predict(np.zeros((1, 784), dtype=bool)),
    lambda m: m.predict(np.zeros((1, 784), dtype="m8[s]")),  # numpy counts timedelta64 an integer
    lambda m: m.evaluate(np.zeros((0, 784)), []),  # a mean over no image
    lambda m: m.predict(None),
    lambda m: m.predict([[10**30] * 784]),  # Python ints beyond any dtype
    lambda m: m.evaluate(np.zeros((2, 784)), ["a", "b"]),
    lambda m: m.evaluate(np.zeros((2, 784)), [0.5, 1]),
    lambda m: m.evaluate(np.zeros((2, 784)), [0, 10]),
    lambda m: m.evaluate(np.zeros((2, 784)), [0]),
    lambda m: m.evaluate(np.zeros((2, 784)), [True, False]),
    lambda m: mlp_cli.load_model(None),  # type: ignore[arg-type]
    lambda m: mlp_cli.load_model(42),  # type: ignore[arg-type]
    lambda m: mlp_cli.load_dataset(7),  # type: ignore[arg-type]
    lambda m: mlp_cli.load_dataset("mnist", "test", mirrors="http://x/"),  # type: ignore[arg-type]
    lambda m: mlp_cli.train(None, out=5),  # type: ignore[arg-type]
    lambda m: mlp_cli.train(None, overwrite="yes"),  # type: ignore[arg-type]
])
def test_every_misuse_is_an_mlp_error(model: mlp_cli.Model, call: object) -> None:
    with pytest.raises(mlp_cli.MlpError):
        call(model)  # type: ignore[operator]


def test_whole_float_labels_are_class_numbers(model: mlp_cli.Model) -> None:
    pixels = np.zeros((2, 784), dtype=np.uint8)
    assert model.evaluate(pixels, [1.0, 2.0]) == model.evaluate(pixels, np.array([1, 2]))


def test_large_stacks_are_processed_in_bounded_batches(model: mlp_cli.Model, mnist_data_dir: Path) -> None:
    """200,000 images: converting them at once would take 627 MB of float32 inputs; in batches
    the peak is a few batches' worth whatever the count. (The stack is one image repeated as a
    zero-copy view, so the test itself allocates nothing large.)"""
    images, _ = mlp_cli.load_dataset("mnist", "test", data_dir=mnist_data_dir)
    count = 200_000
    stack = np.broadcast_to(images[7], (count, 28, 28))
    expected = model.predict(images[7])[0]
    tracemalloc.start()
    try:
        classes = model.predict(stack)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_batch = BATCH * 784 * 4  # float32 inputs of one batch
    assert classes.shape == (count,) and (classes == expected).all()
    assert peak < 3 * one_batch < count * 784 * 4 // 5, f"peak {peak / 2**20:.0f} MiB"


def test_batched_results_equal_one_pass(model: mlp_cli.Model, mnist_data_dir: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = mlp_cli.load_dataset("mnist", "test", data_dir=mnist_data_dir)
    whole, whole_eval = model.predict_proba(images[:1000]), model.evaluate(images[:1000], labels[:1000])
    monkeypatch.setattr("mlp_cli.api.BATCH", 300)
    np.testing.assert_allclose(model.predict_proba(images[:1000]), whole, rtol=1e-4, atol=1e-6)  # float32 rounding
    np.testing.assert_array_equal(model.predict(images[:1000]), whole.argmax(axis=1))
    batched = model.evaluate(images[:1000], labels[:1000])
    assert batched.accuracy == whole_eval.accuracy and batched.loss == pytest.approx(whole_eval.loss, rel=1e-6)
