"""`mlp export`: each format read back by its own ecosystem's reader agrees with the tool.

ONNX models run under onnxruntime and onnx's ReferenceEvaluator on all 10,000 real test images
and must give ``Model.predict_proba``'s probabilities to 1e-5 and exactly its classes, for both
normalisations (and none), float32 and float64 networks, a dropout-trained one and a
Fashion-MNIST one. safetensors files load with the safetensors library into the layout of
PyTorch's ``nn.Sequential`` (and into torch itself where it is installed: CI installs it). The
snippets of docs/elsewhere.md are taken from the page and run as written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from helpers import REPO_ROOT, mlp
from onnx.reference import ReferenceEvaluator
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file

import mlp_cli
from mlp_cli.data import registry as datasets
from mlp_cli.nn.network import logits, sigmoid
from mlp_cli.reports.export.registry import EXPORT_FORMATS

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SMALL = {"model.hidden": 24, "train.epochs": 1, "train.batch_size": 100, "data.limit": 3000, "data.dev_size": 1000}
# name -> overrides of SMALL: both normalisations and none, both dtypes, dropout, Fashion-MNIST
CASES = {
    "standardize-float32": {},
    "scale-float64": {"data.preprocess": "scale", "model.dtype": "float64"},
    "none-float32": {"data.preprocess": "none", "optimizer.lr": 0.01},
    "dropout-standardize-float64": {"model.dtype": "float64", "train.dropout": 0.3, "train.input_dropout": 0.1},
    "fashion-scale-float32": {"data.dataset": "fashion-mnist", "data.preprocess": "scale"},
}


def need(what: str, present: bool) -> None:
    """Skip without ``what``; with $CI set, fail instead (CI must provide it)."""
    if not present:
        reason = f"{what} is not installed"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must provide it")
        pytest.skip(reason)


def has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def fashion_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(f"Fashion-MNIST ({FASHION_MNIST}; apt-get install dataset-fashion-mnist)",
         (FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").is_file())
    from mlp_cli.data.cache import ensure_dataset

    directory = tmp_path_factory.mktemp("fashion-data")
    ensure_dataset("fashion-mnist", data_dir=directory, mirrors=(str(FASHION_MNIST),))
    return directory


@pytest.fixture(scope="module", params=list(CASES))
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run directory, data directory) of a tiny training of one case, a few seconds each."""
    overrides = {**SMALL, **CASES[request.param]}
    fashion = overrides.get("data.dataset") == "fashion-mnist"
    data_dir = request.getfixturevalue("fashion_data_dir" if fashion else "mnist_data_dir")
    out = tmp_path_factory.mktemp("export") / request.param
    mlp_cli.train(None, overrides=overrides, out=out, data_dir=data_dir)
    return out, data_dir


def model_and_pixels(trained: tuple[Path, Path]) -> tuple[mlp_cli.Model, np.ndarray]:
    run, data_dir = trained
    model = mlp_cli.load_model(run)
    images, _ = mlp_cli.load_dataset(model.dataset, "test", data_dir=data_dir)
    return model, images.reshape(len(images), 784).astype(np.float32)  # raw pixels, float32 (10000, 784)


def export(source: Path, out: Path, fmt: str = "onnx", *extra: str) -> None:
    result = mlp("export", source, "--format", fmt, "--out", out, *extra)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout


