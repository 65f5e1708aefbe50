"""nhb.dha.hpo: the one-step unroll's hypergradient against finite differences and its
closed form, PyTorch-SGD values, clamping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb.dha import hpo

LR, WD, MU, CLIP = 0.05, 3e-3, 0.9, 0.5


def _net(params, x):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return h @ params["w2"]


def _loss(params, x, y):
    logits = _net(params, x)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])


def _problem(dtype):
    rng = np.random.default_rng(0)
    params = {"w1": rng.normal(0, 1.0, (5, 4)), "b1": rng.normal(0, 0.1, (4,)),
              "w2": rng.normal(0, 1.0, (4, 3))}
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
    xs = [jnp.asarray(rng.normal(size=(8, 5)), dtype) for _ in range(3)]
    ys = [jnp.asarray(rng.integers(0, 3, 8)) for _ in range(3)]
    return params, xs, ys


def _setup(dtype, steps_before):
    """Weights, optimiser state after `steps_before` plain steps, and the step's batches."""
    params, xs, ys = _problem(dtype)
    opt = hpo.weight_optimizer(LR, WD, MU, CLIP)
    state = opt.init(params)
    hp = {"learning_rate": jnp.asarray(LR, dtype), "weight_decay": jnp.asarray(WD, dtype)}
    for _ in range(steps_before):
        g = jax.grad(_loss)(params, xs[0], ys[0])
        params, state = hpo.unrolled_update(opt, hp, params, g, state)
    return opt, state, params, hp, xs, ys


def _hyper_loss(opt, state, params, xs, ys):
    grads = jax.grad(_loss)(params, xs[1], ys[1])

    def f(hp):
        new, _ = hpo.unrolled_update(opt, hp, params, grads, state)
        return _loss(new, xs[2], ys[2])

    return f, grads


@pytest.mark.parametrize("steps_before", [0, 2])
def test_hypergradient_matches_finite_differences_and_closed_form(steps_before):
    with jax.enable_x64(True):
        opt, state, params, hp, xs, ys = _setup(jnp.float64, steps_before)
        f, grads = _hyper_loss(opt, state, params, xs, ys)
        hg = jax.jit(jax.grad(f))(hp)
        for name in hpo.HPARAM_NAMES:
            eps = 1e-6 * max(abs(float(hp[name])), 1e-3)
            up = dict(hp, **{name: hp[name] + eps})
            dn = dict(hp, **{name: hp[name] - eps})
            fd = (f(up) - f(dn)) / (2 * eps)
            if steps_before == 0 and name == "weight_decay":
                # The first momentum buffer is detached: the wd hypergradient is 0, while the
                # loss itself does depend on wd (finite differences are not 0).
                assert float(hg[name]) == 0.0
                assert abs(float(fd)) > 1e-6
            else:
                np.testing.assert_allclose(hg[name], fd, rtol=1e-5)
        # Closed form: dL/dlr = -<g_val(w'), buf>, dL/dwd = -lr <g_val(w'), w> (later steps).
        new, new_state = hpo.unrolled_update(opt, hp, params, grads, state)
        g_val = jax.grad(_loss)(new, xs[2], ys[2])
        buf = new_state.inner_state[2].trace
        dot = lambda a, b: sum(jnp.vdot(u, v) for u, v in zip(
            jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
        np.testing.assert_allclose(hg["learning_rate"], -dot(g_val, buf), rtol=1e-10)
        if steps_before:
            np.testing.assert_allclose(hg["weight_decay"], -LR * dot(g_val, params),
                                       rtol=1e-10)


def test_values_equal_pytorch_sgd_with_clipping():
    """w' = w - lr * buf with buf = mu * buf + (clip(g) + wd * w), as torch.optim.SGD."""
    params, xs, ys = _problem(jnp.float32)
    opt = hpo.weight_optimizer(LR, WD, MU, CLIP)
    state = opt.init(params)
    hp = {"learning_rate": jnp.float32(LR), "weight_decay": jnp.float32(WD)}
    ref = jax.tree.map(np.asarray, params)
    buf = None
    step = jax.jit(lambda p, g, s: hpo.unrolled_update(opt, hp, p, g, s))
    for t in range(3):
        g = jax.grad(_loss)(params, xs[t], ys[t])
        params, state = step(params, g, state)
        gn = np.sqrt(sum(np.sum(np.asarray(v, np.float64) ** 2) for v in jax.tree.leaves(g)))
        coef = min(1.0, CLIP / (gn + 1e-6))
        assert coef < 1.0  # the clip is active in this problem
        d = {k: np.asarray(g[k]) * coef + WD * ref[k] for k in ref}
        buf = d if buf is None else {k: MU * buf[k] + d[k] for k in ref}
        ref = {k: ref[k] - LR * buf[k] for k in ref}
        for k in ref:
            np.testing.assert_allclose(params[k], ref[k], rtol=2e-5, atol=1e-6)


def test_update_mask_freezes_parameters():
    params, xs, ys = _problem(jnp.float32)
    opt = hpo.weight_optimizer(LR, WD, MU, None)
    g = jax.grad(_loss)(params, xs[0], ys[0])
    mask = {"w1": jnp.float32(0.0), "b1": jnp.float32(1.0), "w2": jnp.float32(1.0)}
    new, _ = hpo.unrolled_update(opt, hpo.midpoints({"learning_rate": (0.0, 0.1),
                                                     "weight_decay": (0.0, 1e-3)}),
                                 params, g, opt.init(params), mask)
    np.testing.assert_array_equal(new["w1"], params["w1"])
    assert not np.allclose(new["w2"], params["w2"])


def test_clamp_midpoints_and_bounds_errors():
    bounds = {"learning_rate": (0.01, 0.1), "weight_decay": (1e-4, 1e-3)}
    mid = hpo.midpoints(bounds)
    np.testing.assert_allclose([mid["learning_rate"], mid["weight_decay"]], [0.055, 5.5e-4])
    out = hpo.clamp({"learning_rate": jnp.float32(0.5), "weight_decay": jnp.float32(-1.0)},
                    bounds)
    np.testing.assert_allclose([out["learning_rate"], out["weight_decay"]], [0.1, 1e-4])
    with pytest.raises(ValueError, match="learning_rate"):
        hpo.check_bounds({"learning_rate": (0.1, 0.01), "weight_decay": (0, 1)})
    with pytest.raises(ValueError, match="exactly"):
        hpo.check_bounds({"lr": (0, 1)})
