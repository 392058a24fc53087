"""The training loop: mini-batch gradient descent on the hand-derived gradients.

``prepare_data`` turns the cached dataset into float inputs (split, normalised); ``train`` runs
the epochs, evaluates train and dev after each one, appends a row to ``metrics.jsonl`` and writes
``last.npz`` (every epoch), ``best.npz`` (best dev accuracy) and ``epoch-NNN.npz`` when asked.

Reproducibility: the initial weights come from ``default_rng(seed)`` and each epoch's shuffling
order from ``default_rng([seed, epoch])``, so a run can be resumed at any step (even mid-epoch)
and continue with bit-identical numbers. Interruption (``stop_requested`` returning True, which
the CLI wires to Ctrl-C) is honoured between two steps, never inside an update.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mlp_cli.atomic import atomic_write_text, make_parents
from mlp_cli.config import Config, check_against_data
from mlp_cli.data.augment import augment, batch_rng, is_identity
from mlp_cli.data.preprocess import Preprocessing, fit_preprocessing, split_train_dev
from mlp_cli.errors import (
    CheckpointError,
    ConfigError,
    MlpError,
    RunDirError,
    TrainingError,
    UsageError,
)
from mlp_cli.nn.network import Workspace, init_params, loss_and_accuracy, loss_and_gradients
from mlp_cli.nn.optim import PlateauSchedule, make_optimizer, make_schedule
from mlp_cli.training.checkpoint import Checkpoint, save_checkpoint
from mlp_cli.training.early_stopping import EarlyStopping
from mlp_cli.training.metrics import METRICS_FILE, EpochMetrics, append_metrics, truncate_metrics

# A loss this many times the run's first batch loss (or log k, if larger) means divergence: with
# a saturated sigmoid a far too large learning rate gives huge but finite losses, not NaN.
DIVERGENCE_FACTOR = 100.0


class TrainingInterrupted(MlpError):
    """The user stopped training; a checkpoint was saved to resume from."""

    exit_code = 130


@dataclass
class TrainingData:
    """Inputs ready for the network: X float (n, 784), y int64 (n,)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_dev: np.ndarray
    y_dev: np.ndarray
    preprocessing: Preprocessing
    checksums: dict[str, str] = field(default_factory=dict)
    images_train: np.ndarray | None = None  # (n, 28, 28) uint8 raw pixels, kept only when augmenting


@dataclass
class TrainResult:
    run_dir: Path
    rows: list[EpochMetrics]
    best_epoch: int
    best_accuracy: float
    seconds: float


class Observer:
    """Hooks the CLI implements to show progress; the defaults do nothing."""

    def on_start(self, config: Config, run_dir: Path, steps_per_epoch: int, start_epoch: int) -> None:
        pass

    def on_step(self, epoch: int, batch: int, steps_per_epoch: int, loss: float) -> None:
        pass

    def on_epoch(self, row: EpochMetrics, is_best: bool) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Data


def prepare_data(
    config: Config,
    *,
    data_dir: str | Path | None = None,
    mirrors: tuple[str, ...] | list[str] = (),
    reporter: Any = None,
    preprocessing: Preprocessing | None = None,
) -> TrainingData:
    """Load the training split, cut off the dev set, fit (or reuse) the normalisation."""
    from mlp_cli.data.cache import dataset_checksums, load_dataset

    images, labels = load_dataset(
        config.data.dataset, "train", data_dir=data_dir, mirrors=tuple(mirrors), reporter=reporter
    )
    if config.data.dev_size >= len(labels):
        raise ConfigError(
            f"data.dev_size = {config.data.dev_size} leaves no training examples out of "
            f"{len(labels)}; expected fewer than {len(labels)}"
        )
    train_idx, dev_idx = split_train_dev(
        len(labels), config.data.dev_size, config.data.split_seed, config.data.limit
    )
    check_against_data(config, len(train_idx))
    train_images = images[train_idx]
    prep = preprocessing or fit_preprocessing(config.data.preprocess, train_images)
    dtype = config.model.dtype
    return TrainingData(
        X_train=prep.apply(train_images, dtype),
        y_train=np.asarray(labels[train_idx], dtype=np.int64),
        X_dev=prep.apply(images[dev_idx], dtype),
        y_dev=np.asarray(labels[dev_idx], dtype=np.int64),
        preprocessing=prep,
        checksums=dataset_checksums(config.data.dataset),
        images_train=np.ascontiguousarray(train_images) if not is_identity(config.augment) else None,
    )


