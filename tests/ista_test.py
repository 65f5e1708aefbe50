"""Tests for nhb.dha.ista: LASSO against scikit-learn, support, Eq. 7, freezing, rejection.

Tolerances for the float32 LASSO against scikit-learn's float64 fit (same float32-valued A and
b, so only arithmetic precision differs): both run the same cyclic coordinate descent, so the
float32 iterates follow sklearn's path. Measured (2-core CPU, these seeds): sweep counts equal
or one apart; where sklearn converged, coefficient error <= 3.5e-5 * max|coef| (up to 9e-5 in
other seeds); objective excess <= 2.5e-5 relative, also for the unconverged 1000-sweep fits
(where the coefficients still agree to ~1e-4 * max|coef| but are not asserted). Asserted:
sweeps within max(2, 2%), coefficients/intercept within 3e-4 * max|coef| where sklearn
converged, objective <= sklearn's * (1 + 2e-4) everywhere, the same support everywhere.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.linear_model import Lasso

from nhb.dha import ista
from nhb.space.arch import DARTS, NHB2, to_cell_code

MAX_ITER = 1000
init = jax.jit(ista.init_ista, static_argnums=(1, 2))
recover = jax.jit(ista.recover)
select = jax.jit(ista.select_support, static_argnums=0)
alphas = jax.jit(ista.alphas)
alphas_via_bias = jax.jit(ista.alphas_via_bias)
update_frozen = jax.jit(ista.update_frozen)
lasso = jax.jit(ista.lasso, static_argnames=("fit_intercept", "max_iter"))


def _objective(A, b, x, c, alpha=1e-5):
    A, b, x = (np.asarray(v, np.float64) for v in (A, b, x))
    return 0.5 / len(b) * np.sum((b - A @ x - c) ** 2) + alpha * np.abs(x).sum()


def _sklearn(A, b, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter is expected
        return Lasso(alpha=1e-5, **kw).fit(np.float64(A), np.float64(b))


def _codes(rng, kind, A, mask):
    """b per node: 'init' 1e-3 N(0,1), 'small' N(0,0.1), 'unit' N(0,1), 'sparse' A x + noise."""
    T, N, m, C = A.shape
    if kind == "sparse":
        x = np.zeros((T, N, C))
        for t in range(T):
            for i in range(N):
                cols = rng.choice(np.flatnonzero(mask[i]), 2, replace=False)
                x[t, i, cols] = rng.standard_normal(2)
        return np.einsum("tnmc,tnc->tnm", A, x) + 0.01 * rng.standard_normal((T, N, m))
    scale = {"init": 1e-3, "small": 0.1, "unit": 1.0}[kind]
    return scale * rng.standard_normal((T, N, m))


@pytest.mark.parametrize("space", [DARTS, NHB2], ids=lambda s: s.name)
def test_lasso_matches_sklearn(space):
    """Every node (DARTS: 7x14..7x35, NHB2: 7x4..7x12) against sklearn, padded columns zero."""
    mask = ista.column_mask(space)
    rng = np.random.default_rng(0)
    state = init(jax.random.key(0), space, 7)
    stats = {"converged": 0, "total": 0, "coef": 0.0, "obj": -1.0}
    for kind in ("init", "small", "unit", "sparse"):
        for _ in range(2):
            A = (rng.random(state.A.shape) * mask[None, :, None, :]).astype(np.float32)
            b = _codes(rng, kind, A, mask).astype(np.float32)
            out = recover(state.replace(A=jnp.asarray(A), b=jnp.asarray(b)))
            x, c, it = np.asarray(out.x), np.asarray(out.intercept), np.asarray(out.n_iter)
            assert np.all(x[:, ~mask] == 0)  # padded columns
            x_sk = np.zeros_like(x, dtype=np.float64)
            for t in range(space.num_cell_types):
                for i in range(space.num_nodes):
                    n = mask[i].sum()
                    sk = _sklearn(A[t, i, :, :n], b[t, i])
                    x_sk[t, i, :n] = sk.coef_
                    ours = _objective(A[t, i, :, :n], b[t, i], x[t, i, :n], c[t, i])
                    theirs = _objective(A[t, i, :, :n], b[t, i], sk.coef_, sk.intercept_)
                    stats["obj"] = max(stats["obj"], (ours - theirs) / theirs)
                    assert ours <= theirs * (1 + 2e-4), (kind, t, i, ours, theirs)
                    assert abs(int(it[t, i]) - sk.n_iter_) <= max(2, sk.n_iter_ // 50)
                    stats["total"] += 1
                    if sk.n_iter_ < MAX_ITER:
                        stats["converged"] += 1
                        scale = np.abs(sk.coef_).max()
                        err = np.abs(x[t, i, :n] - sk.coef_).max() / scale
                        stats["coef"] = max(stats["coef"], err)
                        assert err <= 3e-4, (kind, t, i, err)
                        assert abs(c[t, i] - sk.intercept_) <= 3e-4 * (
                            abs(sk.intercept_) + scale), (kind, t, i)
            np.testing.assert_array_equal(select(space, x), select(space, jnp.asarray(x_sk)))
    assert stats["converged"] >= stats["total"] // 4  # the converged checks were exercised
    print(space.name, stats)


def test_lasso_zero_column_no_intercept_and_initial_gap():
    rng = np.random.default_rng(1)
    A = rng.random((7, 12)).astype(np.float32)
    A[:, 3] = 0.0
    b = (1e-3 * rng.standard_normal(7)).astype(np.float32)
    for fit_intercept in (True, False):
        coef, c, it = lasso(A, b, fit_intercept=fit_intercept)
        sk = _sklearn(A, b, fit_intercept=fit_intercept)
        assert np.all(np.isfinite(coef)) and coef[3] == 0.0
        assert sk.n_iter_ < MAX_ITER and abs(int(it) - sk.n_iter_) <= 1
        np.testing.assert_allclose(coef, sk.coef_, atol=3e-4 * np.abs(sk.coef_).max())
        if not fit_intercept:
            assert c == 0.0
    # b constant after centring: sklearn's initial gap check returns x = 0 after 0 sweeps.
    coef, c, it = lasso(A, np.full(7, 0.5, np.float32))
    assert int(it) == 0 and np.all(coef == 0) and np.isclose(c, 0.5)


def _trained(space, seed=0, scale=300.0):
    """An initial state whose codes were moved to trained scale, then recovered."""
    state = init(jax.random.key(seed), space, 7)
    state = recover(state.replace(b=state.b * scale))
    return state.replace(support=select(space, state.x))


@pytest.mark.parametrize("space", [DARTS, NHB2], ids=lambda s: s.name)
def test_eq7_identity_zero_off_support_and_gradient(space):
    state = _trained(space)
    a, a_ref = np.asarray(alphas(state)), np.asarray(alphas_via_bias(state))
    assert a.shape == space.alpha_shape and a.dtype == np.float32
    np.testing.assert_allclose(a, a_ref, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    support = np.asarray(state.support)
    assert np.all(a[~support] == 0) and np.all(a_ref[~support] == 0)
    assert np.count_nonzero(a[support]) == support.sum()
    grad = jax.jit(jax.grad(lambda b: ista.alphas(state.replace(b=b)).sum()))(state.b)
    s_cols = ista._to_columns(space, state.support).astype(jnp.float32)  # [T, N, C]
    expected = np.einsum("tnmc,tnc->tnm", np.asarray(state.A), np.asarray(s_cols))
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-5)


def _reference_support(space, x):
    """numpy picking over ALL ops, lowest-index ties: {(t, edge, op)}."""
    out = set()
    for t in range(x.shape[0]):
        for i, k in enumerate(space.node_inputs):
            vals = x[t, i, : k * space.num_ops].reshape(k, space.num_ops)
            best = vals.argmax(-1)
            order = sorted(range(k), key=lambda e, v=vals, bb=best: (-v[e, bb[e]], e))
            for e in order[: space.keep_edges[i]]:
                out.add((t, space.edge_offset(i) + e, int(best[e])))
    return out


@pytest.mark.parametrize("space", [DARTS, NHB2], ids=lambda s: s.name)
def test_support_counts_ties_and_all_ops(space):
    rng = np.random.default_rng(2)
    T, N, C = space.num_cell_types, space.num_nodes, space.max_columns
    for trial in range(20):
        if trial % 2:  # small integers: many ties, and negative values
            x = rng.integers(-2, 3, (T, N, C)).astype(np.float32)
        else:
            x = rng.standard_normal((T, N, C)).astype(np.float32)
        s = np.asarray(select(space, x))
        assert s.shape == space.alpha_shape and s.dtype == bool
        assert set(zip(*np.nonzero(s), strict=True)) == _reference_support(space, x)
        assert np.all(s.sum(-1) <= 1)
        for i, k in enumerate(space.node_inputs):
            e0 = space.edge_offset(i)
            assert np.all(s[:, e0:e0 + k].sum((1, 2)) == space.keep_edges[i])
    # all-zero x (padded layout): still exactly keep_edges, op 0 on the lowest edges.
    s = np.asarray(select(space, np.zeros((T, N, C), np.float32)))
    assert s.sum() == T * sum(space.keep_edges) and np.all(s[..., 1:] == 0)
    if space is DARTS:  # dil_conv_5x5 (op 6) is selectable, unlike the reference
        x = np.zeros((T, N, C), np.float32)
        x[:, :, 6] = 1.0  # node i, edge 0, op 6
        s = np.asarray(select(space, x))
        assert DARTS.op_names[6] == "dil_conv_5x5"
        assert all(s[t, DARTS.edge_offset(i), 6] for t in range(T) for i in range(N))


def test_nhb2_support_is_a_cell_code():
    for seed in range(4):
        state = _trained(NHB2, seed=seed)
        code = to_cell_code(state.support)
        assert len(code) == 8 and code[1] == code[4] == "|"
    assert isinstance(to_cell_code(init(jax.random.key(5), NHB2, 7).support), str)


def test_update_frozen_rules():
    x_old = jnp.zeros((2, 4, 3))
    x_new = x_old.at[:, 1:, 0].set(jnp.array([0.05, 0.5, 2.0]))  # dists 0, .05, .5, 2
    none = jnp.zeros((2, 4), bool)
    assert not np.any(update_frozen(none, x_new, x_old, 0.1, 0))  # never at epoch 0
    got = np.asarray(update_frozen(none, x_new, x_old, 0.1, 1))
    np.testing.assert_array_equal(got, np.tile([True, True, False, False], (2, 1)))
    np.testing.assert_array_equal(update_frozen(none, x_new, x_old, 0.5, 3),
                                  np.tile([True, True, True, False], (2, 1)))
    frozen = none.at[0, 3].set(True)  # stays frozen although its distance is 2
    assert update_frozen(frozen, x_new, x_old, 0.1, 0)[0, 3]
    assert update_frozen(frozen, x_new, x_old, 0.1, 4)[0, 3]
    np.testing.assert_allclose(ista.node_distances(x_new, x_old)[1], [0, 0.05, 0.5, 2.0])


def test_end_of_epoch_freezing_and_stop():
    state = init(jax.random.key(3), DARTS, 7)
    assert not np.any(state.frozen) and not ista.all_frozen(state)
    step = jax.jit(ista.end_of_epoch)
    # b moved for node (0, 0) only: the other nodes recover the same x (distance 0) and freeze.
    moved = state.replace(b=state.b.at[0, 0].multiply(300.0))
    new, info = step(moved, 0, 1e-3)
    assert bool(info["accepted"]) and not bool(info["stopped"])
    assert float(info["dist"][0, 0]) > 1e-3 and not new.frozen[0, 0]
    # (x differs from init's only by float32 rounding: init and this step compile separately.)
    frozen = np.asarray(new.frozen)
    assert frozen.sum() == 7 and np.all(np.asarray(info["dist"])[frozen] < 1e-6)
    # frozen nodes keep x when their b changes; the active one is re-recovered.
    changed = new.replace(b=new.b * 2.0)
    new2, info2 = step(changed, 1, 1e-3)
    np.testing.assert_array_equal(np.asarray(new2.x)[frozen], np.asarray(new.x)[frozen])
    assert np.all(np.asarray(info2["n_iter"])[frozen] == 0) and info2["n_iter"][0, 0] > 0
    # freeze everything: the next epoch end is skipped (Stop_flag).
    done = new2.replace(frozen=jnp.ones_like(new2.frozen), b=new2.b * 5.0)
    assert ista.all_frozen(done)
    new3, info3 = ista.end_of_epoch(done, 2, 1e-3, accept_fn=lambda s: pytest.fail("called"))
    assert bool(info3["stopped"]) and not bool(info3["accepted"])
    np.testing.assert_array_equal(new3.x, done.x)


def test_rejection_keeps_old_support():
    state = init(jax.random.key(4), DARTS, 7)
    trained = state.replace(b=state.b * 500.0)
    seen = []

    def reject(support):
        seen.append(support)
        return False

    new, info = ista.end_of_epoch(trained, 0, 0.0, accept_fn=reject)
    assert len(seen) == 1 and seen[0].shape == DARTS.alpha_shape and seen[0].dtype == bool
    assert not bool(info["accepted"])
    assert not np.array_equal(info["support"], state.support)  # the candidate differed
    np.testing.assert_array_equal(new.support, state.support)
    np.testing.assert_array_equal(new.x, state.x)
    np.testing.assert_array_equal(new.intercept, state.intercept)
    accepted, info = ista.end_of_epoch(trained, 0, 0.0, accept_fn=lambda s: True)
    assert bool(info["accepted"])
    np.testing.assert_array_equal(accepted.support, info["support"])


def test_code_optimizer_is_torch_adam_and_masks_frozen():
    lr, wd, b1, b2, eps = 0.01, 1e-3, 0.5, 0.999, 1e-8
    opt = ista.code_optimizer(lr, wd)
    b = jnp.arange(1.0, 25.0).reshape(2, 4, 3) / 10
    opt_state = opt.init(b)
    m = v = 0.0
    p = np.asarray(b)
    for k in range(1, 4):  # PyTorch Adam, coupled weight decay
        gg = np.cos(p) + wd * p
        m, v = b1 * m + (1 - b1) * gg, b2 * v + (1 - b2) * gg**2
        p = p - lr * (m / (1 - b1**k)) / (np.sqrt(v / (1 - b2**k)) + eps)
        updates, opt_state = opt.update(jnp.cos(b), opt_state, b)
        b = optax.apply_updates(b, updates)
    np.testing.assert_allclose(b, p, rtol=1e-5)
    frozen = jnp.zeros((2, 4), bool).at[1, 2].set(True)
    masked = ista.mask_frozen_updates(updates, frozen)
    assert np.all(masked[1, 2] == 0)
    np.testing.assert_array_equal(masked[0], updates[0])
