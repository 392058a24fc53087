"""Hostile inputs, before and after: each case run on another checkout's code (``--before DIR``, e.g.
``git archive main | tar -x -C DIR``) and on this one's, in child processes under the same limits
(4 GiB of address space, 512 MiB per file, ``--seconds`` of wall time), printing a Markdown
table of exit code, time, peak memory and the first line said.

    python benchmarks/hostile.py --before /tmp/mlp-main --data-dir <a data dir holding mnist>

``--perf`` measures instead what must not get slower: ``mlp --help``, loading the cached training
split, and ``mlp eval`` on the test set, alternating before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

import hostile_inputs as hi  # noqa: E402
from hostile_server import HostileServer, double_gzip  # noqa: E402
from limits import GiB, MiB, mlp_command, python_command, run_limited  # noqa: E402

LABELS = "t10k-labels-idx1-ubyte.gz"
TINY = ("--hidden", "8", "--epochs", "1", "--batch", "100", "--set", "data.limit=200", "--set", "data.dev_size=100")
FETCH = """
import sys, inspect
from pathlib import Path
from mlp_cli.data import download
from mlp_cli.data.registry import DATASETS
from mlp_cli.errors import MlpError
name, directory, *mirrors = sys.argv[1:]
spec = DATASETS["mnist"]
fields = set(inspect.signature(download.RetryPolicy).parameters)
options = dict(tries=2, backoff=0.0, max_delay=0.0, timeout=(10.0, 60.0))
options.update({k: v for k, v in dict(stall_window=5.0, stall_bytes=1024, deadline=60.0).items() if k in fields})
extra = {"size": spec.payload_size(name)} if hasattr(spec, "payload_size") else {}
try:
    with download.Downloader(None, download.RetryPolicy(**options)) as d:
        r = d.fetch(name, spec.checksums[name], Path(directory), tuple(mirrors), **extra)
except MlpError as err:
    print(f"error: {err}", file=sys.stderr); sys.exit(1)
