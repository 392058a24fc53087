"""Elementwise work on every core the matrix products use: row blocks on a small thread pool.

numpy's ufuncs release the GIL, so the rows of an array can be updated by several threads at once.
``for_row_blocks(kernel, rows, cols)`` cuts ``range(rows)`` into one contiguous block per thread
and calls ``kernel(block)`` for each (the calling thread takes the first block, a persistent pool
the others) when the array is large enough to pay for the dispatch, else once over every row.

Results do not depend on the number of threads: a kernel handed to it must do elementwise work
only (each output entry a function of the same entries of its inputs, in the same order of
operations whatever the block), so every entry is computed by the same sequence of float
operations in any split. Reductions never go through it.

The thread count is one knob, the BLAS's: ``MLP_THREADS`` if set, else ``OPENBLAS_NUM_THREADS``,
else ``OMP_NUM_THREADS``, else the cores this process may run on (what OpenBLAS itself uses).
``set_threads`` changes it in-process (tests, benchmarks). A block on a pool thread runs under
the caller's ``np.errstate`` (numpy keeps it per thread), so ignored overflow stays ignored.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

THREAD_VARIABLES = ("MLP_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")

# Below this many entries per block one thread does the whole array. A dispatch to the pool costs
# some 50 us on a 2-vCPU machine, and the GIL passes back and forth between the blocks' short numpy
# calls: measured there (float32), the bias and sigmoid of 1000 x 300 took 154 us on one thread and
# 172 us on two, of 1000 x 800 335 and 267 us; Nesterov's numpy update of 784 x 300 139 and 166 us.
MIN_BLOCK_ENTRIES = 262_144

_lock = threading.Lock()
_threads: int | None = None
_pool: ThreadPoolExecutor | None = None


def default_threads() -> int:
    """The BLAS's thread count as its environment sets it, else the usable cores."""
    for name in THREAD_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads() -> int:
    """How many threads elementwise work uses in this process."""
    global _threads
    if _threads is None:
        _threads = default_threads()
    return _threads


def set_threads(count: int | None) -> None:
    """Use ``count`` threads from now on (None: back to ``default_threads``)."""
    global _threads, _pool
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
        _threads = None if count is None else max(1, int(count))


def _forget_pool_in_child() -> None:
    """A forked child has none of the parent's threads: it starts its own pool when it needs one."""
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    from concurrent.futures import ThreadPoolExecutor  # 9 ms of imports, only when a pool is needed

    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlp-rows")
        return _pool


def rows_cols(a: np.ndarray) -> tuple[int, int]:
    """An array as (rows, entries per row), for ``for_row_blocks``."""
    rows = a.shape[0] if a.ndim else 1
    return rows, a.size // max(rows, 1)


def row_blocks(rows: int, count: int) -> list[slice]:
    """``range(rows)`` cut into ``count`` contiguous blocks, the first ones one row longer."""
    count = max(1, min(count, rows))
    size, extra = divmod(rows, count)
    blocks, start = [], 0
    for i in range(count):
        stop = start + size + (1 if i < extra else 0)
        blocks.append(slice(start, stop))
        start = stop
    return blocks


def blocks_for(rows: int, cols: int) -> list[slice]:
    """The row blocks ``for_row_blocks`` uses for an array of ``rows`` x ``cols`` entries."""
    count = min(threads(), (rows * cols) // MIN_BLOCK_ENTRIES)
    return row_blocks(rows, count) if count > 1 else [slice(0, rows)]


def for_row_blocks(kernel: Callable[[slice], None], rows: int, cols: int = 1) -> None:
    """kernel(block) for each row block of a (rows, cols) array; returns when all are done.

    ``kernel`` must be elementwise (see the module's docstring): the blocks run concurrently.
    """
    blocks = blocks_for(rows, cols)
    if len(blocks) == 1:
        kernel(blocks[0])
        return
    pool = _executor(threads() - 1)
    errors = np.geterr()  # the caller's floating-point error handling (np.errstate is per thread)
    futures: list[Future[None]] = [
        pool.submit(_with_errstate, np.errstate(**errors), kernel, block) for block in blocks[1:]
    ]
    try:
        kernel(blocks[0])
    finally:
        for future in futures:
            future.result()  # re-raises a block's error, after every block has finished


def _with_errstate(errors: np.errstate, kernel: Callable[[slice], None], block: slice) -> None:
    with errors:
        kernel(block)
