"""Tests for nhb.train.engine: one protocol for any Linen classifier, jitted and vmapped."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nhb.data import load_dataset
from nhb.data.augment import augment_batch
from nhb.data.batching import epoch_batches
from nhb.train import (
    HParams,
    Protocol,
    StepHook,
    TrainData,
    TrainStatic,
    linen_model,
    lr_at_epoch,
    make_cell_train,
    make_optimizer,
    make_train,
)
from nhb.train.engine import _TRAIN_EVAL_SALT

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
    return HParams(learning_rate=lr, momentum=jnp.full_like(lr, 0.9),
                   weight_decay=jnp.full_like(lr, 5e-4))


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
    t = make_cell_train(_static(N, batch_size=20, epochs=2))
    return t, jax.jit(t.train), jax.jit(jax.vmap(t.train, in_axes=(0, 0, 0, None)))


# Members of one conv pattern (conv on edges A and D): lr 0.1, 0.025, and a diverging NaN lr.
CELLS = jnp.asarray([CELL, (0, 2, 1, 0, 1, 3), (0, 3, 3, 0, 2, 2)])
LRS = jnp.array([0.1, 0.025, jnp.nan], jnp.float32)
SEEDS = (222, 555, 888)


@pytest.fixture(scope="module")
def vmapped_run(programs):
    keys = jnp.stack([jax.random.key(s) for s in SEEDS])
    return programs[2](keys, _hp(LRS), CELLS, _data(N))


@pytest.fixture(scope="module")
def single_runs(programs):
    return [programs[1](jax.random.key(SEEDS[i]), _hp(LRS[i]), CELLS[i], _data(N))
            for i in range(2)]


def test_same_key_same_numbers(programs, single_runs):
    again = programs[1](jax.random.key(SEEDS[0]), _hp(LRS[0]), CELLS[0], _data(N))
    for x, y in zip(jax.tree.leaves(single_runs[0][1]), jax.tree.leaves(again[1]), strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves(single_runs[0][0].params), jax.tree.leaves(again[0].params),
                    strict=True):
        np.testing.assert_array_equal(x, y)
    _, other = programs[1](jax.random.key(1), _hp(LRS[0]), CELLS[0], _data(N))
    assert not np.array_equal(other.train_loss, again[1].train_loss)
    # Initial loss near log(10) for a freshly initialised classifier.
    assert abs(float(single_runs[0][1].train_loss[0]) - np.log(10)) < 0.3


def test_vmapped_equals_one_by_one(vmapped_run, single_runs):
    """Tolerance: losses to 1e-4 relative; accuracies to one example (argmax near-ties)."""
    for i, (_, one) in enumerate(single_runs):
        for name in ("train_loss", "valid_loss", "test_loss"):
            np.testing.assert_allclose(getattr(vmapped_run[1], name)[i], getattr(one, name),
                                       rtol=1e-4)
        for name in ("train_acc", "valid_acc", "test_acc"):
            np.testing.assert_allclose(getattr(vmapped_run[1], name)[i], getattr(one, name),
                                       atol=100.0 / N + 1e-4)


def test_diverging_member_is_flagged_not_nan_accuracy(vmapped_run, single_runs):
    m = vmapped_run[1]
    assert bool(m.nonfinite[2].all()) and not bool(m.nonfinite[:2].any())
    assert np.isnan(np.asarray(m.test_loss[2])).all()
    # NaN logits have argmax 0 (as in PyTorch): accuracy = share of class-0 test examples.
    share0 = 100.0 * float(np.mean(np.asarray(_data(N).test_y) == 0))
    np.testing.assert_allclose(np.asarray(m.test_acc[2]), share0, rtol=1e-6)
    # Member 0 ran next to the NaN member and still equals its solo run.
    np.testing.assert_allclose(m.test_loss[0], single_runs[0][1].test_loss, rtol=1e-4)


def _per_example_logits(t, state, ops, x_norm):
    """Eval-mode logits one example at a time (no batching at all)."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    one = jax.jit(lambda x: t.model.apply_eval(variables, x[None], ops)[0])
    return np.stack([np.asarray(one(x)) for x in x_norm])


def _mean_of_batch_means(ce: np.ndarray, order: np.ndarray, bs: int) -> float:
    return float(np.mean([ce[order[i:i + bs]].mean() for i in range(0, len(order), bs)]))


def _ce(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    return -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1)))


