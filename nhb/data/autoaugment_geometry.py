"""Pillow's affine resampling (`Image.transform(AFFINE)`, `Image.rotate`) in JAX.

Written here, not taken from a library: `jax.image`/dm-pix interpolate with Keys' a = -0.5
cubic, round instead of truncate and treat the border differently, so they do not reproduce
Pillow. This follows Pillow's `src/libImaging/Geometry.c` (`affine_transform`,
`bilinear_filter32RGB`, `bicubic_filter32RGB`, `ImagingGenericTransform`):

- output pixel (x, y) samples the source at
  `(a0 (x+.5) + a1 (y+.5) + a2, a3 (x+.5) + a4 (y+.5) + a5)`;
- a source point outside `[0, W) x [0, H)` keeps the fill colour (`fillcolor` pre-fills);
- otherwise `x0 = floor(xs - .5)`, `dx = xs - .5 - x0`; taps are clamped to the edge;
- BILINEAR: `v = a + (b - a) dx` per row, then the same across rows;
  BICUBIC: Pillow's cubic convolution with a = -1 in Horner form
  `p1 + d (p2 + d (p3 + d p4))`, `p1 = v2, p2 = v3 - v1, p3 = 2 (v1 - v2) + v3 - v4,
  p4 = v2 - v1 + v4 - v3`, first along x per row, then along y;
- the result is clipped to [0, 255] and truncated (`(UINT8)v`), not rounded.

Pillow evaluates coordinates and filters in double; here they are float32, so a value can
land on the other side of an integer after truncation: at most 1 off, for a small fraction
of values (`shared/reference/dha.md` section 6). The coordinates are the float32 value of
the exact sum (products split into exact halves, error-free additions), so they do not
depend on which multiply-adds the compiler fuses.

Speed (XLA CPU): ShearX/Y and TranslateX/Y move only one axis, where Pillow's second pass
returns its middle tap exactly (offset 0): they are 1-D filters along rows (columns via a
transpose), each row cut once from an edge-padded copy. Pixels travel as one uint32 word
(channels packed) and are filtered one channel plane at a time, and the gathered taps and
the filtered planes are computed inside `lax.cond` (`_materialize`): XLA's CPU compiler
drops optimization barriers and would otherwise fuse the gathers and coordinates into every
output element (per channel and tap, without vector code, 4-8x slower).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from nhb.data.autoaugment_color import _hi12, _materialize, _two_sum

PAD = 2  # edge padding that makes every tap of an in-range source point a valid index


def affine_matrices(kind: jax.Array, amount: jax.Array, height: int,
                    width: int) -> jax.Array:
    """Pillow's inverse affine matrices (output -> source) of the geometric ops.

    Args:
        kind: int `[N]`: 0 rotate, 1 shear x, 2 shear y, 3 translate x, 4 translate y.
        amount: float32 `[N]`: degrees counter-clockwise (rotate), shear factor, or pixels.
        height, width: image size (static).

    Returns:
        float32 `[N, 6]` = `(a0, a1, a2, a3, a4, a5)` as passed to `Image.transform`, with
        the rotation written about the centre (`a2`, `a5` hold the centre offset, see
        `warp_affine`).
    """
    amount = jnp.asarray(amount, jnp.float32)
    theta = amount * jnp.float32(math.pi / 180.0)
    c, s = jnp.cos(theta), jnp.sin(theta)
    one, zero = jnp.ones_like(amount), jnp.zeros_like(amount)
    rows = {
        0: (c, -s, zero, s, c, zero),
        1: (one, amount, zero, zero, one, zero),
        2: (one, zero, zero, amount, one, zero),
        3: (one, zero, amount, zero, one, zero),
        4: (one, zero, zero, zero, one, amount),
    }
    out = jnp.stack(rows[0], -1)
    for k in range(1, 5):
        out = jnp.where((kind == k)[:, None], jnp.stack(rows[k], -1), out)
    return out


def _horner4(v1: jax.Array | None, v2: jax.Array, v3: jax.Array, v4: jax.Array | None,
             d: jax.Array, bicubic: jax.Array | bool) -> jax.Array:
    """Pillow's BILINEAR (taps v2, v3) / BICUBIC (v1..v4) 1-D filter at offset `d`
    (`bicubic` per image, or static: then v1, v4 may be None for BILINEAR)."""
    if bicubic is False:
        return v2 + d * (v3 - v2)
    p2 = jnp.where(bicubic, v3 - v1, v3 - v2)
    p3 = jnp.where(bicubic, 2.0 * (v1 - v2) + v3 - v4, 0.0)
    p4 = jnp.where(bicubic, -v1 + v2 - v3 + v4, 0.0)
    return v2 + d * (p2 + d * (p3 + d * p4))


def _unpack(words: jax.Array, c: int) -> jax.Array:
    """Channel `c` of `_pack`ed words as float32."""
    return ((words >> (8 * c)) & 255).astype(jnp.float32)


def _filter_planes(taps: list, offsets: Sequence[jax.Array], bicubic: bool,
                   outside: jax.Array, fill: Sequence[int], token: jax.Array) -> jax.Array:
    """The filter on packed taps, channel by channel -> packed uint32 result.

    `taps`: 4 (1-D, `offsets = (dx,)`) or 4 x 4 (2-D: lists along y of taps along x,
    `offsets = (dx, dy)`) uint32 arrays of the output's shape; for BILINEAR the outer taps
    are None.
    """
    def unpack(t: jax.Array | None, c: int) -> jax.Array | None:
        return None if t is None else _unpack(t, c)

    def run() -> jax.Array:
        out = jnp.zeros(outside.shape, jnp.uint32)
        for c in range(len(fill)):
            if len(offsets) == 1:
                val = _horner4(*(unpack(t, c) for t in taps), offsets[0], bicubic)
            else:
                rows = [None if row is None else
                        _horner4(*(unpack(t, c) for t in row), offsets[0], bicubic)
                        for row in taps]
                val = _horner4(*rows, offsets[1], bicubic)
            val = jnp.trunc(jnp.clip(val, 0.0, 255.0))
            out = out | (jnp.where(outside, fill[c], val).astype(jnp.uint32) << (8 * c))
        return out

    return _materialize(run, token)


def _sum_products(terms: Sequence[tuple[jax.Array, jax.Array]],
                  constant: jax.Array | float) -> jax.Array:
    """float32 `constant + sum(a * b)` for two products, `b` half-integers < 64, with
    (nearly always) one rounding, whatever multiply-adds the compiler fuses: each `a` is
    split into 12-bit halves whose products with `b` are exact, and the large parts are
    added with error-free sums."""
    (a1, b1), (a2, b2) = terms
    h1, h2 = _hi12(a1), _hi12(a2)
    s, e = _two_sum(h1 * b1, h2 * b2)
    s, e2 = _two_sum(jnp.asarray(constant, jnp.float32), s)
    return s + (e2 + (e + ((a1 - h1) * b1 + (a2 - h2) * b2)))


def rotate(words: jax.Array, matrix: jax.Array, bicubic: bool,
           fill: Sequence[int]) -> jax.Array:
    """`Image.rotate`: Pillow's 2-D affine resampling, matrix `(c, -s, 0, s, c, 0)` about the
    image centre.

    Args:
        words: packed pixels uint32 `[N, H, W]` (`autoaugment_color.pack`).
        matrix: float32 `[N, 6]` from `affine_matrices` (kind 0).
        bicubic: BICUBIC, else BILINEAR (static: the kernels of the two filters are
            separate groups, BILINEAR gathers 4 taps, not 16).
        fill: RGB colour of pixels whose source point lies outside the image.

    Returns:
        packed uint32 `[N, H, W]`.
    """
    n, h, w = words.shape
    token = words

    def coordinates() -> tuple:
        u = jnp.arange(w, dtype=jnp.float32)[None, None, :] + (0.5 - w / 2)
        v = jnp.arange(h, dtype=jnp.float32)[None, :, None] + (0.5 - h / 2)
        m = [matrix[:, i, None, None] for i in (0, 1, 3, 4)]
        xs = _sum_products([(m[0], u), (m[1], v)], w / 2).reshape(n, -1)
        ys = _sum_products([(m[2], u), (m[3], v)], h / 2).reshape(n, -1)
        outside = (xs < 0) | (xs >= w) | (ys < 0) | (ys >= h)
        xs, ys = xs - 0.5, ys - 0.5
        x0, y0 = jnp.floor(xs), jnp.floor(ys)
        # top-left tap (x0 - 1, y0 - 1) in the edge-padded image; clipped for outside points
        xi = jnp.clip(x0.astype(jnp.int32) - 1 + PAD, 0, w + 2 * PAD - 4)
        yi = jnp.clip(y0.astype(jnp.int32) - 1 + PAD, 0, h + 2 * PAD - 4)
        return outside, xs - x0, ys - y0, yi * (w + 2 * PAD) + xi

    outside, dx, dy, base = _materialize(coordinates, token)
    padded = jnp.pad(words, ((0, 0), (PAD, PAD), (PAD, PAD)), mode="edge").reshape(n, -1)
    pitch = w + 2 * PAD

    used = range(4) if bicubic else range(1, 3)
    pairs = [(j, k) for j in used for k in used]

    def gather() -> list:
        offsets = jnp.asarray([j * pitch + k for j, k in pairs], jnp.int32)
        idx = (base[:, None, :] + offsets[None, :, None]).reshape(n, -1)
        return jnp.take_along_axis(padded, idx, axis=1).reshape(n, len(pairs), -1)

    flat = _materialize(gather, token)
    taps = [[flat[:, pairs.index((j, k))] if (j, k) in pairs else None for k in range(4)]
            if j in used else None for j in range(4)]
    out = _filter_planes(taps, (dx, dy), bicubic, outside, fill, token)
    return out.reshape(n, h, w)


def _shift_lines(words: jax.Array, own: jax.Array, other: jax.Array, shear: jax.Array,
                 shift: jax.Array, bicubic: bool, fill: Sequence[int]) -> jax.Array:
    """Pillow's filter along the last axis of packed `[N, R, L]` words, the source
    coordinate of output (r, x) being `own + shear * other + shift` (one of shear, shift is
    0; `own`, `other` the pixel-centre coordinates along and across the lines).

    The taps of a line start at `x + k_r + delta`, `k_r` the line's offset at `x = 0`: each
    line is cut once from an edge-padded copy (no per-pixel gather) and `delta` in
    {-1, 0, 1} (float rounding of the coordinate near an integer) selects between three
    shifted views.
    """
    length = words.shape[-1]
    token = words

    def coordinates() -> tuple:
        t = _sum_products([(jnp.ones_like(shear), own), (shear, other)], 0.0) + shift
        outside = (t < 0) | (t >= length)
        t = t - 0.5
        x0 = jnp.floor(t)
        x0i = x0.astype(jnp.int32)
        base = x0i[..., :1]
        delta = jnp.clip(x0i - jnp.arange(length, dtype=jnp.int32) - base, -1, 1)
        pad = length + 3  # covers base in [-L - 1, L] of lines with a point inside the image
        return outside, t - x0, delta, jnp.clip(base[..., 0] - 2 + pad, 0, 2 * length + 1)

    outside, d, delta, start = _materialize(coordinates, token)
    pad = length + 3
    padded = jnp.pad(words, ((0, 0), (0, 0), (pad, pad)), mode="edge")

    def gather() -> list:
        cut = jax.vmap(jax.vmap(lambda r, s: jax.lax.dynamic_slice(r, (s,), (length + 5,))))
        lines = cut(padded, start)  # [N, R, L + 5]
        views = [lines[..., k:k + length] for k in range(6)]
        return [jnp.where(delta == -1, views[j], jnp.where(delta == 0, views[j + 1],
                                                           views[j + 2]))
                if bicubic or j in (1, 2) else None for j in range(4)]

    taps = _materialize(gather, token)
    return _filter_planes(taps, (d,), bicubic, outside, fill, token)


def shift_rows(words: jax.Array, matrix: jax.Array, bicubic: bool,
               fill: Sequence[int]) -> jax.Array:
    """ShearX / TranslateX: matrices `(1, a1, a2, 0, 1, 0)`, 1-D resampling of each row at
    `x + .5 + a1 (y + .5) + a2`.

    Args:
        words: packed pixels uint32 `[N, H, W]` (`autoaugment_color.pack`).
        matrix: float32 `[N, 6]` from `affine_matrices` (kind 1 or 3).
        bicubic: BICUBIC, else BILINEAR (static).
        fill: RGB colour of pixels whose source point lies outside the image.

    Returns:
        packed uint32 `[N, H, W]`.
    """
    _, h, w = words.shape
    u = jnp.arange(w, dtype=jnp.float32)[None, None, :] + 0.5
    v = jnp.arange(h, dtype=jnp.float32)[None, :, None] + 0.5
    return _shift_lines(words, u, v, matrix[:, 1, None, None], matrix[:, 2, None, None],
                        bicubic, fill)


def shift_columns(words: jax.Array, matrix: jax.Array, bicubic: bool,
                  fill: Sequence[int]) -> jax.Array:
    """ShearY / TranslateY: matrices `(1, 0, 0, a3, 1, a5)`, 1-D resampling of each column
    at `y + .5 + a3 (x + .5) + a5` (`shift_rows` of the transposed image).

    Args:
        words: packed pixels uint32 `[N, H, W]` (`autoaugment_color.pack`).
        matrix: float32 `[N, 6]` from `affine_matrices` (kind 2 or 4).
        bicubic: BICUBIC, else BILINEAR (static).
        fill: RGB colour of pixels whose source point lies outside the image.

    Returns:
        packed uint32 `[N, H, W]`.
    """
    _, h, w = words.shape
    u = jnp.arange(w, dtype=jnp.float32)[None, :, None] + 0.5  # lines are columns: [1, W, 1]
    v = jnp.arange(h, dtype=jnp.float32)[None, None, :] + 0.5
    out = _shift_lines(jnp.swapaxes(words, 1, 2), v, u, matrix[:, 3, None, None],
                       matrix[:, 5, None, None], bicubic, fill)
    return jnp.swapaxes(out, 1, 2)
