"""Tests for nhb.train.engine: the whole protocol as one jitted, vmappable program."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nhb.data import load_dataset
from nhb.train import HParams, TrainData, TrainStatic, lr_at_epoch, make_optimizer, make_train

CELL = (0, 1, 2, 0, 3, 1)  # conv, pool, skip, conv, zero, pool
CONV = tuple(op == 0 for op in CELL)


@functools.cache
def _data(n: int) -> TrainData:
    return TrainData.from_dataset(load_dataset("subset", max_per_split=n))


def _static(n: int, **kw) -> TrainStatic:
    base = dict(batch_size=32, conv_edges=CONV, n_train=n, n_valid=n, n_test=n, epochs=1,
                channels=(4, 8, 16), cells_per_stage=1)
    return TrainStatic(**{**base, **kw})


def _hp(lr):
    lr = jnp.asarray(lr, jnp.float32)
    return HParams(lr=lr, momentum=jnp.full_like(lr, 0.9), weight_decay=jnp.full_like(lr, 5e-4))


def test_cosine_schedule_per_epoch():
    lr = jnp.float32(0.1)
    got = [float(lr_at_epoch(lr, e, 12)) for e in (0, 3, 6, 9, 11)]
    expect = [0.1 * 0.5 * (1 + np.cos(np.pi * e / 12)) for e in (0, 3, 6, 9, 11)]
    np.testing.assert_allclose(got, expect, rtol=1e-6)
    assert got[2] == pytest.approx(0.05, rel=1e-6)


def test_update_rule_matches_pytorch_sgd_by_hand():
    """Two steps of PyTorch SGD(lr, momentum=0.9, nesterov=True, weight_decay=5e-4)."""
    lr, mu, wd = 0.1, 0.9, 5e-4
    w0 = np.array([1.0, -2.0, 0.5])
    grads = [np.array([0.3, 0.1, -0.2]), np.array([-0.1, 0.4, 0.05])]
    # PyTorch: d = g + wd*w; buf = mu*buf + d (buf = d at step 1); d = d + mu*buf; w -= lr*d.
    w, buf = w0.copy(), None
    for g in grads:
        d = g + wd * w
        buf = d if buf is None else mu * buf + d
        w = w - lr * (d + mu * buf)
    tx = make_optimizer(_hp(lr))

    @jax.jit
    def two_steps(p):
        state = tx.init(p)
        for g in grads:
            upd, state = tx.update(jnp.asarray(g, jnp.float32), state, p)
            p = optax.apply_updates(p, upd)
        return p

    np.testing.assert_allclose(two_steps(jnp.asarray(w0, jnp.float32)), w, rtol=1e-6)


N = 48  # batch 20 -> steps of 20, 20 and a partial 8


@pytest.fixture(scope="module")
def programs():
    """One single-config and one vmapped (3 members) compiled program, shared by the tests."""
    t = make_train(_static(N, batch_size=20, epochs=2, eval_batch_size=N))
    return jax.jit(t.train), jax.jit(jax.vmap(t.train, in_axes=(0, 0, 0, None)))


# Members of one conv pattern (conv on edges A and D): lr 0.1, 0.025, and a diverging NaN lr.
CELLS = jnp.asarray([CELL, (0, 2, 1, 0, 1, 3), (0, 3, 3, 0, 2, 2)])
LRS = jnp.array([0.1, 0.025, jnp.nan], jnp.float32)
SEEDS = (222, 555, 888)


@pytest.fixture(scope="module")
def vmapped_run(programs):
    keys = jnp.stack([jax.random.key(s) for s in SEEDS])
    return programs[1](keys, _hp(LRS), CELLS, _data(N))


@pytest.fixture(scope="module")
def single_runs(programs):
    return [programs[0](jax.random.key(SEEDS[i]), _hp(LRS[i]), CELLS[i], _data(N))
            for i in range(2)]


def test_same_key_same_numbers(programs, single_runs):
    again = programs[0](jax.random.key(SEEDS[0]), _hp(LRS[0]), CELLS[0], _data(N))
    for x, y in zip(jax.tree.leaves(single_runs[0]), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(x, y)
    other = programs[0](jax.random.key(1), _hp(LRS[0]), CELLS[0], _data(N))
    assert not np.array_equal(other.train_loss, again.train_loss)
    a = single_runs[0]
    assert a.train_acc.shape == (2,) and not bool(a.nonfinite.any())
    assert np.all((np.asarray(a.test_acc) >= 0) & (np.asarray(a.test_acc) <= 100))
    # Initial loss near log(10) for a freshly initialised classifier.
    assert abs(float(a.train_loss[0]) - np.log(10)) < 0.3


def test_vmapped_equals_one_by_one(vmapped_run, single_runs):
    """Tolerance: losses to 1e-4 relative; accuracies to one example (argmax near-ties)."""
    for i, one in enumerate(single_runs):
        for name in ("train_loss", "valid_loss", "test_loss"):
            np.testing.assert_allclose(getattr(vmapped_run, name)[i], getattr(one, name),
                                       rtol=1e-4)
        for name in ("train_acc", "valid_acc", "test_acc"):
            np.testing.assert_allclose(getattr(vmapped_run, name)[i], getattr(one, name),
                                       atol=100.0 / N + 1e-4)


def test_diverging_member_leaves_others_untouched(vmapped_run, single_runs):
    assert bool(vmapped_run.nonfinite[2].all())
    assert np.isnan(np.asarray(vmapped_run.test_loss[2])).all()
    assert not bool(vmapped_run.nonfinite[:2].any())
    # Member 0 ran next to the NaN member and still equals its solo run.
    np.testing.assert_allclose(vmapped_run.test_loss[0], single_runs[0].test_loss, rtol=1e-4)


def test_partial_last_batch_is_kept(single_runs):
    """Every one of the 48 examples counts once: accuracy is a multiple of 100/48."""
    acc = np.asarray(single_runs[0].train_acc)
    np.testing.assert_allclose((acc * N / 100 + 1e-3) % 1, 1e-3, atol=2e-3)


def test_tiny_network_learns_above_chance():
    """A tiny network on 600 real CIFAR-10 images for 4 epochs beats chance (10%) clearly."""
    n = 600
    t = make_train(_static(n, epochs=4, batch_size=32, eval_batch_size=200))
    m = jax.jit(t.train)(jax.random.key(222), _hp(0.1), jnp.asarray(CELL), _data(n))
    assert float(m.train_loss[-1]) < float(m.train_loss[0]) - 0.15
    assert float(m.test_acc[-1]) > 20.0, np.asarray(m.test_acc)