def test_eval_passes_against_per_example_reference(programs, single_runs):
    """Test pass (48 examples in batches 20, 20, 8) and the authors' train pass, recomputed
    example by example: all examples counted once, loss = mean of the 3 batch means (so a
    dropped or down-weighted last batch fails)."""
    from nhb.data.augment import normalize
    t = programs[0]
    state, m = single_runs[0]
    data = _data(N)
    ops = CELLS[0]
    # test pass: unshuffled, not augmented
    logits = _per_example_logits(t, state, ops, normalize(data.test_x))
    y = np.asarray(data.test_y)
    ce = _ce(logits, y)
    np.testing.assert_allclose(float(m.test_loss[-1]), _mean_of_batch_means(
        ce, np.arange(N), 20), rtol=2e-5)
    assert float(m.test_loss[-1]) != pytest.approx(float(ce[:40].mean()), rel=1e-4)
    np.testing.assert_allclose(float(m.test_acc[-1]),
                               100.0 * np.sum(logits.argmax(1) == y) / N, rtol=1e-6)
    # the authors' train pass: shuffled, augmented, eval-mode BN, after the last epoch
    key = jax.random.fold_in(jax.random.fold_in(state.key, 1), _TRAIN_EVAL_SALT)
    k_perm, k_aug = jax.random.split(key)
    idx, mask = epoch_batches(k_perm, N, 20)
    order = np.asarray(idx)[np.asarray(mask)]
    assert sorted(order.tolist()) == list(range(N))
    x = np.concatenate([np.asarray(augment_batch(jax.random.fold_in(k_aug, i),
                                                 data.train_x[idx[i]])) for i in range(3)])
    x = x[np.asarray(mask).reshape(-1)]
    logits = _per_example_logits(t, state, ops, jnp.asarray(x))
    ce = _ce(logits, np.asarray(data.train_y)[order])
    np.testing.assert_allclose(float(m.train_loss[-1]),
                               _mean_of_batch_means(ce, np.arange(N), 20), rtol=2e-5)
    np.testing.assert_allclose(float(m.train_acc[-1]), 100.0 * np.mean(
        logits.argmax(1) == np.asarray(data.train_y)[order]), rtol=1e-6)


def test_running_train_metrics_option():
    """train_eval=False reports the SGD loop's meters: same valid/test numbers, other train."""
    kw = dict(batch_size=20, epochs=1)
    runs = [jax.jit(make_cell_train(_static(N, train_eval=te, **kw)).train)(
        jax.random.key(222), _hp(0.1), CELLS[0], _data(N))[1] for te in (True, False)]
    np.testing.assert_array_equal(runs[0].test_loss, runs[1].test_loss)
    np.testing.assert_array_equal(runs[0].valid_acc, runs[1].valid_acc)
    assert not np.allclose(runs[0].train_loss, runs[1].train_loss)
    # the running meter at epoch 0 starts from the untrained network: near log(10)
    assert abs(float(runs[1].train_loss[0]) - np.log(10)) < 0.3


class _BNClassifier(nn.Module):
    """A non-CellNet Linen classifier with BatchNorm and an extra traced input (a scale)."""

    @nn.compact
    def __call__(self, x, scale, train, mask=None):
        h = nn.Conv(4, (3, 3), strides=(4, 4))(x) * scale
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        return nn.Dense(10)(jnp.mean(nn.relu(h), axis=(1, 2)))


def test_any_linen_classifier_with_hook_and_extra_inputs():
    """The same protocol trains another model; a StepHook sees every SGD step in order."""
    n, bs, epochs = 40, 16, 2  # 3 steps per epoch (16, 16, 8)
    steps = 3 * epochs
    hook = StepHook(
        init=lambda params, inputs: dict(steps=jnp.full((steps,), -1, jnp.int32),
                                 gnorm=jnp.zeros((steps,), jnp.float32)),
        update=lambda h, step, params, grads, ctx: dict(
            steps=h["steps"].at[step].set(step),
            gnorm=h["gnorm"].at[step].set(optax.tree.norm(grads))))
    module = _BNClassifier()
    t = make_train(linen_model(module, takes_mask=False),
                   Protocol(batch_size=bs, n_train=n, n_valid=n, n_test=n, epochs=epochs),
                   hook)
    data = _data(n)
    one = jax.jit(t.train)
    group = jax.jit(jax.vmap(t.train, in_axes=(0, 0, 0, None)))
    scales = jnp.array([1.0, 2.0])
    keys = jnp.stack([jax.random.key(1), jax.random.key(2)])
    g_state, g_metrics = group(keys, _hp(jnp.array([0.1, 0.05])), scales, data)
    for i in range(2):
        s, m = one(keys[i], _hp(jnp.array([0.1, 0.05])[i]), scales[i], data)
        np.testing.assert_array_equal(s.hook["steps"], np.arange(steps))
        assert np.all(np.asarray(s.hook["gnorm"]) > 0)
        np.testing.assert_allclose(g_state.hook["gnorm"][i], s.hook["gnorm"], rtol=1e-4)
        np.testing.assert_allclose(g_metrics.test_loss[i], m.test_loss, rtol=1e-4)
    assert not np.allclose(g_metrics.test_loss[0], g_metrics.test_loss[1])


def test_tiny_network_learns_above_chance():
    """A tiny network on 600 real CIFAR-10 images for 4 epochs beats chance (10%) clearly."""
    n = 600
    t = make_cell_train(_static(n, epochs=4, batch_size=32, eval_batch_size=200))
    _, m = jax.jit(t.train)(jax.random.key(222), _hp(0.1), jnp.asarray(CELL), _data(n))
    assert float(m.train_loss[-1]) < float(m.train_loss[0]) - 0.15
    assert float(m.test_acc[-1]) > 20.0, np.asarray(m.test_acc)
