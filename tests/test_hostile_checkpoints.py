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
