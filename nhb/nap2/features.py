"""NAP2's weight and gradient meta-features, computed inside the jitted training step.

Per trainable layer (a conv or dense kernel; biases and BatchNorm parameters are not
layers) and separately for its weights and its gradients, 12 statistics (`STATS`; the paper
lists 14 names for "12 per type" and three repeat: nhb's 12 are DESIGN §6's, assumed):
max, min, mean, variance, std, median, q25, q75 (NumPy's linear interpolation), skewness
mu3/sigma^3, kurtosis mu4/sigma^4 (population moments, as the paper's Eqs. 1-2), L1 and L2.

Each layer gives a [100, 12] map (`ROWS`): row 0 over the whole layer, rows 1..99 over
groups of values: a dense layer's neurons (each neuron's input weights: a kernel [in, out]
has `out` groups of `in` values) or a conv layer's kernel positions (a kernel [kh, kw, in,
out] has kh*kw*in groups of the `out` filters' values at that position, the paper's 3x4x4 =
48 example). Layers with more than 99 groups contribute 99 drawn without replacement with a
PRNG key, once per layer shape (nhb's choice: the same neurons are followed through the
snapshots, and runs are comparable);
fewer groups are taken in order and the rest of the map is zero. NaN becomes 0 and +-inf
+-1e7 (`INF_VALUE`). The first 65 layers (`MAX_LAYERS`) in the forward pass's call order
(`nhb.train.Model.call_order`) are kept.

`SnapshotSpec` is a hashable, picklable factory of the `nhb.train.StepHook` that records a
snapshot every `every` SGD steps: after k*every updates (k = 1..count) it stores the weight
and gradient maps (the gradient of the next batch at those weights) and the loss/accuracy of
the network in eval mode on the first `valid_images` validation images (the baselines'
validation loss, from the same moment). The hook branches with `lax.cond` on the (unbatched)
global step, so the other steps pay only the predicate; a vmapped group records one snapshot
stack per member. The state's public entries ("weights", "grads" float32 [count, L, 100,
12], "valid_loss", "valid_acc" [count], "taken" bool [count]) flow out of grid runs as
`RunResult.extras` and into the build's shards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nhb.data.augment import normalize
from nhb.models.nap2 import FEATURES, MAX_LAYERS, ROWS
from nhb.train.model import HookContext, Model, StepHook

STATS = ("max", "min", "mean", "variance", "std", "median", "q25", "q75", "skewness",
         "kurtosis", "l1", "l2")
NUM_STATS = FEATURES  # the map layout (ROWS, MAX_LAYERS, FEATURES) is the models' input
assert len(STATS) == NUM_STATS
INF_VALUE = 1e7
RECORDED = ("weights", "grads", "valid_loss", "valid_acc", "taken")


def clean(x: jax.Array) -> jax.Array:
    """NaN -> 0, +-inf -> +-`INF_VALUE` (the paper's replacement rule)."""
    return jnp.nan_to_num(x, nan=0.0, posinf=INF_VALUE, neginf=-INF_VALUE)


def statistics(x: jax.Array) -> jax.Array:
    """The 12 `STATS` over the last axis.

    Args:
        x: float [..., n].

    Returns:
        float32 [..., 12], before `clean` (a constant group has NaN skewness/kurtosis).
    """
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, -1)
    d = x - mean[..., None]
    var = jnp.mean(d * d, -1)
    std = jnp.sqrt(var)
    q25, q50, q75 = jnp.quantile(x, jnp.array([0.25, 0.5, 0.75]), axis=-1)
    skew = jnp.mean(d**3, -1) / std**3
    kurt = jnp.mean(d**4, -1) / var**2
    return jnp.stack([jnp.max(x, -1), jnp.min(x, -1), mean, var, std, q50, q25, q75, skew,
                      kurt, jnp.sum(jnp.abs(x), -1), jnp.sqrt(jnp.sum(x * x, -1))], -1)


