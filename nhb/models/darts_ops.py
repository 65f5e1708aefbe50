"""The DARTS candidate operations as PyTorch-faithful Linen modules (NHWC).

Definitions follow DARTS `cnn/operations.py` (Liu et al. 2019; the same in ISTA-NAS
`ista_nas/search/operations.py` and DHA `model/darts_operation.py`):

* `StdConv` = ReLUConvBN: ReLU - Conv(k, stride, pad, no bias) - BN.
* `SepConv`: ReLU - dwconv(k, stride) - conv1x1 - BN - ReLU - dwconv(k, 1) - conv1x1 - BN.
* `DilConv`: ReLU - dwconv(k, stride, dilation 2) - conv1x1 - BN.
* `FactorizedReduce`: ReLU, then concat(conv1x1/2(x), conv1x1/2(x[1:, 1:])) - BN.
* pools: max_pool 3x3 pad 1 (pads with -inf), avg_pool 3x3 pad 1 count_include_pad=False.
* skip_connect: identity, or FactorizedReduce at stride 2.
* `AuxiliaryHeadCIFAR`: ReLU - AvgPool5/3 - conv1x1(128) - BN - ReLU - conv2x2(768) - BN -
  ReLU - Linear (DARTS `cnn/model.py`).

Extra BNs (`PoolBN.pool_bn / extra_bn`, `SkipBN.extra_bn`): DHA's pool ops are `PoolBN`
(pool - BN, `model/darts_operation.py`), and both DHA's mixed op (`model/ista_sup_single.py`
`MixedOp`) and its discrete `model/ista_model.py` cell append one more BN to every pool and
to the identity skip; ISTA-NAS appends the extra BN to bare pools; DARTS has neither.

Every conv here is bias-free, and every BN is `TorchBatchNorm` (affine; DHA fixes the
mixed-op affine parameters at 1 / 0 by not training them, see `nhb.models.darts`).
Depthwise convs (`DWConv`) are written here because `layers.TorchConv` has no groups or
dilation; PyTorch's init for them uses fan_in = k * k (in_channels / groups = 1), which
`torch_kernel_init` gives for the HWIO kernel [k, k, 1, C].
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nhb.models.layers import TorchBatchNorm, TorchConv, TorchDense, torch_kernel_init

Array = jax.Array


def may_drop(drop_prob: Any) -> bool:
    """False only for a concrete Python number <= 0 (then drop-path needs no rng)."""
    return not isinstance(drop_prob, (int, float)) or drop_prob > 0


def drop_path(x: Array, drop_prob: Any, key: Array) -> Array:
    """DARTS `utils.drop_path`: per-sample Bernoulli(keep) mask, x / keep * mask.

    Args:
        x: [B, ...].
        drop_prob: drop probability (float or traced scalar; 0 gives exactly x).
        key: PRNG key.

    Returns:
        Same shape as x.
    """
    keep = 1.0 - jnp.asarray(drop_prob, jnp.float32)
    m = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return (x / keep.astype(x.dtype)) * m.astype(x.dtype)


class DWConv(nn.Module):
    """Depthwise `nn.Conv2d(C, C, k, stride, padding, dilation, groups=C, bias=False)`.

    Attributes:
        kernel_size: square kernel side.
        stride: spatial stride.
        padding: symmetric zero padding.
        dilation: kernel dilation.
    """

    kernel_size: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Args: x [B, H, W, C]. Returns: [B, H', W', C]."""
        c, k, p = x.shape[-1], self.kernel_size, self.padding
        kernel = self.param("kernel", torch_kernel_init, (k, k, 1, c), jnp.float32)
        return jax.lax.conv_general_dilated(
            x, kernel.astype(x.dtype), (self.stride, self.stride), ((p, p), (p, p)),
            rhs_dilation=(self.dilation, self.dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)


class StdConv(nn.Module):
    """DARTS `ReLUConvBN`: ReLU - Conv(no bias) - BN.

    Attributes:
        features: output channels.
        kernel_size: kernel side.
        stride: stride.
        padding: padding.
    """

    features: int
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0

    @nn.compact
    def __call__(self, x: Array, train: bool, mask: Array | None = None) -> Array:
        """Args: x [B, H, W, C_in], BN mode, valid mask. Returns: [B, H', W', features]."""
        y = TorchConv(self.features, self.kernel_size, self.stride, self.padding, False,
                      name="conv")(nn.relu(x))
        return TorchBatchNorm(name="bn")(y, train, mask)


class FactorizedReduce(nn.Module):
    """DARTS `FactorizedReduce` (halves H and W; H, W even).

    Attributes:
        features: output channels (even).
    """

    features: int

    @nn.compact
    def __call__(self, x: Array, train: bool, mask: Array | None = None) -> Array:
        """Args: x [B, H, W, C_in], BN mode, valid mask. Returns: [B, H/2, W/2, features]."""
        if self.features % 2:
            raise ValueError(f"FactorizedReduce needs even features, got {self.features}")
        x = nn.relu(x)
        half = self.features // 2
        a = TorchConv(half, 1, 2, 0, False, name="conv1")(x)
        b = TorchConv(half, 1, 2, 0, False, name="conv2")(x[:, 1:, 1:, :])
        return TorchBatchNorm(name="bn")(jnp.concatenate([a, b], axis=-1), train, mask)


class DilConv(nn.Module):
    """DARTS `DilConv`: ReLU - dwconv(k, stride, dilation) - conv1x1 - BN.

    Attributes:
        features: output channels.
        kernel_size: depthwise kernel side.
        stride: depthwise stride.
        padding: depthwise padding.
        dilation: depthwise dilation.
    """

    features: int
    kernel_size: int
    stride: int
    padding: int
    dilation: int = 2

    @nn.compact
    def __call__(self, x: Array, train: bool, mask: Array | None = None) -> Array:
        """Args: x [B, H, W, C], BN mode, valid mask. Returns: [B, H', W', features]."""
        y = DWConv(self.kernel_size, self.stride, self.padding, self.dilation,
                   name="dw")(nn.relu(x))
        y = TorchConv(self.features, 1, 1, 0, False, name="pw")(y)
        return TorchBatchNorm(name="bn")(y, train, mask)


class SepConv(nn.Module):
    """DARTS `SepConv`: two ReLU - dwconv - conv1x1 - BN blocks, the first strided.

    Attributes:
        features: output channels.
        kernel_size: depthwise kernel side.
        stride: stride of the first depthwise conv.
        padding: depthwise padding.
    """

    features: int
    kernel_size: int
    stride: int
    padding: int

    @nn.compact
    def __call__(self, x: Array, train: bool, mask: Array | None = None) -> Array:
        """Args: x [B, H, W, C], BN mode, valid mask. Returns: [B, H', W', features]."""
        k, p = self.kernel_size, self.padding
        y = DWConv(k, self.stride, p, name="dw1")(nn.relu(x))
        y = TorchConv(x.shape[-1], 1, 1, 0, False, name="pw1")(y)
        y = TorchBatchNorm(name="bn1")(y, train, mask)
        y = DWConv(k, 1, p, name="dw2")(nn.relu(y))
        y = TorchConv(self.features, 1, 1, 0, False, name="pw2")(y)
        return TorchBatchNorm(name="bn2")(y, train, mask)


class PoolBN(nn.Module):
    """3x3 pool (pad 1), then optionally DHA's PoolBN BN ("bn") and the extra BN ("extra_bn").

    Attributes:
        kind: "max" or "avg" (avg: count_include_pad=False).
        stride: pool stride.
        pool_bn: DHA's `PoolBN` BN right after the pool.
        extra_bn: the BN that DHA / ISTA-NAS append to pool ops.
    """

    kind: str
    stride: int = 1
    pool_bn: bool = False
    extra_bn: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool, mask: Array | None = None) -> Array:
        """Args: x [B, H, W, C], BN mode, valid mask. Returns: [B, H', W', C]."""
        s, pad = (self.stride, self.stride), ((1, 1), (1, 1))
        if self.kind == "max":
            y = nn.max_pool(x, (3, 3), strides=s, padding=pad)
        else:
            y = nn.avg_pool(x, (3, 3), strides=s, padding=pad, count_include_pad=False)
        if self.pool_bn:
            y = TorchBatchNorm(name="bn")(y, train, mask)
        if self.extra_bn:
            y = TorchBatchNorm(name="extra_bn")(y, train, mask)
        return y


