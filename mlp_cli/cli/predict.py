"""`mlp predict`: classify your own images of digits with a trained checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from mlp_cli.cli.app import app, print_error, strict_json
from mlp_cli.data.registry import get_spec
from mlp_cli.errors import MlpError, UsageError

if TYPE_CHECKING:
    import numpy as np

    from mlp_cli.data.images import Digit
    from mlp_cli.errors import MlpError
    from mlp_cli.training.checkpoint import Checkpoint

# A top probability under this is flagged; with the extraction's notes, on the photo set
# (tests/photo_set.py, best.yaml) that flags 73% of the wrong answers and 2% of the right ones.
UNCERTAIN_BELOW = 0.7
EXAMPLES_PREDICT = """
Examples:

  mlp predict runs/cs229/best.npz my-seven.png

  mlp predict runs/cs229 photos/*.jpg --top 3          (a run directory: its best.npz)

  mlp predict runs/cs229/best.npz digit.png --show      (see the 28x28 image the network gets)

  mlp predict runs/cs229/best.npz digit.png --json
"""


@app.command("predict", epilog=EXAMPLES_PREDICT)
def predict_command(
    checkpoint: Annotated[
        Path, typer.Argument(metavar="CHECKPOINT",
                             help="Checkpoint file (.npz) written by mlp train, or a run directory (its best.npz).")
    ],
    images: Annotated[
        list[Path],
        typer.Argument(metavar="IMAGE...", help="Image files (PNG, JPEG, ... of any size) with one digit each."),
    ],
    top: Annotated[int, typer.Option("--top", "-k", min=1, max=10, help="How many classes to list per image.")] = 3,
    show: Annotated[
        bool, typer.Option("--show", help="Also draw each image as the network sees it (the 28x28 extraction).")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the predictions (and any failed images) as JSON.")
    ] = False,
) -> None:
    """Classify your own images of handwritten digits (PNG, JPEG, photos, ... of any size).

    The digit is found like a document scanner would: uneven light, shadows and noise removed, the ink
    chosen by Otsu's threshold, its connected strokes kept, specks and borders dropped.

    It is then scaled to fit 20x20 and centred by its centre of mass in 28x28, like MNIST (for a
    Fashion-MNIST model the whole garment is kept and fills 28x28), and normalised with the
    checkpoint's preprocessing.

    An answer is marked uncertain when its probability is under 70% or the extraction was poor.

    An image that is missing, unreadable or blank gets an error line; the others are still classified.
    """
    from mlp_cli.data.images import load_digit
    from mlp_cli.training.checkpoint import load_checkpoint, model_checkpoint

    _check_order(checkpoint, images)
    ckpt = load_checkpoint(model_checkpoint(checkpoint))
    spec = get_spec(ckpt.config.get("data", {}).get("dataset", "mnist"))
    # one unreadable or blank image does not cost the others their predictions: each failure is
    # reported on its own line after them, and the exit code is the worst failure's
    digits, failures = [], []
    for path in images:
        try:
            digits.append(load_digit(path, spec.extraction))
        except MlpError as err:
            failures.append((path, err))
    results = _classify(ckpt, digits, top, spec.classes) if digits else []
    if json_output:
        errors = [{"image": str(path), "error": str(err)} for path, err in failures]
        typer.echo(strict_json({"checkpoint": str(checkpoint), "predictions": results, "errors": errors}))
    else:
        _print_predictions(results, [d.pixels for d in digits] if show else None)
    if failures:
        _exit_with(failures)


def _check_order(checkpoint: Path, images: list[Path]) -> None:
    """``mlp predict digit.png ckpt.npz``: say which order the arguments go in."""
    npz = [p for p in images if p.suffix.lower() == ".npz"]
    if checkpoint.suffix.lower() != ".npz" and npz:
        rest = " ".join(str(p) for p in [checkpoint, *images] if p != npz[0])
        raise UsageError(f"the checkpoint comes first: mlp predict {npz[0]} {rest}")


def _classify(ckpt: Checkpoint, digits: list[Digit], top: int, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The network's prediction and ``top`` most likely classes for each dataset-like image, with
    the reasons to doubt it (a low top probability, a poor extraction)."""
    import numpy as np

    from mlp_cli.data.preprocess import Preprocessing
    from mlp_cli.nn.network import forward

    prep = Preprocessing.from_dict(ckpt.meta["preprocessing"])
    X = prep.apply(np.stack([d.pixels for d in digits]), ckpt.params.dtype)  # (n, 784)
    with np.errstate(over="ignore", invalid="ignore"):
        P = forward(ckpt.params, X).astype(np.float64)  # (n, k)
    results = []
    for i, digit in enumerate(digits):
        best = int(P[i].argmax())
        doubts = list(digit.notes)
        if P[i, best] < UNCERTAIN_BELOW:
            doubts.insert(0, f"the top probability is only {100 * P[i, best]:.0f}%")
        ranked = np.argsort(-P[i], kind="stable")[:top]
        results.append({
            "image": str(digit.path), "prediction": best, "name": names[best],
            "uncertain": bool(doubts), "doubts": doubts, "inverted": digit.inverted,
            "top": [{"class": int(c), "name": names[c], "probability": float(P[i, c])} for c in ranked],
        })
    return results


def _exit_with(failures: list[tuple[Path, MlpError]]) -> NoReturn:
    """One error line per image that could not be classified, then the worst exit code."""
    for _, err in failures:
        print_error(err)
    raise typer.Exit(code=max(err.exit_code for _, err in failures))


def _print_predictions(results: list[dict[str, Any]], pixels: list[np.ndarray] | None) -> None:
    from rich.console import Console
    from rich.markup import escape

    from mlp_cli.cli.render import halfblock_text, uses_colour

    console = Console(highlight=False, soft_wrap=True)
    width = max(len(entry["name"]) for result in results for entry in result["top"]) if results else 1
    for i, result in enumerate(results):
        best = result["top"][0]
        console.print(f"[bold]{escape(result['image'])}[/]: [bold cyan]{escape(result['name'])}[/] "
                      f"({100 * best['probability']:.1f}%)")
        if result["uncertain"]:
            console.print(f"  [yellow]uncertain: {escape('; '.join(result['doubts']))}[/]")
        if pixels is not None:
            console.print(halfblock_text(pixels[i], uses_colour(console)))
        for entry in result["top"]:
            p = entry["probability"]
            bar = "█" * round(20 * p)
            console.print(f"  {escape(entry['name']):>{width}}  {100 * p:6.2f}%  [cyan]{bar}[/]")
