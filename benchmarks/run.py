"""The benchmark suite: ``python -m benchmarks.run`` (``make bench``), or ``--smoke`` for CI.

Full mode (tens of minutes on 2 cores) measures, on real MNIST:

1. seconds per epoch (60,000 examples, plain SGD) of the tool's training step for hidden 300
   and 800 at batch 1000 and hidden 300 at batch 100, float32 and float64, CS229 and xavier
   initialisation; each beside PyTorch (same threads; the faster of flush-denormal off/on) and
   beside the GEMM floor (the five matrix products alone), interleaved in one process
   (see benchmarks/epoch.py);
2. ``mlp train --config configs/cs229.yaml`` from process start to exit vs the same job in
   PyTorch with flush-to-zero (benchmarks/torch_cs229.py), runs interleaved;
3. time to 98% test accuracy with configs/best-30.yaml (skipped when the file is missing);
4. ``mlp --help`` start-up, loading the cached dataset, ``mlp eval`` on the 10,000 test images,
   and the peak resident memory of a default training run.

Results go to a JSON file (``--out``, default benchmarks/results/<mode>.json) with the machine
they ran on; a table of medians and ratios is printed. Smoke mode runs every part on a few
steps (synthetic data for the epoch timings, a tiny training run), in seconds, to prove that
the suite works; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import machine, recipes
from benchmarks.epoch import Case, measure_group, save_epoch_data, standardized
from benchmarks.process import REPO_ROOT, checked, mlp_command, repeat_process, run_process

# the offline copy next to the checkout, or the one the test suite found ($MLP_TEST_MNIST)
OFFLINE_MNIST = Path(os.environ.get("MLP_TEST_MNIST") or REPO_ROOT.parent / "shared" / "data" / "mnist")
MB = 1024 * 1024

# The targets of the performance issues (#22 for the epochs' and recipes' ratios): what, and the
# largest value that meets it.
TARGETS = (
    ("epoch h300 B1000 float32: tool / torch", 0.9),
    ("epoch h800 B1000 float32: tool / torch", 0.9),
    ("epoch h300 B100 float32: tool / torch", 0.9),
    ("epoch h300 B1000 float32: tool / floor", 1.12),
    ("epoch h800 B1000 float32: tool / floor", 1.12),
    ("epoch h300 B100 float32: tool / floor", 1.35),
    ("recipe step best.yaml: tool / floor", 1.5),
    ("recipe step best-30.yaml: tool / floor", 1.3),
    ("epoch float32: cs229 init / xavier init", 1.0),
    ("end-to-end cs229: tool / torch (ftz)", 0.87),
    ("mlp --help (s)", 0.25),
    ("dataset load (s)", 0.1),
    ("peak memory, default training run (MB)", 450.0),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Data


def offline_mirror() -> str | None:
    return OFFLINE_MNIST.as_uri() + "/" if (OFFLINE_MNIST / "train-images-idx3-ubyte.gz").is_file() else None


def prepare_cache(data_dir: Path) -> bool:
    """A dataset cache in ``data_dir`` built from the offline copy (or already there)."""
    from mlp_cli.data.cache import ensure_dataset, load_dataset

    try:
        load_dataset("mnist", "train", data_dir=data_dir, download=False)
        load_dataset("mnist", "test", data_dir=data_dir, download=False)
        return True
    except Exception:  # noqa: BLE001  (not cached yet: build it below)
        pass
    mirror = offline_mirror()
    if mirror is None:
        return False
    ensure_dataset("mnist", data_dir=data_dir, mirrors=(mirror,))
    return True


def epoch_data(smoke: bool, have_mnist: bool, data_dir: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 images (n, 28, 28) and int64 labels: MNIST's 60,000, or synthetic for smoke."""
    if have_mnist and not smoke:
        from mlp_cli.data.cache import load_dataset

        images, labels = load_dataset("mnist", "train", data_dir=data_dir)
        return np.asarray(images), np.asarray(labels, dtype=np.int64), "MNIST train, 60,000 images"
    rng = np.random.default_rng(0)
    n = 2_000
    images = (rng.random((n, 28, 28)) < 0.2) * rng.integers(0, 256, (n, 28, 28))
    return images.astype(np.uint8), rng.integers(0, 10, n).astype(np.int64), f"synthetic, {n} images"


