"""`mlp eval` in depth, `mlp plot`, `mlp predict`, `mlp gradcheck`, `mlp info` end to end, and the
text renderings they share (half blocks, sparklines, charts, coloured tables)."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import runner
from PIL import Image

from mlp_cli.cli import app
from mlp_cli.cli.render import (
    column_chart,
    confusion_table,
    halfblock_lines,
    sparkline,
    training_sparklines,
)
from mlp_cli.data.cache import load_dataset
from mlp_cli.data.preprocess import Preprocessing
from mlp_cli.nn.network import forward
from mlp_cli.training.checkpoint import load_checkpoint
from mlp_cli.training.metrics import read_metrics


@pytest.fixture(scope="module")
def run_dir(mnist_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small run on real MNIST (about 90 % on dev) that every test here reads, never writes."""
    out = tmp_path_factory.mktemp("reports") / "run"
    result = runner.invoke(app, [
        "train", "--data-dir", str(mnist_data_dir), "--out", str(out), "--hidden", "32", "--batch", "100",
        "--epochs", "5", "--set", "data.limit=3000", "--set", "data.dev_size=1000", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    return out


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


COLOUR_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def colour_codes(text: str) -> set[int]:
    """The SGR codes in ``text`` that set a colour (foreground or background)."""
    codes = {int(c) for params in COLOUR_SGR.findall(text) for c in params.split(";") if c}
    return {c for c in codes if 30 <= c <= 49 or 90 <= c <= 107}


# -- mlp eval ---------------------------------------------------------------------------------


def test_eval_json_carries_metrics_confusion_and_errors(run_dir: Path, mnist_data_dir: Path) -> None:
    result = invoke("eval", run_dir / "best.npz", "--data-dir", mnist_data_dir, "--errors", "4", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    C = np.array(report["confusion"])
    assert C.shape == (10, 10) and C.sum() == report["examples"] == 10_000
    assert report["accuracy"] == pytest.approx(np.trace(C) / 10_000) and report["accuracy"] > 0.8
    _, labels = load_dataset("mnist", "test", data_dir=mnist_data_dir)
    assert C.sum(axis=1).tolist() == np.bincount(labels, minlength=10).tolist()  # rows are true classes
    for c, metrics in enumerate(report["per_class"]):
        assert metrics["recall"] == pytest.approx(C[c, c] / C[c].sum())
        assert metrics["precision"] == pytest.approx(C[c, c] / C[:, c].sum())
    errors = report["errors"]
    assert len(errors) == 4 and all(e["label"] != e["prediction"] for e in errors)
    assert all(labels[e["index"]] == e["label"] for e in errors)
    assert [e["probability"] for e in errors] == sorted((e["probability"] for e in errors), reverse=True)


def test_eval_tables_and_error_images(run_dir: Path, mnist_data_dir: Path) -> None:
    data = json.loads(invoke("eval", run_dir / "best.npz", "--data-dir", mnist_data_dir, "--errors", "2",
                             "--json").stdout)
    result = invoke("eval", run_dir / "best.npz", "--data-dir", mnist_data_dir, "--errors", "2")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"accuracy {100 * data['accuracy']:.2f}%" in out and f"loss {data['loss']:.4f}" in out
    assert "Per class" in out and "Confusion matrix" in out
    row_zero = next(line for line in out.splitlines() if re.match(r"│\s+0 │\s+\d+ │\s+\d+ │", line))
    assert [int(n) for n in re.findall(r"\d+", row_zero)] == [0, *data["confusion"][0], sum(data["confusion"][0])]
    for e in data["errors"]:
        assert f"#{e['index']}: {e['label']} → {e['prediction']} ({100 * e['probability']:.1f}%)" in out
    assert any(ch in out for ch in "▀▄█")
    assert not colour_codes(out)  # not a terminal: plain text


def test_eval_colours_on_a_terminal_but_not_with_no_color(run_dir: Path, mnist_data_dir: Path) -> None:
    args = ("eval", run_dir / "best.npz", "--data-dir", mnist_data_dir, "--errors", "1")
    coloured = invoke(*args, env={"FORCE_COLOR": "1", "NO_COLOR": ""})
    assert coloured.exit_code == 0 and colour_codes(coloured.stdout)
    plain = invoke(*args, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert plain.exit_code == 0 and not colour_codes(plain.stdout)
    assert "Confusion matrix" in plain.stdout


def test_eval_rejects_bad_input(run_dir: Path, mnist_data_dir: Path) -> None:
    negative = invoke("eval", run_dir / "best.npz", "--data-dir", mnist_data_dir, "--errors", "-1")
    assert negative.exit_code == 2
    split = invoke("eval", run_dir / "best.npz", "--data-dir", mnist_data_dir, "--split", "valid")
    assert split.exit_code == 2 and "valid" in split.stderr and "Traceback" not in split.output
    hushed = invoke("eval", run_dir / "best.npz", "--data-dir", mnist_data_dir, "--errors", "5", "-q")
    assert hushed.exit_code == 2 and "--errors would draw nothing" in hushed.stderr  # it printed no mistake


# -- mlp plot ---------------------------------------------------------------------------------


def test_plot_writes_a_png_of_two_runs(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    result = invoke("plot", run_dir, run_dir / "metrics.jsonl", "--out", out, "--title", "t")
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1100, 420)


def test_plot_terminal_chart_shows_the_run(run_dir: Path) -> None:
    result = invoke("plot", "--terminal", run_dir)
    assert result.exit_code == 0, result.output
    rows = read_metrics(run_dir)
    out = result.stdout
    assert "dev accuracy" in out and "dev loss" in out and "epochs 1–5" in out
    assert f"{100 * max(r['dev_accuracy'] for r in rows):.2f}%" in out
    assert f"{rows[-1]['dev_loss']:.4f}" in out and f"{rows[0]['dev_loss']:.4f}" in out
    assert len(re.findall(r"┤", out)) == 12  # two charts, six lines each


def test_plot_weights_grid(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.png"
    result = invoke("plot", "--weights", run_dir / "best.npz", "--out", out, "--scale", "1", "--columns", "8")
    assert result.exit_code == 0, result.output
    W1 = load_checkpoint(run_dir / "best.npz").params.W1
    with Image.open(out) as image:
        assert image.size == (8 * 30 + 2, 4 * 30 + 2)  # 32 units, 8 per row, 28 + 2 gap each
        pixels = np.asarray(image.convert("RGB")).astype(int)
    tile = pixels[2:30, 2:30]  # unit 0
    redder = tile[..., 0] > tile[..., 2]
    positive = W1[:, 0].reshape(28, 28) > 0
    assert (redder == positive).mean() > 0.95  # red where the weight is positive


def test_plot_weights_minus_init_matches_how_training_started(run_dir: Path, tmp_path: Path) -> None:
    from mlp_cli.reports.plot import initial_weights

    ckpt = load_checkpoint(run_dir / "best.npz")
    W0 = initial_weights(ckpt)
    trained = ckpt.params.W1.astype(np.float64)
    assert np.corrcoef(trained.ravel(), W0.ravel())[0, 1] > 0.5  # the same seed scheme as mlp train
    result = invoke("plot", "--weights", run_dir / "best.npz", "--minus-init", "--out", tmp_path / "w.png")
    assert result.exit_code == 0, result.output
    c = float(re.search(r"minus ([0-9.]+) x", result.stdout).group(1))
    assert c == pytest.approx(np.vdot(trained, W0) / np.vdot(W0, W0), abs=1e-3)
    with Image.open(tmp_path / "w.png") as image:
        assert image.size == (7 * 58 + 2, 5 * 58 + 2)


def test_plot_usage_errors(run_dir: Path, tmp_path: Path) -> None:
    for args, message in (
        (["plot"], "at least one run"),
        (["plot", run_dir, "--out", tmp_path / "c.gif"], ".png or .svg"),
        (["plot", "--terminal", run_dir, "--out", tmp_path / "c.png"], "--terminal"),
        (["plot", run_dir, "--weights", run_dir / "best.npz"], "--weights"),
        (["plot", run_dir, "--minus-init"], "--minus-init"),
        (["plot", run_dir, "--columns", "3", "--out", tmp_path / "c.png"], "--columns goes with --weights"),
        (["plot", run_dir, "--scale", "9", "--out", tmp_path / "c.png"], "--scale goes with --weights"),
        (["plot", "--terminal", run_dir, "--title", "x"], "--title goes above the curves in a file"),
        (["plot", "--weights", run_dir / "best.npz", "--out", tmp_path / "w.png", "--title", "x"],
         "--title goes above the curves; the weights grid has none"),
    ):  # each would do nothing, so each is refused
        result = invoke(*args)
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)
    missing = invoke("plot", tmp_path / "nope", "--out", tmp_path / "c.png")
    assert missing.exit_code == 2 and "not found" in missing.stderr  # a path naming no file
    assert list(tmp_path.iterdir()) == []


def test_plot_without_matplotlib(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = invoke("plot", run_dir, "--out", tmp_path / "c.png")
    assert result.exit_code == 1
    assert "pip install -e '.[plot]'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert invoke("plot", "--terminal", run_dir).exit_code == 0  # the terminal chart needs no matplotlib


# -- mlp predict ------------------------------------------------------------------------------


def test_predict_recognises_mnist_digits_redrawn_as_large_black_on_white_images(
    run_dir: Path, mnist_data_dir: Path, tmp_path: Path
) -> None:
    ckpt = load_checkpoint(run_dir / "best.npz")
    images, labels = load_dataset("mnist", "test", data_dir=mnist_data_dir)
    X = Preprocessing.from_dict(ckpt.meta["preprocessing"]).apply(images[:100], ckpt.params.dtype)
    P = forward(ckpt.params, X)
    sure = [i for i in range(100) if P[i].argmax() == labels[i] and P[i].max() > 0.9][:6]
    paths = []
    for i in sure:
        big = Image.fromarray(255 - np.asarray(images[i])).resize((140, 140), Image.Resampling.BICUBIC)
        paths.append(tmp_path / f"digit{i}.png")
        big.convert("RGB").save(paths[-1])
    result = invoke("predict", run_dir / "best.npz", *paths, "--top", "3", "--json")
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)["predictions"]
    assert [p["image"] for p in predictions] == [str(p) for p in paths]
    right = sum(p["prediction"] == labels[i] for p, i in zip(predictions, sure, strict=True))
    assert right >= len(sure) - 1
    for p in predictions:
        probabilities = [t["probability"] for t in p["top"]]
        assert len(p["top"]) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert p["top"][0]["class"] == p["prediction"] and p["inverted"] is True


def test_predict_text_output_and_show(run_dir: Path, tmp_path: Path) -> None:
    from PIL import ImageDraw

    image = Image.new("L", (200, 300), 255)
    ImageDraw.Draw(image).line([(100, 30), (100, 270)], fill=0, width=25)  # a "1"
    path = tmp_path / "one.png"
    image.save(path)
    data = json.loads(invoke("predict", run_dir / "best.npz", path, "--json", "--top", "2").stdout)
    result = invoke("predict", run_dir / "best.npz", path, "--top", "2", "--show")
    assert result.exit_code == 0, result.output
    best = data["predictions"][0]["top"][0]
    assert f"{path}: {best['class']} ({100 * best['probability']:.1f}%)" in result.stdout
    assert len(re.findall(r"^\s+\d\s+\d+\.\d\d%", result.stdout, flags=re.M)) == 2
    assert "██" in result.stdout  # the 28x28 view of the vertical stroke


def test_predict_bad_files(run_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    good = tmp_path / "good.png"
    Image.new("L", (30, 30), 0).save(good)
    for path, message, code in ((tmp_path / "missing.png", "not found", 2), (text, "not an image", 1)):
        result = invoke("predict", run_dir / "best.npz", path)
        assert result.exit_code == code and str(path) in result.stderr and message in result.stderr
        assert result.stdout == "" and "Traceback" not in result.output
    blank = invoke("predict", run_dir / "best.npz", good)
    assert blank.exit_code == 1 and "no digit" in blank.stderr
    assert invoke("predict", run_dir / "best.npz", good, "--top", "11").exit_code == 2


def test_predict_classifies_the_good_images_and_reports_each_bad_one(run_dir: Path, tmp_path: Path) -> None:
    good = tmp_path / "seven.png"
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 12:16] = 255
    Image.fromarray(image).save(good)
    blank = tmp_path / "blank.png"
    Image.new("L", (30, 30), 0).save(blank)
    missing = tmp_path / "missing.png"

    result = invoke("predict", run_dir / "best.npz", blank, good, missing, "--json")

    assert result.exit_code == 2  # the worst of the failures: a path that names no file
    data = json.loads(result.stdout)
    assert [p["image"] for p in data["predictions"]] == [str(good)]
    assert [(e["image"], "no digit" in e["error"] or "not found" in e["error"]) for e in data["errors"]] == [
        (str(blank), True), (str(missing), True)]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: image ") for line in lines)
    text = invoke("predict", run_dir / "best.npz", good, blank)
    assert text.exit_code == 1 and f"{good}: " in text.stdout and "no digit" in text.stderr
    none_good = invoke("predict", run_dir / "best.npz", blank, "--json")  # a script still gets its JSON
    assert none_good.exit_code == 1
    assert json.loads(none_good.stdout)["predictions"] == [] and len(json.loads(none_good.stdout)["errors"]) == 1


# -- mlp gradcheck ----------------------------------------------------------------------------


def test_gradcheck_passes_with_the_config_settings() -> None:
    result = invoke("gradcheck", "--config", "configs/cs229-l2.yaml", "--hidden", "16", "--batch", "4", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["hidden"], data["batch_size"], data["l2"], data["init"], data["dtype"]) == (
        16, 4, 1e-4, "normal", "float64")
    assert data["passed"] and [p["name"] for p in data["params"]] == ["W1", "b1", "W2", "b2"]
    assert all(p["relative_error"] < 1e-6 for p in data["params"])
    table = invoke("gradcheck", "--hidden", "8", "--batch", "2")
    assert table.exit_code == 0 and table.stdout.count("pass") == 4 and "all gradients match" in table.stdout


@pytest.mark.parametrize(("args", "fragment"), [
    (["--set", "optimizer.lr=1e9"], "--set optimizer.lr: gradcheck uses only model.hidden"),
    (["--set", "train.epochs=5"], "--set train.epochs: gradcheck uses only"),
    (["--hidden", "2000", "--batch", "10000", "--samples", "1000000000"], "would take 1.0e+17 floating-point"),
], ids=["unused-key", "unused-train-key", "hours-of-work"])
def test_gradcheck_refuses_what_would_do_nothing_or_never_end(args: list[str], fragment: str) -> None:
    result = invoke("gradcheck", *args)
    assert result.exit_code == 2 and fragment in result.stderr, result.output
    used = invoke("gradcheck", "--hidden", "4", "--batch", "2", "--set", "train.dropout=0.3", "--json")
    assert used.exit_code == 0 and json.loads(used.stdout)["dropout"] == 0.3


def test_gradcheck_fails_with_exit_1_on_a_wrong_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlp_cli.nn import backprop

    real = backprop.loss_and_gradients

    def broken(params, X, y, l2=0.0, workspace=None):
        loss, grads = real(params, X, y, l2, workspace)
        grads.b2 = grads.b2 * 0.5
        return loss, grads

    monkeypatch.setattr(backprop, "loss_and_gradients", broken)
    result = invoke("gradcheck", "--hidden", "8", "--batch", "4")
    assert result.exit_code == 1
    assert re.search(r"b2 .*FAIL", result.stdout) and "gradient check failed" in result.stdout
    data = json.loads(invoke("gradcheck", "--hidden", "8", "--batch", "4", "--json").stdout)
    assert data["passed"] is False and [p["name"] for p in data["params"] if not p["passed"]] == ["b2"]


def test_gradcheck_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hiden: 3\n")
    result = invoke("gradcheck", "--config", bad)
    assert result.exit_code == 2 and "model.hiden" in result.stderr


# -- mlp info ---------------------------------------------------------------------------------


def test_info_for_a_config() -> None:
    result = invoke("info", "--config", "cs229")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("W1 ∈ R^{784×h}", "784 × 300", "b2 ∈ R^10", "238,510", "J = -log P[y]", "470,400",
                 "dataset as float32", "179.4 MiB"):  # 60,000 x 784 x 4 bytes
        assert text in out, text
    data = json.loads(invoke("info", "--hidden", "100", "--batch", "50", "--json").stdout)
    assert data["parameters"] == 784 * 100 + 100 + 100 * 10 + 10 and data["batch_size"] == 50
    assert data["flops"]["forward_per_example"] == 2 * 784 * 100 + 100 + 400 + 2 * 1000 + 10 + 50 + 2


def test_info_for_a_checkpoint(run_dir: Path) -> None:
    data = json.loads(invoke("info", run_dir / "best.npz", "--json").stdout)
    assert data["hidden"] == 32 and data["train_examples"] == 3000 and data["dev_examples"] == 1000
    assert data["batch_size"] == 100 and data["source"].startswith(str(run_dir / "best.npz"))
    both = invoke("info", run_dir / "best.npz", "--config", "cs229")
    assert both.exit_code == 2 and "not both" in both.stderr
    missing = invoke("info", run_dir / "nope.npz")
    assert missing.exit_code == 2 and "not found" in missing.stderr


# -- renderings -------------------------------------------------------------------------------


def test_halfblock_lines_pair_pixel_rows() -> None:
    image = np.array([[255, 0, 255, 0], [255, 255, 0, 0], [0, 0, 0, 255]], dtype=np.uint8)
    assert halfblock_lines(image) == ["█▄▀ ", "   ▀"]  # odd height: padded with a black row


def test_sparkline() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([1.0, None, 3.0]) == "▁ █"
    assert sparkline([2, 2, 2]) == "▅▅▅"
    assert sparkline([]) == "" and len(sparkline(list(range(100)), width=10)) == 10


def test_training_sparklines_summarise_the_run() -> None:
    rows = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.5 + e / 20, "dev_loss": 1.1 / e,
             "dev_accuracy": 0.5 + e / 25 - (0.05 if e == 5 else 0)} for e in range(1, 6)]
    text = training_sparklines(rows)
    lines = text.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["dev accuracy", "dev loss", "train loss"]
    assert len({line.index(next(ch for ch in line if ch in "▁▂▃▄▅▆▇█")) for line in lines}) == 1  # aligned
    assert "54.00% → 65.00%  best 66.00% (epoch 4)" in lines[0]
    assert "1.1000 → 0.2200" in lines[1] and lines[1].count("█") == 1
    no_dev = [{**r, "dev_loss": None, "dev_accuracy": None} for r in rows]
    assert training_sparklines(no_dev).splitlines()[0].startswith("train accuracy")
    assert training_sparklines([]) == ""


def test_column_chart_heights() -> None:
    lines = column_chart([0.0, 0.5, 1.0], height=2, fmt="{:.1f}")  # 16 eighths: 1, 9, 16
    assert lines == ["1.0 ┤ ▁█", "0.0 ┤▁██", "    └───"]


def test_confusion_table_colours_only_on_a_colour_console() -> None:
    from rich.console import Console

    C = np.diag([5, 6]) + np.array([[0, 1], [2, 0]])

    def render(**options) -> str:
        buffer = io.StringIO()
        Console(file=buffer, width=80, **options).print(confusion_table(C))
        return buffer.getvalue()

    assert colour_codes(render(force_terminal=True, color_system="truecolor"))
    assert not colour_codes(render(force_terminal=True, color_system="truecolor", no_color=True))
    plain = render(force_terminal=False)
    assert "\x1b" not in plain and re.search(r"│\s+1 │\s+2 │\s+6 │\s+8 │", plain)


def test_config_names_work_from_any_directory_and_unknown_ones_get_a_suggestion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./configs here: the checkout's configs/ is used
    found = runner.invoke(app, ["info", "--config", "cs229", "--json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["hidden"] == 300
    typo = runner.invoke(app, ["info", "--config", "cs228"])
    assert typo.exit_code == 2
    line = typo.stderr.strip()
    assert "\n" not in line and "did you mean 'cs229'?" in line and "record-800" in line
    (tmp_path / "configs").mkdir()  # a local configs/ comes first
    (tmp_path / "configs" / "cs229.yaml").write_text("model:\n  hidden: 7\n")
    local = runner.invoke(app, ["info", "--config", "cs229", "--json"])
    assert json.loads(local.stdout)["hidden"] == 7


def test_plot_mix_ups_are_explained(run_dir: Path, tmp_path: Path) -> None:
    checkpoint = invoke("plot", run_dir / "best.npz", "--terminal")
    assert checkpoint.exit_code == 1
    assert f"--weights {run_dir / 'best.npz'}" in checkpoint.stderr and "is a checkpoint" in checkpoint.stderr
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a directory was meant")
    out = blocker / "weights.png"
    nested = invoke("plot", "--weights", run_dir / "best.npz", "--out", out)
    assert nested.exit_code == 2  # a typed path with a file in the way
    assert nested.stderr.strip() == f"error: cannot write {out}: {blocker} is a file, not a directory"
    missing = invoke("plot", tmp_path / "no-such-run", "--terminal")
    assert missing.exit_code == 2 and "not found: expected a run directory" in missing.stderr
    assert "--weights" not in invoke("plot", tmp_path / "none.npz", "--terminal").stderr
