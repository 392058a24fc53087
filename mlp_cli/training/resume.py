"""Resuming a checkpoint: what may change, and where the continued run is written.

A run directory's history only grows. ``--resume CK`` continues in CK's own directory only when
CK is that run's latest state (its last.npz, or a copy of it); from an earlier point (best.npz,
epoch-NNN.npz) the history goes further, so the user must choose: ``--out NEW`` branches (NEW
gets CK's history up to CK's epoch, its own config.yaml and a parent.json naming CK), or
``--overwrite`` explicitly discards the later epochs.

``RESUME_RULES`` is the one table of what a resumed run may change: hyper-parameters of the
descent may; what defines the network and its data may not.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlp_cli.atomic import atomic_write_text
from mlp_cli.config import SECTIONS, Config
from mlp_cli.errors import CheckpointError, RunDirError, UsageError
from mlp_cli.training.checkpoint import Checkpoint, checkpoint_sha256, load_checkpoint
from mlp_cli.training.metrics import METRICS_FILE, copy_metrics
from mlp_cli.training.run_dir import clear_products, contents
from mlp_cli.training.state import NO_BEST

# Section (or section.key, which wins over its section) -> may it change on resume?
RESUME_RULES: dict[str, bool] = {
    "data": False,  # dataset, split, limit, preprocessing: the examples and their meaning
    "model": False,  # architecture, initialisation, dtype
    "train": False,  # batch size, seed and shuffling fix each step's batch...
    "train.epochs": True,  # ... but the length of the run and
    "train.l2": True,  # the penalty
    "train.dropout": True,  # and dropout may change
    "train.input_dropout": True,
    "optimizer": True,  # rate and hyper-parameters...
    "optimizer.name": False,  # ... but not the optimiser, whose state the checkpoint holds
    "schedule": True,
    "augment": True,
    "early_stopping": True,
    "run": True,  # where and how often to save
}


def may_change(key: str) -> bool:
    """Whether ``section.key`` may differ between a checkpoint and the run resuming it."""
    return RESUME_RULES.get(key, RESUME_RULES[key.split(".")[0]])


def changed_settings(saved: dict[str, Any], config: Config) -> dict[str, list[Any]]:
    """Every setting whose value differs from the checkpoint's config: key -> [old, new]."""
    new = config.to_dict()
    changes = {}
    for section in SECTIONS:
        for key, value in new[section].items():
            old = saved.get(section, {}).get(key, value)
            if old != value and not (section == "run" and key in ("dir", "name")):
                changes[f"{section}.{key}"] = [old, value]
    return changes


def check_resumable(config: Config, checkpoint: Checkpoint) -> dict[str, list[Any]]:
    """Refuse a change the table forbids (naming the key); return the allowed changes."""
    changes = changed_settings(checkpoint.config, config)
    for key, (old, new) in changes.items():
        if not may_change(key):
            raise CheckpointError(
                f"cannot resume: the config has {key} = {new} but the checkpoint was trained with {old}; "
                f"{key} cannot change within a run (start a new run instead)"
            )
    if checkpoint.epoch >= config.train.epochs:
        raise UsageError(
            f"the checkpoint has already trained {checkpoint.epoch} of {config.train.epochs} "
            f"epochs; pass --epochs with a larger number to train further"
        )
    return changes


@dataclass(frozen=True)
class ResumePlan:
    run_dir: Path
    mode: str  # "continue", "branch" or "overwrite"
    source: Path  # the checkpoint resumed


def resume_source(path: Path) -> Path:
    """The checkpoint ``--resume`` was given; a run directory is refused, naming its last.npz
    (the latest state, what resuming continues), not best.npz."""
    if path.is_dir():
        latest = path / "last.npz"
        raise UsageError(f"--resume {path} is a run directory; resume its latest state: --resume {latest}"
                         + ("" if latest.is_file() else f" (it has none yet: {path} has not finished an epoch)"))
    return path


