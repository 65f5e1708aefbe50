"""DHA augmentation ops in JAX against the Pillow reference (`nhb.data.autoaugment_pil`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb.data import load_dataset
from nhb.data.autoaugment import (
    ENHANCE_OPS,
    FILL,
    GEOMETRIC_OPS,
    LUT_OPS,
    MAX_LEVEL,
    NUM_OPS,
    NUM_PAIRS,
    OP_NAMES,
    apply_op,
    apply_pair,
    augment_pairs,
    decode_pairs,
    sample_magnitudes,
)
from nhb.data.autoaugment_pil import pil_apply_op, pil_apply_pair

K = 16  # images per op


def _below(v: float) -> float:
    return float(np.nextafter(np.float32(v), np.float32(0)))


# magnitudes at the steps of int(3f + 1) (8/3, 16/3) and int(256 f) (multiples of 1/32),
# the ends 0 and 8, and random values
EDGE_M = [0.0, 8.0, _below(8 / 3), float(np.float32(8 / 3)), _below(16 / 3),
          float(np.float32(16 / 3)), 1 / 32, _below(1 / 32), 4.0, 127 / 32]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.asarray(load_dataset("subset").train_images[:K])


@pytest.fixture(scope="module")
def single_ops(images: np.ndarray) -> dict:
    """Every op on every image, edge and random magnitudes, both signs and filters."""
    rng = np.random.default_rng(0)
    mags = np.concatenate([EDGE_M, rng.uniform(0, 8, K - len(EDGE_M))]).astype(np.float32)
    rand_m = rng.uniform(0, 8, (NUM_OPS, K)).astype(np.float32)
    cases = []
    for m_set, random_m in ((np.tile(mags, (NUM_OPS, 1)), False), (rand_m, True)):
        ops = np.repeat(np.arange(NUM_OPS), K).astype(np.int32)
        negate = np.tile(np.arange(K) % 2 == 1, NUM_OPS)
        bicubic = np.tile((np.arange(K) // 2) % 2 == 1, NUM_OPS)
        if random_m:
            negate, bicubic = ~negate, ~bicubic
        cases.append((ops, m_set.reshape(-1), negate, bicubic, random_m))
    batch = np.tile(images, (NUM_OPS, 1, 1, 1))
    fn = jax.jit(apply_op)
    out = {}
    for ops, m, negate, bicubic, random_m in cases:
        got = np.asarray(fn(batch, ops, m, negate, bicubic))
        ref = np.stack([pil_apply_op(batch[i], int(ops[i]), float(m[i]), bool(negate[i]),
                                     bool(bicubic[i])) for i in range(len(ops))])
        out[random_m] = (ops, np.abs(got.astype(np.int32) - ref))
    return out


@pytest.mark.parametrize("op", range(NUM_OPS), ids=OP_NAMES)
def test_op_matches_pillow(single_ops: dict, op: int) -> None:
    for random_m, (ops, diff) in single_ops.items():
        d = diff[ops == op]
        if op in LUT_OPS or op in ENHANCE_OPS:
            assert d.max() == 0, (OP_NAMES[op], random_m, d.max(), np.mean(d > 0))
        else:
            assert op in GEOMETRIC_OPS
            # random magnitudes: float32 coordinates flip < 0.1 % of the truncations. Edge
            # magnitudes give round offsets (e.g. 14.4 px) whose exact ties Pillow's double
            # rounding decides: up to ~2 % of values off by one there, and a source point
            # exactly on the border (xs == W in float32, W - 1e-7 in double) can flip a
            # pixel between sampled and filled (< 0.1 % of pixels).
            pix = d.max(-1)
            assert np.mean(pix > 1) < 1e-3, (OP_NAMES[op], random_m, np.mean(pix > 1))
            if random_m:
                assert d.max() <= 1, (OP_NAMES[op], d.max())
            assert np.mean(d == 1) < (1e-3 if random_m else 3e-2), (OP_NAMES[op], random_m,
                                                                     np.mean(d == 1))


def test_geometric_direction_and_fill(images: np.ndarray) -> None:
    """Large rotation/shift both ways: gross errors (direction, sign, fill) would show."""
    n = 4
    x = images[:n]
    fn = jax.jit(apply_op)
    for op in GEOMETRIC_OPS:
        for neg in (False, True):
            got = np.asarray(fn(x, np.full(n, op), np.full(n, 8.0, np.float32),
                                np.full(n, neg), np.arange(n) % 2 == 0))
            ref = np.stack([pil_apply_op(x[i], op, 8.0, neg, i % 2 == 0) for i in range(n)])
            assert np.abs(got.astype(int) - ref).max() <= 1
            assert (got == np.asarray(FILL, np.uint8)).all(-1).any()


def test_pairs_match_pillow(images: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    n = 64
    x = np.tile(images, (n // K, 1, 1, 1))
    pairs = rng.integers(0, NUM_PAIRS, n)
    first, second = pairs // NUM_OPS, pairs % NUM_OPS
    mags = rng.uniform(0, 8, (n, 2)).astype(np.float32)
    negate = rng.random((n, 2)) > 0.5
    bicubic = rng.random((n, 2)) > 0.5
    got = np.asarray(jax.jit(apply_pair)(x, first, second, mags, negate, bicubic))
    ref = np.stack([pil_apply_pair(x[i], first[i], second[i], [float(v) for v in mags[i]],
                                   negate[i], bicubic[i]) for i in range(n)])
    d = np.abs(got.astype(int) - ref)
    assert d.max() <= 2 and np.mean(d > 0) < 2e-3, (d.max(), np.mean(d > 0))


def test_batch_composition_does_not_matter(images: np.ndarray) -> None:
    """Images are sorted by op group and run in chunks: a skewed batch (most images in one
    group, groups larger than a chunk, a batch smaller than a chunk) gives each image the
    same result as its own op alone would."""
    rng = np.random.default_rng(2)
    n = NUM_OPS * K  # the batch shapes of the other tests: compiled once
    x = np.tile(images, (NUM_OPS, 1, 1, 1))
    op = np.where(rng.random(n) < 0.75, 2, rng.integers(0, NUM_OPS, n)).astype(np.int32)
    mags = rng.uniform(0, 8, n).astype(np.float32)
    negate, bicubic = rng.random(n) > 0.5, rng.random(n) > 0.5
    fn = jax.jit(apply_op)
    got = np.asarray(fn(x, op, mags, negate, bicubic))
    for lo in range(0, n, 4):  # the same images four at a time, in other batches
        sl = slice(lo, lo + 4)
        np.testing.assert_array_equal(
            np.asarray(fn(x[sl], op[sl], mags[sl], negate[sl], bicubic[sl])), got[sl])


def test_decode_pairs() -> None:
    k = np.arange(NUM_PAIRS)
    first, second = decode_pairs(k)
    # the authors: np.unravel_index(k, [14, 14], 'F') reversed
    ref = np.unravel_index(k, [NUM_OPS, NUM_OPS], "F")[::-1]
    np.testing.assert_array_equal(first, ref[0])
    np.testing.assert_array_equal(second, ref[1])


def test_magnitude_clipping() -> None:
    m = np.asarray(jax.jit(sample_magnitudes, static_argnums=1)(jax.random.key(0), (40000,),
                                                                 10.0))
    assert m.dtype == np.float32 and m.min() >= 0 and m.max() == MAX_LEVEL
    assert abs(np.mean(m == MAX_LEVEL) - 0.2) < 0.01
    below = m[m < MAX_LEVEL]
    assert abs(below.mean() - 4.0) < 0.05  # uniform on [0, 8) otherwise


def test_augment_pairs_reproducible_and_vmappable(images: np.ndarray) -> None:
    x = jnp.asarray(images[:8])
    pairs = jnp.arange(8) * 25
    fn = jax.jit(augment_pairs)
    a = np.asarray(fn(jax.random.key(3), x, pairs, 10.0))
    b = np.asarray(fn(jax.random.key(3), x, pairs, 10.0))
    c = np.asarray(fn(jax.random.key(4), x, pairs, 10.0))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == images[:8].shape and (a != c).any()
    keys = jax.random.split(jax.random.key(5), 2)
    batched = np.asarray(jax.jit(jax.vmap(augment_pairs, (0, None, None, None)))(
        keys, x, pairs, 10.0))
    for i in range(2):
        np.testing.assert_array_equal(batched[i], np.asarray(fn(keys[i], x, pairs, 10.0)))
