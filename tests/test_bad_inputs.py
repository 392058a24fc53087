"""Bad inputs through every way in: config files, checkpoints, dataset files, command lines.

Each one gives a one-line error naming what is at fault, the right exit code (2 for what was
typed: options, config, paths naming no file; 1 for bad contents), no traceback, and writes
nothing: no run directory, no cached file that was not verified.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import TinyDataset, closed_port, idx_images, idx_labels, mlp, sha256

from mlp_cli.config_file import load_config
from mlp_cli.data import registry as datasets
from mlp_cli.data.cache import ensure_dataset, load_dataset
from mlp_cli.errors import DataError
from mlp_cli.nn.network import init_params
from mlp_cli.training.checkpoint import FORMAT_VERSION, save_checkpoint


def error_line(result, exit_code: int) -> str:
    """The single red line of a failed command; no traceback, the expected exit code."""
    assert result.exit_code == exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def cache_is_empty() -> bool:
    """Nothing was downloaded into this test's own cache (conftest points MLP_DATA_DIR at it)."""
    return not any(Path(os.environ["MLP_DATA_DIR"]).iterdir())


# -- config files --------------------------------------------------------------------------------

CONFIGS = [
    ("yaml-syntax", "model:\n  hidden: 3\n  - x\n", "line 3, column 3: YAML syntax error"),
    ("yaml-unclosed", "train: {epochs: 3\n", "line 2, column 1: YAML syntax error"),
    ("yaml-tab", "model:\n\thidden: 3\n", "line 2, column 1: YAML syntax error"),
    ("unknown-key", "model:\n  hiden: 3\n", "unknown key 'model.hiden' (did you mean 'model.hidden'?)"),
    ("unknown-section", "optimiser:\n  name: adam\n", "unknown section 'optimiser' (did you mean 'optimizer'?)"),
    ("wrong-type-int", "train:\n  epochs: ten\n", "train.epochs = 'ten' (str); expected an integer"),
    ("wrong-type-bool", "train:\n  shuffle: maybe\n", "train.shuffle = 'maybe' (str); expected true or false"),
    ("wrong-type-float", "optimizer:\n  lr: [0.1]\n", "optimizer.lr = [0.1] (list); expected a number"),
    ("zero-hidden", "model:\n  hidden: 0\n", "model.hidden = 0; expected an integer in [1, 100000]"),
    ("zero-epochs", "train:\n  epochs: 0\n", "train.epochs = 0; expected an integer in [1, 100000]"),
    ("negative-batch", "train:\n  batch_size: -1\n", "train.batch_size = -1; expected an integer in [1, 1000000000]"),
    ("negative-dev", "data:\n  dev_size: -5\n", "data.dev_size = -5; expected an integer in [0, 1000000000]"),
    ("zero-lr", "optimizer:\n  lr: 0\n", "optimizer.lr = 0.0; expected a number > 0.0"),
    ("negative-lr", "optimizer:\n  lr: -0.5\n", "optimizer.lr = -0.5; expected a number > 0.0"),
    ("huge-lr", "optimizer:\n  lr: 1" + "0" * 400 + "\n", "optimizer.lr = inf; expected a finite number"),
    ("unknown-optimizer", "optimizer:\n  name: rmsprop\n", "optimizer.name = 'rmsprop' is not one of sgd"),
    ("optimizer-typo", "optimizer:\n  name: adma\n", "(did you mean 'adam'?)"),
    ("unknown-schedule", "schedule:\n  name: linear\n", "schedule.name = 'linear' is not one of constant"),
    ("empty", "", "is empty; start from configs/default.yaml"),
    ("only-comments", "# nothing here\n", "is empty"),
    ("a-list", "- model\n- train\n", "must be a mapping of sections, got ['model', 'train'] (list)"),
    ("a-section-list", "model:\n  - hidden\n", "section 'model' must be a mapping of keys to values"),
    ("deeply-nested", "model: " + "[" * 1000 + "\n", "nested too deeply"),
    ("python-tag", "model: !!python/object:os.system {}\n", "YAML syntax error"),
]


