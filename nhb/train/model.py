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

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Model:
    """How the protocol initialises and applies a classifier with BatchNorm state.

    Attributes:
        init: `(key, inputs) -> {"params": ..., "batch_stats": ...}`.
        apply_train: `(variables, x, inputs, mask) -> (logits, new batch_stats)`: train-mode
            BatchNorm over the examples where `mask` is True.
        apply_eval: `(variables, x, inputs) -> logits` with eval-mode BatchNorm.
    """

    init: Callable
    apply_train: Callable
    apply_eval: Callable


def linen_model(module: Any, *, eval_module: Any = None, init: Callable | None = None,
                input_shape: tuple[int, ...] = (1, 32, 32, 3), takes_inputs: bool = True,
                takes_mask: bool = True) -> Model:
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

    Returns:
        The `Model`.
    """
    eval_module = module if eval_module is None else eval_module
    extra = lambda inputs: (inputs,) if takes_inputs else ()

    def default_init(key, inputs):
        return dict(module.init(key, jnp.zeros(input_shape, jnp.float32), *extra(inputs),
                                train=False))

    def apply_train(variables, x, inputs, mask):
        kw = {"mask": mask} if takes_mask else {}
        logits, new = module.apply(variables, x, *extra(inputs), train=True,
                                   mutable=["batch_stats"], **kw)
        return logits, new["batch_stats"]

    def apply_eval(variables, x, inputs):
        return eval_module.apply(variables, x, *extra(inputs), train=False)

    return Model(init=init or default_init, apply_train=apply_train, apply_eval=apply_eval)


class StepHook(NamedTuple):
    """A state carried through every SGD step inside the jitted step.

    Attributes:
        init: `(params) -> hook state`.
        update: `(hook_state, step, params, grads) -> hook state`; `step` is the global
            0-based SGD step (epoch * steps_per_epoch + i), `params` the values the
            gradients were taken at. Keep it cheap on most steps (e.g. `lax.cond` on
            `step % S == 0` writing into a preallocated buffer).
    """

    init: Callable
    update: Callable
