"""`mlp download-data`, and the progress reporters every command that downloads uses.

Heavy imports (numpy via mlp_cli.data.cache, requests, rich.progress) stay inside functions so that
``mlp --help`` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from mlp_cli.cli.app import app, is_interactive, strict_json
from mlp_cli.cli.options import complete_from, one_of
from mlp_cli.data.registry import DATASETS

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from mlp_cli.data.cache import DatasetReport
    from mlp_cli.data.download import Reporter

EXAMPLES = """\
Examples:

  mlp download-data

  mlp download-data --dataset fashion-mnist --data-dir ./data

  mlp download-data --mirror file:///srv/datasets/mnist/   (a local copy: no network)

  MLP_MNIST_MIRROR="https://a.example/mnist/ https://b.example/mnist/" mlp download-data

  mlp download-data --force --json
"""

STATUS_TEXT = {
    "cached": "cached, verified",
    "downloaded": "downloaded, verified",
    "failed": "failed",
}


_MIRROR_VARIABLES = ", ".join(f"${spec.mirror_env}" for spec in DATASETS.values())
HELP = f"""Download a dataset, verify every file's SHA-256 and cache it ready to load.

Mirrors are tried in order: --mirror, then the dataset's variable
({_MIRROR_VARIABLES}), then the built-in ones.
The variables may hold several URLs separated by spaces or commas.
A mirror whose host name does not resolve, or whose network is unreachable, is tried
once, not retried: offline, the command fails at once, naming --mirror file://... .

A second run finds the verified files in the cache and sends no request.

Each stream says its part once: stderr the progress (each download, retries, failures),
stdout the result (a table of the files, or --json), so a log of both holds no line twice.
"""


@app.command("download-data", help=HELP, epilog=EXAMPLES)
def download_data(
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", metavar=f"<{'|'.join(DATASETS)}>", help="Which dataset to fetch.",
                          callback=one_of(DATASETS), autocompletion=complete_from(DATASETS))
    ] = "mnist",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Cache directory (default: $MLP_DATA_DIR, else the user cache directory).",
        ),
    ] = None,
    mirror: Annotated[
        list[str] | None,
        typer.Option(
            "--mirror", "-m", metavar="URL",
            help="Mirror to try first (https://, http://, file:// or a directory). Repeatable.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Download again even if verified copies are cached.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout.")
    ] = False,
) -> None:
    """Download a dataset (the help text is ``HELP``, which names every dataset's variable)."""
    from mlp_cli.data.cache import ensure_dataset

    reporter = make_reporter(quiet or json_output)
    if isinstance(reporter, RichReporter | PlainReporter):
        reporter.summary_follows = True  # stdout's table gives each file's status: stderr only the progress
    report = ensure_dataset(
        dataset, data_dir=data_dir, mirrors=tuple(mirror or ()), force=force,
        reporter=reporter,
    )
    if json_output:
        typer.echo(strict_json(report_to_dict(report)))  # one line, like every --json
    elif not quiet:
        _print_summary(report)


def report_to_dict(report: DatasetReport) -> dict[str, Any]:
    """A :class:`mlp_cli.data.cache.DatasetReport` as plain JSON-able values."""
    return {
        "dataset": report.name,
        "directory": str(report.directory),
        "requests": report.requests,
        "files": [
            {
                "file": f.filename,
                "path": str(f.path),
                "bytes": f.size,
                "status": f.status,
                "mirror": f.mirror,
            }
            for f in report.files
        ],
        "arrays": {
            split: {"images": str(images), "labels": str(labels)}
            for split, (images, labels) in report.arrays.items()
        },
    }


def _print_summary(report: DatasetReport) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{report.name} in {escape(str(report.directory))}", title_justify="left")
    table.add_column("file", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for f in report.files:
        table.add_row(f.filename, human_size(f.size), STATUS_TEXT[f.status])
    console = Console(highlight=False)
    console.print(table)
    for source in dict.fromkeys(f.mirror for f in report.files if f.mirror):
        console.print(f"downloaded from {escape(source)}", soft_wrap=True)
    if report.requests == 0 and not report.downloaded:
        console.print("Everything was cached: no network request made.")


# -- progress reporters -------------------------------------------------------------------------


def make_reporter(quiet: bool = False, stream: TextIO | None = None) -> Reporter:
    """The reporter for a download: nothing when quiet, a progress bar on a terminal, plain
    lines otherwise (logs, pipes, CI). Writes to ``stream`` (default stderr)."""
    if quiet:
        from mlp_cli.data.download import NullReporter

        return NullReporter()
    if is_interactive(stream):
        return RichReporter(stream)
    return PlainReporter(stream)


class PlainReporter:
    """One line per event, no colours or carriage returns: for logs and pipes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.summary_follows = False  # a summary on stdout gives each file's status: only failures here

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def start(self, filename: str, total: int | None, mirror: str) -> None:
        size = f" ({human_size(total)})" if total is not None else ""
        self._print(f"downloading {filename}{size} from {mirror}")

    def advance(self, nbytes: int) -> None:
        pass

    def done(self, filename: str, status: str) -> None:
        if status != "failed" and self.summary_follows:
            return
        self._print(f"{filename}: {STATUS_TEXT.get(status, status)}")

    def note(self, text: str) -> None:
        self._print(text)


class RichReporter:
    """A progress bar per file (bytes, speed, time left) on a terminal; rich honours NO_COLOR.

    The live display starts with a file's first ``start`` and stops at its ``done``, so the
    reporter needs no set-up or tear-down by the caller.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console

        self.console = Console(file=stream or sys.stderr, highlight=False)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        # set when a summary of the same facts follows on stdout: files are then not announced
        # one by one as they are found or finished (the progress bars stay)
        self.summary_follows = False

    def start(self, filename: str, total: int | None, mirror: str) -> None:
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(), console=self.console,
            )
            self._progress.start()
        if self._task is None:
            self._task = self._progress.add_task(filename, total=total)
            self.note(f"{filename} from {mirror}")
        else:  # a retry that starts over (or resumes): the bar restarts
            self._progress.reset(self._task, total=total)

    def advance(self, nbytes: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, nbytes)

    def done(self, filename: str, status: str) -> None:
        from rich.markup import escape

        text = STATUS_TEXT.get(status, status)
        colour = "red" if status == "failed" else "green"
        if self._progress is None:
            if status != "failed" and self.summary_follows:
                return
            self.console.print(f"{escape(filename)}: [{colour}]{escape(text)}[/]")
            return
        if status == "failed" and self._task is not None:  # a full bar says the rest; the summary gives the status
            self._progress.update(self._task, description=f"{escape(filename)} [red]failed[/]")
        self._progress.stop()
        self._progress = self._task = None

    def note(self, text: str) -> None:
        from rich.markup import escape

        self.console.print(f"[dim]{escape(text)}[/]")


def human_size(nbytes: int | None) -> str:
    """Bytes in decimal units, as download tools show them: ``9.6 MB``."""
    if nbytes is None:
        return "?"
    size = float(nbytes)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")  # pragma: no cover
