"""Memory per sample of a network, the NAGO MOBO objective, measured two ways (DESIGN §4).

The paper's definition of memory per sample (MPS) is unpublished (`reference/nago.md` §3).

* `compiled_memory` (a): XLA's memory analysis of the COMPILED SGD step of the training
  protocol (`nhb.train.engine.make_train(...).sgd_step`: augmentation, train-mode forward with
  dropout, backward, SGD update; no buffer donation), lowered on abstract shapes
  (`jax.ShapeDtypeStruct`) so nothing is allocated. The peak is the sum of the
  `CompiledMemoryStats` fields `argument_size_in_bytes + output_size_in_bytes -
  alias_size_in_bytes + temp_size_in_bytes` (XLA packs the temporaries by liveness, so the
  temp size is already their peak). The stats' own `peak_memory_in_bytes` is kept as
  `xla_peak_bytes` but not used: on XLA:CPU it was far below the temp size (2.4 MB vs 32 MB
  for one HNAG step). Per image = peak / batch size (parameters, optimizer state and the
  batch included) at the given batch size. It needs a compile (seconds to minutes on CPU).
* `activation_bytes` (b): the bytes of the residuals that reverse-mode autodiff saves for
  the backward pass of the train-mode loss w.r.t. the parameters: the array leaves of the
  VJP closure returned by the public `jax.vjp` (a `jax.tree_util.Partial` whose leaves are
  the residuals), evaluated under `jax.eval_shape`, so only tracing, no compile and no
  arithmetic. Bytes use each residual's own dtype (float32 activations, 1-byte bool masks).
  `activation_bytes_per_image` is the slope between two batch sizes, so batch-independent
  residuals (weights used by input gradients, BN statistics) drop out. This is a jaxpr-level
  count, before XLA fuses or rematerialises anything, and JAX keeps more per op than PyTorch:
  for one ReLU-Conv-BN node 21 bytes per output element plus 4 per image (ReLU: output, bool
  mask and a zeros tensor; masked BN: three tensors; the mask), PyTorch 8 (ReLU output = conv
  input, BN input). So this proxy is about twice PyTorch's saved-tensor bytes: for the paper's
  Table-3 CIFAR-10 optima (thirds, 4M limit) it gives 29.7 (HNAG-BOHB) and 18.5 (HNAG-MOBO)
  MiB per image against the paper's 17 and 13 MB.
* `torch_saved_bytes` (c): what PyTorch's autograd saves for backward for one train-mode
  batch of the authors' network (`benchmarks/hnag_torch.py`) plus its cross-entropy loss,
  counted in closed form from the hierarchy (no torch, no tracing). It states, per op, what
  `torch.autograd.graph.saved_tensors_hooks` sees on CPU with torch 2.13 (unique tensors by
  storage and shape, parameters included; `benchmarks/hnag_memory.py` checks it against the
  hooks). `torch_memory_per_image_mb` = bytes at batch 8 / 8 / 2**20 reproduces the
  reference's 16.7 / 14.6 / 11.1 / 11.4 MiB for the four Table-3 CIFAR optima (thirds, 4M
  limit), against the paper's MPS of 17 / 14 / 13 / 13 MB.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from nhb.nago.graphs import CHANNEL_RATIOS, DAG, Hierarchy
from nhb.train.engine import HParams, Protocol, TrainData, batch_loss, make_train
from nhb.train.model import Model

MB = 2.0 ** 20


@dataclasses.dataclass(frozen=True)
class CompiledMemory:
    """XLA's memory analysis of one compiled SGD step.

    Attributes:
        batch_size: images per step.
        argument_bytes, output_bytes, alias_bytes, temp_bytes: `CompiledMemoryStats` fields.
        xla_peak_bytes: its `peak_memory_in_bytes` (reported, not used; see the module doc).
    """

    batch_size: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    xla_peak_bytes: int

    @property
    def peak_bytes(self) -> int:
        """argument + output - alias + temp."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    @property
    def per_image(self) -> float:
        """Peak bytes per image at this batch size."""
        return self.peak_bytes / self.batch_size


def _data_shapes(batch_size: int, image_shape: tuple[int, ...]) -> TrainData:
    sds = jax.ShapeDtypeStruct
    x = lambda n: sds((n, *image_shape), jnp.uint8)
    y = lambda n: sds((n,), jnp.int32)
    return TrainData(x(batch_size), y(batch_size), x(1), y(1), x(1), y(1))