def layer_groups(kernel: jax.Array) -> jax.Array:
    """A kernel's groups of values: [groups, values] (see the module docstring).

    Args:
        kernel: a dense kernel [in, out] or a conv kernel [kh, kw, in, out].

    Returns:
        Dense: [out, in] (each neuron's inputs); conv: [kh*kw*in, out] (each position's
        filter values).
    """
    if kernel.ndim == 2:
        return kernel.T
    if kernel.ndim == 4:
        return kernel.reshape(-1, kernel.shape[-1])
    raise ValueError(f"a layer kernel is 2-D (dense) or 4-D (conv); got shape {kernel.shape}")


def sample_groups(key: jax.Array, n_groups: int, rows: int = ROWS - 1) -> tuple[jax.Array, int]:
    """Which groups fill rows 1..rows of a layer's map.

    Args:
        key: PRNG key (used only when there are more groups than rows).
        n_groups: the layer's number of groups.
        rows: rows to fill (99).

    Returns:
        (int32 [rows] group indices, number of valid rows); rows beyond it are padding.
    """
    if n_groups > rows:
        return jax.random.choice(key, n_groups, (rows,), replace=False).astype(jnp.int32), rows
    return jnp.pad(jnp.arange(n_groups, dtype=jnp.int32), (0, rows - n_groups)), n_groups


def layer_map(kernel: jax.Array, idx: jax.Array, n_valid: int) -> jax.Array:
    """The [100, 12] map of one layer's weights or gradients.

    Args:
        kernel: the layer's kernel (or its gradient).
        idx: int [99] sampled group indices (`sample_groups`).
        n_valid: how many of them are real (the rest are zero rows).

    Returns:
        float32 [100, 12], cleaned.
    """
    whole = statistics(kernel.reshape(-1))
    groups = statistics(layer_groups(kernel)[idx])
    groups = jnp.where((jnp.arange(idx.shape[0]) < n_valid)[:, None], groups, 0.0)
    return clean(jnp.concatenate([whole[None], groups], 0))


def kernel_paths(params: Any, call_order: Sequence[tuple[str, ...]] | None = None,
                 max_layers: int = MAX_LAYERS) -> list[tuple[str, ...]]:
    """Paths of the layer kernels ("kernel" leaves, 2-D or 4-D), first `max_layers` kept.

    Args:
        params: the parameter pytree (nested dicts).
        call_order: module paths in forward order (`Model.call_order`); None sorts by path.
        max_layers: how many layers to keep.

    Returns:
        Paths (tuples of keys ending in "kernel") in network order.
    """
    paths = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = tuple(str(getattr(p, "key", p)) for p in path)
        if keys[-1] == "kernel" and np.ndim(leaf) in (2, 4):
            paths.append(keys)
    if call_order is not None:
        rank = {tuple(m): i for i, m in enumerate(call_order)}
        missing = [p for p in paths if p[:-1] not in rank]
        if missing:
            raise ValueError(f"layers {missing} are not in the model's call order")
        paths.sort(key=lambda p: rank[p[:-1]])
    return paths[:max_layers]


def _n_groups(kernel: Any) -> int:
    shape = jnp.shape(kernel)
    return shape[-1] if len(shape) == 2 else int(np.prod(shape[:-1]))


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for k in path:
        tree = tree[k]
    return tree


def feature_maps(tree: Any, paths: Sequence[tuple[str, ...]], idx: Sequence[jax.Array],
                 n_valid: Sequence[int]) -> jax.Array:
    """Stacked layer maps [L, 100, 12] of a parameter or gradient pytree."""
    return jnp.stack([layer_map(_get(tree, p), i, n) for p, i, n in zip(paths, idx, n_valid,
                                                                          strict=True)])