print(r.status)
"""


def cases(work: Path, data_dir: Path, server: HostileServer) -> list[tuple[str, list[str], str | None]]:
    """(name, command, a file whose survival to report) per hostile input."""
    good = hi.good_checkpoint(work / "run" / "best.npz")
    bomb = hi.zip_bomb_checkpoint(good, work / "bomb.npz", mib=1536)
    deep = hi.meta_checkpoint(good, work / "deep.npz", hi.deep_meta())
    digits = hi.meta_checkpoint(good, work / "digits.npz", hi.long_number_meta())
    overflow = hi.good_checkpoint(work / "ovf" / "best.npz", w2_fill=3e38)
    (work / "bomb.yaml").write_text(hi.ALIAS_BOMB)
    (work / "innocent.png").write_bytes(hi.POSTSCRIPT)
    hi.big_png(work / "big.png")
    hi.metrics_lines(work / "badrun" / "metrics.jsonl", hi.good_row(1), '{"epoch": 2, "dev_accuracy": "x"}')
    shared = work / "shared"
    mlp = mlp_command
    fetch = lambda directory, *modes: python_command(FETCH, LABELS, directory, *(server.url(m) for m in modes))  # noqa: E731
    return [
        ("checkpoint with a 1.5 GB zip-bomb member: info", mlp("info", bomb), None),
        ("checkpoint with a 1.5 GB zip-bomb member: eval", mlp("eval", bomb, "--data-dir", data_dir), None),
        ("YAML alias bomb as model.hidden", mlp("train", "--config", work / "bomb.yaml"), None),
        ("PostScript named innocent.png: predict", mlp("predict", good, work / "innocent.png"), None),
        ("13000x13000 RGBA PNG (under 1 MB): predict", mlp("predict", good, work / "big.png"), None),
        ("mirror streaming forever", fetch(work / "f1", "forever"), None),
        ("mirror sending 1 byte every 0.5 s", fetch(work / "f2", "trickle"), None),
        ("double-gzip body (a few KB, 1 GiB inside)", fetch(work / "f3", "bomb"), None),
        ("symlink <file>.part in a shared cache", fetch(shared, "ok"), str(work / "victim")),
        ("metadata nested 200,000 deep: info", mlp("info", deep), None),
        ("metadata with a 5000-digit integer: info", mlp("info", digits), None),
        ("mirror URL with user:password@", mlp("download-data", "-q", "--data-dir", work / "f4",
                                               "--mirror", server.url("missing", "user:hunter2")), None),
        ("--hidden 100000 --batch 50000: train", mlp("train", "-q", "--hidden", "100000", "--batch", "50000",
                                                     "--data-dir", data_dir), None),
        ("--set run.name=2024-02-30", mlp("train", "-q", "--set", "run.name=2024-02-30", "--set", "train.epochs=0"),
         None),
        ("--set 'model.hidden=!!int x'", mlp("train", "-q", "--set", "model.hidden=!!int x"), None),
        ("--out 'runs/x[/]' (a 1-epoch run)", mlp("train", *TINY, "--out", "runs/x[/]",
                                                  "--data-dir", data_dir), None),
        ("--name ../../x (a 1-epoch run)", mlp("train", "-q", "--name", "../../x", *TINY, "--data-dir", data_dir),
         None),
        ("a 300-character --name", mlp("train", "-q", "--name", "a" * 300, *TINY, "--data-dir", data_dir), None),
        ("malformed metrics.jsonl row: plot", mlp("plot", work / "badrun", "--terminal"), None),
        ("plot --weights --columns 1000000000", mlp("plot", "--weights", good, "--columns", "1000000000",
                                                    "--out", work / "w.png"), None),
        ("weights whose scores overflow: eval -q", mlp("eval", overflow, "--data-dir", data_dir, "-q"), None),
    ]


def measure(code_dir: Path | None, command: list[str], seconds: float, cwd: Path) -> str:
    env = {"PYTHONPATH": str(code_dir)} if code_dir else {}
    outcome = run_limited(command, memory=4 * GiB, file_size=512 * MiB, seconds=seconds, cwd=cwd, env=env)
    said = [line.strip() for line in (outcome.stderr + outcome.stdout).splitlines() if line.strip()] or [""]
    if "Traceback" in outcome.output:  # the exception's own line, not the frames rich draws
        raised = [line for line in said if re.match(r"^[\w.]*(Error|Exception)\b", line)]
        first = "traceback: " + (raised[-1] if raised else said[-1])
    else:
        first = next((line for line in said if line.startswith("error:")), said[-1])
    code = "killed" if outcome.killed else f"exit {outcome.code}"
    if "hunter2" in outcome.output:
        first = "PASSWORD SHOWN; " + first
    return f"{code}, {outcome.seconds:.1f} s, {outcome.peak_mib:,.0f} MiB: {first[:90]}"


def fresh(work: Path, url: str) -> Path:
    """Empty download and run directories (and the planted link) before each measurement."""
    for name in ("f1", "f2", "f3", "f4", "shared", "runs", "a", "x"):
        shutil.rmtree(work / name, ignore_errors=True)
    (work / "shared").mkdir()
    (work / "victim").write_text("precious")
    (work / "shared" / f"{LABELS}.part").symlink_to(work / "victim")
    note = {"url": f"{url}{LABELS}", "validator": ""}  # the .part seems resumable from this mirror
    (work / "shared" / f"{LABELS}.part.json").write_text(json.dumps(note))
    cwd = work / "a" / "b"  # --name ../../x lands in work/x, not outside the temporary folder
    cwd.mkdir(parents=True)
    return cwd


def table(before: Path, data_dir: Path, seconds: float, only: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        labels = (Path(data_dir) / "mnist" / LABELS).read_bytes()
        server = HostileServer({LABELS: labels}, bomb=double_gzip(GiB))
        server.trickle_every = 0.5
        try:
            print("| input | before | after |\n|---|---|---|")
            for name, command, watched in cases(work, data_dir, server):
                if only and only not in name:
                    continue
                row = []
                for code_dir in (before, None):
                    result = measure(code_dir, command, seconds, fresh(work, server.url("ok")))
                    if watched:
                        result += f"; victim file now {Path(watched).read_bytes()[:10]!r}"
                    row.append(result.replace("|", "/"))
                print(f"| {name} | {row[0]} | {row[1]} |", flush=True)
        finally:
            server.close()


def perf(before: Path, data_dir: Path, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        good = hi.good_checkpoint(Path(tmp) / "run" / "best.npz", hidden=300)
        timed_load = ("import time; from mlp_cli.data.cache import load_dataset; t = time.perf_counter(); "
                      f"load_dataset('mnist', 'train', data_dir={str(data_dir)!r}); print(time.perf_counter() - t)")
        jobs = {
            "mlp --help": (mlp_command("--help"), False),
            "load cached train split (in-process)": (python_command(timed_load), True),
            "mlp eval (test set)": (mlp_command("eval", good, "--data-dir", data_dir, "-q"), False),
        }
        env_base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        print(f"| what | before (median of {repeats}) | after |\n|---|---|---|")
        for name, (command, reads_stdout) in jobs.items():
            times: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(repeats):
                for label, code_dir in (("before", before), ("after", None)):
                    env = dict(env_base, **({"PYTHONPATH": str(code_dir)} if code_dir else {}))
                    started = time.perf_counter()
                    outcome = run_limited(command, memory=4 * GiB, seconds=120, env=env, cwd=tmp)
                    elapsed = float(outcome.stdout.split()[-1]) if reads_stdout else time.perf_counter() - started
                    assert outcome.code == 0, outcome.output
                    times[label].append(elapsed)
            b, a = (statistics.median(times[k]) for k in ("before", "after"))
            print(f"| {name} | {1000 * b:.0f} ms | {1000 * a:.0f} ms |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the code to compare with")
    parser.add_argument("--data-dir", type=Path, required=True, help="a data dir holding mnist, cached")
    parser.add_argument("--seconds", type=float, default=40.0, help="wall-clock limit per run")
    parser.add_argument("--perf", action="store_true", help="time start-up, dataset load and eval instead")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", help="run only the cases whose name contains this")
    args = parser.parse_args()
    if args.perf:
        perf(args.before.resolve(), args.data_dir.resolve(), args.repeats)
    else:
        table(args.before.resolve(), args.data_dir.resolve(), args.seconds, args.only)


if __name__ == "__main__":
    main()