def compiled_memory(model: Model, batch_size: int, image_shape: tuple[int, ...] = (32, 32, 3),
                    learning_rate: float = 0.1) -> CompiledMemory:
    """(a) XLA's memory analysis of the protocol's compiled SGD step.

    Args:
        model: the classifier (e.g. `nhb.models.hnag.make_model`).
        batch_size: images per step.
        image_shape: (H, W, 3) of the uint8 images.
        learning_rate: the (traced) learning rate; does not change the program.

    Returns:
        The `CompiledMemory` of one `sgd_step`.
    """
    proto = Protocol(batch_size=batch_size, n_train=batch_size, n_valid=1, n_test=1, epochs=1)
    trainer = make_train(model, proto)
    hp = HParams(learning_rate=jnp.float32(learning_rate))

    def setup(key):
        return trainer.epoch_setup(trainer.init(key, hp, ()), 0, hp)

    carry, (k_aug, idx, mask) = jax.eval_shape(setup, jax.random.key(0))

    def step(carry, row, m, k_aug, hp, data):
        return trainer.sgd_step(carry, 0, row, m, k_aug, hp, (), data)

    row = jax.ShapeDtypeStruct(idx.shape[1:], idx.dtype)
    m = jax.ShapeDtypeStruct(mask.shape[1:], mask.dtype)
    hp_shape = jax.eval_shape(lambda: hp)
    stats = jax.jit(step).lower(carry, row, m, k_aug, hp_shape,
                                _data_shapes(batch_size, image_shape)).compile().memory_analysis()
    return CompiledMemory(batch_size, int(stats.argument_size_in_bytes),
                          int(stats.output_size_in_bytes), int(stats.alias_size_in_bytes),
                          int(stats.temp_size_in_bytes), int(stats.peak_memory_in_bytes))


def variable_shapes(model: Model) -> Any:
    """The model's variables as `jax.ShapeDtypeStruct`s (traced, not computed)."""
    return jax.eval_shape(lambda key: model.init(key, ()), jax.random.key(0))


def residual_shapes(model: Model, batch_size: int, image_shape: tuple[int, ...] = (32, 32, 3),
                    variables: Any = None) -> list[Any]:
    """Shapes of the residuals `jax.vjp` saves for the train-mode loss's parameter gradient.

    Args:
        model: the classifier.
        batch_size: images in the batch (all valid).
        image_shape: (H, W, 3).
        variables: `variable_shapes(model)`, to trace the initialiser only once; None traces
            it here.

    Returns:
        `jax.ShapeDtypeStruct`s, one per residual.
    """
    variables = variable_shapes(model) if variables is None else variables

    def residuals(variables, key):
        x = jnp.zeros((batch_size, *image_shape), jnp.float32)
        y = jnp.zeros((batch_size,), jnp.int32)
        mask = jnp.ones((batch_size,), bool)
        extra = (key,) if model.rng_streams else ()

        def loss(params):
            logits, _ = model.apply_train({"params": params,
                                           "batch_stats": variables["batch_stats"]},
                                          x, (), mask, *extra)
            return batch_loss(logits, y, mask)[0]

        return jax.tree.leaves(jax.vjp(loss, variables["params"])[1])

    return jax.eval_shape(residuals, variables, jax.random.key(0))


def activation_bytes(model: Model, batch_size: int, image_shape: tuple[int, ...] = (32, 32, 3),
                     variables: Any = None) -> int:
    """(b) Bytes of the residuals saved for backward for one train-mode batch.

    Args:
        model: the classifier.
        batch_size: images in the batch.
        image_shape: (H, W, 3).
        variables: optional `variable_shapes(model)`.

    Returns:
        The total bytes (each residual at its own dtype's size).
    """
    return sum(math.prod(s.shape) * jnp.dtype(s.dtype).itemsize
               for s in residual_shapes(model, batch_size, image_shape, variables))


def activation_bytes_per_image(model: Model, image_shape: tuple[int, ...] = (32, 32, 3),
                               batch_sizes: tuple[int, int] = (1, 2)) -> float:
    """(b) per image: the slope of `activation_bytes` between two batch sizes.

    Args:
        model: the classifier.
        image_shape: (H, W, 3).
        batch_sizes: the two batch sizes (b1 < b2).

    Returns:
        (bytes(b2) - bytes(b1)) / (b2 - b1).
    """
    b1, b2 = batch_sizes
    variables = variable_shapes(model)
    return (activation_bytes(model, b2, image_shape, variables)
            - activation_bytes(model, b1, image_shape, variables)) / (b2 - b1)


