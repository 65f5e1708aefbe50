"""pybnn's adaptive SGHMC sampler (Springenberg et al. 2016) as a pure JAX update.

A line-by-line port of `pybnn/sampler/adaptive_sghmc.py` (`AdaptiveSGHMC.step`, pybnn 0.0.5).
Per parameter element, with `gradient = scale_grad * grad(loss)` and `iteration` the 1-based
count of updates (this one included):

    tau_inv = 1 / (tau + 1)                                  # from the OLD tau
    if iteration <= num_burn_in_steps:                       # burn-in: adapt the estimators
        tau   = tau - tau * g**2 / (v_hat + epsilon) + 1     # window (Eq. 9 left of [1])
        g     = g - g * tau_inv + tau_inv * gradient         # smoothed gradient (Eq. 9 right)
        v_hat = v_hat - v_hat * tau_inv + tau_inv * gradient**2   # its 2nd moment (Eq. 8)
    minv  = 1 / (sqrt(v_hat) + epsilon)                      # preconditioner
    sigma = sqrt(max(2 * lr**2 * mdecay * minv - lr**4, 1e-16))
    r     = r - lr**2 * minv * gradient - mdecay * r + sigma * N(0, 1)   # momentum (Eq. 10)
    theta = theta + r

(the tau update reads the old g and v_hat; g and v_hat use the old tau_inv; minv uses the new
v_hat). State starts at tau = g = v_hat = 1 and r = 0 (pybnn's `torch.ones_like` /
`zeros_like`; the random-momentum start is commented out there). After burn-in the estimators
freeze and the sampler runs with the adapted preconditioner.

Why not `blackjax.sgmcmc` (1.7.1: sgld, sghmc, sgnht, csgld): its `sghmc` / `sgnht`
diffusions take ONE scalar step size and friction for all parameters, update the position
before the momentum, redraw the momentum from N(0, 1) at every kernel call and have no
preconditioner or burn-in adaptation; sgld / csgld are first-order Langevin methods. None
expresses the per-parameter adapted mass `minv`, the `2 lr^2 mdecay minv - lr^4` noise
variance or the tau/g/v_hat estimators, so the update is written here (~20 lines, a pure
function of pytrees).

[1] J. T. Springenberg, A. Klein, S. Falkner, F. Hutter. Bayesian Optimization with Robust
    Bayesian Neural Networks. NeurIPS 2016.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

PyTree = object


@dataclasses.dataclass(frozen=True)
class SGHMCHyper:
    """The sampler's constants (pybnn's `AdaptiveSGHMC` group settings).

    Attributes:
        lr: pybnn's `lr` (the update uses lr**2 and lr**4).
        mdecay: momentum decay per step.
        epsilon: per-element stabiliser in the estimators and the preconditioner.
        num_burn_in_steps: updates 1..num_burn_in_steps adapt tau, g and v_hat.
        scale_grad: the loss gradient is multiplied by this (pybnn: the number of data points).
    """

    lr: float = 1e-2
    mdecay: float = 0.05
    epsilon: float = 1e-10
    num_burn_in_steps: int = 3000
    scale_grad: float = 1.0


@struct.dataclass
class SGHMCState:
    """Per-parameter sampler state (each a pytree shaped like the parameters).

    Attributes:
        tau: moving-average window of the estimators.
        g: smoothed gradient.
        v_hat: smoothed squared gradient.
        momentum: the SGHMC momentum r.
        iteration: updates done so far (int32 scalar).
    """

    tau: PyTree
    g: PyTree
    v_hat: PyTree
    momentum: PyTree
    iteration: jax.Array


def init(params: PyTree) -> SGHMCState:
    """pybnn's initial state: tau = g = v_hat = 1, momentum = 0, iteration = 0.

    Args:
        params: the parameter pytree.

    Returns:
        The state.
    """
    ones = jax.tree.map(jnp.ones_like, params)
    return SGHMCState(tau=ones, g=ones, v_hat=ones,
                      momentum=jax.tree.map(jnp.zeros_like, params),
                      iteration=jnp.zeros((), jnp.int32))


def noise(key: jax.Array, params: PyTree) -> PyTree:
    """Standard normal draws shaped like `params` (one key per leaf).

    Args:
        key: PRNG key.
        params: the parameter pytree.

    Returns:
        A pytree of N(0, 1) arrays.
    """
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, p.shape, p.dtype)
                                        for k, p in zip(keys, leaves, strict=True)])


def update(params: PyTree, state: SGHMCState, grads: PyTree, normal: PyTree,
           hyper: SGHMCHyper) -> tuple[PyTree, SGHMCState]:
    """One `AdaptiveSGHMC.step()` given its standard normal draws (module docstring).

    Args:
        params: current parameters.
        state: sampler state.
        grads: gradient of the (unscaled) minibatch loss at `params`.
        normal: N(0, 1) draws shaped like `params` (scaled by sigma here).
        hyper: sampler constants.

    Returns:
        (new params, new state).
    """
    iteration = state.iteration + 1
    burn_in = iteration <= hyper.num_burn_in_steps
    lr, mdecay, eps = hyper.lr, hyper.mdecay, hyper.epsilon

    def leaf(p, grad, tau, g, v_hat, r, n):
        gradient = grad * jnp.asarray(hyper.scale_grad, p.dtype)
        tau_inv = 1.0 / (tau + 1.0)
        tau_b = tau - tau * (g * g / (v_hat + eps)) + 1.0
        g_b = g - g * tau_inv + tau_inv * gradient
        v_b = v_hat - v_hat * tau_inv + tau_inv * gradient**2
        tau, g, v_hat = (jnp.where(burn_in, new, old)
                         for new, old in ((tau_b, tau), (g_b, g), (v_b, v_hat)))
        minv = 1.0 / (jnp.sqrt(v_hat) + eps)
        sigma = jnp.sqrt(jnp.maximum(2.0 * lr**2 * mdecay * minv - lr**4, 1e-16))
        r = r - lr**2 * minv * gradient - mdecay * r + sigma * n
        return p + r, tau, g, v_hat, r

    leaves, treedef = jax.tree.flatten(params)
    flat = [treedef.flatten_up_to(t) for t in (grads, state.tau, state.g, state.v_hat,
                                                state.momentum, normal)]
    out = [leaf(*args) for args in zip(leaves, *flat, strict=True)]
    field = lambda i: jax.tree.unflatten(treedef, [o[i] for o in out])
    return field(0), SGHMCState(tau=field(1), g=field(2), v_hat=field(3), momentum=field(4),
                                iteration=iteration)


def step(key: jax.Array, params: PyTree, state: SGHMCState, grads: PyTree,
         hyper: SGHMCHyper) -> tuple[PyTree, SGHMCState]:
    """One `AdaptiveSGHMC.step()`: `update` with fresh draws `noise(key, params)`.

    Args:
        key: PRNG key for the injected noise.
        params: current parameters.
        state: sampler state.
        grads: gradient of the (unscaled) minibatch loss at `params`.
        hyper: sampler constants.

    Returns:
        (new params, new state).
    """
    return update(params, state, grads, noise(key, params), hyper)