@pytest.mark.parametrize(("text", "fragment"), [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_bad_config_file_is_one_line_exit_2_and_writes_nothing(mnist_data_dir, tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)

    result = mlp("train", "--config", path, "--out", tmp_path / "run", "--data-dir", mnist_data_dir)

    line = error_line(result, 2)
    assert f"config {path}" in line and fragment in line
    assert not (tmp_path / "run").exists() and cache_is_empty()


@pytest.mark.parametrize("kind", ["directory", "not-utf8", "missing"])
def test_config_that_is_not_a_readable_text_file(tmp_path, kind):
    path = tmp_path / "c.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-utf8":
        path.write_bytes(b"model:\n  hidden: \xff\xfe\n")
    fragment = {"directory": "is a directory", "not-utf8": "cannot read config", "missing": "not found"}[kind]

    result = mlp("train", "--config", path, "--out", tmp_path / "run")

    assert fragment in error_line(result, 2) and str(path) in result.stderr
    assert not (tmp_path / "run").exists() and cache_is_empty()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("data:\n  dev_size: 60000\n", "leaves no training examples"),
        # (a batch larger than the training set is no error: one smaller batch, see test_config.py)
    ],
)
def test_config_that_does_not_fit_the_data(mnist_data_dir, tmp_path, text, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(text)

    result = mlp("train", "-c", path, "--out", tmp_path / "run", "--data-dir", mnist_data_dir)

    assert fragment in error_line(result, 2)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["info"], ["gradcheck", "--samples", "1"]])
def test_other_commands_reading_configs_refuse_bad_ones_too(tmp_path, command):
    path = tmp_path / "c.yaml"
    for text, fragment in (("model:\n  hiden: 3\n", "did you mean 'model.hidden'"),
                           ("model: [\n", "YAML syntax error"), ("", "is empty")):
        path.write_text(text)
        assert fragment in error_line(mlp(*command, "--config", path), 2)


# -- checkpoints ---------------------------------------------------------------------------------

CONFIG = {"model.hidden": 16, "train.batch_size": 100, "train.epochs": 3, "data.limit": 2000,
          "data.dev_size": 1000}


@pytest.fixture
def good_checkpoint(tmp_path) -> Path:
    """A valid checkpoint of a 784-16-10 run (epoch 1 of 3), made without training."""
    config = load_config(None, CONFIG)
    path = tmp_path / "run" / "last.npz"
    path.parent.mkdir()
    meta = {"config": config.to_dict(), "epoch": 1, "step": 20, "best_epoch": 1, "best_accuracy": 0.5,
            "preprocessing": {"method": "standardize", "mean": 33.3, "std": 78.6}}
    save_checkpoint(path, init_params(16, np.random.default_rng(0)), {}, meta)
    return path