def plan_resume(source: Path, checkpoint: Checkpoint, out: Path | None, overwrite: bool) -> ResumePlan:
    """Where a resumed run is written; refuses, before any work, to rewrite history."""
    home = source.parent
    if out is not None and out.resolve() != home.resolve():
        if contents(out) and not overwrite:
            raise RunDirError(f"run directory {out} already exists; choose another --out for the branch")
        return ResumePlan(out, "branch", source)
    if is_latest(source, checkpoint):
        return ResumePlan(home, "continue", source)
    if overwrite:
        return ResumePlan(home, "overwrite", source)
    latest = f"; to continue the run itself, resume {home / 'last.npz'}" if (home / "last.npz").is_file() else ""
    raise RunDirError(
        f"{source} (epoch {checkpoint.epoch}, step {checkpoint.step}) is not the latest state of {home}, "
        f"whose history goes further; continue it in a new directory with --out NEW, or pass --overwrite "
        f"to discard the later epochs{latest}"
    )


def is_latest(source: Path, checkpoint: Checkpoint) -> bool:
    """Whether ``source`` holds the same state as its directory's last.npz. (A metrics row beyond
    it is an epoch whose checkpoint a crash or a full disk cut short: continuing redoes it.)"""
    last_path = source.parent / "last.npz"
    if not last_path.exists():
        return False
    last = checkpoint if last_path.resolve() == source.resolve() else load_checkpoint(last_path)
    if (last.epoch, last.step) != (checkpoint.epoch, checkpoint.step):
        return False
    return all(np.array_equal(last.params[k], checkpoint.params[k]) for k in ("W1", "b1", "W2", "b2"))


def prepare_run_dir(plan: ResumePlan, checkpoint: Checkpoint) -> None:
    """Make ``plan.run_dir`` hold exactly the history up to the checkpoint (run under its lock)."""
    home = plan.source.parent
    if plan.mode == "branch":
        clear_products(plan.run_dir)  # of a run --overwrite replaces, before the history comes in
    copy_metrics(home / METRICS_FILE, plan.run_dir / METRICS_FILE, checkpoint.epoch)
    if plan.mode == "continue":
        return
    best = _best_as_of(home, plan.source, checkpoint)
    if plan.mode == "branch":
        parent = {"path": str(plan.source), "epoch": checkpoint.epoch, "step": checkpoint.step,
                  "sha256": checkpoint_sha256(plan.source)}
        atomic_write_text(plan.run_dir / "parent.json", json.dumps(parent) + "\n")
    else:  # overwrite: the later epochs go
        for old in home.glob("epoch-*.npz"):
            if _epoch_of(old) > checkpoint.epoch:
                old.unlink()
    if best is None:  # the best weights of that history are gone: best.npz starts again from here
        (plan.run_dir / "best.npz").unlink(missing_ok=True)
        checkpoint.meta.update(best_epoch=0, best_accuracy=NO_BEST)
    elif best.resolve() != (plan.run_dir / "best.npz").resolve():
        shutil.copyfile(best, plan.run_dir / "best.npz")


def _best_as_of(home: Path, source: Path, checkpoint: Checkpoint) -> Path | None:
    """A file holding the weights of the checkpoint's best epoch, if one is left: best.npz when
    it is no later than the checkpoint, the checkpoint itself when it was its own best, or that
    epoch's epoch-NNN.npz."""
    best_epoch = int(checkpoint.meta.get("best_epoch", 0))
    if (home / "best.npz").exists() and load_checkpoint(home / "best.npz").epoch <= checkpoint.epoch:
        return home / "best.npz"
    if best_epoch == checkpoint.epoch and checkpoint.meta.get("accuracy") is not None:  # saved at that epoch's end
        return source
    numbered = home / f"epoch-{best_epoch:03d}.npz"
    return numbered if best_epoch and numbered.exists() else None


def _epoch_of(path: Path) -> int:
    digits = path.stem.removeprefix("epoch-")
    return int(digits) if digits.isdigit() else 0
