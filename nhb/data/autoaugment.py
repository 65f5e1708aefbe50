"""DHA's 14 data-augmentation ops as jitted, vmappable JAX functions that reproduce Pillow.

The authors (`kaichen-z/DHA`, `data/auto_augment.py`, see `shared/reference/dha.md` section 1)
apply two ops per image, op pair k in 0..195 -> (k // 14, k % 14) (`:359-365`), through
Pillow, with magnitude m = clip(U(0, M), 0, 8) per op call (`:264-265`), f = m / 8:

    Rotate      img.rotate(+-30 f)  (counter-clockwise about (w/2, h/2))   (:45-48, :152-157)
    Posterize   bits = int(3 f + 1)                                        (:72-75, :159-162)
    Solarize    threshold = int(256 f), pixels >= threshold inverted       (:77-78, :164-166)
    Color, Contrast, Brightness, Sharpness: ImageEnhance, factor 1.8 f + 0.1 (:94-104, :172-174)
    ShearX/Y    affine (1, +-0.3 f, 0, 0, 1, 0) / (1, 0, 0, +-0.3 f, 1, 0) (:106-112, :176-181)
    TranslateX/Y affine shift by +-0.45 f * width / height pixels          (:122-130, :189-194)
    AutoContrast, Equalize, Identity: no argument

with a random sign (`random() > 0.5` negates, `:148-150`) and a random BILINEAR/BICUBIC
filter (`:20-27`) per geometric op call, uncovered pixels filled with the dataset mean.

Fidelity to Pillow (rules of `shared/reference/dha.md` section 6, read from Pillow's C code):
LUT and enhance ops are exact (`nhb.data.autoaugment_color`); geometric ops follow Pillow's
affine sampler (bicubic a = -1, truncation) in float32 coordinates
(`nhb.data.autoaugment_geometry`): max 1 off on rare values. Nothing here comes from dm-pix
or `jax.image` (their filters differ from Pillow's).

Per-sample op selection (speed on the CPU, where computing every op group for every image
and selecting was 0.45x Pillow): pixels travel packed, one uint32 per RGB pixel
(`autoaugment_color.pack`); the images are sorted by op group (`_GROUPS`: Identity,
Posterize/Solarize, AutoContrast, Equalize, Color/Contrast/Brightness, Sharpness, and
ShearX/TranslateX, ShearY/TranslateY, Rotate once per filter) and a `while_loop` runs each
group's kernel on chunks of consecutive images of that group only (a `lax.switch` per
chunk, chunk sizes per group), so an image costs one kernel per op, not all of them.
ShearX/Y and TranslateX/Y resample along one axis only (Pillow's second pass is the
identity there), BILINEAR kernels gather 2 (4) taps instead of 4 (16). Results do not
depend on the batch composition. Under `vmap` the loop runs the longest schedule and the
switch computes every kernel (correct, slower).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nhb.data.augment import MEAN
from nhb.data.autoaugment_color import (
    MAX_LEVEL,
    autocontrast,
    color_contrast_brightness,
    enhance_factor,
    equalize,
    pack,
    posterize_solarize,
    sharpness,
    unpack,
)
from nhb.data.autoaugment_geometry import (
    affine_matrices,
    rotate,
    shift_columns,
    shift_rows,
)

OP_NAMES = ("AutoContrast", "Equalize", "Rotate", "Posterize", "Solarize", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX",
            "TranslateY", "Identity")
NUM_OPS = len(OP_NAMES)  # 14
NUM_PAIRS = NUM_OPS * NUM_OPS  # 196
SIGNED_OPS = (2, 9, 10, 11, 12)  # Rotate, ShearX, ShearY, TranslateX, TranslateY
GEOMETRIC_OPS = SIGNED_OPS
ENHANCE_OPS = (5, 6, 7, 8)  # Color, Contrast, Brightness, Sharpness
LUT_OPS = (0, 1, 3, 4, 13)  # AutoContrast, Equalize, Posterize, Solarize, Identity
FILL = tuple(min(255, round(255 * float(m))) for m in MEAN)  # (125, 123, 114)


def decode_pairs(pairs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pair code k in 0..195 -> (first op, second op) = (k // 14, k % 14).

    Args:
        pairs: int array of pair codes.

    Returns:
        `(first, second)` int32 arrays of the shape of `pairs`.
    """
    pairs = jnp.asarray(pairs, jnp.int32)
    return pairs // NUM_OPS, pairs % NUM_OPS


def sample_magnitudes(key: jax.Array, shape: Sequence[int],
                      max_magnitude: float | jax.Array) -> jax.Array:
    """Magnitudes m = clip(U(0, max_magnitude), 0, MAX_LEVEL) (`auto_augment.py:264-265`).

    Args:
        key: PRNG key.
        shape: output shape.
        max_magnitude: M (may be traced).

    Returns:
        float32 array of `shape`.
    """
    u = jax.random.uniform(key, tuple(shape), jnp.float32)
    return jnp.clip(u * jnp.asarray(max_magnitude, jnp.float32), 0.0, MAX_LEVEL)