def arrays_of(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def meta_of(path: Path) -> dict:
    return json.loads(arrays_of(path)["meta"].tobytes())


def with_arrays(**changes):
    def make(good: Path, bad: Path) -> None:
        arrays = arrays_of(good)
        for name, value in changes.items():
            name = name.replace("__", "/")
            if value is None:
                arrays.pop(name)
            else:
                arrays[name] = value(arrays[name]) if callable(value) else value
        np.savez(bad, **arrays)
    return make


def with_meta(**changes):
    def encode(meta_array):
        meta = json.loads(meta_array.tobytes())
        meta.update(changes)
        return np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return with_arrays(meta=encode)


def nan_at_corner(W1):
    W1 = W1.copy()
    W1[0, 0] = np.nan
    return W1


def zip_of(members: dict[str, bytes]):
    def make(good: Path, bad: Path) -> None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        bad.write_bytes(buffer.getvalue())
    return make


def bytes_of(change):
    def make(good: Path, bad: Path) -> None:
        bad.write_bytes(change(good.read_bytes()))
    return make


def flip_middle_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


BAD_CHECKPOINTS = [
    ("truncated", bytes_of(lambda d: d[: len(d) // 2]), "is truncated or corrupt (File is not a zip file)"),
    ("corrupt-byte", bytes_of(flip_middle_byte), "is truncated or corrupt (Bad CRC-32 for file"),
    ("text", bytes_of(lambda d: b"not a checkpoint\n"), "is not a .npz archive (not a zip file)"),
    ("empty", bytes_of(lambda d: b""), "is empty (0 bytes)"),
    ("bare-npy", bytes_of(lambda d: npy_bytes(np.zeros(3))), "is not a .npz archive (not a zip file)"),
    ("zip-not-checkpoint", zip_of({"readme.txt": b"hello"}), "missing arrays; this is not an mlp checkpoint"),
    ("zip-non-npy-member", zip_of({**{f"param/{k}.npy": npy_bytes(np.zeros(1)) for k in ("W1", "b1", "W2", "b2")},
                                   "meta": b"{}"}), "member 'meta' is not a .npy array"),
    ("missing-W2", with_arrays(param__W2=None), "missing arrays"),
    ("missing-meta", with_arrays(meta=None), "missing arrays"),
    ("shape-b1", with_arrays(param__b1=np.zeros(17, np.float32)), "b1 has shape (17,); expected (16,)"),
    ("shape-W1", with_arrays(param__W1=np.zeros((28, 16), np.float32)),
     "W1 has shape (28, 16); expected (784, hidden)"),
    ("dtype-int", with_arrays(param__W1=lambda W1: W1.astype(np.int32)), "W1 has dtype int32"),
    ("dtype-mixed", with_arrays(param__b2=lambda b2: b2.astype(np.float64)), "b2 has dtype float64; expected float32"),
    ("nan", with_arrays(param__W1=nan_at_corner), "W1 contains NaN or infinite values"),
    ("inf", with_arrays(param__b2=lambda b2: np.full_like(b2, np.inf)), "b2 contains NaN or infinite values"),
    ("future-version", with_meta(format_version=FORMAT_VERSION + 1), "newer than this mlp understands"),
    ("bool-version", with_meta(format_version=True), "format version True is not valid"),
    ("meta-not-json", with_arrays(meta=np.frombuffer(b"{oops", np.uint8)), "metadata is not valid JSON"),
    ("config-not-mapping", with_meta(config=["model"]), "metadata 'config' is not a mapping of sections"),
    ("section-not-mapping", with_meta(config={"model": 16}), "metadata 'config' is not a mapping of sections"),
    ("epoch-not-int", with_meta(epoch="three"), "metadata 'epoch' = 'three'; expected a whole number from 0 to"),
    ("epoch-huge", with_meta(epoch=10**30), "metadata 'epoch' = 1000000000000000000000000000000; expected a whole"),
    ("best-nan", with_meta(best_accuracy=float("nan")), "metadata 'best_accuracy' = nan; expected an accuracy in"),
    ("best-inf", with_meta(best_accuracy=float("inf")), "metadata 'best_accuracy' = inf; expected an accuracy in"),
    ("accuracy-above-1", with_meta(accuracy=1.5), "metadata 'accuracy' = 1.5; expected an accuracy in [0, 1]"),
    ("step-negative", with_meta(step=-1), "metadata 'step' = -1"),
    ("no-preprocessing", with_meta(preprocessing=None), "preprocessing record is malformed"),
    ("bad-preprocessing", with_meta(preprocessing={"method": "scale", "mean": 0, "std": 0}),
     "preprocessing record is invalid"),
    ("huge-preprocessing", with_meta(preprocessing={"method": "x" * 900_000, "mean": 0, "std": 1}),
     "preprocessing record is invalid: {'method': 'xxx"),  # and the line stays short: see the test
]


@pytest.mark.parametrize("command", ["eval", "resume", "info"])
@pytest.mark.parametrize(("make", "fragment"), [c[1:] for c in BAD_CHECKPOINTS], ids=[c[0] for c in BAD_CHECKPOINTS])
def test_bad_checkpoint_is_one_line_naming_the_file(good_checkpoint, tmp_path, command, make, fragment):
    bad = tmp_path / "bad.npz"
    make(good_checkpoint, bad)
    args = {"eval": ["eval", bad], "resume": ["train", "--resume", bad], "info": ["info", bad]}[command]

    line = error_line(mlp(*args), 1)

    assert f"checkpoint {bad}" in line and fragment in line
    assert len(line) < 1000  # what the file holds is quoted, not echoed whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "run"] and cache_is_empty()


def test_pickled_objects_are_refused_and_never_unpickled(good_checkpoint, tmp_path):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("ran",))

    arrays = arrays_of(good_checkpoint)
    arrays["param/b1"] = np.array([Payload()], dtype=object)
    bad = tmp_path / "evil.npz"
    np.savez(bad, **arrays)  # numpy pickles object arrays into the archive

    for args in (["eval", bad], ["train", "--resume", bad], ["info", bad], ["plot", "--weights", bad]):
        line = error_line(mlp(*args), 1)
        assert f"checkpoint {bad} contains pickled objects, which mlp never loads" in line
    assert not marker.exists()


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--hidden", "64"], "the config has model.hidden = 64 but the checkpoint was trained with 16"),
        (["--set", "model.dtype=float64"], "model.dtype = float64 but the checkpoint was trained with float32"),
        (["--optimizer", "adam", "--set", "optimizer.lr=0.01"], "optimizer.name = adam"),
    ],
)
def test_resume_with_a_different_architecture_is_refused_and_writes_nothing(
    good_checkpoint, mnist_data_dir, flags, fragment
):
    run = good_checkpoint.parent
    before = {p.name: p.read_bytes() for p in run.iterdir()}

    line = error_line(mlp("train", "--resume", good_checkpoint, "--data-dir", mnist_data_dir, *flags), 1)

    assert "cannot resume" in line and fragment in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_with_a_mangled_metrics_file_names_it(good_checkpoint, mnist_data_dir):
    metrics = good_checkpoint.parent / "metrics.jsonl"
    first = '{"epoch": 1, "step": 20, "train_loss": 0.5, "train_accuracy": 0.8}'  # a good row, then a torn one
    metrics.write_text(first + '\n{"epoch": 2, "st\n')

    line = error_line(mlp("train", "--resume", good_checkpoint, "--data-dir", mnist_data_dir, "-q"), 1)

    assert f"metrics file {metrics} line 2 is not valid JSON" in line


def test_checkpoint_path_that_is_a_directory_or_missing(tmp_path):
    # a path that names no file is a mistake on the command line: exit 2, like a bad option
    assert "is a directory" in error_line(mlp("eval", tmp_path), 2)
    assert f"checkpoint {tmp_path / 'none.npz'} not found" in error_line(mlp("eval", tmp_path / "none.npz"), 2)
    assert "not found" in error_line(mlp("train", "--resume", tmp_path / "none.npz"), 2)


# -- dataset files -------------------------------------------------------------------------------

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"


def serve_registered(tiny: TinyDataset, monkeypatch, mirror_server, filename: str, payload: bytes) -> str:
    """Serve ``payload`` as ``filename`` *and* register its checksum, as if the source itself
    were bad: the download verifies, so only reading the file can find the fault."""
    files = dict(tiny.gz)
    files[filename] = gzip.compress(payload, mtime=0)
    checksums = {**tiny.spec.checksums, filename: sha256(payload)}
    monkeypatch.setitem(datasets.DATASETS, "mnist", tiny.spec._replace(checksums=checksums))
    return mirror_server.add("m", files)


RNG = np.random.default_rng(1)
BAD_FILES = [
    ("wrong-magic", TRAIN_IMAGES, lambda t: idx_labels(t.labels["train"]), "magic number 0x00000801 is not 0x00000803"),
    ("not-idx", TRAIN_IMAGES, lambda t: b"<html>404</html>", "not an IDX file"),
    ("fewer-images", TRAIN_IMAGES, lambda t: idx_images(t.images["train"][:4]), "4 images, expected 5"),
    ("fewer-labels", TRAIN_LABELS, lambda t: idx_labels(t.labels["train"][:3]), "3 labels, expected 5"),
    ("truncated", TRAIN_IMAGES, lambda t: idx_images(t.images["train"])[:-100], "truncated"),
    # trailing bytes beyond the registry's size never reach the parser: tests/test_hostile_downloads.py
    ("count-lies", TRAIN_LABELS, lambda t: idx_labels(t.labels["train"])[:4] + (7).to_bytes(4, "big")
     + bytes(t.labels["train"]), "a 7 labels file has 15"),
    ("label-out-of-range", TRAIN_LABELS, lambda t: idx_labels(np.array([1, 2, 12, 3, 4], np.uint8)),
     "label 12 at index 2 is outside 0..9"),
    ("image-size", TRAIN_IMAGES, lambda t: idx_images(RNG.integers(0, 255, (5, 28, 27), dtype=np.uint8)),
     "images are 28x27, expected 28x28"),
]


@pytest.mark.parametrize(("filename", "payload", "fragment"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_corrupt_dataset_file_is_one_line_naming_it_and_no_array_is_written(
    tiny_mnist, mirror_server, monkeypatch, tmp_path, filename, payload, fragment
):
    url = serve_registered(tiny_mnist, monkeypatch, mirror_server, filename, payload(tiny_mnist))

    line = error_line(mlp("download-data", "--data-dir", tmp_path, "--mirror", url, "-q"), 1)

    assert f"{tmp_path / 'mnist' / filename}: " in line and fragment in line
    assert not list((tmp_path / "mnist").glob("train-*.npy"))
    with pytest.raises(DataError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_dataset("mnist", "train", data_dir=tmp_path, download=False)  # and again, the same way


def test_corrupt_cached_file_is_dropped_and_never_trusted(tiny_mnist, mirror_server, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)
    ensure_dataset("mnist", tmp_path, [url])
    cached = tmp_path / "mnist" / TRAIN_IMAGES
    cached.write_bytes(cached.read_bytes()[:-20])  # cut short on disk
    (tmp_path / "mnist" / "train-images.npy").unlink()
    dead = f"http://127.0.0.1:{closed_port()}/mnist/"

    result = mlp("download-data", "--data-dir", tmp_path, "--mirror", dead)

    assert result.exit_code == 1
    assert f"{cached}: not a valid gzip file" in result.stderr  # what was wrong with the cached copy
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: could not download {TRAIN_IMAGES}")
    assert not cached.exists() and not (tmp_path / "mnist" / "train-images.npy").exists()
    assert ensure_dataset("mnist", tmp_path, [url]).downloaded == (TRAIN_IMAGES,)


# -- command lines -------------------------------------------------------------------------------

CLICK_ERRORS = [  # (arguments, the command whose usage line is shown)
    ([], ""),
    (["nosuch"], ""),
    (["--bogus"], ""),
    (["download-data", "--bogus"], "download-data"),
    (["download-data", "--dataset"], "download-data"),
    (["download-data", "--dataset", "cifar"], "download-data"),
    (["download-data", "--force=yes"], "download-data"),
    (["download-data", "extra"], "download-data"),
    (["eval"], "eval"),
    (["eval", "a.npz", "b.npz", "--errors"], "eval"),  # several models are fine, an option without value not
    (["runs", "--sort"], "runs"),
    (["sweep", "--jobs", "0"], "sweep"),
    (["sweep", "--trials", "many"], "sweep"),
    (["eval", "a.npz", "--errors", "-1"], "eval"),
    (["eval", "a.npz", "--errors", "many"], "eval"),
    (["eval", "a.npz", "--split"], "eval"),
    (["gradcheck", "--batch", "0"], "gradcheck"),
    (["gradcheck", "--hidden", "x"], "gradcheck"),
    (["gradcheck", "--samples", "0"], "gradcheck"),
    (["gradcheck", "--l2", "-1"], "gradcheck"),
    (["gradcheck", "--seed"], "gradcheck"),
    (["info", "--batch", "0"], "info"),
    (["info", "--hidden", "abc"], "info"),
    (["info", "a.npz", "b.npz"], "info"),
    (["plot", "--scale", "99", "run"], "plot"),
    (["plot", "--columns", "0", "run"], "plot"),
    (["plot", "--weights"], "plot"),
    (["predict"], "predict"),
    (["predict", "a.npz"], "predict"),
    (["predict", "a.npz", "x.png", "--top", "11"], "predict"),
    (["predict", "a.npz", "x.png", "--top"], "predict"),
    (["train", "--hidden", "abc"], "train"),
    (["train", "--hidden"], "train"),
    (["train", "--epochs", "1.5"], "train"),
    (["train", "--lr", "fast"], "train"),
    (["train", "--set"], "train"),
    (["train", "--bogus"], "train"),
    (["train", "extra"], "train"),
]


@pytest.mark.parametrize(("args", "command"), CLICK_ERRORS, ids=[" ".join(a) or "<none>" for a, _ in CLICK_ERRORS])
def test_malformed_command_line_is_one_line_pointing_at_the_help(tmp_path, monkeypatch, args, command):
    monkeypatch.chdir(tmp_path)

    result = mlp(*args)

    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    if not args:  # `mlp` alone prints the help
        assert result.exit_code == 2 and "Usage: mlp [OPTIONS] COMMAND" in result.output
    else:
        assert error_line(result, 2).endswith(f"(see: {f'mlp {command}'.rstrip()} --help)")
    assert list(tmp_path.iterdir()) == [] and cache_is_empty()


def test_a_misspelled_option_gets_a_suggestion():
    line = error_line(mlp("train", "--hiden", "300"), 2)
    assert line == "error: No such option: --hiden (did you mean --hidden?) (see: mlp train --help)"
    assert "did you mean" not in error_line(mlp("train", "--bogus"), 2)


def test_every_command_is_covered_above():
    listed = mlp("--help").output
    commands = {c for args, c in CLICK_ERRORS if c}
    assert commands == {"download-data", "eval", "gradcheck", "info", "plot", "predict", "runs", "sweep", "train"}
    assert all(f" {c} " in listed for c in commands)


TOOL_USAGE_ERRORS = [  # bad combinations the tool itself finds: one red line, exit 2
    (["download-data", "--mirror", "ftp://example.org/"], "unsupported scheme 'ftp'"),
    (["eval", "a.npz", "--split", "validation"], "--split 'validation' is not one of test, dev, train"),
    (["info", "a.npz", "--config", "c.yaml"], "give a checkpoint or --config, not both"),
    (["plot"], "give at least one run directory"),
    (["plot", "--terminal", "--out", "x.png", "run"], "--terminal draws in the terminal"),
    (["train", "--set", "model.hidden"], "--set expects section.key=value"),
    (["train", "--set", "hidden=3"], "must look like section.key"),
    (["train", "--set", "nosuch.key=1"], "unknown section 'nosuch'"),
    (["train", "--hidden", "0"], "model.hidden = 0"),
    (["train", "--optimizer", "rmsprop"], "optimizer.name = 'rmsprop' is not one of"),
    (["sweep", "--set", "optimizer.lr=0.1,-1"], "trial 001-lr=-1: optimizer.lr = -1"),
    (["sweep", "tiny", "--set", "model.hidden=3,4"], "--set goes with --config"),
    (["sweep", "--executor", "spark"], "--executor 'spark' is not one of local, dask"),
    (["runs", "--sort", "colour"], "--sort 'colour'"),
    # did you mean: names, and choices whatever their case
    (["train", "--optimizer", "SGD"], "optimizer.name = 'SGD' is not one of sgd, momentum, nesterov, adam, adamw "
                                      "(did you mean 'sgd'?)"),
    (["train", "--dataset", "Fashion-MNIST"], "(did you mean 'fashion-mnist'?)"),
    (["train", "-c", "CS229"], "config 'CS229' not found (did you mean 'cs229'?)"),
    (["sweep", "tinyy"], "sweep 'tinyy' not found (did you mean 'tiny'?)"),
    (["sweep", "--executor", "LOCAL"], "--executor 'LOCAL' is not one of local, dask (did you mean 'local'?)"),
    (["download-data", "--dataset", "MNIST"], "(did you mean 'mnist'?)"),
    (["eval", "last.np"], "checkpoint last.np not found"),
]


@pytest.mark.parametrize(("args", "fragment"), TOOL_USAGE_ERRORS, ids=[" ".join(a) for a, _ in TOOL_USAGE_ERRORS])
def test_bad_combination_is_one_line_and_exit_2(tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)

    assert fragment in error_line(mlp(*args), 2)
    assert list(tmp_path.iterdir()) == [] and cache_is_empty()


def test_run_directory_that_is_a_file_is_refused_and_kept(mnist_data_dir, tmp_path):
    out = tmp_path / "run"
    out.write_text("keep me")

    line = error_line(mlp("train", "--data-dir", mnist_data_dir, "--out", out, "--hidden", "8", "--batch", "100",
                          "--set", "data.limit=1000"), 2)

    assert f"run directory {out} exists and is not a directory" in line
    assert out.read_text() == "keep me"
