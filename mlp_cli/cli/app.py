"""The Typer application and the few helpers every command shares.

Only the ``mlp_cli.cli`` package imports typer or prints with rich. Command modules keep heavy
imports (numpy, requests, rich.progress) inside the command functions so that ``mlp --help``
stays instant (the convention: ``mlp_cli/cli/__init__.py``).
"""

from __future__ import annotations

import difflib
import errno
import math
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import typer
from typer.core import TyperGroup

from mlp_cli.errors import Interrupted, MlpError, UsageError
from mlp_cli.version import __version__

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def _stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def error_message(err: MlpError) -> str:
    return " ".join(str(err).split("\n")) if str(err) else type(err).__name__


def print_error(err: MlpError) -> None:
    """One red line naming what is wrong, on stderr; work stopped on request (Interrupted) is
    no error: one yellow line saying where it stopped and how to continue."""
    from rich.markup import escape

    if isinstance(err, Interrupted):
        _stderr_console().print(f"[yellow]{escape(error_message(err))}[/]")
        return
    _stderr_console().print(f"[bold red]error:[/] {escape(error_message(err))}")


def fail_usage(err: Any, as_json: bool = False) -> NoReturn:
    """click's usage errors as one line too, pointing at the command's help. ``mlp`` alone (no
    arguments) still prints the help, which is what click's NoArgsIsHelpError does."""
    if type(err).__name__ == "NoArgsIsHelpError":
        raise err

    command = err.ctx.command_path if getattr(err, "ctx", None) is not None else "mlp"
    message = " ".join(err.format_message().split())
    if type(err).__name__ == "NoSuchOption":  # click lists every option that shares a prefix
        names = {option.lstrip("-"): option for option in err.possibilities or ()}
        close = [names[c] for c in difflib.get_close_matches(err.option_name.lstrip("-"), list(names), n=1)]
        message = f"No such option: {err.option_name}" + (f" (did you mean {close[0]}?)" if close else "")
    fail(UsageError(f"{message} (see: {command} --help)"), as_json)


def fail(err: MlpError, as_json: bool = False) -> NoReturn:
    """Print one red line naming what is wrong, then exit with the error's exit code. Under
    ``--json`` a script reading stdout also gets the error, as one JSON line."""
    print_error(err)
    if as_json:
        typer.echo(strict_json({"error": error_message(err), "exit_code": err.exit_code}))
    raise typer.Exit(code=err.exit_code)


def _asks_for_json(ctx: Any) -> bool:
    """Whether the command line (before any ``--``) has ``--json``."""
    args = [*getattr(ctx, "_protected_args", []), *ctx.args]
    return "--json" in (args[: args.index("--")] if "--" in args else args)


# Failures of the machine rather than of the code: a full, read-only or forbidden disk.
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
)
# The UsageError of typer's click (the base class of the BadParameter typer re-exports).
ClickUsageError: type[Exception] = typer.BadParameter.__mro__[1]


class MlpGroup(TyperGroup):
    """A command group that turns the tool's own errors, and those of a full or read-only disk,
    into one line and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        as_json = _asks_for_json(ctx)
        try:
            return super().invoke(ctx)
        except MlpError as err:
            fail(err, as_json)
        except OSError as err:
            if err.errno not in ENVIRONMENT_ERRNOS:
                raise
            where = f": {err.filename}" if err.filename else ""
            fail(MlpError(f"{err.strerror or err}{where}"), as_json)
        except ClickUsageError as err:
            self._attach_usage(err, ctx)
            fail_usage(err, as_json)

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        try:  # errors in the options of ``mlp`` itself (``mlp --bogus``)
            return super().make_context(info_name, args, parent=parent, **extra)
        except ClickUsageError as err:
            fail_usage(err)

    def _attach_usage(self, err: Any, ctx: Any) -> None:
        """A missing option value (``--hidden`` at the end) is found before the command's
        context exists: give the error that context, so that its line names the command."""
        name = ctx.invoked_subcommand
        command = self.get_command(ctx, name) if name else None
        if getattr(err, "ctx", True) is None and command is not None:
            err.ctx = command.context_class(command, info_name=name, parent=ctx)
            err.cmd = command


app = typer.Typer(
    name="mlp",
    cls=MlpGroup,
    help=(
        "Train the classic two-layer sigmoid/softmax network on MNIST with hand-derived "
        "backpropagation in numpy.\n\n"
        "Quick start:  mlp download-data  ·  mlp train --hidden 300 --batch 1000  ·  "
        "mlp eval runs/<run>/best.npz"
    ),
    no_args_is_help=True,
    # --install-completion / --show-completion: typer imports its completion code whether or not
    # they are offered, and finds the shell only when asked, so they cost `mlp --help` nothing
    add_completion=True,
    pretty_exceptions_show_locals=False,
    # Plain (click) help and usage errors: formatting them with rich would import rich on every
    # command, and `mlp --help` must stay instant (benchmarks/README.md has the figures).
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mlp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", help="Print the version and exit.",
        callback=_version_callback, is_eager=True,
    ),
) -> None:
    """Train the classic two-layer network on MNIST with hand-derived backprop."""


def strict_json(value: object, indent: int | None = None) -> str:
    """``value`` as strict JSON: a NaN or infinity (which ``json.dumps`` writes as bare ``NaN``,
    invalid JSON) becomes null."""
    import json

    def clean(item: object) -> object:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: clean(v) for key, v in item.items()}
        if isinstance(item, list | tuple):
            return [clean(v) for v in item]
        return item

    return json.dumps(clean(value), indent=indent, allow_nan=False)


def table_console(*tables: Table) -> Console:
    """A console for tables on stdout: the terminal's width there; into a file or a pipe (no
    terminal, no COLUMNS) as wide as the widest table needs, so that nothing is cut short."""
    from rich.console import Console

    console = Console(highlight=False)
    if is_interactive(sys.stdout) or os.environ.get("COLUMNS"):
        return console
    needed = max((console.measure(table, options=console.options.update_width(10_000)).maximum
                  for table in tables), default=80)
    return Console(highlight=False, width=max(needed, 80))


def is_interactive(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (default stderr) is a terminal: progress bars, else plain lines."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
