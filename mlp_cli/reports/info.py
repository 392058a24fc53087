"""The network on paper: its tensors, its size, its arithmetic and the memory a run needs.

Names and shapes follow the derivation (d = 784 inputs, h hidden units, k = 10 classes, B the
batch size): W1 in R^{d x h}, b1 in R^h, W2 in R^{h x k}, b2 in R^k.

FLOPs are counted per example, the usual way: a multiply-add is 2 FLOPs, so a matrix product
(B, m) @ (m, n) costs 2 B m n; every other elementwise operation (add, multiply, exp, tanh, log,
a comparison for the max) costs 1 per element. The sigmoid 0.5 (1 + tanh(z / 2)) is 4 per unit.
Work done once per step rather than per example (the L2 gradient 2 lambda W and the optimiser's
update, a few FLOPs per parameter) is listed separately.

Memory is what a training run of this config allocates and keeps: parameters, the optimiser's
state and scratch (its registry entry's counts), the buffers of the training step and of the
evaluation (gradients included: listed by the layouts ``loss_and_gradients`` and
``loss_and_accuracy`` allocate from, so the figures are the code's own), the shuffled batch and
the dataset converted to the model's float dtype (train and dev splits). Python's and numpy's own
overhead and the short-lived per-row vectors of an evaluation block are not counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlp_cli.memory import require_memory
from mlp_cli.nn.backprop import step_layout
from mlp_cli.nn.dropout import dropout_layout
from mlp_cli.nn.evaluation import evaluation_layout
from mlp_cli.nn.fused import kernel_name
from mlp_cli.nn.network import CLASSES, INPUTS
from mlp_cli.nn.registry import OPTIMIZERS
from mlp_cli.nn.workspace import Layout

if TYPE_CHECKING:
    from mlp_cli.config import Config

ITEMSIZE = {"float32": 4, "float64": 8}
STEP_COUNTER_BYTES = 8  # the 0-d int64 "t" of an optimiser with a step counter


@dataclass(frozen=True)
class Tensor:
    name: str
    space: str  # as the derivation writes it, e.g. R^{784×h}
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        count = 1
        for n in self.shape:
            count *= n
        return count


@dataclass(frozen=True)
class Cost:
    """One line of a FLOP or memory account: what, the formula, the number."""

    what: str
    formula: str
    value: int


@dataclass(frozen=True)
class NetworkInfo:
    hidden: int
    dtype: str
    batch_size: int
    optimizer: str
    l2: float
    train_examples: int
    dev_examples: int
    tensors: tuple[Tensor, ...]
    forward: tuple[Cost, ...]  # FLOPs per example
    backward: tuple[Cost, ...]  # FLOPs per example
    per_step: tuple[Cost, ...]  # FLOPs per optimisation step
    memory: tuple[Cost, ...]  # bytes
    dropout: float = 0.0  # of the hidden units
    input_dropout: float = 0.0  # of the pixels

    @property
    def parameters(self) -> int:
        return sum(t.size for t in self.tensors)

    @property
    def forward_flops(self) -> int:
        return sum(c.value for c in self.forward)

    @property
    def backward_flops(self) -> int:
        return sum(c.value for c in self.backward)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.train_examples // self.batch_size)

    @property
    def epoch_flops(self) -> int:
        """One epoch: forward and backward on every training example, the per-step work, then the
        evaluation (a forward pass) of the train and dev splits."""
        training = self.train_examples * (self.forward_flops + self.backward_flops)
        updates = self.steps_per_epoch * sum(c.value for c in self.per_step)
        evaluation = (self.train_examples + self.dev_examples) * self.forward_flops
        return training + updates + evaluation

    @property
    def memory_bytes(self) -> int:
        return sum(c.value for c in self.memory)

    def to_dict(self) -> dict[str, Any]:
        def costs(items: tuple[Cost, ...]) -> list[dict[str, Any]]:
            return [{"what": c.what, "formula": c.formula, "value": c.value} for c in items]

        return {
            "architecture": f"{INPUTS}-{self.hidden}-{CLASSES}",
            "hidden": self.hidden, "dtype": self.dtype, "batch_size": self.batch_size,
            "optimizer": self.optimizer, "l2": self.l2,
            "dropout": self.dropout, "input_dropout": self.input_dropout,
            "train_examples": self.train_examples, "dev_examples": self.dev_examples,
            "tensors": [{"name": t.name, "space": t.space, "shape": list(t.shape), "size": t.size}
                        for t in self.tensors],
            "parameters": self.parameters,
            "flops": {
                "forward_per_example": self.forward_flops,
                "backward_per_example": self.backward_flops,
                "per_step": sum(c.value for c in self.per_step),
                "per_epoch": self.epoch_flops,
                "forward": costs(self.forward), "backward": costs(self.backward),
                "step": costs(self.per_step),
            },
            "memory": {"total_bytes": self.memory_bytes, "items": costs(self.memory)},
        }


def network_info(
    hidden: int,
    *,
    batch_size: int = 1000,
    dtype: str = "float32",
    optimizer: str = "sgd",
    l2: float = 0.0,
    train_examples: int = 50_000,
    dev_examples: int = 10_000,
    shuffle: bool = True,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
) -> NetworkInfo:
    """The account for a 784-h-10 network trained with these settings."""
    d, h, k, B = INPUTS, hidden, CLASSES, min(batch_size, max(train_examples, 1))
    tensors = (
        Tensor("W1", "R^{784×h}", (d, h)),
        Tensor("b1", "R^h", (h,)),
        Tensor("W2", "R^{h×10}", (h, k)),
        Tensor("b2", "R^10", (k,)),
    )
    # dropout's products where its rates ask for them (drawing the masks is not counted)
    forward = (
        *((Cost("X~ = X * M0", "d", d),) if input_dropout > 0 else ()),
        Cost("Z1 = X W1 + b1", "2dh + h", 2 * d * h + h),
        Cost("A1 = sigmoid(Z1)", "4h", 4 * h),
        *((Cost("A1~ = A1 * M1", "h", h),) if dropout > 0 else ()),
        Cost("Z2 = A1 W2 + b2", "2hk + k", 2 * h * k + k),
        Cost("P = softmax(Z2)", "5k", 5 * k),  # max, subtract, exp, sum, divide,
        Cost("J = -log P[y]", "2", 2),  # log of the sum, minus the true score,
    )
    backward = (
        Cost("dZ2 = (P - Y) / B", "k + 1", k + 1),
        Cost("dW2 = A1^T dZ2", "2hk", 2 * h * k),
        Cost("db2 = sum dZ2", "k", k),
        Cost("dA1 = dZ2 W2^T", "2hk", 2 * h * k),
        *((Cost("dA1 *= M1", "h", h),) if dropout > 0 else ()),
        Cost("dZ1 = dA1 * A1 (1 - A1)", "3h", 3 * h),
        Cost("dW1 = X^T dZ1", "2dh", 2 * d * h),
        Cost("db1 = sum dZ1", "h", h),
    )
    n_params = sum(t.size for t in tensors)
    n_weights = d * h + h * k
    spec = OPTIMIZERS[optimizer]
    per_step = [Cost(f"{optimizer} update", f"{spec.flops_per_parameter} × parameters",
                     spec.flops_per_parameter * n_params)]
    if l2 > 0:
        per_step.insert(0, Cost("dW += 2 lambda W", "2 (dh + hk)", 2 * n_weights))

    thinning = dropout_layout(B, d, h, input_dropout, dropout)
    memory = _memory(B, h, dtype, optimizer, l2, train_examples, dev_examples, shuffle, thinning)
    return NetworkInfo(
        hidden=h, dtype=dtype, batch_size=B, optimizer=optimizer, l2=l2,
        train_examples=train_examples, dev_examples=dev_examples, tensors=tensors,
        forward=forward, backward=backward, per_step=tuple(per_step), memory=memory,
        dropout=dropout, input_dropout=input_dropout,
    )


def _memory(
    B: int, h: int, dtype: str, optimizer: str, l2: float, train_examples: int, dev_examples: int, shuffle: bool,
    thinning: list[Layout],
) -> tuple[Cost, ...]:
    """Bytes a run keeps: the optimiser's from its registry entry, the kernels' from their layouts."""
    d, k, size, spec = INPUTS, CLASSES, ITEMSIZE[dtype], OPTIMIZERS[optimizer]
    n_params = d * h + h + h * k + k
    step = step_layout(B, d, h, k)
    evaluation = evaluation_layout(max(train_examples, dev_examples, 1), d, h, k)
    memory = [
        Cost("parameters W1 b1 W2 b2", "dh + h + hk + k", n_params * size),
        Cost(f"{optimizer} state", f"{spec.state_copies} × parameters" + (" + t" if spec.step_counter else ""),
             spec.state_copies * n_params * size + STEP_COUNTER_BYTES * spec.step_counter),
        Cost("optimiser scratch", f"{spec.scratch_copies} × parameters", spec.scratch_copies * n_params * size),
    ]
    if l2 > 0 and kernel_name(load=False) == "numpy":  # g + 2 lambda W, for the numpy form of the update
        memory.append(Cost("L2 term: g + 2 lambda W", "dh + hk", (d * h + h * k) * size))
    memory += [
        Cost("training step: activations, dZ2, gradients", _formula(step), _bytes(step, dtype)),
    ]
    if thinning:  # dropout's buffers (nn.dropout)
        memory.append(Cost("dropout: masks, thinned X and A1", _formula(thinning), _bytes(thinning, dtype)))
    if shuffle:
        memory.append(Cost("shuffled batch X", "B d", B * d * size))
    memory += [
        Cost("evaluation: folded weights, a block of n rows", _formula(evaluation), _bytes(evaluation, dtype)),
        Cost(f"dataset as {dtype} (train + dev)", "(n_train + n_dev) d", (train_examples + dev_examples) * d * size),
    ]
    return tuple(memory)


def _formula(buffers: list[Layout]) -> str:
    """The buffers' sizes as the derivation's letters, e.g. ``3Bh + 2Bk + dh``."""
    counts = Counter("".join(str(dim) for dim in item.dims if dim != 1) for item in buffers)
    return " + ".join(f"{n}{term}" if n > 1 else term for term, n in counts.items())


def _bytes(buffers: list[Layout], dtype: str) -> int:
    return sum(item.nbytes(dtype) for item in buffers)


def info_for_config(config: Config, hidden: int | None = None) -> NetworkInfo:
    """The account for a resolved :class:`mlp_cli.config.Config` (``hidden`` overrides it)."""
    from mlp_cli.data.registry import get_spec

    available = get_spec(config.data.dataset).splits["train"].count
    dev = min(config.data.dev_size, available)
    train = available - dev
    if config.data.limit is not None:
        train = min(train, config.data.limit)
    return network_info(
        hidden if hidden is not None else config.model.hidden,
        batch_size=config.train.batch_size, dtype=config.model.dtype,
        optimizer=config.optimizer.name, l2=config.train.l2,
        train_examples=train, dev_examples=dev, shuffle=config.train.shuffle,
        dropout=config.train.dropout, input_dropout=config.train.input_dropout,
    )


def check_memory(config: Config, available: int | None = None) -> None:
    """ResourceError, with both figures, when a run of ``config`` needs more memory (the total
    ``mlp info`` prints) than is available; called before anything is allocated."""
    require_memory(info_for_config(config).memory_bytes, "this run", "lower model.hidden or train.batch_size, "
                   "or free memory", available, see="see mlp info")


def run_facts(meta: dict[str, Any], config: Config) -> dict[str, str]:
    """What a checkpoint says about its run, as label -> text: when it was saved, where the run
    stood (epoch, step, accuracy), and the settings that made it (``config``: the resolved
    Config stored with it)."""
    dev = config.data.dev_size > 0
    accuracy = meta.get("accuracy")
    best, best_epoch = meta.get("best_accuracy"), meta.get("best_epoch")
    warmup = config.schedule.warmup_epochs
    schedule = config.schedule.name + (f", warm-up {warmup}" if warmup else "")
    limit = f", first {config.data.limit:,} train images" if config.data.limit is not None else ""
    return {
        "saved": str(meta.get("saved_at", "unknown")).replace("T", " "),
        "epoch": f"{meta.get('epoch')} of {config.train.epochs} (step {int(meta.get('step', 0)):,})",
        f"{'dev' if dev else 'train'} accuracy": "-" if accuracy is None else f"{100 * accuracy:.2f}%",
        "best so far": "-" if best is None else f"{100 * best:.2f}% at epoch {best_epoch}",
        "data": f"{config.data.dataset}, dev {config.data.dev_size:,}{limit}, {config.data.preprocess}",
        "model": f"784-{config.model.hidden}-10, {config.model.init} init, {config.model.dtype}",
        "training": (f"{config.optimizer.name} lr {config.optimizer.lr:g}, batch {config.train.batch_size}, "
                     f"l2 {config.train.l2:g}, schedule {schedule}, seed {config.train.seed}"),
        "augment": "on" if config.augment.enabled else "off",
        "tool": f"mlp {meta.get('tool_version', '?')}, checkpoint format {meta.get('format_version', '?')}",
    }