class SkipBN(nn.Module):
    """Identity skip, optionally followed by the DHA / ISTA-NAS extra BN ("extra_bn").

    Attributes:
        extra_bn: append the BN.
    """

    extra_bn: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool, mask: Array | None = None) -> Array:
        """Args: x [B, H, W, C], BN mode, valid mask. Returns: same shape."""
        return TorchBatchNorm(name="extra_bn")(x, train, mask) if self.extra_bn else x


def make_op(op: str, features: int, stride: int, pool_bn: bool = False,
            extra_bn: bool = False, name: str | None = None) -> nn.Module:
    """The module of a DARTS op (`nhb.space.arch.DARTS_OPS` name), called (x, train, mask).

    Args:
        op: op name.
        features: channels (in = out).
        stride: 1, or 2 on the reduction cell's input edges.
        pool_bn: pools end in DHA's PoolBN BN.
        extra_bn: pools and the identity skip get the extra BN.
        name: module name.

    Returns:
        The (unbound) module.
    """
    if op in ("max_pool_3x3", "avg_pool_3x3"):
        return PoolBN(op[:3], stride, pool_bn, extra_bn, name=name)
    if op == "skip_connect":
        return SkipBN(extra_bn, name=name) if stride == 1 else FactorizedReduce(features,
                                                                                name=name)
    if op in ("sep_conv_3x3", "sep_conv_5x5"):
        k = int(op[-1])
        return SepConv(features, k, stride, k // 2, name=name)
    if op in ("dil_conv_3x3", "dil_conv_5x5"):
        k = int(op[-1])
        return DilConv(features, k, stride, k - 1, 2, name=name)
    raise ValueError(f"unknown DARTS op {op!r}")


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS `AuxiliaryHeadCIFAR` (expects 8x8 inputs).

    Attributes:
        num_classes: logits.
    """

    num_classes: int

    @nn.compact
    def __call__(self, x: Array, train: bool, mask: Array | None = None) -> Array:
        """Args: x [B, 8, 8, C], BN mode, valid mask. Returns: logits [B, num_classes]."""
        y = nn.avg_pool(nn.relu(x), (5, 5), strides=(3, 3), padding="VALID")
        y = TorchConv(128, 1, 1, 0, False, name="conv1")(y)
        y = nn.relu(TorchBatchNorm(name="bn1")(y, train, mask))
        y = TorchConv(768, 2, 1, 0, False, name="conv2")(y)
        y = nn.relu(TorchBatchNorm(name="bn2")(y, train, mask))
        return TorchDense(self.num_classes, name="classifier")(y.reshape(y.shape[0], -1))
