"""`mlp gradcheck`: the hand-derived gradients against central finite differences."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from mlp_cli.nn.gradcheck import GradcheckResult

from mlp_cli.cli.app import app, strict_json
from mlp_cli.cli.options import complete_config, complete_set
from mlp_cli.errors import UsageError

EXAMPLES_GRADCHECK = """
Examples:

  mlp gradcheck

  mlp gradcheck --config configs/cs229-l2.yaml

  mlp gradcheck --hidden 32 --batch 4 --seed 7 --json

  mlp gradcheck --set train.dropout=0.3 --set train.input_dropout=0.2   (through dropout masks)

Exit status: 0 when every parameter passes, 1 when one fails.
"""


@app.command("gradcheck", epilog=EXAMPLES_GRADCHECK)
def gradcheck_command(
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", autocompletion=complete_config,
                     help="Take hidden size, init, L2 and dropout from this config (or a name in configs/)."),
    ] = None,
    hidden: Annotated[int | None, typer.Option(min=1, help="Hidden units (default: the config's).")] = None,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Examples in the random batch.")] = 16,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the weights, the batch and the sampled entries.")] = 0,
    l2: Annotated[float | None, typer.Option(min=0.0, help="L2 penalty lambda (default: the config's).")] = None,
    samples: Annotated[
        int, typer.Option(min=1, help="Entries compared per parameter (all of them if it has fewer).")
    ] = 30,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", autocompletion=complete_set,
                                       help="Override any key: section.key=value. Repeatable.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check the hand-derived gradients against central finite differences.

    Runs loss_and_gradients (mlp_cli/nn/backprop.py, the tuned step training uses) in float64 on a
    random batch, with the config's hidden size, init, L2 and dropout (masks drawn for the batch,
    used on both sides). The equations it implements are
    written out line by line in backprop() in the same module, the plain reference.

    Per parameter: ||analytic - numeric|| / (||analytic|| + ||numeric||) over sampled entries; < 1e-6 passes.
    """
    from mlp_cli.config_file import load_config, resolve_config_path
    from mlp_cli.nn.gradcheck import gradcheck

    _check_sets(set_ or [])
    overrides = {"model.hidden": hidden, "train.l2": l2}
    resolved = load_config(resolve_config_path(config), overrides, tuple(set_ or ()))
    train = resolved.train
    _check_work(resolved.model.hidden, batch, samples)
    result = gradcheck(resolved.model.hidden, batch, train.l2, resolved.model.init, seed, samples=samples,
                       dropout=train.dropout, input_dropout=train.input_dropout)
    if json_output:
        typer.echo(strict_json(result.to_dict()))
    else:
        _print_result(result)
    if not result.passed:
        raise typer.Exit(code=1)


USED = ("model.hidden", "model.init", "train.l2", "train.dropout", "train.input_dropout")  # what it checks with
MAX_FLOPS = 10**12  # about a minute of float64 forward passes here; the default check takes 2e9


def _check_sets(sets: list[str]) -> None:
    """A --set of a key the check does not use would do nothing: refused, naming the keys it uses."""
    from mlp_cli.config_file import split_set  # the one reading of a --set item

    for item in sets:
        key, _ = split_set(item)
        if key not in USED:
            raise UsageError(f"--set {key[:60]}: gradcheck uses only {', '.join(USED)}; the rest cannot change "
                             "its result")


def _check_work(hidden: int, batch: int, samples: int) -> None:
    """Two forward passes per sampled entry of each parameter: refused before starting when they
    would take more than MAX_FLOPS, with the figure and what to lower."""
    from mlp_cli.nn.network import CLASSES, INPUTS

    sizes = (INPUTS * hidden, hidden, hidden * CLASSES, CLASSES)  # W1, b1, W2, b2
    forward = 2 * batch * (INPUTS * hidden + hidden * CLASSES)
    flops = sum(2 * min(samples, size) for size in sizes) * forward
    if flops > MAX_FLOPS:
        raise UsageError(f"gradcheck of {hidden} hidden units on a batch of {batch} with {samples} samples per "
                         f"parameter would take {flops:.1e} floating-point operations (at most {MAX_FLOPS:.0e}); "
                         "lower --samples, --batch or --hidden")


def _print_result(result: GradcheckResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(f"784-{result.hidden}-10, batch {result.batch_size}, init {result.init}, l2 {result.l2:g}, "
               + (f"dropout {result.dropout:g} (inputs {result.input_dropout:g}), "
                  if result.dropout or result.input_dropout else "")
               + f"float64, eps {result.eps:g}, seed {result.seed}"),
        title_justify="left",
    )
    for name in ("param", "shape", "checked", "max |grad|", "max |error|", "relative error", ""):
        table.add_column(name, justify="left" if name in ("param", "") else "right")
    for check in result.checks:
        status = "[green]pass[/]" if check.passed else "[bold red]FAIL[/]"
        table.add_row(check.name, " × ".join(str(s) for s in check.shape), str(check.checked),
                      f"{check.max_abs_gradient:.2e}", f"{check.max_abs_error:.2e}",
                      f"{check.relative_error:.2e}", status)
    console = Console(highlight=False)
    console.print(table)
    verdict = "[green]all gradients match[/]" if result.passed else "[bold red]gradient check failed[/]"
    console.print(f"{verdict} (tolerance {result.tolerance:g})")
