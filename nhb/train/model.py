"""The classifier interface of the training protocol (`nhb.train.engine`).

A `Model` says how to initialise a network's variables and apply it in train mode (BatchNorm
on batch statistics of the valid examples) and eval mode (running statistics), with optional
extra traced `inputs` (NAS-HPO-Bench-II's cell ops, DHA's architecture weights). `linen_model`
builds one for any Linen module. A `StepHook` is a state carried through every SGD step inside
the jitted step (NAP2's weight/gradient snapshots).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Model:
    """How the protocol initialises and applies a classifier with BatchNorm state.

    Attributes:
        init: `(key, inputs) -> {"params": ..., "batch_stats": ...}`.
        apply_train: `(variables, x, inputs, mask) -> (logits, new batch_stats)`: train-mode
            BatchNorm over the examples where `mask` is True.
        apply_eval: `(variables, x, inputs) -> logits` with eval-mode BatchNorm.
        call_order: `(inputs) -> tuple of module paths` in the order the forward pass calls
            the modules (NAP2's "first 65 layers"); None when unknown.
        rng_streams: Linen RNG streams the train-mode forward draws from (e.g. "dropout");
            when non-empty `apply_train` takes a fifth argument, a per-step PRNG key.
    """

    init: Callable
    apply_train: Callable
    apply_eval: Callable
    call_order: Callable | None = None
    rng_streams: tuple[str, ...] = ()


def linen_model(module: Any, *, eval_module: Any = None, init: Callable | None = None,
                input_shape: tuple[int, ...] = (1, 32, 32, 3), takes_inputs: bool = True,
                takes_mask: bool = True, rng_streams: tuple[str, ...] = ()) -> Model:
    """A `Model` for a Linen module called as `module(x, [inputs], train=..., [mask=...])`.

    Args:
        module: the network; BatchNorm statistics in the "batch_stats" collection.
        eval_module: a module with the same variables for the eval passes (e.g. another
            convolution implementation); None uses `module`.
        init: `(key, inputs) -> variables`; None uses `module.init` on zeros of
            `input_shape`.
        input_shape: dummy input shape for the default `init`.
        takes_inputs: whether the module takes the extra `inputs` positional argument.
        takes_mask: whether it takes `mask=` (needed for exact BatchNorm statistics on the
            padded last batch; without it, padded examples enter the statistics).
        rng_streams: RNG streams of the train-mode forward (e.g. ("dropout",)); each gets
            its own fold of the per-step key.

    Returns:
        The `Model`.
    """
    eval_module = module if eval_module is None else eval_module
    extra = lambda inputs: (inputs,) if takes_inputs else ()

    def default_init(key, inputs):
        return dict(module.init(key, jnp.zeros(input_shape, jnp.float32), *extra(inputs),
                                train=False))

    def apply_train(variables, x, inputs, mask, key=None):
        kw = {"mask": mask} if takes_mask else {}
        if rng_streams:
            kw["rngs"] = {s: jax.random.fold_in(key, i) for i, s in enumerate(rng_streams)}
        logits, new = module.apply(variables, x, *extra(inputs), train=True,
                                   mutable=["batch_stats"], **kw)
        return logits, new["batch_stats"]

    def apply_eval(variables, x, inputs):
        return eval_module.apply(variables, x, *extra(inputs), train=False)

    def call_order(inputs):
        order: list[tuple[str, ...]] = []

        def record(next_fun, args, kwargs, context):
            if context.method_name == "__call__" and context.module.path not in order:
                order.append(tuple(context.module.path))
            return next_fun(*args, **kwargs)

        def trace():
            with nn.intercept_methods(record):
                variables = dict(module.init(jax.random.key(0), jnp.zeros(
                    input_shape, jnp.float32), *extra(inputs), train=False))
            return variables

        jax.eval_shape(trace)
        return tuple(order)

    return Model(init=init or default_init, apply_train=apply_train, apply_eval=apply_eval,
                 call_order=call_order, rng_streams=tuple(rng_streams))


class HookContext(NamedTuple):
    """What a `StepHook` sees of the step besides parameters and gradients.

    Attributes:
        batch_stats: the BatchNorm running statistics before the step (with `params`, the
            network as it was when the gradients were taken).
        inputs: the model's extra traced inputs.
        data: the `TrainData` (e.g. for a validation loss at a snapshot).
    """

    batch_stats: Any
    inputs: Any
    data: Any


class StepHook(NamedTuple):
    """A state carried through every SGD step inside the jitted step.

    Attributes:
        init: `(params, inputs) -> hook state` (`inputs`: the model's extra inputs).
        update: `(hook_state, step, params, grads, ctx) -> hook state`; `step` is the global
            0-based SGD step (epoch * steps_per_epoch + i; after `step` updates), `params`
            the values the gradients were taken at, `ctx` a `HookContext`. `step` is not
            batched over a vmapped group, so `lax.cond(step % S == 0, ...)` stays a real
            branch: keep most steps cheap that way, writing into a preallocated buffer.
            Grid runs record the hook state's entries whose names do not start with "_"
            (`nhb.train.RunResult.extras`) when the state is a dict.
    """

    init: Callable
    update: Callable
