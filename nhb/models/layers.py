"""PyTorch-faithful Linen building blocks (NHWC) for the NAS-HPO-Bench-II network.

The reference is the authors' PyTorch training code (NAS-Bench-201's). Everything here
reproduces PyTorch's defaults: kaiming-uniform(a=sqrt(5)) weights, U(-1/sqrt(fan_in),
1/sqrt(fan_in)) biases, explicit symmetric padding, and `nn.BatchNorm2d` semantics
(biased variance to normalise, unbiased variance for the running update).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Initializer = Any

# PyTorch's default kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> Initializer:
    """PyTorch's default bias initialiser for conv / linear layers.

    Args:
        fan_in: input fan of the layer (in_channels * kh * kw, or in_features).

    Returns:
        A Flax initialiser drawing U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def fast_torch_init(key: Array, shapes: Any) -> dict[str, Any]:
    """Fills a variables tree with PyTorch-default values using ONE uniform draw.

    Equivalent in distribution to running the modules' own initialisers (`net.init`), but
    XLA compiles a single RNG kernel instead of one per parameter, which takes seconds
    rather than tens of seconds on CPU. The values differ from `net.init`'s.

    Conventions (those of the modules in this file): a dict holding "kernel" is a conv /
    dense layer, kernel and "bias" ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in =
    prod(kernel.shape[:-1]); a dict holding "scale" is a BatchNorm (scale 1, bias 0);
    batch_stats "mean" = 0 and "var" = 1.

    Args:
        key: PRNG key.
        shapes: variables tree of arrays or `jax.ShapeDtypeStruct`s, e.g. from
            `jax.eval_shape(net.init, ...)`.

    Returns:
        A variables tree of the same structure with fresh values.

    Raises:
        ValueError: a leaf that fits none of the conventions.
    """
    uniform: list[tuple[tuple[Any, ...], Any, float]] = []  # (path, leaf, bound)

    def visit(tree: Any, path: tuple[Any, ...]) -> None:
        if not isinstance(tree, dict):
            raise ValueError(f"unexpected leaf at {path}")
        fan_in = None
        if "kernel" in tree:
            fan_in = math.prod(tree["kernel"].shape[:-1])
        for name, sub in tree.items():
            p = (*path, name)
            if isinstance(sub, dict):
                visit(sub, p)
            elif fan_in is not None and name in ("kernel", "bias"):
                uniform.append((p, sub, 1.0 / math.sqrt(fan_in)))
            elif path[:1] == ("params",) and name in ("scale", "bias") and "scale" in tree:
                continue
            elif path[:1] == ("batch_stats",) and name in ("mean", "var"):
                continue
            else:
                raise ValueError(f"fast_torch_init: no PyTorch-default rule for leaf {p}")

    visit(dict(shapes), ())
    sizes = [math.prod(leaf.shape) for _, leaf, _ in uniform]
    flat = jax.random.uniform(key, (sum(sizes),), jnp.float32, -1.0, 1.0)
    drawn: dict[tuple[Any, ...], Array] = {}
    offset = 0
    for (p, leaf, bound), size in zip(uniform, sizes, strict=True):
        drawn[p] = (flat[offset:offset + size].reshape(leaf.shape) * bound).astype(leaf.dtype)
        offset += size

    return assemble_variables(shapes, drawn, lambda name: name in ("scale", "var"))