def test_onnx_gives_the_models_probabilities_on_every_test_image(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, pixels = model_and_pixels(trained)
    export(trained[0], tmp_path / "model.onnx")
    expected = model.predict_proba(pixels)  # (10000, 10)
    expected_logits = logits(model.params, model.inputs(pixels))
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities", "logits"]
    reference = ReferenceEvaluator(str(tmp_path / "model.onnx"))
    for name, run in (("onnxruntime", session.run), ("reference", reference.run)):
        with np.errstate(over="ignore", invalid="ignore"):  # the reference sigmoid computes exp(z) / (1 + exp(z))
            # for every z, using it only where z <= 0: inf / inf where z is large, then discarded
            probabilities, scores = run(None, {"pixels": pixels})
        assert probabilities.dtype == np.float32 and probabilities.shape == (10_000, 10), name
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(probabilities.argmax(axis=1), expected.argmax(axis=1), err_msg=name)
        np.testing.assert_allclose(scores, expected_logits, rtol=1e-4, atol=1e-4, err_msg=name)


def test_onnx_records_what_it_is_and_loads_in_old_runtimes(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = trained
    export(run, tmp_path / "model.onnx")
    model = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 7 and [(o.domain, o.version) for o in model.opset_import] == [("", 13)]
    meta = {prop.key: prop.value for prop in model.metadata_props}
    ckpt = mlp_cli.load_model(run).checkpoint
    dataset = ckpt.config["data"]["dataset"]
    assert meta["dataset"] == dataset and meta["tool_version"] == mlp_cli.__version__
    assert json.loads(meta["class_names"]) == list(datasets.DATASETS[dataset].classes)
    assert meta["checkpoint_sha256"] == hashlib.sha256((run / "best.npz").read_bytes()).hexdigest()
    assert json.loads(meta["preprocessing"]) == ckpt.meta["preprocessing"]
    ops = [node.op_type for node in model.graph.node]
    method = ckpt.meta["preprocessing"]["method"]
    assert ("Sub" in ops) == (method == "standardize") and ("Div" in ops) == (method != "none")
    assert "Gemm" not in ops  # onnxruntime < 1.18 fuses Gemm + Sigmoid, a kernel without float64 (to_onnx.py)


def test_safetensors_is_pytorchs_sequential_layout(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, pixels = model_and_pixels(trained)
    export(trained[0], tmp_path / "model.safetensors", "safetensors")
    tensors = load_file(str(tmp_path / "model.safetensors"))
    params = model.params
    assert sorted(tensors) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    np.testing.assert_array_equal(tensors["0.weight"], params.W1.T)  # (h, 784): nn.Linear's (out, in)
    np.testing.assert_array_equal(tensors["2.weight"], params.W2.T)  # (10, h)
    np.testing.assert_array_equal(tensors["0.bias"], params.b1)
    np.testing.assert_array_equal(tensors["2.bias"], params.b2)
    assert {t.dtype for t in tensors.values()} == {params.dtype}  # as trained
    with safe_open(str(tmp_path / "model.safetensors"), framework="np") as handle:
        meta = handle.metadata()
    prep = json.loads(meta["preprocessing"])
    X = (pixels.astype(params.dtype) - prep["mean"]) / prep["std"]  # what the header tells a reader to do
    A1 = sigmoid(X @ tensors["0.weight"].T + tensors["0.bias"])  # nn.Linear: x @ weight.T + bias
    Z2 = A1 @ tensors["2.weight"].T + tensors["2.bias"]
    np.testing.assert_array_equal(Z2.argmax(axis=1), model.predict(pixels))
    assert meta["format"] == "pt" and json.loads(meta["class_names"]) == list(datasets.class_names(model.dataset))


TORCH_CHECK = """
import sys, numpy as np, torch
from safetensors.torch import load_file
state = load_file(sys.argv[1])
hidden = state["0.weight"].shape[0]
net = torch.nn.Sequential(torch.nn.Linear(784, hidden), torch.nn.Sigmoid(), torch.nn.Linear(hidden, 10))
net.to(state["0.weight"].dtype).load_state_dict(state)
with torch.no_grad():
    np.save(sys.argv[3], torch.softmax(net(torch.from_numpy(np.load(sys.argv[2]))), dim=1).numpy())
"""


def test_torch_builds_the_sequential_from_safetensors(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """In a child process: torch takes 200 MB that would stay in this one (and in every child it
    forks, which the memory bounds of tests/test_hostile_*.py measure)."""
    need("torch (pip install torch, or the bench extra)", has_torch())
    model, pixels = model_and_pixels(trained)
    export(trained[0], tmp_path / "model.safetensors", "safetensors")
    np.save(tmp_path / "X.npy", model.inputs(pixels))  # normalised as the header says (tested above)
    run_snippet(TORCH_CHECK, tmp_path, "model.safetensors", "X.npy", "P.npy")
    P = np.load(tmp_path / "P.npy")
    np.testing.assert_array_equal(P.argmax(axis=1), model.predict(pixels))
    np.testing.assert_allclose(P, model.predict_proba(pixels), atol=1e-5)


# -- one small run for the rest ----------------------------------------------------------------


@pytest.fixture(scope="module")
def run(mnist_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export-one") / "runs" / "cs229"
    mlp_cli.train(None, overrides={**SMALL, "model.hidden": 16}, out=out, data_dir=mnist_data_dir)
    return out


@pytest.mark.parametrize("fmt", list(EXPORT_FORMATS))
def test_every_registered_format_writes_its_default_file(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         fmt: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = mlp("export", run / "best.npz", "--format", fmt)  # a checkpoint file; --out left to the registry
    assert result.exit_code == 0, result.output
    written = tmp_path / EXPORT_FORMATS[fmt].default_out
    assert written.stat().st_size > 16 * 784 * 4  # W1 at least
    assert [p.name for p in tmp_path.iterdir()] == [written.name]  # no temporary file left behind
    assert fmt in mlp("export", "--help").stdout


def test_a_run_directory_exports_its_best_npz(run: Path, tmp_path: Path) -> None:
    other = tmp_path / "run"
    other.mkdir()
    (other / "best.npz").write_bytes((run / "best.npz").read_bytes())
    (other / "last.npz").write_bytes(b"not this one")
    export(other, tmp_path / "model.onnx")
    meta = {prop.key: prop.value for prop in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert meta["checkpoint_sha256"] == hashlib.sha256((run / "best.npz").read_bytes()).hexdigest()


def test_missing_folders_of_out_are_made_and_a_file_in_the_way_is_named(run: Path, tmp_path: Path) -> None:
    export(run, tmp_path / "new" / "folder" / "model.onnx")
    (tmp_path / "a-file").write_text("x")
    result = mlp("export", run, "--out", tmp_path / "a-file" / "model.onnx")
    assert result.exit_code == 2
    assert f"cannot write {tmp_path / 'a-file' / 'model.onnx'}: {tmp_path / 'a-file'} is a file" in result.stderr


def test_unknown_format_lists_the_registry(run: Path, tmp_path: Path) -> None:
    result = mlp("export", run, "--format", "tflite", "--out", tmp_path / "m")
    assert result.exit_code == 2 and not (tmp_path / "m").exists()
    assert "unknown export format 'tflite'; choose one of: onnx, safetensors" in result.stderr


def test_existing_out_needs_overwrite(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"mine")
    refused = mlp("export", run, "--out", out)
    assert refused.exit_code == 2 and "already exists; pass --overwrite" in refused.stderr
    assert out.read_bytes() == b"mine"
    export(run, out, "onnx", "--overwrite")
    assert onnx.load(str(out)).graph.input[0].name == "pixels"


def test_an_export_over_its_own_checkpoint_is_refused_even_with_overwrite(run: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(run, tmp_path / "run"))
    before = (copy / "best.npz").read_bytes()
    refused = mlp("export", copy, "--out", copy / "best.npz", "--overwrite")
    assert refused.exit_code == 2 and "is the checkpoint being exported" in refused.stderr, refused.output
    assert (copy / "best.npz").read_bytes() == before


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_out_that_is_not_a_file_is_refused_and_left_alone(run: Path, tmp_path: Path, kind: str) -> None:
    out = tmp_path / "target"
    if kind == "directory":
        out.mkdir()
        (out / "keep").write_text("x")
    else:
        os.mkfifo(out)
    before = (os.lstat(out).st_mode, os.stat(out).st_mode, sorted(p.name for p in tmp_path.iterdir()))
    result = mlp("export", run, "--out", out, "--overwrite")  # --overwrite does not make them files
    assert result.exit_code == 2, result.output
    assert "is a directory" in result.stderr if kind == "directory" else "not a regular file" in result.stderr
    assert (os.lstat(out).st_mode, os.stat(out).st_mode, sorted(p.name for p in tmp_path.iterdir())) == before
    assert kind != "directory" or (out / "keep").read_text() == "x"


def test_a_link_at_out_is_replaced_by_the_file_never_followed(run: Path, tmp_path: Path) -> None:
    """The tool's one write rule: a link at --out is an existing file (--overwrite replaces the
    link itself); what it points to, here a device, is never written."""
    out = tmp_path / "target"
    out.symlink_to(os.devnull)
    refused = mlp("export", run, "--out", out)
    assert refused.exit_code == 2 and "already exists; pass --overwrite" in refused.stderr and out.is_symlink()
    export(run, out, "onnx", "--overwrite")
    assert not out.is_symlink() and stat.S_ISREG(os.lstat(out).st_mode) and stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert onnx.load(str(out)).graph.input[0].name == "pixels"


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty"),
    (b"\x80\x04\x95 pickle", "is not a .npz archive"),
    (b"PK\x03\x04" + b"\0" * 64, "truncated or corrupt"),
])
def test_a_corrupt_checkpoint_is_one_line_and_writes_nothing(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(content)
    result = mlp("export", bad, "--out", tmp_path / "model.onnx")
    assert result.exit_code == 1 and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


def test_a_run_without_best_npz_and_a_missing_file_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "empty-run").mkdir()
    result = mlp("export", tmp_path / "empty-run", "--out", tmp_path / "m.onnx")
    assert result.exit_code == 2 and "without best.npz" in result.stderr
    result = mlp("export", tmp_path / "nowhere.npz", "--out", tmp_path / "m.onnx")
    assert result.exit_code == 2 and "not found" in result.stderr


@pytest.mark.parametrize("fmt", list(EXPORT_FORMATS))
def test_a_missing_extra_says_how_to_install_it(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                fmt: str) -> None:
    package = EXPORT_FORMATS[fmt].requires
    for name in [package, *(m for m in sys.modules if m.startswith(package + "."))]:
        monkeypatch.setitem(sys.modules, name, None)  # `import onnx` fails as if it were not installed
    monkeypatch.delitem(sys.modules, f"mlp_cli.reports.export.{EXPORT_FORMATS[fmt].module}", raising=False)
    result = mlp("export", run, "--format", fmt, "--out", tmp_path / "m")
    assert result.exit_code == 2 and "pip install -e '.[export]'" in result.stderr
    assert not (tmp_path / "m").exists()


def test_the_command_line_imports_no_export_package() -> None:
    code = "import sys, mlp_cli.cli; print(sorted({'onnx', 'safetensors', 'numpy'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


# -- docs/elsewhere.md's section, run as written ------------------------------------------------------


def readme_blocks(language: str) -> list[str]:
    """The fenced ``language`` blocks of docs/elsewhere.md's "Export" section (``sh runnable`` too)."""
    text = (REPO_ROOT / "docs" / "elsewhere.md").read_text()
    section = text.split("\n## Export: ONNX and safetensors\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}(?: runnable)?\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def readme_dir(run: Path, mnist_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where the README's commands ran: runs/cs229 (the module's run), the files they
    wrote, and digit.png (test image 0, a 7, white on black as MNIST stores it)."""
    here = run.parent.parent
    images, _ = mlp_cli.load_dataset("mnist", "test", data_dir=mnist_data_dir)
    Image.fromarray(images[0]).save(here / "digit.png")
    (commands,) = readme_blocks("sh")
    cwd = Path.cwd()
    os.chdir(here)
    try:
        for line in commands.splitlines():
            args = shlex.split(line.split("#", 1)[0])
            assert args[:2] == ["mlp", "export"], line
            result = mlp(*args[1:])
            assert result.exit_code == 0, (line, result.output)
    finally:
        os.chdir(cwd)
    return here


def run_snippet(code: str, where: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=where, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_readme_onnxruntime_snippet_classifies_the_image(readme_dir: Path, run: Path) -> None:
    onnx_snippet = next(block for block in readme_blocks("python") if "onnxruntime" in block)
    assert len(onnx_snippet.strip().splitlines()) <= 7
    expected = mlp_cli.load_model(run).predict(np.asarray(Image.open(readme_dir / "digit.png")))[0]
    assert run_snippet(onnx_snippet, readme_dir) == str(expected) == "7"


def test_readme_pytorch_snippet_classifies_the_image(readme_dir: Path, run: Path) -> None:
    need("torch (pip install torch, or the bench extra)", has_torch())
    torch_snippet = next(block for block in readme_blocks("python") if "torch" in block)
    expected = mlp_cli.load_model(run).predict(np.asarray(Image.open(readme_dir / "digit.png")))[0]
    assert run_snippet(torch_snippet, readme_dir) == str(expected) == "7"


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_a_checkpoint_too_large_for_memory_is_refused_before_it_is_read_and_nothing_is_written(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """The weights and the encoder's own work (measured: mlp_cli.memory.WORK_BYTES_PER_ENTRY)
    against what is free, before a byte is decompressed: one line giving both figures."""
    from mlp_cli import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 10 << 10)
    out = tmp_path / f"model.{fmt}"

    result = mlp("export", run, "--format", fmt, "--out", out)

    assert result.exit_code == 1, result.output
    assert re.search(r"reading its 784-\d+-10 float32 network needs \d+ KiB of memory but 10 KiB is available",
                     result.stderr), result.stderr
    assert "Traceback" not in result.output and not out.exists()