# ---------------------------------------------------------------------------------------
# (c) PyTorch's saved tensors, in closed form.

TORCH_HEAD_FEATURES = 1280  # the head's 1x1 conv (reference/nago.md §2)
TORCH_LARGE_IMAGE = 40  # images of at least this size get the stride-4 stem
F32, I64 = 4, 8  # bytes per element


@dataclasses.dataclass(frozen=True)
class _T:
    """A symbolic activation tensor [batch, channels, side, side] (float32)."""

    key: int
    channels: int
    side: int


class _Ledger:
    """The unique tensors autograd saves, keyed as the hook measurement keys them."""

    def __init__(self, batch: int) -> None:
        self.batch, self._ids = batch, itertools.count()
        self.saved: dict[Hashable, int] = {}

    def tensor(self, channels: int, side: int) -> _T:
        """A fresh activation."""
        return _T(next(self._ids), channels, side)

    def save(self, t: _T) -> None:
        """An op saves activation `t` (counted once however many ops save it)."""
        self.saved[t.key] = self.batch * t.channels * t.side ** 2 * F32

    def save_new(self, nbytes: int) -> None:
        """An op saves a tensor no other op saves (a weight, a statistic, a mask)."""
        self.saved[("own", next(self._ids))] = nbytes

    def relu(self, x: _T) -> _T:
        """ReLU saves its output."""
        y = self.tensor(x.channels, x.side)
        self.save(y)
        return y

    def conv(self, x: _T, c_out: int, k: int, stride: int = 1, groups: int = 1) -> _T:
        """Conv2d (bias or not) saves its input and its weight."""
        self.save(x)
        self.save_new(c_out * x.channels // groups * k * k * F32)
        pad = (k - 1) // 2
        return self.tensor(c_out, (x.side + 2 * pad - k) // stride + 1)

    def bn(self, x: _T) -> _T:
        """Train-mode BatchNorm2d saves its input, weight, running mean and variance and the
        batch mean and inverse std (five [C] vectors)."""
        self.save(x)
        self.save_new(5 * x.channels * F32)
        return self.tensor(x.channels, x.side)

    def pool(self, x: _T, side: int) -> _T:
        """`adaptive_avg_pool2d` to `side` where it differs: saves its input, except to 1x1,
        which ATen computes as a mean (saves nothing)."""
        if x.side == side:
            return x
        if side != 1:
            self.save(x)
        return self.tensor(x.channels, side)

    def merge(self, xs: Sequence[_T], ratios: Sequence[int], in_ratio: int, width: int) -> _T:
        """SUM merge of > 1 inputs: `sigmoid(w) * x` saves x and sigmoid(w) (one float) per
        input of the node's in-ratio, a 1x1 conv per other input; the sum saves nothing."""
        if len(xs) == 1:
            return xs[0]
        for x, r in zip(xs, ratios, strict=True):
            if r == in_ratio:
                self.save(x)
                self.save_new(F32)
            else:
                self.conv(x, int(in_ratio * width), 1)
        return self.tensor(int(in_ratio * width), xs[0].side)

    def graph(self, dag: DAG, node: Callable[[int, list[_T]], _T], x: _T) -> _T:
        """Runs `node(v, inputs)` over a DAG; its output (the mean of its output nodes, a
        one-node graph's node itself) saves nothing."""
        out: dict[int, _T] = {}
        for v in range(dag.n):
            out[v] = node(v, [out[u] for u in dag.preds[v]] if dag.preds[v] else [x])
        if dag.n == 1:
            return out[0]
        return self.tensor(out[dag.outputs[-1]].channels, out[dag.outputs[-1]].side)


def torch_saved_bytes(h: Hierarchy, width: int, num_classes: int = 10, image_size: int = 32,
                      batch_size: int = 8, channel_ratios: Sequence[int] = CHANNEL_RATIOS,
                      head_features: int = TORCH_HEAD_FEATURES) -> int:
    """(c) Bytes PyTorch's autograd saves for backward for one train-mode batch.

    The authors' network (`benchmarks/hnag_torch.py`, output cells picked by node id) plus
    `cross_entropy`, float32, counted as unique tensors (parameters included, a tensor saved
    by several ops once). Per op, as torch 2.13 on CPU saves them: the input image (first
    conv); ReLU its output (= the next conv's input); Conv2d its input and weight; BN its
    input, weight, running mean/var, batch mean and inverse std; `sigmoid(w) * x` merges x
    and sigmoid(w); `adaptive_avg_pool2d` its input (nothing to 1x1); head dropout its float
    mask [B, F]; Linear its input and weight; cross-entropy the log-softmax, the int64 targets
    and a scalar. Sums, means and divisions save nothing.

    Args:
        h: the hierarchy.
        width: the channel multiplier m (`graphs.channel_multiplier`).
        num_classes: classifier outputs.
        image_size: input side (< 40: the CIFAR stem; else the stride-4 stem).
        batch_size: images in the batch.
        channel_ratios: per-stage channel ratios.
        head_features: channels of the head's 1x1 conv.

    Returns:
        The saved bytes (an affine function of `batch_size`).
    """
    led = _Ledger(batch_size)
    ch = lambda ratio: int(ratio * width)
    c0 = ch(channel_ratios[0])
    x = led.tensor(3, image_size)
    if image_size < TORCH_LARGE_IMAGE:
        y = led.bn(led.conv(led.relu(led.bn(led.conv(x, c0, 3))), c0, 3))
        scale = 2.0
    else:  # dw-separable s2 - BN - [ReLU - dw-separable s2 - BN]
        y = led.bn(led.conv(led.conv(x, 3, 3, 2, groups=3), c0 // 2, 1))
        y = led.relu(y)
        y = led.bn(led.conv(led.conv(y, y.channels, 3, 2, groups=y.channels), c0, 1))
        scale = 0.5
    ratio = [channel_ratios[s] for s in h.stages]

    def cell(c: int, inputs: list[_T]) -> _T:
        preds, r = h.top.preds[c], ratio[c]
        r_in = ratio[preds[-1]] if preds else channel_ratios[0]
        side = int(image_size * scale / 2 ** (h.stages[c] + 1))
        xs = [led.pool(t, side) for t in inputs]
        merged = led.merge(xs, [ratio[u] for u in preds], r_in, width)

        def mid_node(j: int, ins: list[_T]) -> _T:
            mid_in = r if h.mids[c].preds[j] else r_in
            z = led.merge(ins, [r] * len(ins), mid_in, width)

            def op(o: int, ops_in: list[_T]) -> _T:
                op_in = r if h.bottoms[c][j].preds[o] else mid_in
                u = led.relu(led.merge(ops_in, [r] * len(ops_in), op_in, width))
                return led.bn(led.conv(u, ch(r), 3))

            return led.graph(h.bottoms[c][j], op, z)

        return led.graph(h.mids[c], mid_node, merged)

    cells: dict[int, _T] = {}
    for c in range(h.top.n):
        cells[c] = cell(c, [cells[u] for u in h.top.preds[c]] if h.top.preds[c] else [y])
    outs = [cells[o] for o in h.top.outputs]
    side = min(t.side for t in outs)
    c_last = outs[-1].channels
    for t in outs:
        t = led.pool(t, side)
        if len(outs) > 1 and t.channels != c_last:
            led.conv(t, c_last, 1)
    z = led.relu(led.bn(led.conv(led.relu(led.tensor(c_last, side)), head_features, 1)))
    led.pool(z, 1)
    led.save_new(batch_size * head_features * F32)  # dropout's float mask (CPU)
    led.save_new(batch_size * head_features * F32)  # Linear input
    led.save_new(head_features * num_classes * F32)  # Linear weight
    led.save_new(batch_size * num_classes * F32 + batch_size * I64 + F32)  # cross-entropy
    return sum(led.saved.values())


def torch_memory_per_image_mb(h: Hierarchy, width: int, num_classes: int = 10,
                              image_size: int = 32, batch_size: int = 8,
                              channel_ratios: Sequence[int] = CHANNEL_RATIOS,
                              head_features: int = TORCH_HEAD_FEATURES) -> float:
    """(c) per image: `torch_saved_bytes` / batch_size / 2**20, in MiB (2**20 bytes; the
    paper says "MB" without defining it). Parameters and other batch-independent tensors are
    shared over the batch (batch 8 reproduces the reference numbers).

    Args:
        h, width, num_classes, image_size, batch_size, channel_ratios, head_features: as
            `torch_saved_bytes`.

    Returns:
        MiB per image.
    """
    return torch_saved_bytes(h, width, num_classes, image_size, batch_size, channel_ratios,
                             head_features) / batch_size / MB
