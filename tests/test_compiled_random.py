"""nn.compiled_random draws dropout's keep masks bit for bit as numpy does (skipped without numba).

- ``entropy_words`` is numpy's own coercion of a list of ints into SeedSequence's uint32 words.
- The ported SeedSequence gives numpy's ``generate_state(4, np.uint64)``, the ported PCG64 numpy's
  seeded state, its ``random_raw`` draws and its ``advance`` (the jump the interleaved lanes use).
- ``draw_keep`` fills both masks exactly as ``default_rng(values)`` + ``random_raw`` + the 16-bit
  compare do, for every seed, size and threshold, one layer or both, and as the project's own
  ``nn.dropout.draw_masks`` does; it refuses arguments it cannot draw for.
"""

from __future__ import annotations

import importlib
import random
from types import ModuleType

import numpy as np
import pytest
from numpy.random.bit_generator import _coerce_to_uint32_array  # type: ignore[attr-defined]  # private, numpy 1.17+

from mlp_cli.nn import fused
from mlp_cli.nn.dropout import DROPOUT_STREAM, draw_masks, draw_masks_at, entropy_words
from mlp_cli.nn.workspace import Workspace
from tests.helpers import need_numba


@pytest.fixture(scope="module")
def cr() -> ModuleType:
    """The compiled module (imports numba): skipped without it, a failure under CI (``need_numba``)."""
    need_numba()
    return importlib.import_module("mlp_cli.nn.compiled_random")

LOW64 = (1 << 64) - 1
_big = random.Random(20240611)
SEEDS = [0, 1, 2**32 - 1, 2**32, 2**64 + 5] + [_big.getrandbits(bits) for bits in (31, 63, 64, 100, 200)]
EPOCH_BATCHES = [(1, 0), (1, 1), (3, 1199), (2**32 + 1, 7)]
VALUE_LISTS = [[seed, DROPOUT_STREAM, epoch, batch] for seed in SEEDS for epoch, batch in EPOCH_BATCHES] + [
    [], [0], [7], [2**200 + 3], [1, 2, 3, 4, 5, 6, 7, 8, 9], [0, 0, 0, 0, 0],
]
THRESHOLDS = [0, 1, 13107, 32768, 65535, 65536]
# 0: no dropout; 1..5: a partial last draw; 255/256/257 draws of 4 entries around the 64-draw
# block; 50 x 784 and 50 x 300: a training batch's two layers; the rest odd
SIZES = [0, 1, 2, 3, 4, 5, 15, 16, 17, 255, 256, 257, 1001, 4097, 50 * 784, 50 * 300, 50 * 300 + 3]


def value_id(values: list[int]) -> str:
    return "-".join(hex(v) for v in values)[:60] or "empty"


