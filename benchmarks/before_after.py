"""Before and after a change, in one run: the same commands with an older checkout's code and
with this one's, interleaved (A B A B ...), so that a slow stretch of the machine hits both.

    git worktree add /tmp/before <rev>
    python -m benchmarks.before_after --before /tmp/before --data-dir DIR [--rounds 5]

Measures ``mlp --help`` (bytecode on, as installed), loading the cached training split in a fresh
process, ``mlp eval`` of one checkpoint on the test set, and the end-to-end CS229 run
(``mlp train --config configs/cs229.yaml``); prints medians and the after/before ratio of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.process import REPO_ROOT

LOAD = """import time
t = time.perf_counter()
try:
    from mlp_cli.data.cache import load_dataset
except ImportError:  # before the layers became packages
    from mlp_cli.data import load_dataset
load_dataset('mnist', 'train', download=False)
print(time.perf_counter() - t)"""


def run(code_dir: Path, args: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds from process start to exit of ``python -m mlp_cli ARGS`` (or ``-c CODE``)."""
    command = [sys.executable, *args] if args[0] == "-c" else [sys.executable, "-m", "mlp_cli", *args]
    began = time.perf_counter()
    done = subprocess.run(command, env={**env, "PYTHONPATH": str(code_dir)}, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{code_dir}: {' '.join(args)} failed: {done.stderr.strip()[-300:]}")
    return float(done.stdout.strip()) if args[0] == "-c" else seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout of the older code")
    parser.add_argument("--data-dir", type=Path, required=True, help="a dataset cache holding MNIST")
    parser.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "tests/fixtures/v01-run/last.npz")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--e2e-rounds", type=int, default=3, help="0 skips the end-to-end run")
    options = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    env["MLP_DATA_DIR"] = str(options.data_dir)
    sides = {"before": options.before.resolve(), "after": REPO_ROOT}
    cases = {
        "mlp --help": (["--help"], options.rounds),
        "load train split (fresh process)": (["-c", LOAD], options.rounds),
        "mlp eval (10,000 test images)": ([], options.rounds),  # filled in below, on a copy
        "end to end: train configs/cs229.yaml": (["train", "--config", str(REPO_ROOT / "configs/cs229.yaml"),
                                                  "--out", "OUT", "-q"], options.e2e_rounds),
    }
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "model" / "last.npz"  # mlp eval records its result beside the checkpoint
        copy.parent.mkdir()
        shutil.copyfile(options.checkpoint, copy)
        cases["mlp eval (10,000 test images)"] = (["eval", str(copy), "--json"], options.rounds)
        for name, (args, rounds) in cases.items():
            if rounds < 1:
                continue
            samples: dict[str, list[float]] = {"before": [], "after": []}
            for i in range(rounds + 1):  # the first round warms caches and is dropped
                for side, code in sides.items():
                    out = Path(scratch) / f"{side}-{name[:3]}-{i}"
                    seconds = run(code, [str(out) if a == "OUT" else a for a in args], env, Path(scratch))
                    if i:
                        samples[side].append(seconds)
            results[name] = samples
            before, after = (statistics.median(samples[s]) for s in ("before", "after"))
            print(f"{name:40s} before {before:8.4f} s   after {after:8.4f} s   after/before {after / before:5.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
