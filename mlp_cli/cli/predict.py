"""`mlp predict`: classify your own images of digits with a trained checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from mlp_cli.cli.app import app, strict_json

EXAMPLES_PREDICT = """
Examples:

  mlp predict runs/cs229/best.npz my-seven.png

  mlp predict runs/cs229/best.npz photos/*.jpg --top 3

  mlp predict runs/cs229/best.npz digit.png --show      (see the 28x28 image the network gets)

  mlp predict runs/cs229/best.npz digit.png --json
"""


@app.command("predict", epilog=EXAMPLES_PREDICT)
def predict_command(
    checkpoint: Annotated[
        Path, typer.Argument(metavar="CHECKPOINT", help="Checkpoint file (.npz) written by mlp train.")
    ],
    images: Annotated[
        list[Path],
        typer.Argument(metavar="IMAGE...", help="Image files (PNG, JPEG, ... of any size) with one digit each."),
    ],
    top: Annotated[int, typer.Option("--top", "-k", min=1, max=10, help="How many classes to list per image.")] = 3,
    show: Annotated[
        bool, typer.Option("--show", help="Also draw each image as the network sees it (28x28, MNIST-style).")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the predictions (and any failed images) as JSON.")
    ] = False,
) -> None:
    """Classify your own images of handwritten digits (PNG, JPEG, ... of any size).

    Each image is made MNIST-like: grayscale, inverted if dark on light, cropped, scaled to fit 20x20.

    Then it is centred by its centre of mass in 28x28 and normalised with the checkpoint's preprocessing.

    An image that is missing, unreadable or blank gets an error line; the others are still classified.
    """
    from mlp_cli.data.images import load_digit
    from mlp_cli.errors import MlpError
    from mlp_cli.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    # one unreadable or blank image does not cost the others their predictions: each failure is
    # reported on its own line after them, and the exit code is the worst failure's
    digits, failures = [], []
    for path in images:
        try:
            digits.append(load_digit(path))
        except MlpError as err:
            failures.append((path, err))
    results = _classify(ckpt, digits, top) if digits else []
    if json_output:
        errors = [{"image": str(path), "error": str(err)} for path, err in failures]
        typer.echo(strict_json({"checkpoint": str(checkpoint), "predictions": results, "errors": errors}))
    else:
        _print_predictions(results, [d.pixels for d in digits] if show else None)
    if failures:
        _exit_with(failures)


def _classify(ckpt: Any, digits: list[Any], top: int) -> list[dict[str, Any]]:
    """The network's prediction and ``top`` most likely classes for each MNIST-like digit."""
    import numpy as np

    from mlp_cli.data.preprocess import Preprocessing
    from mlp_cli.nn.network import forward

    prep = Preprocessing.from_dict(ckpt.meta["preprocessing"])
    X = prep.apply(np.stack([d.pixels for d in digits]), ckpt.params.dtype)  # (n, 784)
    with np.errstate(over="ignore", invalid="ignore"):
        P = forward(ckpt.params, X).astype(np.float64)  # (n, k)
    return [
        {
            "image": str(digit.path),
            "prediction": int(P[i].argmax()),
            "inverted": digit.inverted,
            "top": [{"class": int(c), "probability": float(P[i, c])} for c in np.argsort(-P[i], kind="stable")[:top]],
        }
        for i, digit in enumerate(digits)
    ]


def _exit_with(failures: list[Any]) -> NoReturn:
    """One error line per image that could not be classified, then the worst exit code."""
    from mlp_cli.cli.app import print_error

    for _, err in failures:
        print_error(err)
    raise typer.Exit(code=max(err.exit_code for _, err in failures))


def _print_predictions(results: list[dict[str, Any]], pixels: list[Any] | None) -> None:
    from rich.console import Console
    from rich.markup import escape

    from mlp_cli.cli.render import halfblock_text, uses_colour

    console = Console(highlight=False, soft_wrap=True)
    for i, result in enumerate(results):
        best = result["top"][0]
        console.print(f"[bold]{escape(result['image'])}[/]: [bold cyan]{result['prediction']}[/] "
                      f"({100 * best['probability']:.1f}%)")
        if pixels is not None:
            console.print(halfblock_text(pixels[i], uses_colour(console)))
        for entry in result["top"]:
            p = entry["probability"]
            bar = "█" * round(20 * p)
            console.print(f"  {entry['class']}  {100 * p:6.2f}%  [cyan]{bar}[/]")
