"""`mlp info`: the network's tensors, parameter count, FLOPs and the memory a run needs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlp_cli.errors import UsageError

if TYPE_CHECKING:
    from mlp_cli.reports.info import NetworkInfo

from mlp_cli.cli.app import app, strict_json
from mlp_cli.cli.options import complete_config
from mlp_cli.words import plural

EXAMPLES_INFO = """
Examples:

  mlp info

  mlp info --config configs/cs229.yaml

  mlp info runs/cs229/best.npz

  mlp info --hidden 1000 --batch 128 --json
"""


@app.command("info", epilog=EXAMPLES_INFO)
def info_command(
    checkpoint: Annotated[
        Path | None,
        typer.Argument(metavar="[CHECKPOINT]", help="Describe this checkpoint's network and run, not a config."),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", "-c", autocompletion=complete_config,
                                 help="YAML config file, or a name from configs/ (e.g. cs229).")
    ] = None,
    hidden: Annotated[int | None, typer.Option(min=1, help="Hidden units (model.hidden).")] = None,
    batch: Annotated[int | None, typer.Option(min=1, help="Mini-batch size (train.batch_size).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
) -> None:
    """Show the network's tensors, parameter count, FLOPs and the memory a run needs.

    Tensors as the derivation names them: W1 ∈ R^{784×h}, b1 ∈ R^h, W2 ∈ R^{h×10}, b2 ∈ R^10.

    FLOPs per example, forward and backward (a multiply-add counts 2); memory of a training run.

    Without arguments: the built-in defaults (configs/default.yaml).
    """
    from mlp_cli.config_file import load_config, resolve_config_path
    from mlp_cli.reports.info import info_for_config, run_facts

    if checkpoint is not None and config is not None:
        raise UsageError("give a checkpoint or --config, not both")
    overrides = {"train.batch_size": batch}
    source, facts = "built-in defaults", None
    if checkpoint is not None:
        from mlp_cli.training.checkpoint import load_checkpoint

        ckpt = load_checkpoint(checkpoint)
        resolved = load_config(None, {**overrides, "model.hidden": hidden or ckpt.params.hidden,
                                      "model.dtype": str(ckpt.params.dtype)}, base=ckpt.config)
        source = f"{checkpoint} (epoch {ckpt.epoch})"
        facts = run_facts(ckpt.meta, load_config(None, base=ckpt.config))
    else:
        path = resolve_config_path(config)
        resolved = load_config(path, {**overrides, "model.hidden": hidden})
        if path is not None:
            source = str(path)
    info = info_for_config(resolved)
    if json_output:
        typer.echo(strict_json({"source": source, **({"run": facts} if facts else {}), **info.to_dict()}))
    else:
        _print_info(source, info, facts)


def _count(n: int) -> str:
    for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:,}"


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _print_info(source: str, info: NetworkInfo, facts: dict[str, str] | None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    console.print(escape(source), style="bold", soft_wrap=True)  # a long path runs on, never broken
    settings = f"batch {info.batch_size}, {info.optimizer}, l2 {info.l2:g}"
    if info.dropout or info.input_dropout:
        settings += f", dropout {info.dropout:g} (pixels {info.input_dropout:g})"
    console.print(f"[bold]784-{info.hidden}-10[/] sigmoid/softmax network; {info.dtype}, {settings}; "
                  f"{info.train_examples:,} train / {info.dev_examples:,} dev examples")
    if facts:
        run = Table(title="Run", title_justify="left", show_header=False)
        run.add_column(style="bold")
        run.add_column()
        for label, text in facts.items():
            run.add_row(label, escape(text))
        console.print(run)

    tensors = Table(title="Parameters", title_justify="left")
    for name in ("tensor", "shape", "entries"):
        tensors.add_column(name, justify="right" if name == "entries" else "left")
    for t in info.tensors:
        tensors.add_row(f"{t.name} ∈ {t.space}", " × ".join(map(str, t.shape)), f"{t.size:,}")
    tensors.add_row("[bold]total[/]", "", f"[bold]{info.parameters:,}[/]")
    console.print(tensors)

    flops = Table(title="FLOPs per example (multiply-add = 2)", title_justify="left")
    flops.add_column("step")
    flops.add_column("count")
    flops.add_column("FLOPs", justify="right")
    for section, costs, total in (("forward", info.forward, info.forward_flops),
                                  ("backward", info.backward, info.backward_flops)):
        for cost in costs:
            flops.add_row(escape(cost.what), escape(cost.formula), f"{cost.value:,}")
        flops.add_row(f"[bold]{section}[/]", "", f"[bold]{_count(total)}[/]", end_section=True)
    for cost in info.per_step:
        flops.add_row(f"{escape(cost.what)} (per step)", escape(cost.formula), f"{cost.value:,}")
    flops.add_row("[bold]one epoch[/]", f"{plural(info.steps_per_epoch, 'step')}, eval",
                  f"[bold]{_count(info.epoch_flops)}[/]")
    console.print(flops)

    memory = Table(title="Memory of a training run", title_justify="left")
    memory.add_column("what")
    memory.add_column("size")
    memory.add_column("bytes", justify="right")
    for cost in info.memory:
        memory.add_row(escape(cost.what), escape(cost.formula), _bytes(cost.value))
    memory.add_row("[bold]total[/]", "", f"[bold]{_bytes(info.memory_bytes)}[/]")
    console.print(memory)
