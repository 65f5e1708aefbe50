"""DHA's hypergradient HPO: learning rate and weight decay through a one-step unroll.

Reference (`../shared/reference/dha.md` §2, `kaichen-z/DHA` `model/hpo_da.py:10-63`,
`searchmanager_darts.py:529-581`):

* the weights have no optimiser of their own: one step is g = clip_by_global_norm(grad, c)
  (PyTorch `clip_grad_norm_`, clip_coef = c / (||g|| + 1e-6), applied when < 1), then
  d = g + wd * w, a momentum buffer (dampening 0, no Nesterov) buf = d on the first step
  **detached**, later buf = mu * buf_prev + d (buf_prev detached), and w' = w - lr * buf.
  So dw'/dlr = -buf and dw'/dwd = -lr * w, except on the very first step where it is 0;
* the hyper loss is the mean CE of the network with w' on an un-augmented batch from the
  training set; (lr, wd) take one SGD step of their own on its gradient and are clamped to
  their bounds; then w' becomes the new weights (detached).

`weight_optimizer` is that update as an optax `GradientTransformation` under
`optax.inject_hyperparams`, so `unrolled_update` can put traced (lr, wd) into its state and
`jax.grad` differentiates w' with respect to them. The same transformation with a scheduled
learning rate is the plain SGD of the variants without HPO (one update rule, two uses).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

HPARAM_NAMES = ("learning_rate", "weight_decay")


class TraceState(NamedTuple):
    """Momentum buffer and step count of `detached_first_trace`."""

    trace: Any
    count: jax.Array


def torch_clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """PyTorch `clip_grad_norm_`: scale by max_norm / (||g|| + 1e-6) when that is < 1."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        coef = jnp.minimum(1.0, max_norm / (norm + 1e-6))
        return jax.tree.map(lambda g: g * coef, updates), state

    return optax.GradientTransformation(init, update)


def detached_first_trace(momentum: float) -> optax.GradientTransformation:
    """PyTorch SGD's momentum buffer as the reference unrolls it.

    buf_1 = stopgrad(d_1); buf_t = mu * stopgrad(buf_{t-1}) + d_t. Values equal PyTorch's
    (dampening 0, no Nesterov); only the derivative differs from `optax.trace`, whose first
    buffer is not detached.
    """

    def init(params):
        return TraceState(trace=jax.tree.map(jnp.zeros_like, params),
                          count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        first = state.count == 0

        def one(d, buf):
            later = momentum * jax.lax.stop_gradient(buf) + d
            return jnp.where(first, jax.lax.stop_gradient(d), later)

        new = jax.tree.map(one, updates, state.trace)
        return new, TraceState(trace=jax.tree.map(jax.lax.stop_gradient, new),
                               count=state.count + 1)

    return optax.GradientTransformation(init, update)


def weight_optimizer(learning_rate: float, weight_decay: float, momentum: float,
                     grad_clip: float | None) -> optax.GradientTransformation:
    """clip -> + wd * w -> momentum buffer -> * (-lr), with lr and wd injectable.

    Args:
        learning_rate: initial lr (a value; traced in the state's `hyperparams`).
        weight_decay: initial coupled weight decay.
        momentum: momentum of the buffer (static).
        grad_clip: global-norm clip applied before weight decay; None for no clipping.

    Returns:
        The transformation; its state's `hyperparams` holds "learning_rate" and
        "weight_decay".
    """

    def make(learning_rate, weight_decay):
        parts = [] if grad_clip is None else [torch_clip_by_global_norm(grad_clip)]
        parts += [optax.add_decayed_weights(weight_decay), detached_first_trace(momentum),
                  optax.scale_by_learning_rate(learning_rate)]
        return optax.chain(*parts)

    return optax.inject_hyperparams(make)(learning_rate=learning_rate,
                                          weight_decay=weight_decay)


def with_hparams(opt_state: Any, hparams: dict[str, jax.Array]) -> Any:
    """`opt_state` with its injected hyperparameters replaced (e.g. by traced values)."""
    return opt_state._replace(hyperparams={**opt_state.hyperparams, **hparams})


def unrolled_update(opt: optax.GradientTransformation, hparams: dict[str, jax.Array],
                    params: Any, grads: Any, opt_state: Any,
                    update_mask: Any = None) -> tuple[Any, Any]:
    """w' = one optimiser step of `params`, differentiable in `hparams`.

    Args:
        opt: `weight_optimizer(...)`.
        hparams: {"learning_rate", "weight_decay"} scalars (may be traced).
        params: weights w.
        grads: gradient of the training loss at w (not clipped yet).
        opt_state: the optimiser state (its buffers are treated as constants).
        update_mask: optional pytree of 0/1 multiplying the updates (parameters that are
            not trained, e.g. mixed-op BatchNorm affines of unfrozen nodes).

    Returns:
        (w', new optimiser state).
    """
    updates, new_state = opt.update(grads, with_hparams(opt_state, hparams), params)
    if update_mask is not None:
        updates = jax.tree.map(lambda u, m: u * m, updates, update_mask)
    return optax.apply_updates(params, updates), new_state


def hyper_optimizer(learning_rate: float, momentum: float = 0.0, nesterov: bool = False,
                    weight_decay: float = 0.0) -> optax.GradientTransformation:
    """PyTorch `SGD([lr, wd], h_lr, ...)`: one parameter group, injectable step size."""

    def sgd(learning_rate):
        return optax.chain(optax.add_decayed_weights(weight_decay),
                           optax.sgd(learning_rate, momentum=momentum or None,
                                     nesterov=nesterov))

    return optax.inject_hyperparams(sgd)(learning_rate=learning_rate)


def clamp(hparams: dict[str, jax.Array], bounds: dict[str, tuple[float, float]]
          ) -> dict[str, jax.Array]:
    """Clamps each hyperparameter to its [low, up] (`hpo_da.py:22-24`)."""
    return {k: jnp.clip(v, *bounds[k]) for k, v in hparams.items()}


def midpoints(bounds: dict[str, tuple[float, float]]) -> dict[str, jax.Array]:
    """The initial hyperparameters: the midpoints of their bounds (`hpo_da.py:10-11`)."""
    return {k: jnp.float32(0.5 * (lo + up)) for k, (lo, up) in bounds.items()}


def check_bounds(bounds: dict[str, tuple[float, float]]) -> None:
    """Raises ValueError unless bounds has exactly `HPARAM_NAMES` with 0 <= low <= up."""
    if set(bounds) != set(HPARAM_NAMES):
        raise ValueError(f"hyperparameter bounds need exactly {HPARAM_NAMES}, got "
                         f"{sorted(bounds)}")
    for k, (lo, up) in bounds.items():
        if not 0 <= lo <= up:
            raise ValueError(f"bounds of {k} must satisfy 0 <= low <= up, got ({lo}, {up})")
