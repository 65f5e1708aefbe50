"""Hard local penalisation (HLP) for batch BO: Lipschitz estimate and cone penaliser.

Reference: Alvi, Ru et al. 2019 (rubinxin/asynchronous-BO @ fcfe893, `reference/nago.md` §4):

- `ml_utils/lipschitz.py:10-49`: L = max over the box of ||grad mu(x)|| (gradient of the
  posterior mean), multi-start L-BFGS-B (10 uniform random restarts, maxiter 200); L = 10 when
  the estimate is below 1e-7 (flat model). Estimated once per batch (`async_bo.py:484`).
- `bayesopt/acquisition.py:437-551` (`HardMinAwareConeAcquisition`, transform None as
  PLAyBOOK uses it, `async_bo.py:433`): for the batch points x_j,
  r_j = (mu(x_j) - M) / L + sigma(x_j) / L with M the best (smallest) observed value,
  h_j(x) = ||x - x_j|| / r_j, and the penalised acquisition is
  acq(x) * ||(prod_j h_j(x), 1)||_p with the p-"norm" p = -5 (numpy's
  `np.linalg.norm(..., -5, axis=0)` = (|a|^p + |b|^p)^(1/p), a soft minimum of |prod h| and 1).
  The reference adds 1e-50 to acq (a no-op in float32). Signs follow the reference literally:
  r_j may be negative when mu(x_j) < M - sigma(x_j); the p-norm takes |prod_j h_j|.

Differences from the reference: the Lipschitz maximisation is a jittable projected Adam ascent
of ||grad mu||^2 (cosine-decayed step size, `steps` steps, the best iterate kept), not scipy's
L-BFGS-B, so it runs inside `jax.jit` with the rest of `nhb.search.mobo.propose_batch`; its
`restarts` starts are the best of `samples` uniform points rather than uniform points
(`lipschitz_constants`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from nhb.search import rng

Posterior = Callable[[jax.Array], tuple[jax.Array, jax.Array]]

LIPSCHITZ_MIN = 1e-7  # lipschitz.py: `if L < 1e-7: L = 10`
LIPSCHITZ_FALLBACK = 10.0
SOFTMIN_P = -5.0  # acquisition.py: np.linalg.norm(..., -5, axis=0)


def mean_grad(posterior: Posterior, x: jax.Array, i: int) -> jax.Array:
    """Gradient of objective i's posterior mean at one point.

    Args:
        posterior: x [n, d] -> (mean [n, m], std [n, m]).
        x: float [d]; i: objective.

    Returns:
        float [d].
    """
    return jax.grad(lambda z: posterior(z[None])[0][0, i])(x)


def lipschitz_constants(key: jax.Array, posterior: Posterior, d: int, restarts: int = 10,
                        steps: int = 200, lr: float = 0.05, samples: int = 1000,
                        min_value: float = LIPSCHITZ_MIN,
                        fallback: float = LIPSCHITZ_FALLBACK) -> tuple[jax.Array, jax.Array]:
    """L_i = max over [0,1]^d of ||grad mu_i(x)||, one per objective (multi-start ascent).

    ||grad mu_i|| is evaluated at `samples` uniform points and the `restarts` best of them
    start a projected Adam ascent (betas 0.9 / 0.999) of ||grad mu_i||^2, whose gradient
    2 H g is a Hessian-vector product (forward over reverse), with step size
    lr * (1 + cos(pi s / steps)) / 2 at step s; the largest value seen is kept. Estimates
    below `min_value` (or non-finite) become `fallback`. The reference starts L-BFGS-B from
    10 uniform points (`samples = restarts` does that); a local ascent only finds the corner
    of its start's orthant for a convex ||grad mu|| (e.g. a quadratic mean), so the starts are
    the best of a larger sample, as the reference's `sample_then_minimize` does for its
    acquisitions (ml_utils/optimization.py: 1000 samples).

    Args:
        key: PRNG key.
        posterior: x [n, d] -> (mean [n, m], std [n, m]), differentiable in x.
        d: input dimension.
        restarts: ascents per objective; steps: ascent steps; lr: initial step size;
        samples: uniform points screened for the starts (>= restarts).
        min_value, fallback: the flat-model rule.

    Returns:
        (L float [m], argmax points float [m, d]).
    """
    m = jax.eval_shape(posterior, jax.ShapeDtypeStruct((1, d), jnp.float32))[0].shape[-1]
    pool = _uniform_points(key, max(samples, restarts), d)
    pool_sq = jax.vmap(lambda x: jnp.sum(jnp.square(jax.jacrev(
        lambda z: posterior(z[None])[0][0])(x)), axis=-1))(pool)  # [samples, m]
    pool_sq = jnp.where(jnp.isnan(pool_sq), -jnp.inf, pool_sq)
    lips, args = [], []
    for i in range(m):
        def sq_and_dir(x: jax.Array, i: int = i) -> tuple[jax.Array, jax.Array]:
            g, hg = jax.jvp(lambda z: mean_grad(posterior, z, i), (x,),
                            (mean_grad(posterior, x, i),))
            return jnp.sum(g * g), 2.0 * hg

        starts = pool[jax.lax.top_k(pool_sq[:, i], restarts)[1]]
        lip, arg = _ascend(jax.vmap(sq_and_dir), starts, steps, lr)
        lips.append(lip)
        args.append(arg)
    norm = jnp.stack(lips)
    lip = jnp.where(jnp.isfinite(norm) & (norm >= min_value), norm, fallback)
    return lip, jnp.stack(args)


def _uniform_points(key: jax.Array, n: int, d: int) -> jax.Array:
    """Uniform points in the box (`nhb.search.rng`: cheap to compile)."""
    return rng.uniforms(key, n * d).reshape(n, d)


def _ascend(sq_and_dir: Callable, x0: jax.Array, steps: int, lr: float
            ) -> tuple[jax.Array, jax.Array]:
    """Projected Adam ascent from the rows of x0; returns (sqrt of the best value, its x)."""

    def step(carry, s):
        x, mom, vel, best_v, best_x = carry
        v, g = sq_and_dir(x)
        g = jnp.where(jnp.isfinite(g), g, 0.0)
        v = jnp.where(jnp.isnan(v), -jnp.inf, v)
        better = v > best_v  # the value at the current iterate, before the move
        best_v = jnp.where(better, v, best_v)
        best_x = jnp.where(better[:, None], x, best_x)
        mom = 0.9 * mom + 0.1 * g
        vel = 0.999 * vel + 0.001 * g * g
        t = s + 1.0
        rate = lr * 0.5 * (1.0 + jnp.cos(jnp.pi * s / steps))
        upd = (mom / (1 - 0.9 ** t)) / (jnp.sqrt(vel / (1 - 0.999 ** t)) + 1e-8)
        return (jnp.clip(x + rate * upd, 0.0, 1.0), mom, vel, best_v, best_x), None

    init = (x0, jnp.zeros_like(x0), jnp.zeros_like(x0), jnp.full(x0.shape[:1], -jnp.inf), x0)
    (x, _, _, best_v, best_x), _ = jax.lax.scan(step, init, jnp.arange(steps, dtype=jnp.float32))
    v_last = jnp.where(jnp.isnan(v := sq_and_dir(x)[0]), -jnp.inf, v)
    best_v = jnp.maximum(best_v, v_last)
    best_x = jnp.where((v_last >= best_v)[:, None], x, best_x)
    k = jnp.argmax(best_v)
    return jnp.sqrt(jnp.maximum(best_v[k], 0.0)), best_x[k]


def cone_radii(mean_b: jax.Array, std_b: jax.Array, best: jax.Array,
               lip: jax.Array) -> jax.Array:
    """HLP cone radii r_j = (mu(x_j) - M) / L + sigma(x_j) / L (acquisition.py, precompute).

    Args:
        mean_b, std_b: float [k, m] posterior at the batch points.
        best: float [m] best (smallest) observed value M per objective.
        lip: float [m] Lipschitz constant per objective.

    Returns:
        float [k, m].
    """
    return (mean_b - best) / lip + std_b / lip


def soft_min_one(a: jax.Array, p: float = SOFTMIN_P) -> jax.Array:
    """numpy's `norm([a, 1], p)` = (|a|^p + 1)^(1/p) for p < 0, without overflow.

    For |a| <= 1 it is evaluated as |a| (1 + |a|^-p)^(1/p) (exact), so a = 0 gives 0 where
    numpy divides by zero (and also returns 0); |a| = inf gives 1.

    Args:
        a: float array; p: negative exponent.

    Returns:
        float array like a, in [0, 1].
    """
    a = jnp.abs(a)
    small = a <= 1.0
    a_small = jnp.where(small, a, 1.0)
    a_big = jnp.where(small, 2.0, a)
    low = a_small * (1.0 + a_small ** (-p)) ** (1.0 / p)
    high = (a_big ** p + 1.0) ** (1.0 / p)
    return jnp.where(small, low, high)


def hlp_penaliser(x: jax.Array, x_batch: jax.Array, radius: jax.Array, valid: jax.Array,
                  p: float = SOFTMIN_P) -> jax.Array:
    """Per-objective HLP factor softmin(prod_j ||x - x_j|| / r_j, 1) of each point.

    Batch rows with `valid` False are left out (factor 1 in the product); with no valid row
    the factor is 1 (the reference does not penalise an empty batch).

    Args:
        x: float [n, d] points to penalise.
        x_batch: float [k, d] batch points; radius: float [k, m] their `cone_radii`.
        valid: bool [k] rows of the batch that are set.
        p: the soft-min exponent (reference -5).

    Returns:
        float [n, m] factors in [0, 1] (0 at a batch point).
    """
    dist = jnp.sqrt(jnp.sum(jnp.square(x[:, None, :] - x_batch[None, :, :]), axis=-1))  # [n, k]
    h = dist[:, :, None] / radius[None, :, :]  # [n, k, m]
    h = jnp.where(valid[None, :, None], h, 1.0)
    factor = soft_min_one(jnp.prod(h, axis=1), p)
    return jnp.where(jnp.any(valid), factor, 1.0)