# --------------------------------------------------------------------------------------------
# Run directory


def default_run_name(config_name: str | None) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{config_name or 'run'}-{stamp}"


def create_run_dir(config: Config, config_name: str | None, overwrite: bool = False) -> Path:
    """``run.dir`` or ``runs/<run.name or config-timestamp>``; never silently reused."""
    if config.run.dir:
        run_dir = Path(config.run.dir)
    else:
        run_dir = Path("runs") / (config.run.name or default_run_name(config_name))
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} exists and is not a directory")
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        if (run_dir / "last.npz").exists():
            advice = f"pass --overwrite to replace it, --resume {run_dir / 'last.npz'} to continue it"
        elif [p.name for p in run_dir.iterdir()] == ["config.yaml"]:  # a run that saved nothing
            advice = "it holds only a config.yaml, no checkpoint; pass --overwrite to reuse it"
        else:
            advice = "pass --overwrite to replace it"
        raise RunDirError(f"run directory {run_dir} already exists; {advice}, or choose another --out")
    try:
        make_parents(run_dir / "config.yaml")
        if overwrite:
            for name in (METRICS_FILE, "last.npz", "best.npz", "summary.json"):
                (run_dir / name).unlink(missing_ok=True)
            for old in run_dir.glob("epoch-*.npz"):
                old.unlink()
    except NotADirectoryError as err:  # a file where --out needs a directory: the path typed is wrong
        raise RunDirError(f"cannot create run directory {run_dir}: {err.strerror}") from None
    except OSError as err:  # the disk is at fault (read-only, full, permissions)
        raise MlpError(f"cannot create run directory {run_dir}: {err.strerror}") from None
    atomic_write_text(run_dir / "config.yaml", config.to_yaml())
    return run_dir


# --------------------------------------------------------------------------------------------
# Training