def assemble_variables(shapes: Any, drawn: dict[tuple[Any, ...], Array],
                       is_one: Callable[[str], bool]) -> dict[str, Any]:
    """The variables tree of `shapes` with the drawn leaves, ones and zeros elsewhere.

    Args:
        shapes: variables tree of arrays or `jax.ShapeDtypeStruct`s.
        drawn: leaf path (tuple of keys) -> its value.
        is_one: whether an undrawn leaf (by its name) starts at 1 (else 0).

    Returns:
        The tree, undrawn leaves in their shapes' dtypes.
    """
    def build(tree: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
        out = {}
        for name, sub in tree.items():
            p = (*path, name)
            if isinstance(sub, dict):
                out[name] = build(sub, p)
            elif p in drawn:
                out[name] = drawn[p]
            elif is_one(name):
                out[name] = jnp.ones(sub.shape, sub.dtype)
            else:
                out[name] = jnp.zeros(sub.shape, sub.dtype)
        return out

    return build(dict(shapes), ())


CONV_IMPLS = ("xla", "patches", "shifts", "elementwise")


def conv2d(x: Array, kernel: Array, stride: int, padding: int, impl: str = "xla") -> Array:
    """2-D cross-correlation in NHWC/HWIO with symmetric zero padding, three ways.

    All three compute the same function (up to float summation order); they differ in what
    `jax.vmap` over per-member kernels lowers to, which decides GPU speed for vmapped grids
    (`benchmarks/conv_impl.py` measures them):

    * `"xla"`: `lax.conv_general_dilated`; vmapped kernels become one grouped convolution.
    * `"patches"`: im2col by k*k strided slices of the padded input, concatenated on the
      channel axis, times the [k*k*C_in, C_out] kernel matrix; vmapped kernels become one
      batched matmul (k*k times the input's memory for the patches).
    * `"shifts"`: the sum over the k*k taps of (shifted input) @ kernel[i, j]; vmapped, k*k
      batched matmuls with no patch tensor.
    * `"elementwise"`: the same sum written as broadcast multiply + reduce over C_in, which
      XLA fuses into loops without matmul units: for few channels (the tiny scale).

    Args:
        x: input [B, H, W, C_in].
        kernel: [k, k, C_in, C_out].
        stride: spatial stride.
        padding: zero padding on each spatial side.
        impl: one of `CONV_IMPLS`.

    Returns:
        Output [B, H', W', C_out], H' = (H + 2 * padding - k) // stride + 1.
    """
    if impl == "xla":
        return jax.lax.conv_general_dilated(
            x, kernel, (stride, stride), ((padding, padding), (padding, padding)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv impl {impl!r}; valid choices: {CONV_IMPLS}")
    k, _, c_in, c_out = kernel.shape
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    h_out = (x.shape[1] + 2 * padding - k) // stride + 1
    w_out = (x.shape[2] + 2 * padding - k) // stride + 1

    def tap(i: int, j: int) -> Array:
        return xp[:, i:i + stride * (h_out - 1) + 1:stride,
                  j:j + stride * (w_out - 1) + 1:stride, :]

    if impl == "patches":
        cols = jnp.concatenate([tap(i, j) for i in range(k) for j in range(k)], axis=-1)
        return cols @ kernel.reshape(k * k * c_in, c_out)
    out = None
    for i in range(k):
        for j in range(k):
            if impl == "shifts":
                y = tap(i, j) @ kernel[i, j]
            else:
                y = jnp.sum(tap(i, j)[..., :, None] * kernel[i, j], axis=-2)
            out = y if out is None else out + y
    return out


class TorchConv(nn.Module):
    """`torch.nn.Conv2d` in NHWC with PyTorch's initialisation and symmetric padding.

    Attributes:
        features: output channels.
        kernel_size: square kernel side.
        stride: spatial stride.
        padding: symmetric zero padding on each spatial side.
        use_bias: whether the conv has a bias.
        impl: how the convolution is computed, one of `CONV_IMPLS` (see `conv2d`).
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    use_bias: bool = True
    impl: str = "xla"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies the convolution.

        Args:
            x: input [B, H, W, C_in].

        Returns:
            Output [B, H', W', features].
        """
        k, p = self.kernel_size, self.padding
        fan_in = x.shape[-1] * k * k
        kernel = self.param("kernel", torch_kernel_init, (k, k, x.shape[-1], self.features),
                            jnp.float32)
        y = conv2d(x, kernel.astype(x.dtype), self.stride, p, self.impl)
        if self.use_bias:
            bias = self.param("bias", torch_bias_init(fan_in), (self.features,), jnp.float32)
            y = y + bias.astype(y.dtype)
        return y


class TorchDense(nn.Module):
    """`torch.nn.Linear` with PyTorch's initialisation.

    Attributes:
        features: output features.
    """

    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies the affine map.

        Args:
            x: input [..., in_features].

        Returns:
            Output [..., features].
        """
        fan_in = x.shape[-1]
        kernel = self.param("kernel", torch_kernel_init, (fan_in, self.features), jnp.float32)
        bias = self.param("bias", torch_bias_init(fan_in), (self.features,), jnp.float32)
        return x @ kernel.astype(x.dtype) + bias.astype(x.dtype)


class TorchBatchNorm(nn.Module):
    """`torch.nn.BatchNorm2d` semantics over the last (channel) axis.

    Train mode normalises with the biased batch variance and updates
    `running = (1 - momentum) * running + momentum * batch`, using the *unbiased* batch
    variance (n / (n - 1)) for `var`. Eval mode uses the running statistics. Running
    statistics are not updated while the module is being initialised, and a batch with no
    valid examples leaves them unchanged.

    Attributes:
        momentum: PyTorch-style momentum (weight of the new batch statistic).
        epsilon: added to the variance before the square root.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array, train: bool, mask: Array | None = None) -> Array:
        """Normalises `x`.

        Args:
            x: input [B, ..., C]; statistics are taken over every axis but the last.
            train: use (and update) batch statistics if True, else the running ones.
            mask: optional [B] bool/float marking the valid examples; in train mode only
                those contribute to the batch statistics (n = valid examples x H x W).

        Returns:
            The normalised, affinely transformed `x` (same shape and dtype).
        """
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))

        xf = x.astype(jnp.float32)
        if not train:
            mean, var = ra_mean.value, ra_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            if mask is None:
                n = math.prod(x.shape[:-1])
                mean = jnp.mean(xf, axis=axes)
                var = jnp.mean(jnp.square(xf - mean), axis=axes)
                unbiased = var * (n / max(n - 1, 1))
                valid = True
            else:
                m = jnp.asarray(mask, jnp.float32).reshape((x.shape[0],) + (1,) * (x.ndim - 1))
                n = jnp.sum(m) * math.prod(x.shape[1:-1])
                n_safe = jnp.maximum(n, 1.0)
                mean = jnp.sum(xf * m, axis=axes) / n_safe
                var = jnp.sum(m * jnp.square(xf - mean), axis=axes) / n_safe
                unbiased = var * (n / jnp.maximum(n - 1.0, 1.0))
                valid = n > 0
            if not self.is_initializing():
                new_mean = (1.0 - self.momentum) * ra_mean.value + self.momentum * mean
                new_var = (1.0 - self.momentum) * ra_var.value + self.momentum * unbiased
                ra_mean.value = jnp.where(valid, new_mean, ra_mean.value)
                ra_var.value = jnp.where(valid, new_var, ra_var.value)
        y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
        return y.astype(x.dtype)


