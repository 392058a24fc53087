"""Buffers a hot loop reuses instead of allocating: the sets are declared, the workspace keeps them.

A buffer set is a dataclass whose fields are arrays, each declared with :func:`buffer` by its
dimensions' letters, e.g. ``A1: np.ndarray = buffer("B", "h")``. The kernels that use a set
(``mlp_cli.nn.backprop``, ``mlp_cli.nn.evaluation``) declare it beside themselves; a
:class:`Workspace` allocates each set once for given sizes and dtype and hands back the same
arrays while the sizes stay the same. :func:`layout` lists the arrays a set allocates for given
sizes without allocating them: ``mlp info`` sums it, so its memory figures are the code's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

import numpy as np

BufferSet = TypeVar("BufferSet")

# What a buffer holds: numbers of the run's float dtype, row indices (int64) or a boolean mask.
Kind = Literal["float", "index", "mask"]
# How it starts: uninitialised, all ones, or the row numbers 0, 1, ..., n-1.
Fill = Literal["empty", "ones", "arange"]
_DTYPES = {"index": np.dtype(np.int64), "mask": np.dtype(np.bool_)}


def buffer(
    *dims: str | int, order: Literal["C", "F"] = "C", kind: Kind = "float", fill: Fill = "empty"
) -> Any:
    """Declare one array of a buffer set by its dimensions (letters looked up in the sizes)."""
    return field(metadata={"dims": dims, "order": order, "kind": kind, "fill": fill})


@dataclass(frozen=True)
class Layout:
    """One array of a buffer set, as it will be allocated."""

    name: str
    dims: tuple[str | int, ...]  # as declared, e.g. ("B", "h")
    shape: tuple[int, ...]
    order: Literal["C", "F"]
    kind: Kind
    fill: Fill

    def dtype(self, float_dtype: np.dtype | str) -> np.dtype:
        return _DTYPES.get(self.kind, np.dtype(float_dtype))

    def nbytes(self, float_dtype: np.dtype | str) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype(float_dtype).itemsize


def layout(kind: type, sizes: dict[str, int]) -> list[Layout]:
    """The arrays ``kind`` allocates for ``sizes`` (e.g. {"B": 1000, "d": 784, "h": 300, "k": 10})."""
    items = []
    for f in fields(kind):
        meta = f.metadata
        shape = tuple(sizes[dim] if isinstance(dim, str) else dim for dim in meta["dims"])
        items.append(Layout(f.name, meta["dims"], shape, meta["order"], meta["kind"], meta["fill"]))
    return items


def allocate(kind: type[BufferSet], sizes: dict[str, int], dtype: np.dtype) -> BufferSet:
    arrays: dict[str, np.ndarray] = {}
    for item in layout(kind, sizes):
        array = np.empty(item.shape, dtype=item.dtype(dtype), order=item.order)
        if item.fill == "ones":
            array.fill(1)
        elif item.fill == "arange":
            array[...] = np.arange(array.size).reshape(item.shape)
        arrays[item.name] = array
    return kind(**arrays)


class Workspace:
    """The buffer sets of one training run, reused from one call to the next.

    Pass the same Workspace to every ``loss_and_gradients`` and ``loss_and_accuracy`` call of a
    run: a set is allocated on its first use and again only when the sizes or dtype change (the
    shorter last batch of an epoch, for instance). What a call returns may live in the workspace
    and is overwritten by the next call.
    """

    def __init__(self) -> None:
        self._sets: dict[type, tuple[dict[str, int], np.dtype, Any]] = {}

    def get(self, kind: type[BufferSet], sizes: dict[str, int], dtype: np.dtype) -> BufferSet:
        held = self._sets.get(kind)  # several times a step: two comparisons when nothing changed
        if held is None or held[0] != sizes or held[1] != dtype:
            held = self._sets[kind] = (dict(sizes), np.dtype(dtype), allocate(kind, sizes, np.dtype(dtype)))
        return held[2]  # type: ignore[no-any-return]

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array held, named ``Set.field``."""
        return {
            f"{kind.__name__}.{f.name}": getattr(held, f.name)
            for kind, (_, _, held) in self._sets.items()
            for f in fields(kind)
        }

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.arrays().values())