@dataclasses.dataclass(frozen=True)
class SnapshotSpec:
    """What a NAP2 snapshot hook records (hashable: part of a compiled program's key).

    Attributes:
        every: SGD steps between snapshots (the paper: 100; scale it with the data, about
            four snapshots per epoch).
        count: snapshots per run (the paper: 30); the run must have more than
            `every * count` SGD steps.
        valid_images: validation images for the snapshot's validation loss (assumed: the
            paper does not say how much data its baselines' validation loss used); 0 skips
            it (valid_loss / valid_acc stay NaN): the feature maps alone.
        max_layers: layers kept (65).
        seed: seed of the key that picks each layer's sampled groups (folded with the
            layer's position).
    """

    every: int
    count: int
    valid_images: int = 256
    max_layers: int = MAX_LAYERS
    seed: int = 0

    def __post_init__(self):
        if self.valid_images < 0:
            raise ValueError(f"SnapshotSpec.valid_images must be >= 0, got {self.valid_images}")
        for name in ("every", "count", "max_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SnapshotSpec.{name} must be >= 1, got "
                                 f"{getattr(self, name)}")

    def steps_needed(self) -> int:
        """SGD steps a run needs for all its snapshots (the last is taken at this step)."""
        return self.every * self.count + 1

    def __call__(self, model: Model) -> StepHook:
        """The `StepHook` recording this spec's snapshots of `model`."""
        return snapshot_hook(self, model)


def snapshot_hook(spec: SnapshotSpec, model: Model) -> StepHook:
    """The `nhb.train.StepHook` of `spec` (see the module docstring)."""

    paths_of: list = []  # the model's layer paths, found once (tracing its init is not free)

    def layout(params, inputs):
        if not paths_of:
            order = model.call_order(inputs) if model.call_order is not None else None
            paths_of.append(kernel_paths(params, order, spec.max_layers))
        return paths_of[0]

    def init(params, inputs):
        paths = layout(params, inputs)
        key = jax.random.key(spec.seed)
        idx = []
        for i, p in enumerate(paths):
            n_groups = _n_groups(_get(params, p))
            ix, _ = sample_groups(jax.random.fold_in(key, i), n_groups)
            idx.append(ix)
        maps = jnp.zeros((spec.count, len(paths), ROWS, NUM_STATS), jnp.float32)
        zeros = jnp.full((spec.count,), jnp.nan if spec.valid_images == 0 else 0.0, jnp.float32)
        return dict(weights=maps, grads=maps, valid_loss=zeros, valid_acc=zeros,
                    taken=jnp.zeros((spec.count,), bool), _idx=tuple(idx))

    def snap(state, k, params, grads, ctx: HookContext):
        paths = layout(params, ctx.inputs)
        valid = [min(ROWS - 1, _n_groups(_get(params, p))) for p in paths]
        w = feature_maps(params, paths, state["_idx"], valid)
        g = feature_maps(grads, paths, state["_idx"], valid)
        x_all, y_all = ctx.data.split("valid")
        n = min(spec.valid_images, x_all.shape[0])
        if n:
            logits = model.apply_eval({"params": params, "batch_stats": ctx.batch_stats},
                                      normalize(x_all[:n]), ctx.inputs)
            loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y_all[:n]))
            acc = 100.0 * jnp.mean(jnp.argmax(logits, -1) == y_all[:n])
        else:
            loss = acc = jnp.float32(jnp.nan)
        return dict(state, weights=state["weights"].at[k].set(w),
                    grads=state["grads"].at[k].set(g), valid_loss=state["valid_loss"].at[k]
                    .set(loss), valid_acc=state["valid_acc"].at[k].set(acc),
                    taken=state["taken"].at[k].set(True))

    def update(state, step, params, grads, ctx):
        k = step // spec.every - 1
        take = (step % spec.every == 0) & (k >= 0) & (k < spec.count)
        return jax.lax.cond(take, lambda s: snap(s, k, params, grads, ctx), lambda s: s, state)

    return StepHook(init=init, update=update)


def recorded(hook_state: dict) -> dict[str, Any]:
    """The public entries of a hook state (those a grid run stores per run)."""
    return {k: v for k, v in hook_state.items() if not k.startswith("_")}
