"""A fast-compiling initialiser of `HNAGNet` variables, equal in distribution to `net.init`.

A sampled NAGO network has hundreds of parameters; initialising them through the modules'
own initialisers compiles one RNG kernel per parameter, which takes about a minute on a CPU
for a network of ~50 ops (measured: 60 s jitted, 39 s eagerly, against ~14 s for its whole
SGD step at low optimisation). `fast_init` draws ONE normal and ONE uniform vector and slices
them, by the conventions of `nhb.models.hnag`:

* a 4-D "kernel" (a conv, HWIO): kaiming_normal_(fan_out, relu), std sqrt(2 / (kh kw O));
  its "bias": U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = kh kw I (PyTorch's default);
* a 2-D "kernel" (the classifier): PyTorch's default Linear, kernel and bias U(+-1/sqrt(I));
* "merge_w*": 1.0 (the authors' sigmoid merge weights); BatchNorm "scale" 1, "bias" 0;
  batch statistics mean 0, var 1.

The values differ from `net.init`'s (another draw), not their distribution.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from nhb.models.layers import assemble_variables


def _rules(shapes: Any) -> tuple[list, list]:
    normal, uniform = [], []  # (path, shape, scale)

    def visit(tree: dict, path: tuple) -> None:
        kernel = tree.get("kernel")
        for name, sub in tree.items():
            p = (*path, name)
            if isinstance(sub, dict):
                visit(sub, p)
            elif kernel is not None and name == "kernel" and len(sub.shape) == 4:
                kh, kw, _, o = sub.shape
                normal.append((p, sub.shape, math.sqrt(2.0 / (kh * kw * o))))
            elif kernel is not None and name in ("kernel", "bias"):
                fan_in = math.prod(kernel.shape[:-1])
                uniform.append((p, sub.shape, 1.0 / math.sqrt(fan_in)))
            elif name.startswith("merge_w") or (name in ("scale", "bias") and "scale" in tree) \
                    or (path[:1] == ("batch_stats",) and name in ("mean", "var")):
                continue
            else:
                raise ValueError(f"hnag fast_init: no rule for the variable at {p}")

    visit(dict(shapes), ())
    return normal, uniform


def fast_init(key: jax.Array, shapes: Any) -> dict[str, Any]:
    """Fresh variables for the tree of shapes `shapes` (e.g. `jax.eval_shape(net.init, ...)`).

    Args:
        key: PRNG key.
        shapes: {"params": ..., "batch_stats": ...} of arrays or ShapeDtypeStructs.

    Returns:
        The variables (float32), distributed as `HNAGNet.init`'s.

    Raises:
        ValueError: a variable none of the module docstring's rules covers.
    """
    normal, uniform = _rules(shapes)
    k_n, k_u = jax.random.split(key)
    drawn = {}
    for rule, draw in ((normal, lambda n: jax.random.normal(k_n, (n,), jnp.float32)),
                       (uniform, lambda n: jax.random.uniform(k_u, (n,), jnp.float32, -1, 1))):
        sizes = [math.prod(s) for _, s, _ in rule]
        flat, offset = draw(max(1, sum(sizes))), 0
        for (p, shape, scale), size in zip(rule, sizes, strict=True):
            drawn[p] = flat[offset:offset + size].reshape(shape) * scale
            offset += size

    return assemble_variables(
        shapes, drawn, lambda name: name.startswith("merge_w") or name in ("scale", "var"))


def fast_model(h: Any, width: int, num_classes: int = 10, image_size: int = 32) -> Any:
    """`nhb.models.hnag.make_model`'s `Model` with `fast_init` as its initialiser.

    Args:
        h: the `nhb.nago.graphs.Hierarchy`.
        width: the channel multiplier m.
        num_classes: classifier outputs.
        image_size: input side.

    Returns:
        An `nhb.train.model.Model` (masked BN statistics, a per-step "dropout" key).
    """
    from nhb.models.hnag import HNAGNet
    from nhb.train.model import linen_model

    net = HNAGNet(h, width, num_classes, image_size)
    shape = (1, image_size, image_size, 3)
    shapes = jax.eval_shape(lambda k: net.init(k, jnp.zeros(shape, jnp.float32), train=False),
                            jax.random.key(0))
    return linen_model(net, takes_inputs=False, rng_streams=("dropout",), input_shape=shape,
                       init=lambda key, inputs: fast_init(key, shapes))