def avg_pool3x3(x: Array) -> Array:
    """`nn.AvgPool2d(3, stride=1, padding=1)` with PyTorch's count_include_pad=True.

    Args:
        x: input [B, H, W, C].

    Returns:
        Pooled output, same shape.
    """
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=True)


class ReLUConvBN(nn.Module):
    """ReLU -> Conv (PyTorch init) -> TorchBatchNorm, NB201's `ReLUConvBN`.

    Attributes:
        features: output channels.
        stride: conv stride.
        use_bias: conv bias (False inside cells, True in the reduction block).
        conv_impl: see `conv2d`.
    """

    features: int
    stride: int = 1
    use_bias: bool = False
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x: Array, train: bool, mask: Array | None = None) -> Array:
        """Applies ReLU-Conv3x3(pad 1)-BN.

        Args:
            x: input [B, H, W, C_in].
            train: BN mode.
            mask: optional [B] valid-example mask for BN statistics.

        Returns:
            Output [B, H / stride, W / stride, features].
        """
        y = TorchConv(self.features, 3, self.stride, 1, self.use_bias, self.conv_impl,
                      name="conv")(nn.relu(x))
        return TorchBatchNorm(name="bn")(y, train, mask)


class ResNetReduction(nn.Module):
    """NB201's `ResNetBasicblock` with stride 2, as used between stages.

    branch = ReLU-Conv3x3/2(bias)-BN -> ReLU-Conv3x3(bias)-BN;
    shortcut = AvgPool2x2/2 -> Conv1x1(bias); output = branch + shortcut.

    Attributes:
        features: output channels.
        conv_impl: see `conv2d`.
    """

    features: int
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x: Array, train: bool, mask: Array | None = None) -> Array:
        """Applies the reduction block.

        Args:
            x: input [B, H, W, C_in] (H, W even).
            train: BN mode.
            mask: optional [B] valid-example mask for BN statistics.

        Returns:
            Output [B, H / 2, W / 2, features].
        """
        impl = self.conv_impl
        b = ReLUConvBN(self.features, 2, True, impl, name="conv_a")(x, train, mask)
        b = ReLUConvBN(self.features, 1, True, impl, name="conv_b")(b, train, mask)
        s = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        s = TorchConv(self.features, 1, 1, 0, True, impl, name="shortcut")(s)
        return b + s
