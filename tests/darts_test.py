"""Tests for the DARTS-space supernet `nhb.models.darts` (tiny: C=4, layers=3, batch 2)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from nhb.models.darts import (
    DartsSupernet,
    SearchCell,
    affine_update_mask,
    darts_param_count,
    reduction_cells,
)
from nhb.models.layers import fast_torch_init
from nhb.space.arch import DARTS, Genotype

C, LAYERS, NCLS, B = 4, 3, 10, 2
# Per cell type, 2 (edge, op) per node, covering every op (and the stride-2 skip).
SUPPORT = (
    ((0, 3), (1, 0), (2, 1), (4, 2), (5, 5), (8, 4), (9, 6), (13, 2)),
    ((0, 2), (1, 1), (2, 0), (4, 3), (6, 6), (7, 2), (11, 4), (12, 5)),
)
DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5])


def _support_mask() -> np.ndarray:
    m = np.zeros(DARTS.alpha_shape, bool)
    for t, pairs in enumerate(SUPPORT):
        for e, o in pairs:
            m[t, e, o] = True
    return m


def _as_active(m: np.ndarray) -> tuple:
    return tuple(tuple(tuple(bool(b) for b in row) for row in cell) for cell in m)


DENSE = DartsSupernet(C, LAYERS, NCLS, auxiliary=True)
SPARSE = DENSE.clone(active=_as_active(_support_mask()))


@functools.cache
def _setup():
    key = jax.random.key(0)
    x = jax.random.normal(jax.random.key(1), (B, 32, 32, 3))
    alphas = jax.random.normal(jax.random.key(2), DARTS.alpha_shape)
    shapes = jax.eval_shape(lambda k: DENSE.init(k, x, alphas, False), key)
    return fast_torch_init(key, shapes), x, alphas


@functools.partial(jax.jit, static_argnames=("net", "train"))
def _apply(net, variables, x, alphas, train, mask=None, drop_prob=0.0, key=None):
    rngs = None if key is None else {"drop_path": key}
    return net.apply(variables, x, alphas, train, mask, drop_prob, rngs=rngs,
                     mutable=["batch_stats"])


@functools.cache
def _sparse_reference():
    variables, x, alphas = _setup()
    a = alphas * _support_mask()
    return _apply(SPARSE, variables, x, a, True)


def _closed_form_params() -> int:
    def edge(c: int, stride: int) -> int:
        pools = 2 * 2 * (2 * c)  # max/avg: PoolBN BN + extra BN
        skip = 2 * c if stride == 1 else c * c + 2 * c
        sep = sum(2 * (k * k * c + c * c + 2 * c) for k in (3, 5))
        dil = sum(k * k * c + c * c + 2 * c for k in (3, 5))
        return pools + skip + sep + dil

    total = 27 * 3 * C + 2 * 3 * C
    cpp, cp, c = 3 * C, 3 * C, C
    for i in range(LAYERS):
        red = i in reduction_cells(LAYERS)
        c = 2 * c if red else c
        total += cpp * c + 2 * c + cp * c + 2 * c
        total += sum(edge(c, 2 if red and j < 2 else 1) for n in range(4) for j in range(n + 2))
        cpp, cp = cp, 4 * c
        if i == reduction_cells(LAYERS)[1]:
            total += cp * 128 + 256 + 128 * 4 * 768 + 2 * 768 + 768 * NCLS + NCLS
    return total + cp * NCLS + NCLS


def test_param_tree():
    variables, _, _ = _setup()
    p = variables["params"]
    assert reduction_cells(LAYERS) == (1, 2)
    n = sum(v.size for v in jax.tree_util.tree_leaves(p))
    assert n == _closed_form_params()
    assert p["stem_conv"]["kernel"].shape == (3, 3, 3, 3 * C)
    assert p["cell0"]["edge5"]["op3"]["dw1"]["kernel"].shape == (3, 3, 1, C)
    assert p["cell0"]["edge5"]["op6"]["dw"]["kernel"].shape == (5, 5, 1, C)
    assert p["cell1"]["edge0"]["op2"]["conv1"]["kernel"].shape == (1, 1, 2 * C, C)  # FR skip
    assert set(p["cell1"]["edge0"]["op0"]) == {"bn", "extra_bn"}
    assert set(p["cell0"]["edge2"]["op2"]) == {"extra_bn"}
    assert "conv1" in p["cell2"]["pre0"]  # FactorizedReduce after a reduction cell
    assert p["aux_head"]["conv1"]["kernel"].shape == (1, 1, 16 * C, 128)
    assert p["classifier"]["kernel"].shape == (16 * C, NCLS)


def test_affine_update_mask():
    variables, _, _ = _setup()
    frozen = np.array([[True, False, True, False], [False, True, False, False]])
    mask = affine_update_mask(variables["params"], DARTS, frozen)
    flat = traverse_util.flatten_dict(mask)
    zeros = {k: v for k, v in flat.items() if not np.all(np.asarray(v) == 1)}
    for k, v in zeros.items():
        assert np.all(np.asarray(v) == 0) and k[-1] in ("scale", "bias") and "edge" in k[1]
        assert "kernel" not in k
    per_edge = 22  # BN scale+bias per channel in one mixed op (x C)
    # normal: nodes 1, 3 not frozen (3 + 5 edges); reduce: nodes 0, 2, 3 (2 + 4 + 5 edges).
    expected = 8 * per_edge * C + 11 * per_edge * (2 * C) + 11 * per_edge * (4 * C)
    assert sum(np.asarray(v).size for v in zeros.values()) == expected
    traced = jax.jit(lambda f: sum(jnp.sum(1 - v) for v in jax.tree_util.tree_leaves(
        affine_update_mask(variables["params"], DARTS, f))))(jnp.asarray(frozen))
    assert int(traced) == expected


def test_cell_linear_in_alpha_and_active_equals_zero_alpha():
    cell = SearchCell(C, False, False)
    s0 = jax.random.normal(jax.random.key(3), (B, 8, 8, 3 * C))
    s1 = jax.random.normal(jax.random.key(4), (B, 8, 8, 3 * C))
    a = jax.random.normal(jax.random.key(5), (14, 7))
    v = fast_torch_init(jax.random.key(6), jax.eval_shape(
        lambda k: cell.init(k, s0, s1, a, False), jax.random.key(0)))
    e, o = 5, 3  # node 2 <- c_{k-2}, sep_conv_3x3

    @functools.partial(jax.jit, static_argnums=0)
    def f(module, a):
        return module.apply(v, s0, s1, a, True, mutable=["batch_stats"])[0]

    out, out2, out0 = f(cell, a), f(cell, a.at[e, o].mul(2.0)), f(cell, a.at[e, o].set(0.0))
    node2 = slice(2 * C, 3 * C)
    np.testing.assert_allclose(out2[..., node2] - out[..., node2],
                               out[..., node2] - out0[..., node2], rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(out[..., node2] - out0[..., node2]))) > 1e-2
    np.testing.assert_array_equal(out[..., :2 * C], out0[..., :2 * C])  # nodes 0, 1 unchanged
    act = np.ones((14, 7), bool)
    act[e, o] = False
    sparse = cell.clone(active=tuple(tuple(bool(b) for b in r) for r in act))
    np.testing.assert_allclose(f(sparse, a), out0, rtol=1e-5, atol=1e-5)


def test_active_subset_equals_dense_with_zero_alphas():
    variables, x, alphas = _setup()
    (logits, aux), upd = _sparse_reference()
    (dl, daux), _ = _apply(DENSE, variables, x, alphas * _support_mask(), True)
    np.testing.assert_allclose(logits, dl, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(aux, daux, rtol=1e-4, atol=1e-5)
    assert logits.shape == aux.shape == (B, NCLS)
    # Inactive ops keep their running statistics; active ones move.
    old = variables["batch_stats"]["cell0"]
    new = upd["batch_stats"]["cell0"]
    np.testing.assert_array_equal(new["edge0"]["op0"]["bn"]["mean"],
                                  old["edge0"]["op0"]["bn"]["mean"])
    assert not np.allclose(new["edge0"]["op3"]["bn2"]["mean"], old["edge0"]["op3"]["bn2"]["mean"])
    # Eval mode: no aux logits.
    (el, eaux), _ = _apply(SPARSE, variables, x, alphas * _support_mask(), False)
    assert eaux is None and el.shape == (B, NCLS)


def test_masked_batch_norm():
    variables, x, alphas = _setup()
    (logits, _), upd = _sparse_reference()
    padded = jnp.concatenate([x, 100.0 * jnp.ones_like(x)])
    mask = jnp.array([1.0, 1.0, 0.0, 0.0])
    (pl, _), pupd = _apply(SPARSE, variables, padded, alphas * _support_mask(), True, mask)
    np.testing.assert_allclose(pl[:B], logits, rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(pupd), jax.tree_util.tree_leaves(upd),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_drop_path():
    variables, x, alphas = _setup()
    (logits, _), _ = _sparse_reference()
    a = alphas * _support_mask()
    k1, k2 = jax.random.key(7), jax.random.key(8)
    run = functools.partial(_apply, SPARSE, variables, x, a, True, None)
    np.testing.assert_allclose(run(jnp.float32(0.0), k1)[0][0], logits, rtol=1e-6, atol=1e-6)
    d1, d1b, d2 = (run(jnp.float32(0.5), k)[0][0] for k in (k1, k1, k2))
    np.testing.assert_array_equal(d1, d1b)
    assert not np.allclose(d1, d2) and not np.allclose(d1, logits)


def test_darts_param_count_darts_v2():
    assert darts_param_count(DARTS_V2) == 3_349_342  # DARTS: "param size = 3.349342MB"
    # DHA's ista_model.NetworkCIFAR: + BN(2C) per identity skip (2 per normal cell, 3 per
    # reduce cell) and 2 BNs (4C) per max pool (5 per reduce cell).
    extra = 6 * 4 * (36 + 72 + 144) + (5 * 4 + 3 * 2) * (72 + 144)
    assert darts_param_count(DARTS_V2, style="dha") == 3_349_342 + extra


def test_bad_shapes():
    variables, x, alphas = _setup()
    with pytest.raises(ValueError, match="alphas"):
        DENSE.apply(variables, x, alphas[:1], False)