# ----- op groups ---------------------------------------------------------------------------

def _geometric(kernel: Callable, bicubic: bool) -> Callable:
    def run(words: jax.Array, p: dict, fill: Sequence[int]) -> jax.Array:
        return kernel(words, p["matrix"], bicubic, fill)
    return run


def _pixel(kernel: Callable) -> Callable:
    def run(words: jax.Array, p: dict, fill: Sequence[int]) -> jax.Array:
        del fill
        return kernel(words, p)
    return run


# (ops, filter (geometric ops: BICUBIC or BILINEAR, a group each), kernel on a chunk, images
# per chunk: fewer for costly kernels, whose last chunk of a group is mostly padding);
# group 0 (Identity) does nothing
_GROUPS: tuple[tuple[tuple[int, ...], bool | None, Callable | None, int], ...] = (
    ((13,), None, None, 0),
    ((3, 4), None, _pixel(posterize_solarize), 32),
    ((0,), None, _pixel(autocontrast), 16),
    ((1,), None, _pixel(equalize), 16),
    ((5, 6, 7), None, _pixel(color_contrast_brightness), 32),
    ((8,), None, _pixel(sharpness), 16),
    *(((9, 11), cubic, _geometric(shift_rows, cubic), 16) for cubic in (False, True)),
    *(((10, 12), cubic, _geometric(shift_columns, cubic), 16) for cubic in (False, True)),
    *(((2,), cubic, _geometric(rotate, cubic), 8) for cubic in (False, True)),
)
_GROUP_OF = np.zeros((NUM_OPS, 2), np.int32)  # [op, bicubic] -> group
for _g, (_ops, _cubic, _, _) in enumerate(_GROUPS):
    for _op in _ops:
        if _cubic is None:
            _GROUP_OF[_op, :] = _g
        else:
            _GROUP_OF[_op, int(_cubic)] = _g


