"""The documentation cannot rot: its commands and snippets run here, as written.

- The README's tour (its one ``sh`` block under "A tour") runs in a temporary directory laid out
  like a fresh clone (``configs/`` and ``docs/`` copied), line by line, in order; each line must
  exit 0.
- Every fenced block of ``docs/*.md`` whose info string says ``runnable`` (```` ```sh runnable ````,
  ```` ```python runnable ````) runs the same way, each page in a directory of its own, blocks in
  the page's order; ``>>>`` examples run as doctests, after the page's runnable blocks.
- Every other ``sh``/``python`` block must match one of ``NOT_RUNNABLE``'s reasons, so a new block
  is either run or says why not; ``test_inventory`` prints how many are runnable and not.
- ``docs/cli.md`` is what tools/cli_reference.py writes from the commands now.

Substitutions (the only liberties taken with what is written, to keep the suite fast):
- ``MLP_MNIST_MIRROR`` is the offline MNIST copy (the README's offline way) and ``MLP_DATA_DIR``
  a cache the session filled from it once; ``OPENBLAS_NUM_THREADS=1``, ``MPLBACKEND=Agg``.
- ``mlp train`` (after any ``VAR=value`` prefix) without ``--resume`` gets
  `` --set data.limit=2000 --epochs 1`` appended (before any ``#`` comment), and a ``--resume`` line's ``--epochs N``
  becomes ``--epochs 2``.
- ``mlp sweep`` with ``--config`` gets `` --set data.limit=2000 --set train.epochs=1`` appended;
  a sweep file (``mlp sweep tiny``) runs as written (four trials of a second or two).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
sys.path.insert(0, str(REPO / "tools"))

# Why a block is not run here, by a pattern its text matches.
NOT_RUNNABLE = {
    r"\bmake (train|test)\b": "the set-up itself (the suite is what `make test` runs)",
    r"pip install": "installs packages",
    r"tcp://HOST|dask scheduler": "needs a Dask cluster",
    r"tensorboard --logdir|MLFLOW_TRACKING_URI=http": "starts or needs a server",
    r"/path/to/": "a path the reader fills in",
    r"best-300 --jobs|--config best-30 --set": "full-size sweeps (minutes)",
    r"onnxruntime|torch": "run by tests/test_export.py (the export snippets)",
}
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    page: str
    language: str
    runnable: bool
    code: str


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    return [Block(path.name, m.group(1), "runnable" in m.group(2).split(), m.group(3))
            for m in FENCE.finditer(text)]


def tour() -> str:
    section = README.read_text().split("\n## A tour\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return code


def shrink(line: str) -> str:
    """The documented substitutions: a small data limit and one or two epochs."""
    command, hash_, comment = line.partition(" #")
    variables, command = re.match(r"((?:\w+=\S+ +)*)(.*)", command.rstrip(), flags=re.S).groups()  # VAR=value first
    if command.startswith("mlp train") and "--resume" in command:
        command = re.sub(r"--epochs \d+", "--epochs 2", command)
    elif command.startswith("mlp train"):
        command += " --set data.limit=2000 --epochs 1"
    elif command.startswith("mlp sweep") and "--config" in command:
        command += " --set data.limit=2000 --set train.epochs=1"
    return variables + command + (hash_ + comment if hash_ else "")


def fresh_clone(where: Path) -> Path:
    """A directory laid out like the checkout for what the docs use: configs/ and docs/."""
    where.mkdir(parents=True, exist_ok=True)
    for name in ("configs", "docs"):
        shutil.copytree(REPO / name, where / name)
    return where


@pytest.fixture(scope="module")
def docs_env(mnist_data_dir: Path, offline_mnist_url: str) -> dict[str, str]:
    env = dict(os.environ, MLP_DATA_DIR=str(mnist_data_dir), MLP_MNIST_MIRROR=offline_mnist_url,
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg", COLUMNS="100")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def run_shell(code: str, where: Path, env: dict[str, str]) -> None:
    for line in code.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command = shrink(line)
        done = subprocess.run(["bash", "-c", command], cwd=where, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def run_python(code: str, where: Path, env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-c", code], cwd=where, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{code}\n{done.stderr[-3000:]}"


DOCTEST = """
import doctest, sys
text = open(sys.argv[1]).read()
test = doctest.DocTestParser().get_doctest(text, {}, sys.argv[1], sys.argv[1], 0)
runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
runner.run(test)
sys.exit(1 if runner.failures else 0)
"""


def test_readme_tour_runs_in_order_as_written(tmp_path: Path, docs_env: dict[str, str]) -> None:
    where = fresh_clone(tmp_path / "clone")
    run_shell(tour(), where, docs_env)
    assert (where / "curves.png").stat().st_size > 0
    assert (where / "sweeps" / "tiny" / "trials.jsonl").is_file()


PAGES = sorted(p.name for p in DOCS.glob("*.md") if any(b.runnable or ">>>" in b.code for b in blocks(p)))


@pytest.mark.parametrize("page", PAGES)
def test_runnable_blocks_of_a_page_run_in_order(page: str, tmp_path: Path, docs_env: dict[str, str]) -> None:
    where = fresh_clone(tmp_path / "clone")
    for block in blocks(DOCS / page):
        if block.runnable and block.language == "sh":
            run_shell(block.code, where, docs_env)
        elif block.runnable and block.language == "python":
            run_python(block.code, where, docs_env)
    doctests = "\n\n".join(b.code for b in blocks(DOCS / page) if b.language == "python" and ">>>" in b.code)
    if doctests:
        (where / "doctests.txt").write_text(doctests)
        run_python(DOCTEST.replace("sys.argv[1]", repr(str(where / "doctests.txt"))), where, docs_env)


def reason_not_run(block: Block) -> str | None:
    return next((why for pattern, why in NOT_RUNNABLE.items() if re.search(pattern, block.code)), None)


def test_inventory_every_command_block_is_run_or_says_why_not() -> None:
    counted: dict[str, int] = {"runnable": 0, "doctest": 0}
    unexplained = []
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        for block in blocks(path):
            if block.language not in ("sh", "python"):
                continue
            if block.runnable or (path == README and block.code == tour()):
                counted["runnable"] += 1
            elif ">>>" in block.code:
                counted["doctest"] += 1
            elif (why := reason_not_run(block)) is not None:
                counted[f"not run: {why}"] = counted.get(f"not run: {why}", 0) + 1
            else:
                unexplained.append(f"{block.page}: {block.code.splitlines()[0]}")
    print("\ndocs blocks:", ", ".join(f"{n} {what}" for what, n in counted.items()))
    assert not unexplained, f"mark these runnable or add their reason to NOT_RUNNABLE: {unexplained}"
    assert counted["runnable"] >= 10


def test_cli_reference_is_generated_from_the_commands_now() -> None:
    from cli_reference import REFERENCE, reference

    assert REFERENCE.read_text() == reference(), "docs/cli.md is stale: run `make docs`"


def test_every_docs_page_is_linked_from_the_readme_and_long_pages_have_contents() -> None:
    readme = README.read_text()
    for path in DOCS.glob("*.md"):
        assert f"(docs/{path.name})" in readme, f"the README does not link docs/{path.name}"
        text = path.read_text()
        if len(text.splitlines()) > 100 and path.name != "cli.md":
            assert "Contents:" in text, f"docs/{path.name} is long and has no table of contents"
    assert len(readme.splitlines()) <= 200


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).strip().replace(" ", "-")


def test_every_relative_link_and_anchor_leads_somewhere() -> None:
    broken = []
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        text = FENCE.sub("", path.read_text())
        for target in re.findall(r"\]\(([^)\s]+)\)|src=\"([^\"]+)\"", text):
            link = target[0] or target[1]
            if re.match(r"[a-z]+://", link):
                continue
            file, _, anchor = link.partition("#")
            where = (path.parent / file).resolve() if file else path
            if not where.exists():
                broken.append(f"{path.name}: {link} (no such file)")
            elif anchor and anchor not in {slug(h) for h in re.findall(r"^#+ (.+)$", where.read_text(), re.M)}:
                broken.append(f"{path.name}: {link} (no such heading)")
    assert not broken, broken
