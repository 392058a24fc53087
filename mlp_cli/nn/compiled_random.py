"""Dropout's keep masks, compiled: numpy's SeedSequence and PCG64 ported to numba, bit for bit.

``draw_keep`` fills a batch's two masks exactly as ``nn.dropout.draw_masks`` does from
``np.random.default_rng([seed, DROPOUT_STREAM, epoch, batch])``: the same SeedSequence state, the
same PCG64 stream (continuing from the inputs' mask to the hidden units'), the same 16-bit
slices, the same compare; without numpy's Python-level SeedSequence, the BitGenerator object, the
full raw array and the separate compare pass, and with the draws themselves in four lanes.

- SeedSequence (numpy/random/bit_generator.pyx): ``mix_entropy`` into a pool of four 32-bit words,
  then ``generate_state(4, np.uint64)``. The 32-bit words are held in uint64 and masked after each
  multiply: the low 32 bits of a 64-bit product are those of the 32-bit one.
- PCG64 (numpy/random/src/pcg64): a 128-bit LCG s <- a s + c (mod 2^128) held as (high, low)
  64-bit halves, each draw the XSL-RR output of the stepped state. The high half of the 64 x 64
  product is numpy's own 32-bit-limb form, which LLVM compiles to one multiply (``mulhi``).
- The draws: four interleaved lanes, each stepping four states at once (s_{n+4} = a^4 s_n + c_4),
  so the four 128-bit multiplies overlap instead of waiting on each other; a block of draws goes
  to a small buffer whose 16-bit slices are then compared in one vectorised loop.

A layer of n entries takes ceil(n / 4) draws; entry j is bits 16 (j % 4) .. 16 (j % 4) + 15 of
the layer's draw j // 4 (``raw.view(np.uint16)``, here as in numpy: little-endian on x86 and
ARM), kept when >= threshold.
"""

# mypy: ignore-errors
# (numba's decorators and the untyped loops are not for mypy)

from __future__ import annotations

import numba
import numpy as np

jit = numba.njit(nogil=True, cache=True, fastmath=False, error_model="numpy")

U = np.uint64  # every constant typed: numba would turn uint64 op int64 into float64

# SeedSequence (bit_generator.pyx): 32-bit hash constants, the pool size, the xor-shift
MASK32 = U(0xFFFFFFFF)
INIT_A = U(0x43B0D7E5)
MULT_A = U(0x931E8875)
INIT_B = U(0x8B51F9DD)
MULT_B = U(0x58F38DED)
MIX_MULT_L = U(0xCA01F9DD)
MIX_MULT_R = U(0x4973F715)
XSHIFT = U(16)
POOL_SIZE = 4

# PCG64 (pcg64.h): the 128-bit multiplier 0x2360ED051FC65DA4_4385DF649FCCF645, as its halves
PCG_MULT_HI = U(0x2360ED051FC65DA4)
PCG_MULT_LO = U(0x4385DF649FCCF645)

LANES = 4  # draws in flight at once
BLOCK = 64  # draws per buffered block: 512 bytes, a multiple of LANES
ZERO, ONE, SHIFT = U(0), U(1), U(64)


# ---- SeedSequence ---------------------------------------------------------------------------


@jit
def hashmix(value, hash_const):
    # bit_generator.pyx hashmix: returns the hashed value and the advanced hash constant
    value = value ^ hash_const
    hash_const = (hash_const * MULT_A) & MASK32  # the multiplier moves on before it is used
    value = (value * hash_const) & MASK32
    return value ^ (value >> XSHIFT), hash_const


@jit
def mix(x, y):
    # bit_generator.pyx mix: (L x - R y) mod 2^32, then the xor-shift
    result = (MIX_MULT_L * x - MIX_MULT_R * y) & MASK32
    return result ^ (result >> XSHIFT)


@jit
def mix_entropy(words):
    # SeedSequence.mix_entropy into a fresh pool of POOL_SIZE words (no spawn key)
    pool = np.zeros(POOL_SIZE, np.uint64)
    hash_const = INIT_A
    for i in range(POOL_SIZE):  # the first words, or 0 past the end of the entropy
        word = U(words[i]) if i < words.size else ZERO
        pool[i], hash_const = hashmix(word, hash_const)
    for i_src in range(POOL_SIZE):  # every pool word into every other
        for i_dst in range(POOL_SIZE):
            if i_src != i_dst:
                hashed, hash_const = hashmix(pool[i_src], hash_const)
                pool[i_dst] = mix(pool[i_dst], hashed)
    for i_src in range(POOL_SIZE, words.size):  # the words past the pool, into each pool word
        for i_dst in range(POOL_SIZE):
            hashed, hash_const = hashmix(U(words[i_src]), hash_const)
            pool[i_dst] = mix(pool[i_dst], hashed)
    return pool