# --------------------------------------------------------------------------------------------
# Parts


def epoch_cases(smoke: bool) -> list[Case]:
    if smoke:  # one group (shape and dtype): each group starts its own PyTorch workers, ~3 s apiece
        return [Case(300, 1000, "float32", "normal"), Case(300, 1000, "float32", "xavier")]
    shapes = ((300, 1000), (800, 1000), (300, 100))
    return [Case(h, B, dtype, init) for dtype in ("float32", "float64") for h, B in shapes
            for init in ("normal", "xavier")]


def bench_epochs(args: argparse.Namespace, have_mnist: bool, data_dir: Path, work: Path) -> dict[str, Any]:
    images, labels, source = epoch_data(args.smoke, have_mnist, data_dir)
    with_torch = _have_torch() and not args.no_torch
    threads = machine.numpy_blas_threads()
    results: list[dict[str, Any]] = []
    groups: dict[tuple[int, int, str], list[Case]] = {}
    for case in epoch_cases(args.smoke):
        if not args.only or any(word in case.name for word in args.only):
            groups.setdefault((case.hidden, case.batch, case.dtype), []).append(case)
    X_by_dtype: dict[str, np.ndarray] = {}
    for (_, _, dtype), cases in groups.items():
        if dtype not in X_by_dtype:
            X_by_dtype.clear()
            X_by_dtype[dtype] = standardized(images, dtype)
            torch_data = save_epoch_data(work / "epoch-data.npz", X_by_dtype[dtype], labels) if with_torch else None
        log(f"epoch timings: {', '.join(c.name for c in cases)} ...")
        if not args.smoke:
            machine.wait_for_quiet(max_wait=args.max_wait, log=log)
        results += measure_group(
            cases, X_by_dtype[dtype], labels, repeats=1 if args.smoke else args.repeats,
            warmup=0 if args.smoke else 1, threads=threads, torch_data=torch_data,
            settle=0.0 if args.smoke else 0.3, log=log,
        )
    return {"data": source, "threads": threads, "torch": with_torch, "cases": results}


def bench_startup(args: argparse.Namespace) -> dict[str, Any]:
    log("start-up: mlp --help ...")
    return repeat_process([*mlp_command(), "--help"], 1 if args.smoke else 9, log=log, max_wait=args.max_wait)


