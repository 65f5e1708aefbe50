"""nhb.search.sghmc: pybnn's AdaptiveSGHMC update against a literal NumPy transcription."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb.search import sghmc


def pybnn_step(params, state, grads, normal, lr, mdecay, epsilon, num_burn_in_steps,
               scale_grad):
    """pybnn/sampler/adaptive_sghmc.py `AdaptiveSGHMC.step`, line by line, in place (float64)."""
    for name, parameter in params.items():
        st = state[name]
        st["iteration"] += 1
        tau, g, v_hat = st["tau"], st["g"], st["v_hat"]
        momentum = st["momentum"]
        gradient = grads[name] * scale_grad
        tau_inv = 1.0 / (tau + 1.0)
        if st["iteration"] <= num_burn_in_steps:
            tau += -tau * (g * g / (v_hat + epsilon)) + 1
            g += -g * tau_inv + tau_inv * gradient
            v_hat += -v_hat * tau_inv + tau_inv * (gradient**2)
        minv_t = 1.0 / (np.sqrt(v_hat) + epsilon)
        epsilon_var = 2.0 * (lr**2) * mdecay * minv_t - (lr**4)
        sigma = np.sqrt(np.clip(epsilon_var, 1e-16, None))
        sample_t = normal[name] * sigma
        momentum += -(lr**2) * minv_t * gradient - mdecay * momentum + sample_t
        parameter += momentum


def _as_np(tree):
    return {k: np.array(v, np.float64) for k, v in tree.items()}


@pytest.mark.parametrize("lr", [1e-2, 0.3])
def test_update_matches_pybnn_through_burn_in_and_sampling(lr):
    hyper = sghmc.SGHMCHyper(lr=lr, mdecay=0.05, epsilon=1e-10, num_burn_in_steps=3,
                             scale_grad=37.0)
    rng = np.random.RandomState(0)
    shapes = {"w": (3, 4), "b": (4,), "s": (1, 1)}
    params = {k: rng.randn(*s).astype(np.float32) for k, s in shapes.items()}
    state = sghmc.init(params)
    ref_params = _as_np(params)
    ref_state = {k: dict(iteration=0, tau=np.ones(s), g=np.ones(s), v_hat=np.ones(s),
                         momentum=np.zeros(s)) for k, s in shapes.items()}
    update = jax.jit(sghmc.update, static_argnames="hyper")
    for it in range(6):  # iterations 1..3 adapt, 4..6 sample with frozen estimators
        scale = 10.0 ** rng.uniform(-2, 1, size=len(shapes))
        grads = {k: (rng.randn(*s) * c).astype(np.float32)
                 for (k, s), c in zip(shapes.items(), scale, strict=True)}
        normal = {k: rng.randn(*s).astype(np.float32) for k, s in shapes.items()}
        params, state = update(params, state, grads, normal, hyper=hyper)
        pybnn_step(ref_params, ref_state, _as_np(grads), _as_np(normal), lr, 0.05, 1e-10, 3,
                   37.0)
        assert int(state.iteration) == it + 1
        for k in shapes:
            np.testing.assert_allclose(params[k], ref_params[k], rtol=2e-5, atol=1e-6)
            for field in ("tau", "g", "v_hat", "momentum"):
                np.testing.assert_allclose(getattr(state, field)[k], ref_state[k][field],
                                           rtol=2e-5, atol=1e-6, err_msg=f"{field} {it}")
    # the estimators moved during burn-in and are frozen afterwards
    assert not np.allclose(ref_state["w"]["tau"], 1.0)


def test_estimators_frozen_after_burn_in():
    hyper = sghmc.SGHMCHyper(num_burn_in_steps=2, scale_grad=5.0)
    p = jnp.arange(4.0)
    state = sghmc.init(p)
    step = jax.jit(sghmc.step, static_argnames="hyper")
    snaps = []
    for i in range(4):
        p, state = step(jax.random.PRNGKey(i), p, state, jnp.sin(p) + i, hyper=hyper)
        snaps.append((np.asarray(state.tau), np.asarray(state.v_hat)))
    assert not np.array_equal(snaps[0][1], snaps[1][1])  # adapting
    np.testing.assert_array_equal(snaps[1][0], snaps[3][0])  # frozen
    np.testing.assert_array_equal(snaps[1][1], snaps[3][1])


def test_step_is_update_with_noise_of_key():
    hyper = sghmc.SGHMCHyper(scale_grad=3.0)
    params = {"a": jnp.ones((2, 3)), "b": jnp.zeros(5)}
    grads = jax.tree.map(lambda x: x + 0.5, params)
    key = jax.random.PRNGKey(7)
    state = sghmc.init(params)
    got = jax.jit(sghmc.step, static_argnames="hyper")(key, params, state, grads, hyper=hyper)
    want = sghmc.update(params, state, grads, sghmc.noise(key, params), hyper)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    noise = sghmc.noise(key, params)
    assert not np.allclose(noise["a"][0], noise["a"][1])
