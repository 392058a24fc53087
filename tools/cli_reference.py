"""Write docs/cli.md, the command reference, from the commands themselves (Typer's own generator).

    python tools/cli_reference.py            # rewrite docs/cli.md (make docs)
    python tools/cli_reference.py --check    # exit 1 when docs/cli.md differs from the commands

tests/test_docs.py compares docs/cli.md with what this writes, so the reference cannot go stale.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer
import typer.main
from typer.cli import get_docs_for_click

from mlp_cli.cli import app

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
HEADER = ("<!-- Generated from the commands by tools/cli_reference.py (`make docs`); "
          "tests/test_docs.py fails when it is stale. Do not edit by hand. -->\n\n")


def reference() -> str:
    """The Markdown reference of every command, as `typer ... utils docs --name mlp` writes it."""
    command = typer.main.get_command(app)
    with typer.Context(command, info_name="mlp") as ctx:
        text = get_docs_for_click(obj=command, ctx=ctx, name="mlp", title="Command reference: `mlp`")
    return HEADER + linked_commands(text.strip()) + "\n"


def linked_commands(text: str) -> str:
    """The top list of commands as links to their sections: the page's table of contents."""
    head, _, rest = text.partition("\n## ")
    options, _, top = head.partition("**Commands**:")
    link = re.sub(r"^\* `([\w-]+)`:", lambda m: f"* [`{m.group(1)}`](#mlp-{m.group(1)}):", top, flags=re.M)
    top = options + "**Commands**:" + link
    return top + "\n## " + rest


def main(argv: list[str]) -> int:
    text = reference()
    if "--check" in argv:
        if REFERENCE.read_text() != text:
            print(f"{REFERENCE} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    REFERENCE.write_text(text)
    print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