def numpy_keep(values: list[int], sizes: tuple[int, ...], thresholds: tuple[int, ...]) -> list[np.ndarray]:
    """The masks as ``nn.dropout`` draws them: one generator, ceil(n / 4) raw draws per layer."""
    rng = np.random.default_rng(values)
    masks = []
    for n, threshold in zip(sizes, thresholds, strict=True):
        keep = np.empty(n, dtype=bool)
        raw = rng.bit_generator.random_raw(-(-n // 4))  # ceil(n / 4) uint64 draws
        np.greater_equal(raw.view(np.uint16)[:n], threshold, out=keep)
        masks.append(keep)
    return masks


def compiled_keep(cr: ModuleType, values: list[int], sizes: tuple[int, int], thresholds: tuple[int, int],
                  expected: list[np.ndarray]) -> list[np.ndarray]:
    """``draw_keep``'s masks, into arrays holding the opposite of ``expected``: a skipped entry shows."""
    keep0, keep1 = ~expected[0], ~expected[1]
    cr.draw_keep(entropy_words(values), keep0, thresholds[0], keep1, thresholds[1])
    return [keep0, keep1]


def assert_same_masks(cr: ModuleType, values: list[int], sizes: tuple[int, int], thresholds: tuple[int, int]) -> None:
    expected = numpy_keep(values, sizes, thresholds)
    got = compiled_keep(cr, values, sizes, thresholds, expected)
    for layer in range(2):
        assert got[layer].dtype == np.bool_ and got[layer].shape == (sizes[layer],)
        assert np.array_equal(got[layer], expected[layer]), (values, sizes, thresholds, layer)


# ---- the seed: entropy words, SeedSequence, PCG64 ---------------------------------------------


@pytest.mark.parametrize("values", VALUE_LISTS, ids=value_id)
def test_entropy_words_are_numpys_coercion(values: list[int]) -> None:
    words = entropy_words(values)
    expected = _coerce_to_uint32_array(values)
    assert words.dtype == np.uint32 and words.ndim == 1
    assert np.array_equal(words, expected)


def test_entropy_words_split_ints_low_word_first() -> None:
    assert entropy_words([0, 2**32 - 1, 2**32, 2**64 + 5]).tolist() == [0, 2**32 - 1, 0, 1, 5, 0, 1]
    with pytest.raises(ValueError):
        entropy_words([1, -1])


@pytest.mark.parametrize("values", VALUE_LISTS, ids=value_id)
def test_generate_state_is_seedsequences(cr: ModuleType, values: list[int]) -> None:
    expected = np.random.SeedSequence(values).generate_state(4, np.uint64)
    assert np.array_equal(cr.generate_state(entropy_words(values)), expected)


@pytest.mark.parametrize("values", VALUE_LISTS, ids=value_id)
def test_pcg64_seed_is_numpys_state(cr: ModuleType, values: list[int]) -> None:
    state = np.random.PCG64(np.random.SeedSequence(values)).state["state"]
    hi, lo, inc_hi, inc_lo = cr.pcg64_seed(entropy_words(values))
    assert (int(hi) << 64 | int(lo), int(inc_hi) << 64 | int(inc_lo)) == (state["state"], state["inc"])


@pytest.mark.parametrize("values", VALUE_LISTS, ids=value_id)
def test_raw_draws_are_pcg64s(cr: ModuleType, values: list[int]) -> None:
    expected = np.random.PCG64(np.random.SeedSequence(values)).random_raw(1000)
    assert np.array_equal(cr.raw_draws(entropy_words(values), 1000), expected)


@pytest.mark.parametrize("delta", [0, 1, 3, 4, 5, 64, 13550, 2**40 + 3, 2**64 - 1])
@pytest.mark.parametrize("values", VALUE_LISTS[::7], ids=value_id)
def test_lcg_jump_is_pcg64s_advance(cr: ModuleType, values: list[int], delta: int) -> None:
    bit_generator = np.random.PCG64(np.random.SeedSequence(values))
    # numba returns Python ints: back to uint64, or a large one would be typed int64
    hi, lo, inc_hi, inc_lo = map(np.uint64, cr.pcg64_seed(entropy_words(values)))
    jump = map(np.uint64, cr.lcg_jump(inc_hi, inc_lo, np.uint64(delta)))
    hi, lo = cr.lcg(hi, lo, *jump)
    bit_generator.advance(delta)
    assert int(hi) << 64 | int(lo) == bit_generator.state["state"]["state"]


def test_mulhi_is_the_high_word_of_the_product(cr: ModuleType) -> None:
    rng = random.Random(5)
    pairs = [(0, 0), (LOW64, LOW64), (LOW64, 1), (2**63, 2), (2**32 - 1, 2**32 + 1)]
    pairs += [(rng.getrandbits(64), rng.getrandbits(64)) for _ in range(200)]
    for x, y in pairs:
        assert int(cr.mulhi(np.uint64(x), np.uint64(y))) == (x * y) >> 64, (x, y)


# ---- the masks --------------------------------------------------------------------------------


@pytest.mark.parametrize("epoch,batch", EPOCH_BATCHES)
@pytest.mark.parametrize("seed", SEEDS)
def test_draw_keep_is_numpys_for_every_seed(cr: ModuleType, seed: int, epoch: int, batch: int) -> None:
    # a training batch: 50 x 784 inputs at rate 0.2, 50 x 300 hidden units at rate 0.5
    assert_same_masks(cr, [seed, DROPOUT_STREAM, epoch, batch], (50 * 784, 50 * 300), (13107, 32768))


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("size", SIZES)
def test_draw_keep_is_numpys_for_every_size_and_threshold(cr: ModuleType, size: int, threshold: int) -> None:
    values = [2**64 + 5, DROPOUT_STREAM, 2, 9]
    assert_same_masks(cr, values, (size, 0), (threshold, 0))  # inputs only
    assert_same_masks(cr, values, (0, size), (0, threshold))  # hidden only: the stream starts with them
    assert_same_masks(cr, values, (size, 257), (threshold, 40000))  # the hidden units' draws follow


@pytest.mark.parametrize("size1", [1, 5, 1024, 1025, 50 * 300])
@pytest.mark.parametrize("size0", [1, 4, 5, 8, 9, 13, 255, 256, 257, 260, 1021, 50 * 784])
def test_draw_keep_continues_the_stream_into_the_second_layer(cr: ModuleType, size0: int, size1: int) -> None:
    # the first layer's ceil(n / 4) draws, n = 4 k + 0..3 and around a block, leave the second
    # layer the stream at exactly the next draw
    for seed in SEEDS[:4]:
        assert_same_masks(cr, [seed, DROPOUT_STREAM, 1, size0], (size0, size1), (32768, 1))


@pytest.mark.parametrize("rates", [(0.2, 0.5), (0.0, 0.5), (0.2, 0.0), (0.5, 0.25)])
@pytest.mark.parametrize("batch_size,hidden", [(50, 300), (7, 33), (1, 1)])
def test_draw_masks_at_compiled_is_numpys(cr: ModuleType, batch_size: int, hidden: int, rates: tuple[float, float],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # nn.dropout.draw_masks_at, as training.step.Dropout calls it, with the kernels and without:
    # rate 0 means no mask and no draws, and the same scales
    key = [20240611, DROPOUT_STREAM, 4, 17]
    monkeypatch.setenv(fused.KERNELS_VARIABLE, "")  # the compiled kernels, whatever the suite's default
    fast = fused.kernels()
    assert fast is not None and fast.draw_keep is cr.draw_keep
    drawn = [draw_masks_at(key, batch_size, 784, hidden, *rates, np.dtype(np.float32), Workspace(), kernels)
             for kernels in (None, fast)]
    reference, compiled = drawn
    assert np.array_equal(reference.inputs, draw_masks(np.random.default_rng(key), batch_size, 784, hidden, *rates,
                                                       np.dtype(np.float32), Workspace()).inputs)
    for rate, name in [(rates[0], "inputs"), (rates[1], "hidden")]:
        expected, got = getattr(reference, name), getattr(compiled, name)
        assert (expected is None and got is None) if not rate else (
            got.shape == expected.shape and np.array_equal(got, expected) and (got.size < 100 or not got.all()))
    assert (compiled.input_scale, compiled.hidden_scale) == (reference.input_scale, reference.hidden_scale)


def test_draw_keep_refuses_what_it_cannot_draw(cr: ModuleType) -> None:
    words, flat, none = entropy_words([1, 2]), np.zeros(8, dtype=bool), np.zeros(0, dtype=bool)
    for threshold in (-1, 65537):
        with pytest.raises(ValueError, match="thresholds"):
            cr.draw_keep(words, flat, threshold, none, 0)
        with pytest.raises(ValueError, match="thresholds"):
            cr.draw_keep(words, none, 0, flat, threshold)
    with pytest.raises(ValueError, match="flat"):
        cr.draw_keep(words, flat.reshape(2, 4), 1, none, 0)
    cr.draw_keep(words, flat, 65536, none, 0)  # the bounds themselves are fine: none kept
    assert not flat.any()
    cr.draw_keep(words, flat, 0, none, 0)  # all kept
    assert flat.all()
