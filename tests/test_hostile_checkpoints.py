"""Hostile checkpoints: a few hundred KB that would inflate to gigabytes, metadata built to blow the
parser's stack or integer conversion. Each command runs in a child process under a 1 GiB address
space cap and a time limit, and must refuse the file in one line, quickly, with little memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_inputs import (
    deep_meta,
    digit_image,
    good_checkpoint,
    long_number_meta,
    lying_w1_checkpoint,
    meta_checkpoint,
    npy_of,
    with_members,
    zip_bomb_checkpoint,
)
from limits import GiB, mlp_command, run_limited

COMMANDS = {
    "eval": lambda ckpt, tmp: ["eval", ckpt],
    "predict": lambda ckpt, tmp: ["predict", ckpt, digit_image(tmp / "digit.png")],
    "info": lambda ckpt, tmp: ["info", ckpt],
    "resume": lambda ckpt, tmp: ["train", "--resume", ckpt],
    "plot": lambda ckpt, tmp: ["plot", "--weights", ckpt, "--out", tmp / "w.png"],
    "export": lambda ckpt, tmp: ["export", ckpt, "--out", tmp / "model.onnx"],
}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return good_checkpoint(tmp_path_factory.mktemp("good") / "run" / "last.npz")


@pytest.fixture(scope="module")
def bombs(good: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    return {
        "extra-member": zip_bomb_checkpoint(good, folder / "extra.npz", mib=512),
        "lying-w1": lying_w1_checkpoint(good, folder / "lying.npz", mib=512),
    }


def refuse(args: list, fragment: str, tmp_path: Path) -> None:
    outcome = run_limited(mlp_command(*args), memory=1 * GiB, seconds=60, cwd=tmp_path)
    line = outcome.error_line()
    assert outcome.code == 1 and fragment in line, line
    assert outcome.seconds < 20 and outcome.peak_mib < 400, (outcome.seconds, outcome.peak_mib)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_zip_bomb_member_is_refused_by_every_command_before_it_is_inflated(bombs, tmp_path, command):
    bomb = bombs["extra-member"]
    assert bomb.stat().st_size < 2 << 20  # 512 MiB inside under 2 MB

    refuse(COMMANDS[command](bomb, tmp_path), "member 'extra' is not part of an mlp checkpoint", tmp_path)


@pytest.mark.parametrize("command", ["eval", "info"])
def test_a_member_declaring_more_than_its_array_needs_is_refused_before_it_is_inflated(bombs, tmp_path, command):
    refuse(COMMANDS[command](bombs["lying-w1"], tmp_path), "member 'param/W1' declares", tmp_path)


@pytest.mark.parametrize(
    ("meta", "fragment"),
    [
        (deep_meta(200_000), "metadata is nested more than 16 levels deep"),
        (deep_meta(40), "metadata is nested more than 16 levels deep"),
        (long_number_meta(5000), "metadata holds a number of 5000 digits"),
        (long_number_meta(101), "metadata holds a number of 101 digits"),
    ],
    ids=["nested-200000", "nested-40", "digits-5000", "digits-101"],
)
def test_metadata_built_to_exhaust_the_parser_is_one_line(good, tmp_path, meta, fragment):
    bad = meta_checkpoint(good, tmp_path / "bad.npz", meta)

    for command in ("eval", "info"):
        refuse(COMMANDS[command](bad, tmp_path), fragment, tmp_path)


def test_metadata_larger_than_any_real_one_is_refused_from_its_header(good, tmp_path):
    import io

    import numpy as np

    header = io.BytesIO()  # a .npy header declaring 4 GiB of metadata, and nothing after it
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (2**32,)})
    bad = with_members(good, tmp_path / "bad.npz", replace={"meta.npy": header.getvalue()})

    refuse(["info", bad], "metadata declares 4294967296 bytes, more than 1048576", tmp_path)


def test_numbers_out_of_range_in_the_metadata_are_refused(good, tmp_path):
    import json
    import zipfile

    import numpy as np

    with zipfile.ZipFile(good) as archive:
        meta = json.loads(bytes(np.load(archive.open("meta.npy"))))
    bad = meta_checkpoint(good, tmp_path / "bad.npz", json.dumps({**meta, "best_accuracy": 7.5}))

    refuse(["info", bad], "'best_accuracy' = 7.5; expected an accuracy in [0, 1]", tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "fragment", "command"),
    [
        ("changes", 5, "metadata 'changes' is not a list", "resume"),
        ("changes", [{"epoch": 1, "step": 2, "settings": {"optimizer.lr": 5}}], "metadata 'changes' is not", "resume"),
        ("changes", [{"epoch": -1, "step": 2, "settings": {}}], "metadata 'changes' is not", "info"),
        ("rng", [1], "metadata 'rng' is not a mapping", "plot"),
        ("rng", {"init": {"nested": True}}, "metadata 'rng' is not a mapping", "plot"),
    ],
    ids=["changes-number", "changes-not-pairs", "changes-negative-epoch", "rng-list", "rng-nested"],
)
def test_a_history_in_the_metadata_of_the_wrong_shape_is_refused(good, tmp_path, field, value, fragment, command):
    """What resume carries on and plot reads (the settings changed on each resume, how the weights
    were drawn): the wrong shape is one line when the checkpoint is read, not a traceback later."""
    import json
    import zipfile

    import numpy as np

    with zipfile.ZipFile(good) as archive:
        meta = json.loads(bytes(np.load(archive.open("meta.npy"))))
    bad = meta_checkpoint(good, tmp_path / "bad.npz", json.dumps({**meta, field: value}))
    args = COMMANDS[command](bad, tmp_path)
    if command == "plot":
        args.append("--minus-init")

    refuse(args, fragment, tmp_path)


def huge_checkpoint(good: Path, out: Path, hidden: int = 100_000, dtype: str = "float64") -> Path:
    """A valid checkpoint of ``good``'s run with model.hidden = ``hidden``: zero weights, streamed
    (784-100000-10 float64: W1 alone 627 MB, the file about 620 KB)."""
    import io
    import json
    import zipfile

    import numpy as np

    with zipfile.ZipFile(good) as archive:
        meta = json.loads(bytes(np.load(archive.open("meta.npy"))))
    meta["config"]["model"].update(hidden=hidden, dtype=dtype)
    shapes = {"W1": (784, hidden), "b1": (hidden,), "W2": (hidden, 10), "b2": (10,)}
    with zipfile.ZipFile(out, "w") as archive:
        for name, shape in shapes.items():
            head = io.BytesIO()
            np.lib.format.write_array_header_1_0(head, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                        "shape": shape})
            info = zipfile.ZipInfo(f"param/{name}.npy")
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                member.write(head.getvalue())
                left = int(np.prod(shape)) * np.dtype(dtype).itemsize
                while left > 0:
                    member.write(bytes(min(left, 1 << 20)))
                    left -= 1 << 20
        text = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        archive.writestr("meta.npy", npy_of(text))
    return out


@pytest.fixture(scope="module")
def huge(good: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("huge") / "run"
    run.mkdir()
    return huge_checkpoint(good, run / "last.npz")


WEIGHT_READERS = {**COMMANDS,
                  "export-safetensors": lambda ckpt, tmp: ["export", ckpt, "-f", "safetensors", "--out",
                                                           tmp / "model.safetensors"]}


@pytest.mark.parametrize("command", WEIGHT_READERS)
def test_a_small_file_describing_a_network_larger_than_memory_is_refused_before_it_is_inflated(
    huge, tmp_path, command
):
    """784-100000-10 float64 in 620 KB of zeros: every command that reads the weights (info too: it
    checks them) compares what they and its own work take with what the 1 GiB cap leaves (without:
    MemoryError tracebacks, a segfault in onnx, an abort in safetensors' Rust)."""
    assert huge.stat().st_size < 1 << 20

    refuse(WEIGHT_READERS[command](huge, tmp_path),
           f"checkpoint {huge}: reading its 784-100000-10 float64 network needs 3.5 GiB of memory but", tmp_path)


@pytest.fixture(scope="module")
def normal(tmp_path_factory: pytest.TempPathFactory, mnist_data_dir: Path) -> Path:
    """A trained 784-300-10 float32 run (the default network: under 1 MB of weights)."""
    from helpers import mlp

    run = tmp_path_factory.mktemp("normal") / "run"
    trained = mlp("train", "--epochs", "1", "--set", "data.limit=2000", "--out", run, "-q",
                  "--data-dir", mnist_data_dir)
    assert trained.exit_code == 0, trained.output
    return run / "last.npz"


@pytest.mark.parametrize("command", WEIGHT_READERS)
def test_a_normal_checkpoint_still_works_under_the_same_cap(normal, mnist_data_dir, tmp_path, command):
    args = WEIGHT_READERS[command](normal, tmp_path)
    if command == "resume":
        args += ["--epochs", "2", "-q"]  # one more epoch
    if command in ("eval", "resume"):
        args += ["--data-dir", mnist_data_dir]

    outcome = run_limited(mlp_command(*args), memory=1 * GiB, seconds=120, cwd=tmp_path)

    assert outcome.code == 0, outcome.output[-3000:]


def test_the_refusal_compares_the_declared_arrays_and_the_work_with_what_is_available(good, monkeypatch):
    """Loading takes every array, the largest twice, and WORK_BYTES_PER_ENTRY per parameter."""
    from mlp_cli import memory
    from mlp_cli.errors import ResourceError
    from mlp_cli.training.checkpoint import load_checkpoint

    h = 16
    entries = 784 * h + h + h * 10 + 10
    needed = 4 * entries + 4 * 784 * h + memory.WORK_BYTES_PER_ENTRY * entries  # float32
    monkeypatch.setattr(memory, "available_memory", lambda: needed)
    assert load_checkpoint(good).params.hidden == h
    monkeypatch.setattr(memory, "available_memory", lambda: needed - 1)
    with pytest.raises(ResourceError, match=r"784-16-10 float32 network needs 497 KiB of memory but 497 KiB is"):
        load_checkpoint(good)


def test_eval_checks_the_memory_of_its_split_before_reading_it(good, monkeypatch, tmp_path):
    """After the weights: the split's images, X and the evaluation's buffers, before the data is
    read (here it is not there: reading it would be a data error, not the refusal)."""
    from mlp_cli import memory
    from mlp_cli.errors import ResourceError
    from mlp_cli.reports.evaluate import evaluation_memory, load_split
    from mlp_cli.training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(good)
    needed = evaluation_memory(checkpoint, 10_000, 10_000)
    assert 10_000 * 784 * (1 + 4) < needed < 100 << 20  # the images and X at least; little for h = 16
    monkeypatch.setattr(memory, "available_memory", lambda: needed - 1)
    with pytest.raises(ResourceError, match="evaluating 16 hidden units on the test split needs"):
        load_split(checkpoint, "test", data_dir=tmp_path / "no-data", mirrors=("file:///nowhere",))


def test_a_weights_grid_too_large_for_memory_is_refused_before_it_is_drawn(good, tmp_path):
    """784-4000-10 float32 loads in a few tens of MB; its grid at --scale 16 would be 6.4 GB."""
    checkpoint = huge_checkpoint(good, tmp_path / "h4000.npz", hidden=4000, dtype="float32")
    drawn = ["plot", "--weights", checkpoint, "--out", tmp_path / "w.png"]

    refuse([*drawn, "--scale", "16"], "a weights grid of 4000 tiles at --scale 16 needs", tmp_path)
    assert not (tmp_path / "w.png").exists()
    assert run_limited(mlp_command(*drawn, "--scale", "1"), memory=1 * GiB, seconds=60, cwd=tmp_path).code == 0
