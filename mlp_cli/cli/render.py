"""Pictures made of text: digits in half-block characters, sparklines and column charts of the
learning curves, and the colour-scaled tables of ``mlp eval``.

Plain-text parts (``halfblock_lines``, ``sparkline``, ``column_chart``, ``training_sparklines``)
return strings that read the same in a log file. The rich parts take colour from the console:
grey-level half blocks and colour-scaled cells on a terminal, plain characters otherwise, and
none when NO_COLOR is set (rich honours it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from rich.columns import Columns
    from rich.console import Console, Group
    from rich.table import Table
    from rich.text import Text

    from mlp_cli.reports.confusion import ClassMetrics, Mistake

SPARK = "▁▂▃▄▅▆▇█"
EIGHTHS = " ▁▂▃▄▅▆▇█"
UPPER, LOWER, FULL = "▀", "▄", "█"
INK = 128  # a pixel this bright counts as ink in the monochrome rendering


def uses_colour(console: Console) -> bool:
    """True when ``console`` writes colours: a terminal, and NO_COLOR unset."""
    return bool(console.is_terminal and not console.no_color and console.color_system)


# --------------------------------------------------------------------------------------------
# Digits


def halfblock_lines(image: np.ndarray, threshold: int = INK) -> list[str]:
    """A (H, W) grey image as H/2 lines of W characters: each character shows two pixel rows,
    ▀ (top inked), ▄ (bottom inked), █ (both) or a space. 28 x 28 -> 14 lines of 28."""
    import numpy as np

    ink = np.asarray(image) >= threshold  # (H, W)
    if ink.shape[0] % 2:
        ink = np.vstack([ink, np.zeros((1, ink.shape[1]), dtype=bool)])
    glyphs = np.array([[" ", LOWER], [UPPER, FULL]])
    pairs = zip(ink[0::2], ink[1::2], strict=True)  # (top row, bottom row) of each line
    return ["".join(glyphs[top.astype(int), bottom.astype(int)]) for top, bottom in pairs]


def halfblock_text(image: np.ndarray, colour: bool) -> Text:
    """A rich Text of the image: grey levels (▀ with the top pixel as foreground and the bottom one
    as background) when ``colour``, else the monochrome ``halfblock_lines``."""
    import numpy as np
    from rich.text import Text

    if not colour:
        return Text("\n".join(halfblock_lines(image)))
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.shape[0] % 2:
        pixels = np.vstack([pixels, np.zeros((1, pixels.shape[1]), dtype=np.uint8)])
    text = Text()
    for r in range(0, pixels.shape[0], 2):
        if r:
            text.append("\n")
        for top, bottom in zip(pixels[r], pixels[r + 1], strict=True):
            text.append(UPPER, style=f"rgb({top},{top},{top}) on rgb({bottom},{bottom},{bottom})")
    return text


def digit_panel(image: np.ndarray, caption: str, colour: bool) -> Group:
    """A digit with its caption underneath, as one renderable."""
    from rich.console import Group
    from rich.text import Text

    return Group(halfblock_text(image, colour), Text(caption, style="bold"))


def mistakes_view(mistakes: Sequence[Mistake], colour: bool, names: Sequence[str] | None = None) -> Columns:
    """The confidently wrong examples side by side (as many per row as the width allows), their
    classes by name (``names``, in label order) or number."""
    from rich.columns import Columns

    def name(c: int) -> str:
        return names[c] if names else str(c)

    panels = [
        digit_panel(m.image, f"#{m.index}: {name(m.label)} → {name(m.prediction)} ({100 * m.probability:.1f}%)",
                    colour)
        for m in mistakes
        if m.image is not None
    ]
    return Columns(panels, padding=(1, 3))


# --------------------------------------------------------------------------------------------
# Curves


def _resample(values: Sequence[float], width: int) -> list[float]:
    """At most ``width`` values, evenly spaced, always keeping the first and the last."""
    values = list(values)
    if len(values) <= width or width < 2:
        return values
    step = (len(values) - 1) / (width - 1)
    return [values[round(i * step)] for i in range(width)]


def sparkline(values: Sequence[float | None], width: int = 60) -> str:
    """▁▂▃▄▅▆▇█ from min to max (missing values as spaces); a flat series is a flat line."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    if not present:
        return ""
    lo, hi = min(present), max(present)
    out = []
    for v in _resample(list(values), width):  # type: ignore[arg-type]
        if v is None or not math.isfinite(v):
            out.append(" ")
        elif hi == lo:
            out.append(SPARK[len(SPARK) // 2])
        else:
            out.append(SPARK[min(len(SPARK) - 1, int((v - lo) / (hi - lo) * len(SPARK)))])
    return "".join(out)


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def training_sparklines(rows: Sequence[dict[str, Any]], width: int = 40) -> str:
    """Three lines summing up a run's curves (dev accuracy, dev loss, train loss), e.g.

        dev accuracy  ▁▅▆▇▇▇████  43.39% → 96.76%  best 96.80% (epoch 28)
        dev loss      █▄▃▂▂▁▁▁▁▁  1.8857 → 0.1123
        train loss    █▄▃▂▂▁▁▁▁▁  1.8502 → 0.0821

    ``rows`` are metrics rows (``metrics.read_metrics`` or ``EpochMetrics.to_dict()``). A run
    without a dev set shows train accuracy instead. Plain text: print it anywhere."""
    if not rows:
        return ""
    has_dev = any(r.get("dev_accuracy") is not None for r in rows)
    which = "dev" if has_dev else "train"
    accuracy = [r.get(f"{which}_accuracy") for r in rows]
    known = [(a, r["epoch"]) for a, r in zip(accuracy, rows, strict=True) if a is not None]
    best, best_epoch = max(known, key=lambda pair: pair[0]) if known else (None, None)
    lines = []
    first_acc, last_acc = known[0][0], known[-1][0]
    lines.append(
        (f"{which} accuracy", sparkline(accuracy, width),
         f"{_pct(first_acc)} → {_pct(last_acc)}  best {_pct(best)} (epoch {best_epoch})" if best is not None else "")
    )
    for key in ([f"{which}_loss", "train_loss"] if has_dev else ["train_loss"]):
        series = [r.get(key) for r in rows]
        present = [v for v in series if v is not None]
        if present:
            lines.append((key.replace("_", " "), sparkline(series, width), f"{present[0]:.4f} → {present[-1]:.4f}"))
    label_width = max(len(label) for label, _, _ in lines)
    return "\n".join(f"{label:<{label_width}}  {spark}  {summary}".rstrip() for label, spark, summary in lines)


def column_chart(
    values: Sequence[float], *, height: int = 6, column_width: int = 1, fmt: str = "{:.4f}"
) -> list[str]:
    """A column chart in eighth blocks, ``height`` lines tall, y labels on the left (the top
    line is the maximum, the bottom line the minimum), one column per value."""
    values = [float(v) for v in values]
    lo, hi = min(values), max(values)
    span = hi - lo if hi > lo else 1.0
    top_label, bottom_label = fmt.format(hi), fmt.format(lo)
    label_width = max(len(top_label), len(bottom_label))
    levels = [1 + round((v - lo) / span * (height * 8 - 1)) for v in values]  # 1 .. 8 height
    lines = []
    for row in range(height):
        base = (height - 1 - row) * 8  # eighths below this line
        cells = "".join(EIGHTHS[max(0, min(8, level - base))] * column_width for level in levels)
        label = top_label if row == 0 else bottom_label if row == height - 1 else ""
        lines.append(f"{label:>{label_width}} ┤{cells}")
    lines.append(" " * label_width + " └" + "─" * (len(values) * column_width))
    return lines


def run_chart(label: str, rows: Sequence[dict[str, Any]], width: int = 60, height: int = 6) -> str:
    """``mlp plot --terminal``: accuracy and loss charts of one run (dev, or train without a dev
    set), one column per epoch (resampled to ``width`` when longer), and its sparklines."""
    has_dev = any(r.get("dev_accuracy") is not None for r in rows)
    which = "dev" if has_dev else "train"
    epochs = [int(r["epoch"]) for r in rows]
    column_width = max(1, min(3, width // max(len(rows), 1)))
    out = [label]
    for key, fmt in ((f"{which}_accuracy", "{:.2%}"), (f"{which}_loss", "{:.4f}")):
        series = _resample([r[key] for r in rows if r.get(key) is not None], width)
        if not series:
            continue
        chart = column_chart(series, height=height, column_width=column_width, fmt=fmt)
        axis_offset = chart[-1].index("└") + 1
        out += [f"  {key.replace('_', ' ')}"] + ["  " + line for line in chart]
        out.append("  " + " " * axis_offset + f"epochs {epochs[0]}–{epochs[-1]}")
    out.append("")
    out += ["  " + line for line in training_sparklines(rows, width=min(width, 40)).splitlines()]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Tables


def _shade(fraction: float, hue: str) -> str:
    """A background colour from white-ish (0) to full ``hue`` (1): green or red."""
    f = max(0.0, min(1.0, fraction))
    if hue == "green":
        r, g, b = round(255 - f * (255 - 26)), round(255 - f * (255 - 152)), round(255 - f * (255 - 80))
    else:
        r, g, b = round(255 - f * (255 - 215)), round(255 - f * (255 - 48)), round(255 - f * (255 - 39))
    return f"rgb({r},{g},{b})"


def confusion_table(confusion: np.ndarray, title: str = "Confusion matrix (rows: true, columns: predicted)") -> Table:
    """A rich Table of the (k, k) counts. The diagonal is bold; on a colour terminal its cells are
    green by recall and the others red by their share of the largest off-diagonal count."""
    import numpy as np
    from rich.table import Table
    from rich.text import Text

    confusion = np.asarray(confusion)
    k = confusion.shape[0]
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    worst = max(int(off.max()), 1)
    table = Table(title=title, title_justify="left")
    table.add_column("true", justify="right", style="bold")
    for j in range(k):
        table.add_column(str(j), justify="right")
    table.add_column("total", justify="right", style="dim")
    for i in range(k):
        total = int(confusion[i].sum())
        cells = []
        for j in range(k):
            count = int(confusion[i, j])
            if i == j:
                recall = count / total if total else 0.0
                style = f"bold black on {_shade((recall - 0.5) * 2, 'green')}"
            elif count:
                style = f"black on {_shade(count / worst, 'red')}"
            else:
                style = "dim"
            cells.append((f"{count}", style))
        table.add_row(str(i), *[Text(text, style=style) for text, style in cells], str(total))
    return table


def per_class_table(per_class: Sequence[ClassMetrics], title: str = "Per class",
                    names: Sequence[str] | None = None) -> Table:
    """Precision, recall, F1 and one-vs-rest accuracy per class; on a colour terminal precision
    and recall are shaded from red (worst class) to green (best)."""
    from rich.table import Table
    from rich.text import Text

    def scale(key: str) -> tuple[float, float]:
        present = [getattr(c, key) for c in per_class if getattr(c, key) is not None]
        return (min(present), max(present)) if present else (0.0, 1.0)

    ranges = {key: scale(key) for key in ("precision", "recall")}

    def cell(value: float | None, key: str | None = None) -> Text | str:
        if value is None:
            return Text("-", style="dim")
        text = f"{100 * value:.2f}%"
        if key is None:
            return text
        lo, hi = ranges[key]
        fraction = (value - lo) / (hi - lo) if hi > lo else 1.0
        colour = "green" if fraction >= 0.5 else "red"
        return Text(text, style=f"black on {_shade(abs(fraction - 0.5) * 2, colour)}")

    table = Table(title=title, title_justify="left")
    for name in ("class", "support", "predicted", "precision", "recall", "f1", "accuracy"):
        table.add_column(name, justify="right", no_wrap=name == "class")  # a class name stays whole
    for c in per_class:
        label = f"{c.label} {names[c.label]}" if names else str(c.label)
        table.add_row(label, f"{c.support:,}", f"{c.predicted:,}", cell(c.precision, "precision"),
                      cell(c.recall, "recall"), cell(c.f1), cell(c.accuracy))
    return table
