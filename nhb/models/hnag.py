"""NAGO's network (HNAG and RNAG) as a Flax Linen module, built from a sampled `Hierarchy`.

Reference: `reference/nago.md` §2 (the authors' rubinxin/vega_NAGO `layer.py` / `ops.py`,
conv_type 'normal', SUM merges, conv3x3 only). NHWC throughout.

* **Node op**: ReLU -> Conv3x3 (stride 1, pad 1, bias) -> BatchNorm (PyTorch semantics,
  `TorchBatchNorm`, masked batch statistics in train mode).
* **Merges**, only for a node with more than one input: an input whose channel ratio equals
  the node's inplanes ratio (= the ratio of its highest-index input) is scaled by
  `sigmoid(w)` (one scalar per input, w initialised to 1.0, so 0.731 at init); any other
  input goes through a 1x1 conv with bias (no sigmoid) to the inplanes channels; the terms
  are summed. Inside a cell all ratios are equal, so 1x1 convs occur only between cells.
* **Resolution**: every input of a top-level cell (the stem output too) is adaptive-average
  pooled to the cell's stage resolution `int(image_size * s / 2 ** (stage + 1))`, s = 2 for
  images under 40 px and 0.5 otherwise; all convs have stride 1 after the stem.
* **Graphs**: every input node of a graph receives the same (merged) input; a graph's output
  is the mean of its output nodes (`DAG.outputs`; a one-node graph returns its node).
* **Top-level output**: the output cells, selected BY NODE ID, pooled to the smallest of
  their resolutions, 1x1-conv'ed (bias) to the channels of the last output cell where they
  differ, summed and divided by their count. The authors' `_parse_outputs` selects outputs
  by *position* in a dict into which the input cells were inserted first (layer.py:137), so
  whenever a non-zero input cell precedes an output cell the wrong cells are averaged (and
  the forward may crash on a channel mismatch); nhb deliberately does not reproduce this bug.
* **Stem**: images < 40 px: Conv3x3(3->C0, bias)-BN-ReLU-Conv3x3(C0->C0, bias)-BN, stride 1;
  otherwise two depthwise-separable convs of stride 2 (dw 3x3 + pw 1x1, both with bias):
  dwsep(3->C0//2)-BN-ReLU-dwsep(C0//2->C0)-BN (total stride 4).
* **Head**: ReLU-Conv1x1(->1280, bias)-BN-ReLU-GAP-Dropout(0.2)-Linear.
* **Init**: every conv weight kaiming_normal_(fan_out, relu) (untruncated normal, std
  sqrt(2 / (out * k * k))); conv biases and the Linear keep PyTorch's defaults
  (U(+-1/sqrt(fan_in))); BN weight 1, bias 0.
* **Channels**: a stage-s node has `int(channel_ratios[s] * width)` channels, width m from
  `nhb.nago.graphs.channel_multiplier`.

Parameter names: `stem_conv0/1`, `stem_bn0/1`; `cell{c}` with `merge_w{k}` (sigmoid weight of
input k) or `merge_conv{k}`, and `mid{j}` (its own `merge_w{k}`) holding `op{o}` (`merge_w{k}`,
`conv`, `bn`); `out_conv{k}` for output k; `head_conv`, `head_bn`, `fc`.

`param_count` counts the reference PyTorch model's parameters in closed form (from the
reference, independently of this module); `make_model` wraps the network for the engine.
Against a copy of the authors' PyTorch code (outputs patched to node ids; not part of the test
suite, which must not need torch) this module gave the same m and parameter counts and the
same eval-mode logits (relative error <= 4e-6) for 17 hierarchies (32, 30, 64, 16 px).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nhb.models.hnag_count import HEAD_FEATURES, LARGE_IMAGE, param_count
from nhb.models.layers import TorchBatchNorm, TorchDense, torch_bias_init
from nhb.nago.graphs import CHANNEL_RATIOS, DAG, Hierarchy
from nhb.train.model import Model, linen_model

Array = jax.Array
__all__ = ["HNAGNet", "adaptive_avg_pool", "make_model", "param_count", "stage_resolution"]
DROPOUT = 0.2

# torch.nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"): N(0, 2 / fan_out).
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def stage_resolution(image_size: int, stage: int) -> int:
    """Side of a stage's feature maps: `int(image_size * s / 2 ** (stage + 1))` (layer.py:189).

    Args:
        image_size: input side in pixels.
        stage: 0, 1 or 2.

    Returns:
        The side (s = 2 below 40 px, else 0.5).

    Raises:
        ValueError: the side would be 0.
    """
    s = 2.0 if image_size < LARGE_IMAGE else 0.5
    side = int(image_size * s / 2 ** (stage + 1))
    if side < 1:
        raise ValueError(f"image_size {image_size} leaves stage {stage} with no pixels")
    return side


def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """PyTorch's adaptive average pooling along one axis as an [n_out, n_in] matrix."""
    p = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        p[i, lo:hi] = 1.0 / (hi - lo)
    return p