def _run_groups(images: jax.Array, op: jax.Array, bicubic: jax.Array, params: dict,
                fill: Sequence[int]) -> jax.Array:
    """Each image (packed pixels `[N, H, W]`) through its op group's kernel, in chunks of
    images of one group.

    The images are sorted by group; chunk t covers sorted positions [s, s + c_g) of its
    group g and is written back in place. A group's last chunk runs past the group's end
    (into the next groups or the padding); those rows are rewritten by the later chunks,
    which run in increasing position order.
    """
    n = images.shape[0]
    sizes = np.asarray([min(c, n) if k else 1 for k, (*_, c) in enumerate(_GROUPS)])
    cmax = int(sizes.max())
    group = jnp.asarray(_GROUP_OF)[op, bicubic.astype(jnp.int32)]
    order = jnp.argsort(group, stable=True)
    counts = jnp.sum(group[None, :] == jnp.arange(len(_GROUPS))[:, None], axis=1)
    starts = jnp.cumsum(counts) - counts
    nchunk = (counts + sizes - 1) // sizes
    nchunk = nchunk.at[0].set(0)
    ends = jnp.cumsum(nchunk)

    # the chunk schedule: group and first sorted position of chunk t
    t = jnp.arange(len(_GROUPS) + n // int(sizes[1:].min()), dtype=jnp.int32)
    g_t = jnp.minimum(jnp.sum(t[:, None] >= ends[None, :], axis=1), len(_GROUPS) - 1)
    s_t = starts[g_t] + (t - ends[g_t] + nchunk[g_t]) * jnp.asarray(sizes)[g_t]
    schedule = jnp.stack([g_t, s_t], axis=1)

    def sort_pad(x: jax.Array) -> jax.Array:
        return jnp.concatenate([x[order], jnp.zeros((cmax, *x.shape[1:]), x.dtype)])

    xs = sort_pad(images)
    names = list(params)
    table = sort_pad(jnp.concatenate([params[k].reshape(n, -1).astype(jnp.float32)
                                      for k in names], axis=1))
    widths = np.cumsum([0] + [int(np.prod(params[k].shape[1:])) for k in names])

    def branch(kernel: Callable, c: int) -> Callable:
        def run(part: jax.Array, pc: jax.Array) -> jax.Array:
            p = {k: pc[:c, widths[i]:widths[i + 1]].reshape(c, *params[k].shape[1:]).astype(
                params[k].dtype) for i, k in enumerate(names)}
            res = kernel(part[:c], p, fill)
            return jnp.concatenate([res, part[c:]])  # the tail is rewritten later
        return run

    kernels = [branch(kernel, int(c)) for (_, _, kernel, _), c in zip(_GROUPS[1:], sizes[1:],
                                                                      strict=True)]

    def body(state: tuple) -> tuple:
        i, out = state
        g, s = schedule[i, 0], schedule[i, 1]
        part = jax.lax.dynamic_slice_in_dim(xs, s, cmax)
        pc = jax.lax.dynamic_slice_in_dim(table, s, cmax)
        res = jax.lax.switch(g - 1, kernels, part, pc)
        return i + 1, jax.lax.dynamic_update_slice_in_dim(out, res, s, 0)

    _, out = jax.lax.while_loop(lambda st: st[0] < ends[-1], body, (jnp.int32(0), xs))
    return out[jnp.argsort(order)]


# ----- public ops --------------------------------------------------------------------------

def _apply_packed(words: jax.Array, op: jax.Array, magnitude: jax.Array, negate: jax.Array,
                  bicubic: jax.Array, fill: Sequence[int]) -> jax.Array:
    """`apply_op` on packed pixels uint32 `[N, H, W]`."""
    _, h, w = words.shape
    op = jnp.asarray(op, jnp.int32)
    magnitude = jnp.asarray(magnitude, jnp.float32)
    f = magnitude / jnp.float32(MAX_LEVEL)
    sign = jnp.where(jnp.asarray(negate, bool), -1.0, 1.0).astype(jnp.float32)
    kind = jnp.select([op == 2, op == 9, op == 10, op == 11], [0, 1, 2, 3], 4)
    amount = jnp.select([op == 2, (op == 9) | (op == 10), op == 11],
                        [f * 30.0, f * 0.3, f * 0.45 * w], f * 0.45 * h) * sign
    params = dict(op=op, m=magnitude, a=enhance_factor(magnitude),
                  matrix=affine_matrices(kind, amount, h, w))
    return _run_groups(words, op, jnp.asarray(bicubic, bool), params, fill)


def _pack_rgb(images: jax.Array) -> jax.Array:
    images = jnp.asarray(images, jnp.uint8)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 [N, H, W, 3] images, got shape {images.shape}")
    return pack(images)


def apply_op(images: jax.Array, op: jax.Array, magnitude: jax.Array, negate: jax.Array,
             bicubic: jax.Array, fill: Sequence[int] = FILL) -> jax.Array:
    """Applies op `op[i]` to image i, as the authors' Pillow code does.

    Args:
        images: uint8 `[N, H, W, 3]`.
        op: int `[N]` op indices into `OP_NAMES`.
        magnitude: float32 `[N]` levels in [0, MAX_LEVEL].
        negate: bool `[N]`: negate the argument (signed ops only).
        bicubic: bool `[N]`: BICUBIC, else BILINEAR resampling (geometric ops only).
        fill: RGB colour of uncovered pixels (static).

    Returns:
        uint8 `[N, H, W, 3]`.
    """
    return unpack(_apply_packed(_pack_rgb(images), op, magnitude, negate, bicubic, fill))


def apply_pair(images: jax.Array, first: jax.Array, second: jax.Array,
               magnitudes: jax.Array, negate: jax.Array, bicubic: jax.Array,
               fill: Sequence[int] = FILL) -> jax.Array:
    """Applies `first[i]` then `second[i]` to image i (uint8 in between, as in Pillow).

    Args:
        images: uint8 `[N, H, W, 3]`.
        first, second: int `[N]` op indices.
        magnitudes: float32 `[N, 2]`; negate, bicubic: bool `[N, 2]` (per op call).
        fill: RGB fill colour (static).

    Returns:
        uint8 `[N, H, W, 3]`.
    """
    magnitudes = jnp.asarray(magnitudes, jnp.float32)
    negate, bicubic = jnp.asarray(negate, bool), jnp.asarray(bicubic, bool)
    words = _pack_rgb(images)
    for i, op in enumerate((first, second)):
        words = _apply_packed(words, op, magnitudes[:, i], negate[:, i], bicubic[:, i], fill)
    return unpack(words)


def augment_pairs(key: jax.Array, images: jax.Array, pairs: jax.Array,
                  max_magnitude: float | jax.Array, fill: Sequence[int] = FILL) -> jax.Array:
    """DHA's augmentation of a batch given its pair codes (random flip not included).

    Per op call draws m = clip(U(0, max_magnitude), 0, 8), a sign (negated with
    probability 0.5, signed ops) and a filter (BICUBIC with probability 0.5, geometric ops).

    Args:
        key: PRNG key.
        images: uint8 `[N, H, W, 3]`.
        pairs: int `[N]` pair codes in 0..195.
        max_magnitude: M.
        fill: RGB fill colour (static).

    Returns:
        uint8 `[N, H, W, 3]`.
    """
    n = images.shape[0]
    k_mag, k_sign, k_filter = jax.random.split(key, 3)
    mags = sample_magnitudes(k_mag, (n, 2), max_magnitude)
    negate = jax.random.bernoulli(k_sign, 0.5, (n, 2))
    bicubic = jax.random.bernoulli(k_filter, 0.5, (n, 2))
    first, second = decode_pairs(pairs)
    return apply_pair(images, first, second, mags, negate, bicubic, fill)
