"""One optimisation step, and the end-of-epoch evaluation.

``train_step`` is the whole inner loop of training: the hand-derived gradients of the batch
(``nn.backprop.loss_and_gradients``, through the batch's dropout masks when the run uses
dropout) and one optimiser update with the schedule's rate. The benchmarks time this very
function. ``DivergenceGuard`` turns a blown-up loss into an error
that names the last good checkpoint instead of a NaN run.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mlp_cli.config import Config
from mlp_cli.errors import TrainingError
from mlp_cli.nn import fused
from mlp_cli.nn.backprop import loss_and_gradients
from mlp_cli.nn.dropout import DROPOUT_STREAM, Masks, draw_masks_at
from mlp_cli.nn.evaluation import loss_and_accuracy
from mlp_cli.nn.loss import CROSS_ENTROPY
from mlp_cli.nn.workspace import Workspace
from mlp_cli.training.inputs import TrainingData
from mlp_cli.training.state import TrainState

# A loss this many times the run's first batch loss (or the loss of a uniform prediction, log k,
# if larger) means divergence: with a saturated sigmoid a far too large learning rate gives huge
# but finite losses, not NaN.
DIVERGENCE_FACTOR = 100.0


def train_step(
    state: TrainState, X: np.ndarray, y: np.ndarray, l2: float, workspace: Workspace, masks: Masks | None = None
) -> float:
    """Update the parameters once from the batch (X (B, 784), y (B,)); returns its mean loss."""
    lr = state.schedule(state.step)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # judged by DivergenceGuard
        loss, grads = loss_and_gradients(state.params, X, y, 0.0, workspace, masks)
        # the L2 term's gradient 2 lambda W joins the update's pass over W (nn.optimizers)
        state.optimizer.step(state.params.as_dict(), grads.as_dict(), lr, penalty=2.0 * l2)
    state.step += 1
    return loss


class Dropout:
    """The dropout masks of each training batch (None when the run uses no dropout).

    A batch's masks come from ``default_rng([seed, DROPOUT_STREAM, epoch, batch])``: a pure
    function of its position, so a run resumed at any batch draws the masks an uninterrupted one
    would, whatever the rates were before a resume changed them.
    """

    def __init__(self, config: Config, workspace: Workspace) -> None:
        self.seed, self.units, self.workspace = config.train.seed, config.model.hidden, workspace
        self.input_rate, self.hidden_rate = config.train.input_dropout, config.train.dropout

    def masks(self, epoch: int, batch: int, X: np.ndarray) -> Masks | None:
        """The masks of batch ``batch`` (0-based) of epoch ``epoch`` (1-based), X (B, d)."""
        if self.input_rate == 0 and self.hidden_rate == 0:
            return None
        return draw_masks_at([self.seed, DROPOUT_STREAM, epoch, batch], X.shape[0], X.shape[1], self.units,
                             self.input_rate, self.hidden_rate, X.dtype, self.workspace, fused.kernels())


def evaluate_splits(
    state: TrainState, data: TrainingData, workspace: Workspace
) -> tuple[float, float, float | None, float | None]:
    """(train loss, train accuracy, dev loss, dev accuracy) of the current parameters; the dev
    figures are None without a dev set."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        train_loss, train_accuracy = loss_and_accuracy(state.params, data.X_train, data.y_train, workspace=workspace)
        if not len(data.y_dev):
            return train_loss, train_accuracy, None, None
        dev_loss, dev_accuracy = loss_and_accuracy(state.params, data.X_dev, data.y_dev, workspace=workspace)
    return train_loss, train_accuracy, dev_loss, dev_accuracy


class DivergenceGuard:
    """Raises TrainingError once a loss is non-finite or absurdly above the first batch's."""

    def __init__(self, run_dir: Path, classes: int) -> None:
        self.run_dir, self.floor = run_dir, CROSS_ENTROPY.uniform(classes)  # log k: the loss trained
        self.reference: float | None = None  # the first batch's loss: the scale of "absurd"

    def check(self, loss: float, state: TrainState, epoch: int, batch: int, finite_only: bool = False) -> None:
        """``batch`` is 1-based; ``finite_only`` judges a loss by finiteness alone (the dev loss)."""
        if self.reference is None:
            self.reference = max(loss, self.floor)
        if math.isfinite(loss) and (finite_only or loss <= DIVERGENCE_FACTOR * self.reference):
            return
        good_epoch = state.epoch
        lr = state.schedule(max(state.step - 1, 0))
        kept = (
            f"the last good checkpoint is {self.run_dir / 'last.npz'} (epoch {good_epoch})"
            if good_epoch > 0 else "no checkpoint was written"
        )
        raise TrainingError(
            f"training diverged: the loss became {loss:.4g} at epoch {epoch}, batch {batch} with learning "
            f"rate {lr:g}; {kept}; try a smaller learning rate (e.g. --lr {lr / 10:g})"
        )
