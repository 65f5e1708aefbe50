"""On-device CIFAR-10 normalisation and flip/crop augmentation (jittable, vmappable).

Matches the reference torchvision pipeline
`RandomCrop(32, padding=4) -> RandomHorizontalFlip() -> ToTensor() -> Normalize(MEAN, STD)`:
the crop pads the raw image with black (0) pixels, so after normalisation the padded pixels
equal `(0 - MEAN) / STD`. All functions take a batch `[N, H, W, C]` and draw the parameters of
each image independently.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

PADDING = 4
MEAN = np.array([125.3, 123.0, 113.9], np.float32) / np.float32(255.0)
STD = np.array([63.0, 62.1, 66.7], np.float32) / np.float32(255.0)


def normalize(images: jax.Array) -> jax.Array:
    """Scales uint8 pixels to [0, 1] and standardises each channel.

    Args:
        images: uint8 (or float in 0..255) `[..., C=3]`.

    Returns:
        float32 `(images / 255 - MEAN) / STD`, same shape.
    """
    x = jnp.asarray(images).astype(jnp.float32) / jnp.float32(255.0)
    return (x - jnp.asarray(MEAN)) / jnp.asarray(STD)


def sample_flip_crop_params(
    key: jax.Array, n: int, padding: int = PADDING
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draws the flip and crop offsets of `n` images.

    Args:
        key: PRNG key.
        n: number of images (static).
        padding: zero padding on each side (static); offsets are uniform in `0..2*padding`.

    Returns:
        `(flip bool[n], dy int32[n], dx int32[n])`; flip has probability 0.5.
    """
    k_flip, k_dy, k_dx = jax.random.split(key, 3)
    flip = jax.random.bernoulli(k_flip, 0.5, (n,))
    dy = jax.random.randint(k_dy, (n,), 0, 2 * padding + 1, dtype=jnp.int32)
    dx = jax.random.randint(k_dx, (n,), 0, 2 * padding + 1, dtype=jnp.int32)
    return flip, dy, dx


def apply_flip_crop(
    images: jax.Array,
    flip: jax.Array,
    dy: jax.Array,
    dx: jax.Array,
    padding: int = PADDING,
) -> jax.Array:
    """Crops each zero-padded image at `(dy, dx)`, then mirrors it left-right where `flip`.

    Equals, per image, `np.pad(img, ((p, p), (p, p), (0, 0)))[dy:dy+H, dx:dx+W]` followed by
    `[:, ::-1]` when flipped. `dy = dx = padding` with no flip is the identity.

    Args:
        images: `[N, H, W, C]`, any dtype (padding uses 0 in that dtype).
        flip: bool `[N]`.
        dy: int `[N]` row offsets in `0..2*padding`.
        dx: int `[N]` column offsets in `0..2*padding`.
        padding: zero padding on each side (static).

    Returns:
        Augmented images, same shape and dtype.
    """
    images = jnp.asarray(images)
    _, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

    def one(img: jax.Array, f: jax.Array, y: jax.Array, x: jax.Array) -> jax.Array:
        zero = jnp.zeros((), jnp.int32)
        out = jax.lax.dynamic_slice(img, (y.astype(jnp.int32), x.astype(jnp.int32), zero),
                                    (h, w, c))
        return jnp.where(f, out[:, ::-1, :], out)

    return jax.vmap(one)(padded, flip, dy, dx)


def random_flip_crop(key: jax.Array, images: jax.Array, padding: int = PADDING) -> jax.Array:
    """Random crop of the zero-padded image plus random horizontal flip, per image.

    Args:
        key: PRNG key.
        images: `[N, H, W, C]` raw images (e.g. uint8).
        padding: zero padding on each side (static).

    Returns:
        Augmented images, same shape and dtype.
    """
    flip, dy, dx = sample_flip_crop_params(key, images.shape[0], padding)
    return apply_flip_crop(images, flip, dy, dx, padding)


def augment_batch(key: jax.Array, images: jax.Array, padding: int = PADDING) -> jax.Array:
    """Training-time input pipeline: flip/crop in raw pixel space, then `normalize`.

    Args:
        key: PRNG key.
        images: uint8 `[N, H, W, 3]`.
        padding: zero padding on each side (static).

    Returns:
        float32 `[N, H, W, 3]`, normalised; padded pixels equal `normalize(0)`.
    """
    return normalize(random_flip_crop(key, images, padding))


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Mirrors each image left-right with probability 0.5 (`RandomHorizontalFlip`).

    Args:
        key: PRNG key.
        images: `[N, H, W, C]`, any dtype.

    Returns:
        Images, same shape and dtype.
    """
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def cutout(key: jax.Array, images: jax.Array, size: int) -> jax.Array:
    """DARTS' `Cutout(length)` per image, on the normalised batch.

    Zeroes rows `[cy - size//2, cy + size//2)` x the same columns (clipped at the border)
    around a uniform pixel `(cy, cx)`, exactly as DARTS' `utils.Cutout` (an odd `size` cuts
    `size - 1`).

    Args:
        key: PRNG key.
        images: float `[N, H, W, C]` (normalised, as in the reference pipeline).
        size: side of the square (static); 0 returns `images` unchanged.

    Returns:
        Images, same shape and dtype.
    """
    if size <= 0:
        return images
    n, h, w, _ = images.shape
    k_y, k_x = jax.random.split(key)
    cy = jax.random.randint(k_y, (n, 1, 1), 0, h)
    cx = jax.random.randint(k_x, (n, 1, 1), 0, w)
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    half = size // 2
    inside = ((rows >= cy - half) & (rows < cy + half)
              & (cols >= cx - half) & (cols < cx + half))
    return jnp.where(inside[..., None], jnp.zeros((), images.dtype), images)
