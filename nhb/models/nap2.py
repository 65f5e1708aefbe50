"""NAP2 models (paper §3.2-3.3, appendix Table 1): the feature-map autoencoder and the LSTM.

A feature map is one snapshot of a network: [L, rows, features] = [layers, 100 sampled values,
12 statistics] (nhb design notes §6), L <= 65 real layers, zero padded to 65.
Layouts are NHWC with H = layers, W = rows, C = statistics. Table 1, read as
(kernel_h, kernel_w, filters):

    encoder  Conv(512, (1, 100))  -> [B, 65, 1, 512]
             Conv(256, (65, 1))   -> [B, 1, 1, 256]
             Dense(128)           -> embedding [B, 128]
    decoder  Dense(256) -> [B, 1, 1, 256]
             ConvTranspose(256, (65, 1))  -> [B, 65, 1, 256]
             ConvTranspose(512, (1, 100)) -> [B, 65, 100, 512]
             Conv(12, (1, 1)), linear     -> reconstruction [B, 65, 100, 12]

All convolutions are VALID, stride 1. Every layer but the reconstruction is followed by ReLU then
BatchNorm (paper: "ReLU activation and batch normalization after each layer"; the order is not
stated, ReLU -> BN is assumed, as in Keras `Conv2D(activation="relu")` + `BatchNormalization`).
Assumed: the embedding layer is ReLU + BN too (it is "a layer"), the reconstruction is linear
(its targets are signed). The transposed convolutions run as `SpreadConvTranspose`, which equals
`nn.ConvTranspose` here (same parameters and outputs) but avoids XLA-CPU's slow dilated conv.

`input_transform` (sign(x) * log1p(|x|)) is an nhb assumption, applied to feature maps before
the autoencoder: the statistics span ~1e-8..1e7 (+-1e7 stands for +-inf), which plain MSE
could not fit. The paper does not say how it scaled its maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

# The NAP2 feature-map layout (`nhb.nap2.features` computes the maps; defined here, the
# lowest layer that needs it): layers x rows (whole layer + 99 groups) x statistics.
MAX_LAYERS = 65
ROWS = 100
FEATURES = 12


def input_transform(x: Array) -> Array:
    """Signed log scaling of raw feature maps: sign(x) * log1p(|x|) (nhb assumption).

    Args:
        x: raw statistics of any shape (+-1e7 for +-inf, 0 for NaN).

    Returns:
        float32 array of the same shape; +-1e7 maps to about +-16.1.
    """
    x = jnp.asarray(x, jnp.float32)
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def layer_mask(n_layers: Array, max_layers: int) -> Array:
    """float32 [..., max_layers]: 1 for the real layers (index < n_layers), 0 for padding."""
    n_layers = jnp.asarray(n_layers)
    return (jnp.arange(max_layers) < n_layers[..., None]).astype(jnp.float32)


def pad_layers(x: Array, max_layers: int) -> Array:
    """Zero-pads [B, L, rows, features] maps to [B, max_layers, rows, features].

    Raises:
        ValueError: if L > max_layers.
    """
    n = x.shape[1]
    if n > max_layers:
        raise ValueError(f"feature maps have {n} layers, more than max_layers={max_layers}; "
                         "keep the first max_layers layers (paper §3.1.2) before calling")
    return jnp.pad(x, ((0, 0), (0, max_layers - n), (0, 0), (0, 0))) if n < max_layers else x


def prepare_maps(maps: Array, n_layers: Array, max_layers: int) -> Array:
    """`input_transform`-ed [B, L, ...] maps, zero padded to max_layers, padded layers zeroed.

    Zeroing makes anything stored beyond a run's `n_layers` irrelevant to the autoencoder.
    """
    x = pad_layers(input_transform(maps), max_layers)
    return x * layer_mask(n_layers, max_layers)[:, :, None, None]


def masked_mse(recon: Array, target: Array, n_layers: Array) -> tuple[Array, Array]:
    """Squared error summed over the real layers, and the number of real elements.

    Args:
        recon, target: [B, M, rows, features]; n_layers: int [B] real layers per map.

    Returns:
        (sum of squared errors, element count); the MSE is their ratio.
    """
    m = layer_mask(n_layers, recon.shape[1])[:, :, None, None]
    return jnp.sum(m * (recon - target) ** 2), jnp.sum(m) * recon.shape[2] * recon.shape[3]


class SpreadConvTranspose(nn.Module):
    """`nn.ConvTranspose(features, kernel_size, padding="VALID")` for 1-pixel inputs.

    Valid when the input has spatial size 1 along every axis where the kernel is larger than 1
    (true for both decoder layers): each input pixel then spreads over the kernel's footprint,
    out[b, h + p, w + q, o] = bias[o] + sum_i x[b, h, w, i] * K[kh-1-p, kw-1-q, i, o]. The
    parameters (names, shapes, init) and the outputs equal `nn.ConvTranspose`'s; it is one
    einsum because XLA-CPU's dilated convolution for this shape was measured ~50x slower.

    Attributes:
        features: output channels.
        kernel_size: (kh, kw).
    """

    features: int
    kernel_size: tuple[int, int]

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Maps [B, H, W, C] to [B, H * kh, W * kw, features]."""
        kh, kw = self.kernel_size
        b, h, w, c = x.shape
        if (kh > 1 and h != 1) or (kw > 1 and w != 1):
            raise ValueError(f"SpreadConvTranspose needs spatial size 1 where the kernel is >1; "
                             f"got input {x.shape} and kernel {self.kernel_size}")
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, c, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        y = jnp.einsum("bhwi,pqio->bhpwqo", x, kernel[::-1, ::-1])
        return y.reshape(b, h * kh, w * kw, self.features) + bias


