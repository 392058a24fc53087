"""Learning-curve figures (matplotlib) and the first-layer weights grid (numpy + Pillow)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlp_cli.errors import UsageError
from mlp_cli.reports.plot import (
    PlotError,
    RunCurves,
    curves_figure,
    diverging,
    plot_curves,
    save_weights_image,
    weights_grid,
)


def rows(n: int, dev: bool = True, shift: float = 0.0) -> list[dict]:
    return [
        {"epoch": e, "train_loss": 2.0 / e + shift, "train_accuracy": 1 - 0.5 / e,
         "dev_loss": (2.2 / e + shift) if dev else None, "dev_accuracy": (1 - 0.6 / e) if dev else None}
        for e in range(1, n + 1)
    ]


def test_figure_has_train_and_dev_of_every_run_on_shared_axes() -> None:
    import matplotlib.pyplot as plt

    runs = [RunCurves.from_rows("cs229", rows(5)), RunCurves.from_rows("cs229-l2", rows(5, shift=0.1))]
    fig = curves_figure(runs, title="compare")
    try:
        loss_ax, acc_ax = fig.axes
        assert [line.get_label() for line in loss_ax.lines] == [
            "cs229 train", "cs229 dev", "cs229-l2 train", "cs229-l2 dev"]
        assert loss_ax.lines[1].get_linestyle() == "-" and loss_ax.lines[0].get_linestyle() == "--"
        assert loss_ax.lines[0].get_color() == loss_ax.lines[1].get_color() != loss_ax.lines[2].get_color()
        np.testing.assert_allclose(acc_ax.lines[3].get_ydata(), [1 - 0.6 / e for e in range(1, 6)])
        np.testing.assert_array_equal(loss_ax.lines[0].get_xdata(), [1, 2, 3, 4, 5])
    finally:
        plt.close(fig)


def test_settings_changed_on_resume_are_marked_where_they_took_effect() -> None:
    import matplotlib.pyplot as plt

    recorded = rows(6)
    recorded[3]["changes"] = {"optimizer.lr": [5.0, 1.0], "train.epochs": [4, 6]}  # from epoch 4 on
    run = RunCurves.from_rows("resumed", recorded)
    assert run.changes == [(4, "lr 5 -> 1, epochs 4 -> 6")]
    fig = curves_figure([run])
    try:
        for ax in fig.axes:
            marks = [line for line in ax.lines if line.get_linestyle() == ":"]
            assert len(marks) == 1 and list(marks[0].get_xdata()) == [3.5, 3.5]
            assert [text.get_text() for text in ax.texts] == ["lr 5 -> 1, epochs 4 -> 6"]
    finally:
        plt.close(fig)


def test_run_without_dev_set_plots_train_only() -> None:
    import matplotlib.pyplot as plt

    fig = curves_figure([RunCurves.from_rows("r", rows(3, dev=False))])
    try:
        assert [line.get_label() for line in fig.axes[0].lines] == ["r train"]
    finally:
        plt.close(fig)


def test_png_and_svg_files(tmp_path: Path) -> None:
    runs = [RunCurves.from_rows("r", rows(4))]
    png = plot_curves(runs, tmp_path / "sub" / "curves.png")  # missing directories are created
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1100, 420)  # 11 x 4.2 inches at 100 dpi
    svg = plot_curves(runs, tmp_path / "curves.svg")
    assert "<svg" in svg.read_text()[:500]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.svg", "sub"]  # no temporary left


def test_bad_suffix_and_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\.png or \.svg or \.pdf"):
        plot_curves([RunCurves.from_rows("r", rows(2))], tmp_path / "curves.gif")
    with pytest.raises(PlotError, match="no epochs"):
        RunCurves.from_rows("empty", [])
    assert list(tmp_path.iterdir()) == []


def test_a_file_in_the_way_of_the_target_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match=f"cannot write .*: {blocker} is a file, not a directory"):
        plot_curves([RunCurves.from_rows("r", rows(2))], blocker / "curves.png")


def test_without_matplotlib_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(PlotError, match=r"pip install -e '\.\[plot\]'"):
        plot_curves([RunCurves.from_rows("r", rows(2))], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_diverging_colours() -> None:
    colours = diverging(np.array([-1.0, 0.0, 1.0, 5.0]))
    assert colours[1].tolist() == [255, 255, 255]
    assert colours[0].tolist() == [33, 102, 172] and colours[2].tolist() == [178, 24, 43]
    assert colours[3].tolist() == colours[2].tolist()  # clipped


def test_weights_grid_places_each_unit_in_its_tile() -> None:
    W1 = np.zeros((784, 5))
    W1[3 * 28 + 7, 0] = 0.5  # unit 0: one positive weight at pixel (3, 7)
    W1[10 * 28 + 2, 4] = -2.0  # unit 4: one negative weight at pixel (10, 2)
    grid = weights_grid(W1, columns=3, scale=1, gap=1)
    assert grid.shape == (2 * 29 + 1, 3 * 29 + 1, 3) and grid.dtype == np.uint8
    assert grid[1 + 3, 1 + 7].tolist() == [178, 24, 43]  # strongest weight of its unit: full red
    assert grid[1 + 3, 1 + 8].tolist() == [255, 255, 255]  # zero weight: white
    assert grid[30 + 10, 30 + 2].tolist() == [33, 102, 172]  # unit 4 = row 1, column 1: blue
    assert grid[0, 0].tolist() == [160, 160, 160]  # gap
    assert (grid[30:59, 59:88] == 160).all()  # no sixth unit: empty tile stays grey


def test_weights_png_size(tmp_path: Path) -> None:
    W1 = np.random.default_rng(0).standard_normal((784, 32)).astype(np.float32)
    path, (width, height) = save_weights_image(W1, tmp_path / "w.png", scale=2)
    with Image.open(path) as image:
        assert image.size == (width, height) == (7 * 58 + 2, 5 * 58 + 2)  # 7 x 5 tiles of 56 + 2 gap
        assert image.mode == "RGB"
    with pytest.raises(UsageError, match=r"\.png"):
        save_weights_image(W1, tmp_path / "w.svg")


def test_remove_initial_recovers_what_training_added() -> None:
    from mlp_cli.nn.network import Params, init_params
    from mlp_cli.reports.plot import initial_weights, remove_initial
    from mlp_cli.training.checkpoint import Checkpoint

    rng = np.random.default_rng(1)
    W0 = init_params(12, np.random.default_rng(7), "normal", "float64").W1
    added = 0.05 * rng.standard_normal(W0.shape)
    added -= np.vdot(added, W0) / np.vdot(W0, W0) * W0  # orthogonal to the start, as training's pattern nearly is
    trained = Params(W1=(0.3 * W0 + added).astype(np.float32), b1=np.zeros(12, np.float32),
                     W2=np.zeros((12, 10), np.float32), b2=np.zeros(10, np.float32))
    meta = {"config": {"train": {"seed": 7}, "model": {"init": "normal"}},
            "rng": {"init": "default_rng(seed)", "seed": 7}}
    checkpoint = Checkpoint(params=trained, optimizer_state={}, meta=meta)
    np.testing.assert_array_equal(initial_weights(checkpoint), W0)
    residual, c = remove_initial(trained.W1, initial_weights(checkpoint))
    assert c == pytest.approx(0.3, abs=1e-6)
    np.testing.assert_allclose(residual, added, atol=1e-6)
    with pytest.raises(PlotError, match="initial weights"):
        initial_weights(Checkpoint(params=trained, optimizer_state={}, meta={**meta, "rng": {}}))


def test_the_legend_sits_beside_the_curves_and_accuracy_reads_in_percent(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    runs = [RunCurves.from_rows(f"trial-{i}", rows(5, shift=0.1 * i)) for i in range(4)]
    fig = curves_figure(runs)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
        assert len(legends) == 1 and len(legends[0].get_texts()) == 8  # one legend, every curve in it
        box = legends[0].get_window_extent(renderer)
        for ax in fig.axes:  # over no curve: outside every plotting area, and inside the figure
            assert not box.overlaps(ax.get_window_extent(renderer))
        assert box.x1 <= fig.bbox.x1 + 1
        _, acc_ax = fig.axes
        labels = [label.get_text() for label in acc_ax.get_yticklabels() if label.get_text()]
        assert labels and all(label.endswith("%") for label in labels) and acc_ax.get_ylabel() == "accuracy (%)"
        assert max(float(label.rstrip("%")) for label in labels) > 50  # 0.9 reads as 90%, not 0.9%
    finally:
        plt.close(fig)