def train(
    config: Config,
    data: TrainingData,
    run_dir: str | Path,
    *,
    resume: Checkpoint | None = None,
    observer: Observer | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> TrainResult:
    """Train for ``config.train.epochs`` epochs (counting those already done in ``resume``)."""
    run_dir = Path(run_dir)
    observer = observer or Observer()
    tc, oc, sc = config.train, config.optimizer, config.schedule
    n = len(data.y_train)
    batch_size = tc.batch_size
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = steps_per_epoch * tc.epochs

    if resume is None:
        params = init_params(config.model.hidden, np.random.default_rng(tc.seed), config.model.init, config.model.dtype)
    else:
        params = resume.params
        check_resumable(config, resume)
    optimizer = make_optimizer(
        oc.name, params.as_dict(), momentum=oc.momentum, beta1=oc.beta1, beta2=oc.beta2,
        eps=oc.eps, weight_decay=oc.weight_decay,
    )
    schedule = make_schedule(
        sc.name, oc.lr, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
        step_size=sc.step_size, gamma=sc.gamma, min_lr=sc.min_lr, warmup_epochs=sc.warmup_epochs,
        plateau_patience=sc.plateau_patience, plateau_factor=sc.plateau_factor,
        plateau_min_delta=sc.plateau_min_delta,
    )
    plateau = schedule if isinstance(schedule, PlateauSchedule) else None
    stopper = EarlyStopping.from_config(config.early_stopping)
    raw_images = data.images_train  # (n, 28, 28) uint8 when augmenting, else None

    done_epochs, step, best_epoch, best_accuracy = 0, 0, 0, -1.0
    if resume is not None:
        optimizer.load_state_dict(resume.optimizer_state)
        if plateau is not None:
            plateau.load_state_dict(resume.meta.get("plateau", plateau.state_dict()))
        if stopper is not None:
            stopper.load_state_dict(resume.meta.get("early_stopping", stopper.state_dict()))
            if stopper.stopped:
                raise UsageError(
                    f"this run stopped early at epoch {stopper.stopped_epoch} (no dev improvement for "
                    f"{stopper.patience} epochs); raise early_stopping.patience or set "
                    "early_stopping.enabled=false to train it further"
                )
        done_epochs, step = resume.epoch, resume.step
        best_epoch = int(resume.meta.get("best_epoch", 0))
        best_accuracy = float(resume.meta.get("best_accuracy", -1.0))
        truncate_metrics(run_dir / METRICS_FILE, done_epochs)
    start_batch = step - done_epochs * steps_per_epoch
    if not 0 <= start_batch < steps_per_epoch:
        raise CheckpointError(
            f"checkpoint position (epoch {done_epochs}, step {step}) does not fit "
            f"{steps_per_epoch} steps per epoch; was the batch size or dataset changed?"
        )

    def meta(epoch: int, accuracy: float | None = None) -> dict[str, Any]:
        return {
            "config": config.to_dict(),
            "epoch": epoch,
            "step": step,
            "best_epoch": best_epoch,
            "best_accuracy": best_accuracy,
            "accuracy": accuracy,
            "preprocessing": data.preprocessing.to_dict(),
            "datasets": data.checksums,
            "rng": {"seed": tc.seed, "init": "default_rng(seed)", "shuffle": "default_rng([seed, epoch])"},
            **({"plateau": plateau.state_dict()} if plateau is not None else {}),
            **({"early_stopping": stopper.state_dict()} if stopper is not None else {}),
            "saved_at": datetime.now().isoformat(timespec="seconds"),
        }

    observer.on_start(config, run_dir, steps_per_epoch, done_epochs + 1)
    workspace = Workspace()
    gather = np.empty((min(batch_size, n), data.X_train.shape[1]), dtype=data.X_train.dtype)
    rows: list[EpochMetrics] = []
    run_start = time.perf_counter()
    lr = schedule(step)
    reference_loss: float | None = None  # the first batch's loss: the scale divergence is judged by
    for epoch in range(done_epochs + 1, tc.epochs + 1):
        order = np.random.default_rng([tc.seed, epoch]).permutation(n) if tc.shuffle else None
        epoch_start = time.perf_counter()
        for batch in range(start_batch, steps_per_epoch):
            lo, hi = batch * batch_size, min(n, (batch + 1) * batch_size)
            if raw_images is not None:  # fresh distortions of the raw pixels, then the stored preprocessing
                picked = slice(lo, hi) if order is None else order[lo:hi]
                rng = batch_rng(tc.seed, epoch, batch)  # depends on (seed, epoch, batch) only: resumable
                pixels = augment(raw_images[picked], config.augment, rng)  # (B, 28, 28)
                X, y = data.preprocessing.apply(pixels, data.X_train.dtype), data.y_train[picked]  # (B, 784)
            elif order is None:  # batches in order: views, no copy
                X, y = data.X_train[lo:hi], data.y_train[lo:hi]
            else:  # gather the shuffled rows into one reused buffer
                X = np.take(data.X_train, order[lo:hi], axis=0, out=gather[: hi - lo], mode="clip")
                y = data.y_train[order[lo:hi]]
            lr = schedule(step)
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                loss, grads = loss_and_gradients(params, X, y, tc.l2, workspace)
            if reference_loss is None:
                reference_loss = max(loss, math.log(params.W2.shape[1]))
            if not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * reference_loss:
                raise _diverged(run_dir, epoch, batch + 1, loss, lr, done_epochs)
            optimizer.step(params.as_dict(), grads.as_dict(), lr)
            step += 1
            observer.on_step(epoch, batch + 1, steps_per_epoch, loss)
            if batch + 1 < steps_per_epoch and stop_requested():
                path = run_dir / "last.npz"
                save_checkpoint(path, params, optimizer.state_dict(), meta(epoch - 1))
                raise TrainingInterrupted(
                    f"interrupted during epoch {epoch} (step {step}); saved {path}; "
                    f"continue with: mlp train --resume {path}"
                )
        start_batch = 0
        seconds = time.perf_counter() - epoch_start

        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # forward only, the step's buffers
            train_loss, train_accuracy = loss_and_accuracy(params, data.X_train, data.y_train, workspace=workspace)
            dev_loss, dev_accuracy = (
                loss_and_accuracy(params, data.X_dev, data.y_dev, workspace=workspace)
                if len(data.y_dev) else (None, None)
            )
        if not all(math.isfinite(v) for v in (train_loss, dev_loss or 0.0)) or (
            reference_loss is not None and train_loss > DIVERGENCE_FACTOR * reference_loss
        ):
            raise _diverged(run_dir, epoch, steps_per_epoch, train_loss, lr, done_epochs)
        row = EpochMetrics(
            epoch=epoch, step=step, train_loss=train_loss, train_accuracy=train_accuracy,
            dev_loss=dev_loss, dev_accuracy=dev_accuracy, lr=float(lr), seconds=seconds,
            examples_per_second=n / seconds if seconds > 0 else 0.0,
            elapsed=time.perf_counter() - run_start,
        )
        accuracy = dev_accuracy if dev_accuracy is not None else train_accuracy
        is_best = accuracy > best_accuracy
        if is_best:
            best_epoch, best_accuracy = epoch, accuracy
        if plateau is not None:
            plateau.update(epoch, accuracy)  # the next epoch's rate; saved below with the state
        stop_early = stopper is not None and stopper.update(epoch, accuracy)
        if stop_early:
            row = dataclasses.replace(row, stopped_early=True)
        append_metrics(run_dir / METRICS_FILE, row)
        rows.append(row)
        done_epochs = epoch
        state = optimizer.state_dict()
        save_checkpoint(run_dir / "last.npz", params, state, meta(epoch, accuracy))
        if is_best:
            save_checkpoint(run_dir / "best.npz", params, state, meta(epoch, accuracy))
        if config.run.checkpoint_every and epoch % config.run.checkpoint_every == 0:
            save_checkpoint(run_dir / f"epoch-{epoch:03d}.npz", params, state, meta(epoch, accuracy))
        observer.on_epoch(row, is_best)
        if stop_early:
            break
        if stop_requested() and epoch < tc.epochs:
            raise TrainingInterrupted(
                f"interrupted after epoch {epoch}; saved {run_dir / 'last.npz'}; "
                f"continue with: mlp train --resume {run_dir / 'last.npz'}"
            )

    return TrainResult(
        run_dir=run_dir, rows=rows, best_epoch=best_epoch, best_accuracy=best_accuracy,
        seconds=time.perf_counter() - run_start,
    )


def check_resumable(config: Config, checkpoint: Checkpoint) -> None:
    """A checkpoint can only continue a run of the same network and data."""
    saved = checkpoint.config
    checks = {
        "model.hidden": (config.model.hidden, checkpoint.params.hidden),
        "model.dtype": (config.model.dtype, str(checkpoint.params.dtype)),
        "optimizer.name": (config.optimizer.name, saved.get("optimizer", {}).get("name")),
        "data.dataset": (config.data.dataset, saved.get("data", {}).get("dataset")),
    }
    for key, (wanted, found) in checks.items():
        if wanted != found:
            raise CheckpointError(
                f"cannot resume: the config has {key} = {wanted} but the checkpoint was "
                f"trained with {found}"
            )
    if checkpoint.epoch >= config.train.epochs:
        raise UsageError(
            f"the checkpoint has already trained {checkpoint.epoch} of {config.train.epochs} "
            f"epochs; pass --epochs with a larger number to train further"
        )


def _diverged(run_dir: Path, epoch: int, batch: int, loss: float, lr: float, good_epoch: int) -> TrainingError:
    kept = (
        f"the last good checkpoint is {run_dir / 'last.npz'} (epoch {good_epoch})"
        if good_epoch > 0
        else "no checkpoint was written"
    )
    return TrainingError(
        f"training diverged: the loss became {loss:.4g} at epoch {epoch}, batch {batch} with learning "
        f"rate {lr:g}; {kept}; try a smaller learning rate (e.g. --lr {lr / 10:g})"
    )