class FeatureAutoencoder(nn.Module):
    """Convolutional autoencoder for [L, rows, features] feature maps (appendix Table 1).

    Attributes:
        max_layers: layers after zero padding (65).
        rows: sampled values per layer (100).
        features: statistics per value (12).
        widths: filters of the two encoder convolutions (paper (512, 256)); the decoder mirrors.
        embedding: embedding size (paper 128).
        bn_momentum: BatchNorm running-average momentum (assumed 0.99, the Keras default).
    """

    max_layers: int = MAX_LAYERS
    rows: int = ROWS
    features: int = FEATURES
    widths: Sequence[int] = (512, 256)
    embedding: int = 128
    bn_momentum: float = 0.99

    def setup(self):
        w1, w2 = self.widths
        self.enc_conv1 = nn.Conv(w1, (1, self.rows), padding="VALID")
        self.enc_conv2 = nn.Conv(w2, (self.max_layers, 1), padding="VALID")
        self.enc_dense = nn.Dense(self.embedding)
        self.dec_dense = nn.Dense(w2)
        self.dec_convt1 = SpreadConvTranspose(w2, (self.max_layers, 1))
        self.dec_convt2 = SpreadConvTranspose(w1, (1, self.rows))
        self.out_conv = nn.Conv(self.features, (1, 1))
        self.norms = [nn.BatchNorm(momentum=self.bn_momentum) for _ in range(6)]

    def _act(self, i: int, x: Array, train: bool) -> Array:
        return self.norms[i](nn.relu(x), use_running_average=not train)

    def encode(self, x: Array, train: bool = False) -> Array:
        """Embeds feature maps.

        Args:
            x: float [B, L, rows, features], L <= max_layers (zero padded inside); already
                transformed (`input_transform`).
            train: batch statistics (and their update) instead of the running averages.

        Returns:
            float32 [B, embedding].
        """
        x = pad_layers(jnp.asarray(x, jnp.float32), self.max_layers)
        if x.shape[2:] != (self.rows, self.features):
            raise ValueError(f"feature maps must be [B, L, {self.rows}, {self.features}], "
                             f"got {x.shape}")
        x = self._act(0, self.enc_conv1(x), train)  # [B, 65, 1, w1]
        x = self._act(1, self.enc_conv2(x), train)  # [B, 1, 1, w2]
        return self._act(2, self.enc_dense(x.reshape(x.shape[0], -1)), train)

    def decode(self, z: Array, train: bool = False) -> Array:
        """Maps [B, embedding] to the reconstruction [B, max_layers, rows, features]."""
        x = self._act(3, self.dec_dense(z), train).reshape(z.shape[0], 1, 1, -1)
        x = self._act(4, self.dec_convt1(x), train)  # [B, 65, 1, w2]
        x = self._act(5, self.dec_convt2(x), train)  # [B, 65, rows, w1]
        return self.out_conv(x)

    def __call__(self, x: Array, train: bool = False) -> tuple[Array, Array]:
        """Returns (reconstruction [B, max_layers, rows, features], embedding [B, embedding])."""
        z = self.encode(x, train)
        return self.decode(z, train), z


class AccuracyLSTM(nn.Module):
    """One-layer LSTM over snapshot embeddings with a sigmoid head (paper §3.3).

    Output t depends on inputs 0..t only, so one pass gives the prediction after every prefix.

    Attributes:
        hidden: LSTM units (assumed 128; the paper says one hidden layer, no size).
    """

    hidden: int = 128

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Maps [B, T, D] inputs to predicted final accuracies [B, T] in (0, 1)."""
        h = nn.RNN(nn.OptimizedLSTMCell(self.hidden), name="lstm")(jnp.asarray(x, jnp.float32))
        return nn.sigmoid(nn.Dense(1, name="head")(h)[..., 0])