def bench_dataset_load(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """In-process ``load_dataset`` of the cached train and test splits, median of repeats."""
    import statistics

    from mlp_cli.data.cache import load_dataset

    log("dataset load ...")
    out: dict[str, Any] = {}
    for split in ("train", "test"):
        samples = []
        for _ in range(3 if args.smoke else 15):
            t0 = time.perf_counter()
            images, labels = load_dataset("mnist", split, data_dir=data_dir)
            samples.append(time.perf_counter() - t0)
        out[split] = {"median": statistics.median(samples), "first": samples[0],
                      "samples": [round(s, 5) for s in samples], "shape": list(images.shape)}
    # In a fresh process, imports excluded: what `mlp train` pays once.
    code = ("import time; from mlp_cli.data.cache import load_dataset; t = time.perf_counter(); "
            f"load_dataset('mnist', 'train', data_dir={str(data_dir)!r}); print(time.perf_counter() - t)")
    fresh = [float(checked(run_process([sys.executable, "-c", code])).output.strip().splitlines()[-1])
             for _ in range(1 if args.smoke else 5)]
    out["train_fresh_process"] = {"median": sorted(fresh)[len(fresh) // 2], "samples": fresh}
    return out


def train_command(config: str | None, data_dir: Path, out: Path, *extra: str) -> list[str]:
    cmd = [*mlp_command(), "train", "--data-dir", str(data_dir), "--out", str(out), "--overwrite"]
    if config:
        cmd += ["--config", config]
    return cmd + list(extra)


def bench_end_to_end(args: argparse.Namespace, data_dir: Path, work: Path) -> dict[str, Any]:
    """``mlp train --config configs/cs229.yaml`` vs benchmarks/torch_cs229.py, interleaved."""
    smoke_extra = ("--epochs", "1", "--set", "data.limit=2000") if args.smoke else ()
    tool_cmd = train_command("configs/cs229.yaml", data_dir, work / "cs229", *smoke_extra)
    threads = machine.numpy_blas_threads()
    torch_cmd = [sys.executable, "-m", "benchmarks.torch_cs229", "--data-dir", str(data_dir),
                 "--out", str(work / "torch-cs229"), "--threads", str(threads)]
    if args.smoke:
        torch_cmd += ["--epochs", "1"]
    contenders = {"tool": tool_cmd}
    if _have_torch() and not args.no_torch:
        contenders["torch_ftz"] = torch_cmd
    repeats = 1 if args.smoke else args.e2e_repeats
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    retries = 0
    log(f"end-to-end cs229: {', '.join(contenders)} x {repeats} ...")
    for _ in range(repeats):
        for name, cmd in contenders.items():
            for attempt in range(3):
                if not args.smoke:
                    machine.wait_for_quiet(max_wait=args.max_wait, log=log)
                run = checked(run_process(cmd))
                if not run.disturbed or attempt == 2:
                    break
                retries += 1
            runs[name].append(run.to_dict())
    result: dict[str, Any] = {"commands": {k: " ".join(v) for k, v in contenders.items()}, "runs": runs,
                              "disturbed_retries": retries}
    for name, rs in runs.items():
        result[name] = sorted(r["wall"] for r in rs)[len(rs) // 2]
    if "torch_ftz" in runs:
        result["tool_vs_torch"] = result["tool"] / result["torch_ftz"]
    metrics = work / "cs229" / "metrics.jsonl"
    if metrics.exists():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        result["tool_last_epoch"] = rows[-1]
        result["tool_train_seconds"] = sum(r["seconds"] for r in rows)
    return result


def bench_eval(args: argparse.Namespace, data_dir: Path, work: Path) -> dict[str, Any]:
    checkpoint = work / "cs229" / "best.npz"
    log("mlp eval on the test set ...")
    result = repeat_process([*mlp_command(), "eval", str(checkpoint), "--data-dir", str(data_dir), "--json"],
                            1 if args.smoke else 7, log=log, max_wait=args.max_wait)
    last = run_process([*mlp_command(), "eval", str(checkpoint), "--data-dir", str(data_dir), "--json"])
    try:
        result["output"] = json.loads(checked(last).output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result["output"] = last.output[-500:]
    return result


def bench_memory(args: argparse.Namespace, data_dir: Path, work: Path) -> dict[str, Any]:
    extra = ("--epochs", "1", "--set", "data.limit=2000") if args.smoke else ()
    cmd = train_command(None, data_dir, work / "default", *extra)
    log("peak memory of a default training run ...")
    run = checked(run_process(cmd))
    return {"command": " ".join(cmd), "max_rss_mb": run.max_rss_mb, "wall": run.wall,
            "foreign_cores": run.foreign_cores}


def bench_time_to_accuracy(
    args: argparse.Namespace, data_dir: Path, work: Path, target: float = 0.98
) -> dict[str, Any]:
    """Train configs/best-30.yaml keeping every epoch's checkpoint; the first epoch whose test
    accuracy reaches ``target``, and when (its checkpoint's mtime) after the process started."""
    config = REPO_ROOT / "configs" / "best-30.yaml"
    if not config.exists():
        return {"skipped": "configs/best-30.yaml does not exist"}
    if args.smoke:
        return {"skipped": "smoke mode"}
    from mlp_cli.reports.evaluate import evaluate, load_split
    from mlp_cli.training.checkpoint import load_checkpoint

    out = work / "best"
    machine.wait_for_quiet(max_wait=args.max_wait, log=log)
    log("time to 98% test accuracy with configs/best-30.yaml ...")
    run = checked(run_process(train_command("configs/best-30.yaml", data_dir, out, "--set", "run.checkpoint_every=1")))
    reached = None
    epochs = []
    for path in sorted(out.glob("epoch-*.npz")):
        ckpt = load_checkpoint(path)
        _, X, y = load_split(ckpt, "test", data_dir=data_dir)
        accuracy = evaluate(ckpt, X, y, "test").accuracy
        seconds = path.stat().st_mtime - run.started_at
        epochs.append({"epoch": ckpt.epoch, "test_accuracy": accuracy, "seconds": round(seconds, 3)})
        if reached is None and accuracy >= target:
            reached = epochs[-1]
    return {"target": target, "reached": reached, "seconds": reached["seconds"] if reached else None,
            "process_wall": run.wall, "max_rss_mb": run.max_rss_mb, "epochs": epochs,
            "foreign_cores": run.foreign_cores}


# --------------------------------------------------------------------------------------------
# Targets and the table


def _case(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((c for c in results.get("epochs", {}).get("cases", []) if c["case"] == name), None)


SHAPES = ("h300 B1000", "h800 B1000", "h300 B100")


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue with its measured value (the worse one where two cases count);
    ``met`` is None when not measured and in smoke mode (whose numbers mean nothing)."""

    def case_value(name: str, key: str) -> float | None:
        case = _case(results, name)
        return None if case is None else case.get(key)

    def worst(*values: float | None) -> float | None:
        known = [v for v in values if v is not None]
        return max(known) if known else None

    def both_inits(shape: str, key: str) -> float | None:
        return worst(case_value(f"{shape} float32 cs229", key), case_value(f"{shape} float32 xavier", key))

    load = results.get("dataset_load", {})
    recipe = {r["recipe"]: r.get("tool_vs_floor") for r in results.get("recipes", {}).get("recipes", [])}
    values = [
        *(both_inits(shape, "tool_vs_torch") for shape in SHAPES),
        *(both_inits(shape, "tool_vs_floor") for shape in SHAPES),
        recipe.get("best"),
        recipe.get("best-30"),
        worst(*(case_value(f"{shape} float32 cs229", "tool_vs_xavier") for shape in SHAPES)),
        results.get("end_to_end", {}).get("tool_vs_torch"),
        results.get("startup", {}).get("median"),
        worst(*(load.get(split, {}).get("median") for split in ("train", "test"))),
        results.get("memory", {}).get("max_rss_mb"),
    ]
    judged = results.get("mode") != "smoke"
    return [
        {"target": name, "limit": limit, "value": value,
         "met": None if value is None or not judged else bool(value <= limit)}
        for (name, limit), value in zip(TARGETS, values, strict=True)
    ]


def format_table(results: dict[str, Any]) -> str:
    lines = []
    epochs = results.get("epochs", {})
    if epochs.get("cases"):
        lines.append(f"Seconds per epoch ({epochs['data']}; medians of {results.get('repeats', 1)}; "
                     f"{epochs['threads']} threads; torch = the faster of flush-denormal off/on)")
        lines.append(f"{'case':26s} {'tool':>7s} {'floor':>7s} {'torch':>7s} {'t.floor':>7s} "
                     f"{'tool/torch':>10s} {'tool/floor':>10s} {'cs229/xav':>9s}")
        for c in epochs["cases"]:
            s = c["seconds"]
            torch = s.get(c.get("torch_best", ""), {}).get("median")
            tfloor = s.get("torch_floor", {}).get("median")
            lines.append(
                f"{c['case']:26s} {s['tool']['median']:7.3f} {s['floor']['median']:7.3f} {_num(torch, 7, 3)} "
                f"{_num(tfloor, 7, 3)} {_num(c.get('tool_vs_torch'), 10, 2)} {c['tool_vs_floor']:10.2f} "
                f"{_num(c.get('tool_vs_xavier'), 9, 2)}"
            )
    if "recipes" in results:
        lines += recipes.format_lines(results["recipes"])
    e2e = results.get("end_to_end")
    if e2e:
        torch_part = (f", torch (ftz) {e2e['torch_ftz']:.2f} s, ratio {e2e['tool_vs_torch']:.2f}"
                      if "torch_ftz" in e2e else "")
        lines.append(f"end-to-end cs229 (process start to exit): tool {e2e['tool']:.2f} s{torch_part}")
    tta = results.get("time_to_98")
    if tta:
        reached = tta.get("reached")
        text = tta.get("skipped") or (
            f"{tta['seconds']:.1f} s (epoch {reached['epoch']})" if reached else "not reached")
        lines.append(f"time to 98% test accuracy (configs/best-30.yaml): {text}")
    for key, label in (("startup", "mlp --help"), ("eval", "mlp eval (10,000 test images)")):
        if key in results:
            lines.append(f"{label}: {results[key]['median']:.3f} s")
    if "dataset_load" in results:
        d = results["dataset_load"]
        lines.append(f"dataset load: train {d['train']['median'] * 1000:.1f} ms, "
                     f"test {d['test']['median'] * 1000:.1f} ms "
                     f"(train in a fresh process: {d['train_fresh_process']['median'] * 1000:.1f} ms)")
    if "memory" in results:
        lines.append(f"peak memory, default training run: {results['memory']['max_rss_mb']:.0f} MB")
    lines += ["", "Targets:"]
    for t in results.get("targets", []):
        verdict = {True: "met", False: "MISSED", None: "not judged" if t["value"] is not None else "not measured"}
        lines.append(f"  {t['target']:42s} {_num(t['value'], 9, 3)}  (limit {t['limit']:g})  {verdict[t['met']]}")
    return "\n".join(lines)


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}s}"


def _have_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description="mlp's benchmark suite.")
    parser.add_argument("--smoke", action="store_true", help="a few steps of every part (CI): seconds")
    parser.add_argument("--out", type=Path, help="JSON results file (default benchmarks/results/<mode>.json)")
    parser.add_argument("--data-dir", type=Path, help="dataset cache to use/build (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=7, help="timed epochs per contender and case")
    parser.add_argument("--e2e-repeats", type=int, default=5, help="end-to-end runs per contender")
    parser.add_argument("--parts", default="epochs,recipes,startup,dataset,e2e,eval,memory,accuracy",
                        help="comma-separated subset of: epochs, recipes, startup, dataset, e2e, eval, memory, "
                        "accuracy")
    parser.add_argument("--only", nargs="*", help="epoch cases whose name contains one of these words")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch references")
    parser.add_argument("--max-wait", type=float, default=300.0, help="seconds to wait for a quiet machine")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.smoke:
        machine.NEVER_WAIT = True
    parts = set(args.parts.split(","))
    mode = "smoke" if args.smoke else "full"
    out = args.out or REPO_ROOT / "benchmarks" / "results" / f"{mode}.json"
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="mlp-bench-") as tmp:
        work = Path(tmp)
        data_dir = args.data_dir or work / "data"
        have_mnist = prepare_cache(data_dir)
        results: dict[str, Any] = {"mode": mode, "machine": machine.describe(), "started": _iso(started),
                                   "repeats": 1 if args.smoke else args.repeats}
        if not have_mnist:
            results["note"] = "MNIST not available (no offline copy): only synthetic epoch timings and --help"
        steps: list[tuple[str, str, Callable[[], Any], bool]] = [
            ("epochs", "epochs", lambda: bench_epochs(args, have_mnist, data_dir, work), True),
            ("recipes", "recipes", lambda: recipes.measure(args.smoke, _have_torch() and not args.no_torch), True),
            ("startup", "startup", lambda: bench_startup(args), True),
            ("dataset", "dataset_load", lambda: bench_dataset_load(args, data_dir), have_mnist),
            ("e2e", "end_to_end", lambda: bench_end_to_end(args, data_dir, work), have_mnist),
            ("eval", "eval", lambda: bench_eval(args, data_dir, work), have_mnist and "e2e" in parts),
            ("memory", "memory", lambda: bench_memory(args, data_dir, work), have_mnist),
            ("accuracy", "time_to_98", lambda: bench_time_to_accuracy(args, data_dir, work), have_mnist),
        ]
        for part, key, run, possible in steps:
            if part in parts and possible:
                results[key] = run()
        results["targets"] = evaluate_targets(results)
        results["machine"]["loadavg_at_end"] = machine.uptime_load()
        results["seconds"] = round(time.time() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=_json_default) + "\n", encoding="utf-8")
    print(format_table(results))
    print(f"\nwrote {out}")
    return results


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    main()
