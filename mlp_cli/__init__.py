"""mlp: the classic two-layer network on MNIST, trained with hand-derived backprop in numpy.

The Python API (see mlp_cli.api and the README's "From Python")::

    import mlp_cli
    model = mlp_cli.load_model("runs/best")            # a checkpoint, or a run directory
    model.predict(images)                             # uint8 (n, 28, 28) -> classes (n,)
    run = mlp_cli.train("cs229", overrides={"train.epochs": 5}, on_epoch=print)
    mlp_cli.resume(run.last_checkpoint, epochs=10)     # continue it
    images, labels = mlp_cli.load_dataset("mnist", "test")

Names are imported on first use, so that ``import mlp_cli`` (and ``mlp --help``) stays instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlp_cli.version import __version__ as __version__  # re-exported: mlp_cli.__version__

__all__ = ["Evaluation", "MlpError", "Model", "Run", "load_dataset", "load_model", "resume", "train"]

if TYPE_CHECKING:
    from mlp_cli.api import Evaluation, Model, Run, load_dataset, load_model, resume, train
    from mlp_cli.errors import MlpError


def __getattr__(name: str) -> Any:
    if name == "MlpError":
        from mlp_cli.errors import MlpError

        return MlpError
    if name in __all__:
        from mlp_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'mlp_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
