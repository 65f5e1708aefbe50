"""Tests for the NAS-HPO-Bench-II supernet `nhb.models.nhb2_supernet` (tiny channels)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from nhb.models.cell_net import make_cell_net, reference_param_count
from nhb.models.layers import fast_torch_init
from nhb.models.nhb2_supernet import (
    NHB2Supernet,
    nhb2_affine_update_mask,
    one_hot_alphas,
    to_cell_net_params,
)
from nhb.space.arch import NHB2

CH, CPS, NCLS, B = (4, 8, 8), 1, 10, 2
CELL = (0, 1, 2, 3, 0, 2)  # conv, pool, skip, zero, conv, skip
NET = NHB2Supernet(CH, CPS, NCLS)


@functools.cache
def _setup():
    x = jax.random.normal(jax.random.key(1), (B, 32, 32, 3))
    alphas = jax.random.normal(jax.random.key(2), NHB2.alpha_shape)
    shapes = jax.eval_shape(lambda k: NET.init(k, x, alphas, False), jax.random.key(0))
    v = fast_torch_init(jax.random.key(0), shapes)
    # Non-trivial BN affine / running stats so that the CellNet copy is really checked.
    v = jax.tree_util.tree_map(
        lambda a: a + 0.1 * jax.random.uniform(jax.random.key(a.size), a.shape), v)
    return v, x, alphas


@functools.partial(jax.jit, static_argnames=("net", "train"))
def _apply(net, v, x, alphas, train, mask=None, drop_prob=0.0, key=None):
    rngs = None if key is None else {"drop_path": key}
    return net.apply(v, x, alphas, train, mask, drop_prob, rngs=rngs,
                     mutable=["batch_stats"])


@functools.partial(jax.jit, static_argnames=("net", "train"))
def _apply_cell_net(net, v, x, train):
    return net.apply(v, x, CELL, train, mutable=["batch_stats"])


def test_param_tree():
    v, _, _ = _setup()
    n = sum(a.size for a in jax.tree_util.tree_leaves(v["params"]))
    assert n == reference_param_count((0,) * 6, CH, CPS, NCLS)  # every edge has its conv
    assert v["params"]["stage2_cell0"]["edge5"]["conv"]["kernel"].shape == (3, 3, 8, 8)


def test_equals_cell_net_on_one_hot_cell():
    v, x, _ = _setup()
    alphas, active = one_hot_alphas(CELL)
    cn = make_cell_net(CELL, channels=CH, cells_per_stage=CPS, num_classes=NCLS)
    cv = to_cell_net_params(v, CELL)
    assert set(cv["params"]["stage0_cell0"]) == {"edge0", "edge4"}
    for train in (True, False):
        (logits, none), upd = _apply(NET.clone(active=active), v, x, alphas, train)
        ref, ref_upd = _apply_cell_net(cn, cv, x, train)
        assert none is None
        np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-6)
        for a, b in zip(jax.tree_util.tree_leaves(to_cell_net_params(upd, CELL)),
                        jax.tree_util.tree_leaves(ref_upd), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    (dense, _), _ = _apply(NET, v, x, alphas, True)  # zero-alpha ops computed, then x 0
    ref, _ = _apply_cell_net(cn, cv, x, True)
    np.testing.assert_allclose(dense, ref, rtol=1e-5, atol=1e-6)


def test_zero_alpha_equals_inactive_and_masked_bn():
    v, x, alphas = _setup()
    a = alphas.at[0, :, 3].set(0.0)
    (l1, _), _ = _apply(NET, v, x, a, True)
    (l0, _), _ = _apply(NET, v, x, a.at[0, 5, 1].set(0.0), True)
    assert float(jnp.max(jnp.abs(l1 - l0))) > 1e-4
    act = np.ones(NHB2.alpha_shape, bool)
    act[0, :, 3] = False
    act[0, 5, 1] = False
    sparse = NET.clone(active=tuple(tuple(tuple(bool(b) for b in r) for r in c) for c in act))
    (ls, _), upd = _apply(sparse, v, x, a, True)
    np.testing.assert_allclose(ls, l0, rtol=1e-5, atol=1e-6)
    padded = jnp.concatenate([x, 50.0 + x])
    (lp, _), pupd = _apply(sparse, v, padded, a, True, jnp.array([1.0, 1.0, 0.0, 0.0]))
    np.testing.assert_allclose(lp[:B], ls, rtol=1e-4, atol=1e-5)
    for p, q in zip(jax.tree_util.tree_leaves(pupd), jax.tree_util.tree_leaves(upd),
                    strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-5)


def test_cell_output_linear_in_alpha():
    from nhb.models.nhb2_supernet import SupernetCell

    cell = SupernetCell(4)
    h = jax.random.normal(jax.random.key(3), (B, 8, 8, 4))
    a = jax.random.normal(jax.random.key(4), (6, 4))
    cv = fast_torch_init(jax.random.key(5), jax.eval_shape(
        lambda k: cell.init(k, h, a, False), jax.random.key(0)))
    f = jax.jit(lambda a: cell.apply(cv, h, a, True, mutable=["batch_stats"])[0])
    for e, o in ((5, 0), (3, 1), (4, 2)):  # edges into the output node: F conv, D pool, E skip
        y, y2, y0 = f(a), f(a.at[e, o].mul(2.0)), f(a.at[e, o].set(0.0))
        np.testing.assert_allclose(y2 - y, y - y0, rtol=1e-5, atol=1e-5)
        assert float(jnp.max(jnp.abs(y - y0))) > 1e-3


def test_affine_update_mask():
    v, _, _ = _setup()
    frozen = np.array([[True, False, False]])  # node 1 frozen: only edge A trains its BN
    mask = traverse_util.flatten_dict(nhb2_affine_update_mask(v, frozen))
    zeros = {k: m for k, m in mask.items() if not np.all(np.asarray(m) == 1)}
    assert all(np.all(np.asarray(m) == 0) and k[-2] == "bn" and k[1] != "edge0"
               for k, m in zeros.items())
    expected = sum(5 * 2 * c for c in CH) * CPS  # edges B..F, scale + bias
    assert sum(np.asarray(m).size for m in zeros.values()) == expected


def test_drop_path():
    v, x, alphas = _setup()
    (ref, _), _ = _apply(NET, v, x, alphas, True)
    run = functools.partial(_apply, NET, v, x, alphas, True, None)
    k1, k2 = jax.random.key(7), jax.random.key(8)
    np.testing.assert_allclose(run(jnp.float32(0.0), k1)[0][0], ref, rtol=1e-6, atol=1e-6)
    d1, d1b, d2 = (run(jnp.float32(0.3), k)[0][0] for k in (k1, k1, k2))
    np.testing.assert_array_equal(d1, d1b)
    assert not np.allclose(d1, d2) and not np.allclose(d1, ref)