@jit
def generate_state(words):
    # SeedSequence(words).generate_state(4, np.uint64): eight 32-bit words, paired little-end first
    pool = mix_entropy(words)
    state = np.zeros(4, np.uint64)
    hash_const = INIT_B
    for i in range(8):
        value = pool[i % POOL_SIZE] ^ hash_const
        hash_const = (hash_const * MULT_B) & MASK32
        value = (value * hash_const) & MASK32
        value = value ^ (value >> XSHIFT)
        state[i // 2] |= value << U(32 * (i % 2))  # word 2k is the low half of uint64 k
    return state


# ---- 128-bit arithmetic: (high, low) uint64 halves ------------------------------------------


@jit
def mulhi(x, y):
    # the high 64 bits of the 128-bit product x y, from 32-bit limbs (pcg64.h _pcg_mult64):
    # no partial sum overflows; LLVM folds the whole into one 64 x 64 -> 128 multiply (mulx)
    x0, x1 = x & MASK32, x >> U(32)
    y0, y1 = y & MASK32, y >> U(32)
    w0 = x0 * y0
    t = x1 * y0 + (w0 >> U(32))
    w1 = (t & MASK32) + x0 * y1
    return x1 * y1 + (t >> U(32)) + (w1 >> U(32))


@jit
def mul128(a_hi, a_lo, b_hi, b_lo):
    # a b mod 2^128: the full low product, plus the two cross terms in the high half
    return mulhi(a_lo, b_lo) + a_lo * b_hi + a_hi * b_lo, a_lo * b_lo


@jit
def add128(a_hi, a_lo, b_hi, b_lo):
    # a + b mod 2^128: the low halves' carry into the high half
    lo = a_lo + b_lo
    return a_hi + b_hi + (ONE if lo < b_lo else ZERO), lo


@jit
def lcg(hi, lo, mult_hi, mult_lo, plus_hi, plus_lo):
    # s <- mult s + plus (mod 2^128)
    hi, lo = mul128(hi, lo, mult_hi, mult_lo)
    return add128(hi, lo, plus_hi, plus_lo)


@jit
def lcg_jump(inc_hi, inc_lo, delta):
    # (mult, plus) with s_{n+delta} = mult s_n + plus: pcg_advance_lcg_128 (Brown, 1994), by squaring
    acc_mult_hi, acc_mult_lo, acc_plus_hi, acc_plus_lo = ZERO, ONE, ZERO, ZERO
    cur_mult_hi, cur_mult_lo, cur_plus_hi, cur_plus_lo = PCG_MULT_HI, PCG_MULT_LO, inc_hi, inc_lo
    delta = U(delta)
    while delta > ZERO:
        if delta & ONE:  # acc <- cur after acc: mult' = cur_mult mult, plus' = cur_mult plus + cur_plus
            acc_mult_hi, acc_mult_lo = mul128(acc_mult_hi, acc_mult_lo, cur_mult_hi, cur_mult_lo)
            acc_plus_hi, acc_plus_lo = lcg(acc_plus_hi, acc_plus_lo, cur_mult_hi, cur_mult_lo, cur_plus_hi, cur_plus_lo)
        # cur <- cur after cur: plus' = (mult + 1) plus, mult' = mult^2
        mult1_hi, mult1_lo = add128(cur_mult_hi, cur_mult_lo, ZERO, ONE)
        cur_plus_hi, cur_plus_lo = mul128(mult1_hi, mult1_lo, cur_plus_hi, cur_plus_lo)
        cur_mult_hi, cur_mult_lo = mul128(cur_mult_hi, cur_mult_lo, cur_mult_hi, cur_mult_lo)
        delta >>= ONE
    return acc_mult_hi, acc_mult_lo, acc_plus_hi, acc_plus_lo


# ---- PCG64 ----------------------------------------------------------------------------------


@jit
def pcg64_seed(words):
    # PCG64(SeedSequence(words)): pcg64_set_seed -> pcg_setseq_128_srandom_r; returns (state, inc)
    seed = generate_state(words)  # (initstate high, low, initseq high, low)
    inc_hi = (seed[2] << ONE) | (seed[3] >> U(63))  # inc = initseq << 1 | 1: always odd
    inc_lo = (seed[3] << ONE) | ONE
    hi, lo = lcg(ZERO, ZERO, PCG_MULT_HI, PCG_MULT_LO, inc_hi, inc_lo)  # state 0, stepped
    hi, lo = add128(hi, lo, seed[0], seed[1])  # + initstate
    hi, lo = lcg(hi, lo, PCG_MULT_HI, PCG_MULT_LO, inc_hi, inc_lo)  # stepped again
    return hi, lo, inc_hi, inc_lo


@jit
def xsl_rr(hi, lo):
    # pcg_output_xsl_rr_128_64: (high ^ low) rotated right by the state's top 6 bits
    value = hi ^ lo
    rot = hi >> U(58)
    return (value >> rot) | (value << ((SHIFT - rot) & U(63)))


@jit
def next64(hi, lo, inc_hi, inc_lo):
    # pcg64_next64: step the state, then output it; returns (state, draw)
    hi, lo = lcg(hi, lo, PCG_MULT_HI, PCG_MULT_LO, inc_hi, inc_lo)
    return hi, lo, xsl_rr(hi, lo)


@jit
def raw_draws(words, count):
    """PCG64(SeedSequence(words)).random_raw(count), one draw at a time (``next64``)."""
    hi, lo, inc_hi, inc_lo = pcg64_seed(words)
    out = np.empty(count, np.uint64)
    for i in range(count):
        hi, lo, out[i] = next64(hi, lo, inc_hi, inc_lo)
    return out


# ---- the masks --------------------------------------------------------------------------------


@jit
def compare(slices, keep, threshold):
    # keep <- 16-bit slice >= threshold, entry by entry (vectorised: no draw in this loop)
    for j in range(keep.size):
        keep[j] = np.uint32(slices[j]) >= threshold


@jit
def fill_keep(hi, lo, inc_hi, inc_lo, keep, threshold, buf):
    # keep's ceil(n / 4) draws, from the state (hi, lo) on; returns the state after the last
    n = keep.size
    draws = (n + 3) // 4
    t = np.uint32(threshold)
    slices = buf.view(np.uint16)  # draw i's 16-bit slices are slices[4 i .. 4 i + 3]
    mult_hi, mult_lo, plus_hi, plus_lo = lcg_jump(inc_hi, inc_lo, LANES)  # four steps at once
    h0, l0, _ = next64(hi, lo, inc_hi, inc_lo)  # lane k: the state of draw k, then k + 4, ...
    h1, l1, _ = next64(h0, l0, inc_hi, inc_lo)
    h2, l2, _ = next64(h1, l1, inc_hi, inc_lo)
    h3, l3, _ = next64(h2, l2, inc_hi, inc_lo)
    for start in range(0, draws, BLOCK):
        size = min(BLOCK, draws - start)
        for group in range((size + LANES - 1) // LANES):  # not range(0, size, 4): 1.5x slower loop
            i = LANES * group  # up to 3 draws past the layer's last: in buf, never compared
            buf[i] = xsl_rr(h0, l0)
            buf[i + 1] = xsl_rr(h1, l1)
            buf[i + 2] = xsl_rr(h2, l2)
            buf[i + 3] = xsl_rr(h3, l3)
            h0, l0 = lcg(h0, l0, mult_hi, mult_lo, plus_hi, plus_lo)
            h1, l1 = lcg(h1, l1, mult_hi, mult_lo, plus_hi, plus_lo)
            h2, l2 = lcg(h2, l2, mult_hi, mult_lo, plus_hi, plus_lo)
            h3, l3 = lcg(h3, l3, mult_hi, mult_lo, plus_hi, plus_lo)
        compare(slices, keep[4 * start:min(4 * (start + size), n)], t)
    mult_hi, mult_lo, plus_hi, plus_lo = lcg_jump(inc_hi, inc_lo, draws)  # the lanes ran past it
    return lcg(hi, lo, mult_hi, mult_lo, plus_hi, plus_lo)


@jit
def draw_keep(words, keep0, threshold0, keep1, threshold1):
    """keep0 then keep1 (flat bool; size 0: no draws) from PCG64(SeedSequence(words)), one stream:
    exactly ``np.greater_equal(raw.view(np.uint16)[:n], threshold, out=keep)`` per layer, raw its
    ceil(n / 4) next draws. words: ``nn.dropout.entropy_words([seed, DROPOUT_STREAM, epoch, batch])``."""
    if keep0.ndim != 1 or keep1.ndim != 1:
        raise ValueError("keep arrays must be flat")
    if not (0 <= threshold0 <= 65536 and 0 <= threshold1 <= 65536):
        raise ValueError("thresholds must be in [0, 65536]")
    hi, lo, inc_hi, inc_lo = pcg64_seed(words)
    buf = np.empty(BLOCK, np.uint64)
    hi, lo = fill_keep(hi, lo, inc_hi, inc_lo, keep0, threshold0, buf)
    fill_keep(hi, lo, inc_hi, inc_lo, keep1, threshold1, buf)