def adaptive_avg_pool(x: Array, size: int) -> Array:
    """`torch.nn.functional.adaptive_avg_pool2d(x, (size, size))` in NHWC.

    Args:
        x: [B, H, W, C].
        size: output side.

    Returns:
        [B, size, size, C]; `x` itself when already that size.
    """
    b, h, w, c = x.shape
    if (h, w) == (size, size):
        return x
    if h % size == 0 and w % size == 0:
        return x.reshape(b, size, h // size, size, w // size, c).mean(axis=(2, 4))
    ph, pw = _pool_matrix(h, size), _pool_matrix(w, size)
    return jnp.einsum("ih,jw,bhwc->bijc", ph, pw, x)


class KaimingConv(nn.Module):
    """`torch.nn.Conv2d` (NHWC) with kaiming_normal_(fan_out, relu) weights, default bias.

    Attributes:
        features: output channels.
        kernel_size: square kernel side.
        stride: spatial stride.
        padding: symmetric zero padding.
        groups: feature groups (the input channels for a depthwise conv).
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    groups: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies the convolution.

        Args:
            x: [B, H, W, C_in].

        Returns:
            [B, H', W', features].
        """
        k, c_in = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", kaiming_fan_out, (k, k, c_in // self.groups,
                                                         self.features), jnp.float32)
        bias = self.param("bias", torch_bias_init(c_in // self.groups * k * k),
                          (self.features,), jnp.float32)
        y = jax.lax.conv_general_dilated(
            x, kernel, (self.stride,) * 2, ((self.padding,) * 2,) * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.groups)
        return y + bias


class DWSepConv(nn.Module):
    """The authors' `depthwise_separable_conv_general`: depthwise 3x3 then pointwise 1x1.

    Attributes:
        features: output channels.
        stride: stride of the depthwise conv.
    """

    features: int
    stride: int = 2

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies dw 3x3 (bias, pad 1) and pw 1x1 (bias).

        Args:
            x: [B, H, W, C].

        Returns:
            [B, H / stride, W / stride, features].
        """
        c = x.shape[-1]
        y = KaimingConv(c, 3, self.stride, 1, groups=c, name="depthwise")(x)
        return KaimingConv(self.features, 1, 1, 0, name="pointwise")(y)


class OpNode(nn.Module):
    """A bottom-level node: the sigmoid-weighted merge of its inputs, ReLU-Conv3x3-BN.

    Attributes:
        features: output channels.
    """

    features: int

    @nn.compact
    def __call__(self, xs: Sequence[Array], train: bool, mask: Array | None = None) -> Array:
        """Applies the node.

        Args:
            xs: its inputs (one for a graph input node).
            train: BN mode.
            mask: [B] valid examples for the BN statistics.

        Returns:
            [B, H, W, features].
        """
        x = merge(self, xs, (False,) * len(xs), xs[-1].shape[-1])
        y = KaimingConv(self.features, 3, 1, 1, name="conv")(nn.relu(x))
        return TorchBatchNorm(name="bn")(y, train, mask)


def merge(module: nn.Module, xs: Sequence[Array], convs: Sequence[bool],
          features: int) -> Array:
    """The SUM merge (layer.py:205-251): nothing for one input, else per input
    `sigmoid(w_k) * x_k` (w_k = param `merge_w{k}`, init 1.0) or, where `convs[k]`, a 1x1
    conv with bias (`merge_conv{k}`) to `features` channels; then the sum.

    Args:
        module: the (compact) module owning the merge parameters.
        xs: the inputs, in ascending order of their node ids.
        convs: per input whether it needs the 1x1 conv (its ratio differs from inplanes).
        features: the inplanes channels.

    Returns:
        The merged tensor.
    """
    if len(xs) == 1:
        return xs[0]
    terms = []
    for k, (x, conv) in enumerate(zip(xs, convs, strict=True)):
        if conv:
            terms.append(KaimingConv(features, 1, 1, 0, name=f"merge_conv{k}")(x))
        else:
            w = module.param(f"merge_w{k}", nn.initializers.ones, (), jnp.float32)
            terms.append(jax.nn.sigmoid(w) * x)
    return sum(terms[1:], terms[0])


def run_graph(dag: DAG, x: Array, node) -> Array:
    """Evaluates a graph: input nodes get `x`, node v gets its predecessors' outputs.

    Args:
        dag: the graph.
        x: the graph's (merged) input.
        node: `(v, list of inputs) -> output`.

    Returns:
        The mean of the output nodes' outputs.
    """
    out: dict[int, Array] = {}
    for v in range(dag.n):
        out[v] = node(v, [x] if not dag.preds[v] else [out[u] for u in dag.preds[v]])
    ys = [out[o] for o in dag.outputs]
    return sum(ys[1:], ys[0]) / len(ys)


class MidNode(nn.Module):
    """A middle-level node: the sigmoid-weighted merge of its inputs, then its bottom graph.

    Attributes:
        bottom: the bottom-level graph (one `OpNode` per node).
        features: channels of every op.
    """

    bottom: DAG
    features: int

    @nn.compact
    def __call__(self, xs: Sequence[Array], train: bool, mask: Array | None = None) -> Array:
        """Applies the node (same arguments as `OpNode`)."""
        x = merge(self, xs, (False,) * len(xs), xs[-1].shape[-1])
        return run_graph(self.bottom, x, lambda v, ins: OpNode(
            self.features, name=f"op{v}")(ins, train, mask))


class Cell(nn.Module):
    """A top-level node: pool every input to the stage resolution, merge, run the middle graph.

    Attributes:
        mid: the middle-level graph.
        bottoms: the bottom-level graph of each middle node.
        features: channels of the cell.
        resolution: side of the cell's feature maps.
        convs: per input whether it gets a 1x1 conv in the merge.
    """

    mid: DAG
    bottoms: tuple[DAG, ...]
    features: int
    resolution: int
    convs: tuple[bool, ...]

    @nn.compact
    def __call__(self, xs: Sequence[Array], train: bool, mask: Array | None = None) -> Array:
        """Applies the cell (same arguments as `OpNode`)."""
        xs = [adaptive_avg_pool(x, self.resolution) for x in xs]
        x = merge(self, xs, self.convs, xs[-1].shape[-1])
        return run_graph(self.mid, x, lambda v, ins: MidNode(
            self.bottoms[v], self.features, name=f"mid{v}")(ins, train, mask))


class HNAGNet(nn.Module):
    """NAGO's network for a sampled hierarchy (HNAG, or RNAG as a 3-cell chain).

    Attributes:
        h: the hierarchy (`nhb.nago.graphs.sample`).
        width: the channel multiplier m (`nhb.nago.graphs.channel_multiplier`).
        num_classes: classifier outputs.
        image_size: input side (decides the stem and the stage resolutions).
        channel_ratios: per-stage channel ratios.
        head_features: channels of the head's 1x1 conv.
        dropout_rate: dropout before the classifier ("dropout" RNG stream in train mode).
    """

    h: Hierarchy
    width: int
    num_classes: int = 10
    image_size: int = 32
    channel_ratios: tuple[int, ...] = CHANNEL_RATIOS
    head_features: int = HEAD_FEATURES
    dropout_rate: float = DROPOUT

    def channels(self, stage: int) -> int:
        """Channels of a stage: `int(channel_ratios[stage] * width)`."""
        return int(self.channel_ratios[stage] * self.width)

    def stem(self, x: Array, train: bool, mask: Array | None) -> Array:
        """The stem (see the module docstring); output has `channels(0)` channels."""
        c0 = self.channels(0)
        if self.image_size < LARGE_IMAGE:
            y = KaimingConv(c0, 3, 1, 1, name="stem_conv0")(x)
            y = nn.relu(TorchBatchNorm(name="stem_bn0")(y, train, mask))
            y = KaimingConv(c0, 3, 1, 1, name="stem_conv1")(y)
            return TorchBatchNorm(name="stem_bn1")(y, train, mask)
        y = DWSepConv(c0 // 2, 2, name="stem_conv0")(x)
        y = nn.relu(TorchBatchNorm(name="stem_bn0")(y, train, mask))
        y = DWSepConv(c0, 2, name="stem_conv1")(y)
        return TorchBatchNorm(name="stem_bn1")(y, train, mask)

    @nn.compact
    def __call__(self, x: Array, train: bool = False, mask: Array | None = None) -> Array:
        """Classifies a batch.

        Args:
            x: images [B, image_size, image_size, 3] (normalised float).
            train: train mode (batch statistics, dropout) or eval mode.
            mask: [B] valid examples for the BN statistics (train mode).

        Returns:
            Logits [B, num_classes].
        """
        h, ratios = self.h, self.channel_ratios
        stem = self.stem(x, train, mask)
        cells: dict[int, Array] = {}
        for c in range(h.top.n):
            preds = h.top.preds[c]
            ins = [cells[p] for p in preds] if preds else [stem]
            r_in = ratios[h.stages[preds[-1]]] if preds else ratios[0]
            convs = tuple(ratios[h.stages[p]] != r_in for p in preds) if len(preds) > 1 else (
                (False,) * len(ins))
            cells[c] = Cell(h.mids[c], h.bottoms[c], self.channels(h.stages[c]),
                            stage_resolution(self.image_size, h.stages[c]), convs,
                            name=f"cell{c}")(ins, train, mask)
        outs = list(h.top.outputs)  # by node id (the authors: by dict position, a bug)
        side = min(cells[o].shape[1] for o in outs)
        c_last = cells[outs[-1]].shape[-1]
        y = None
        for k, o in enumerate(outs):
            t = adaptive_avg_pool(cells[o], side)
            if len(outs) > 1 and t.shape[-1] != c_last:
                t = KaimingConv(c_last, 1, 1, 0, name=f"out_conv{k}")(t)
            y = t if y is None else y + t
        y = y / len(outs)
        y = KaimingConv(self.head_features, 1, 1, 0, name="head_conv")(nn.relu(y))
        y = nn.relu(TorchBatchNorm(name="head_bn")(y, train, mask))
        y = jnp.mean(y, axis=(1, 2))
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        return TorchDense(self.num_classes, name="fc")(y)


def make_model(h: Hierarchy, width: int, num_classes: int = 10, image_size: int = 32,
               **kw) -> Model:
    """The network as an `nhb.train.model.Model` for `nhb.train.engine.make_train`.

    Args:
        h: the hierarchy.
        width: the channel multiplier m.
        num_classes: classifier outputs.
        image_size: input side.
        **kw: further `HNAGNet` attributes (channel_ratios, head_features, dropout_rate).

    Returns:
        A `Model` with masked train-mode BN statistics and a per-step "dropout" key.
    """
    net = HNAGNet(h, width, num_classes, image_size, **kw)
    return linen_model(net, takes_inputs=False, rng_streams=("dropout",),
                       input_shape=(1, image_size, image_size, 3))

