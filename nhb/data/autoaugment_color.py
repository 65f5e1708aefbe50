"""DHA's pixel-value ops (LUT and ImageEnhance ops) on chunks of images, exact to Pillow.

Kernels of `nhb.data.autoaugment`: each takes a chunk of packed pixels (uint32 `[C, H, W]`,
`pack`: channel c in bits 8c..8c+7) and per-image parameters `p` (`[C]` arrays: `op`, `m`
the magnitude, `a` the enhance factor) and returns the packed chunk; they compute on
contiguous channel planes (vector code on the CPU). Rules (`shared/reference/dha.md`
section 6, read from Pillow's C code):

- LUT ops (AutoContrast, Equalize, Posterize, Solarize) compute Pillow's tables in integers.
  AutoContrast's table is `int(i * scale - lo * scale)` in double; it equals
  `255 (i - lo) // (hi - lo)` except where the quotient is an exact integer and double
  rounding lands just below it: those (lo, hi, i) are tabulated once (`_autocontrast_drops`).
  Posterize's bit count is thresholded on m at the float32 values where Python's double
  `int(m / 8 * 3 + 1)` steps. Posterize and Solarize apply their table's formula to the
  pixels directly (the same values as a lookup). Exact.
- Enhance ops blend with Pillow's degenerate image (grey `(19595 R + 38470 G + 7471 B +
  32768) >> 16`, the constant `int(mean(L) + 0.5)`, black, SMOOTH 3x3 / 13 with +0.5 and a
  copied 1-px border) as `Blend.c`: `(UINT8)(in1 + a (in2 - in1))` in float32, clipped for
  a > 1. The factor `a = (float)(m / 8 * 1.8 + 0.1)` (double in Python) is rounded from a
  float32 double-word sum, and float32 products are formed from 12-bit halves so fused
  multiply-adds cannot change a rounding. About 4 % of float32 magnitudes put the real value
  exactly on a float32 rounding tie that Python's double rounding decides; there `a` can be
  1 ulp off, which changed no pixel in the tests (enhance ops measured exact).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MAX_LEVEL = 8.0


# ----- exact scalar arguments --------------------------------------------------------------

def _hi12(x: jax.Array) -> jax.Array:
    """`x` with the low 12 mantissa bits cleared (so `x - _hi12(x)` is exact)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32) & jnp.uint32(0xFFFFF000)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def _hi12_np(x: float) -> float:
    """`_hi12` of `float32(x)` on the host."""
    bits = np.asarray(x, np.float32).view(np.uint32) & np.uint32(0xFFFFF000)
    return float(bits.view(np.float32))


def _pieces(value: float, count: int = 5) -> tuple[float, ...]:
    """A double as a sum of float32 numbers with <= 12 significant bits each."""
    out, rest = [], value
    for _ in range(count):
        out.append(_hi12_np(rest))
        rest -= out[-1]
    return tuple(out)


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def enhance_factor(magnitude: jax.Array) -> jax.Array:
    """`(float)(m / 8 * 1.8 + 0.1)`: Python's double result rounded to float32 as Pillow does.

    Args:
        magnitude: float32 magnitudes.

    Returns:
        float32 factors in [0.1, 1.9].
    """
    f = jnp.asarray(magnitude, jnp.float32) / jnp.float32(MAX_LEVEL)
    fh = _hi12(f)
    terms = []
    for k in _pieces(1.8):  # every product of two 12-bit numbers is exact in float32
        terms += [fh * k, (f - fh) * k]
    terms += [jnp.full_like(f, q) for q in _pieces(0.1)]
    s, t = jnp.zeros_like(f), jnp.zeros_like(f)
    for term in terms:
        s, e = _two_sum(s, term)
        t = t + e
    return s + t


@functools.cache
def _posterize_steps() -> tuple[float, ...]:
    """Smallest float32 m where Python's `int(m / 8 * 3 + 1)` reaches 2, 3, 4."""
    out = []
    for bits in (2, 3, 4):
        lo, hi = 0, int(np.float32(8.0).view(np.uint32))  # bisection on float32 bit patterns
        while lo < hi:
            mid = (lo + hi) // 2
            m = float(np.uint32(mid).view(np.float32))
            lo, hi = (lo, mid) if int(m / 8.0 * 3 + 1) >= bits else (mid + 1, hi)
        out.append(float(np.uint32(lo).view(np.float32)))
    return tuple(out)


@functools.cache
def _autocontrast_drops() -> np.ndarray:
    """Sorted keys `lo * 65536 + hi * 256 + i` where Pillow's double `int(i * s - lo * s)`,
    s = 255 / (hi - lo), is one below the exact integer `255 (i - lo) / (hi - lo)`."""
    keys = []
    for d in range(1, 256):
        scale = 255.0 / d
        lo = np.arange(256 - d)[:, None]
        i = lo + np.arange(d + 1)[None, :]
        exact = (255 * (i - lo)) % d == 0
        got = (i * scale + (-lo * scale)).astype(np.int64)
        bad = exact & (got < (255 * (i - lo)) // d)
        lo_b, i_b = np.broadcast_to(lo, i.shape)[bad], i[bad]
        keys.append(lo_b * 65536 + (lo_b + d) * 256 + i_b)
    return np.sort(np.concatenate(keys)).astype(np.int32)


@functools.cache
def _autocontrast_drop_bits() -> tuple[np.ndarray, np.ndarray]:
    """`_autocontrast_drops` as bit masks: `row[lo * 256 + hi]` (int16) indexes `bits`
    (uint32 `[R, 8]`, bit i of the 256-bit row set where `i` drops; row 0 is empty)."""
    keys = _autocontrast_drops()
    pair, i = keys // 256, keys % 256
    pairs, inverse = np.unique(pair, return_inverse=True)
    bits = np.zeros((len(pairs) + 1, 8), np.uint32)
    np.bitwise_or.at(bits, (inverse + 1, i // 32), (np.uint32(1) << (i % 32).astype(np.uint32)))
    row = np.zeros(65536, np.int16)
    row[pairs] = np.arange(1, len(pairs) + 1)
    return row, bits


def _materialize(fn: Callable, token: jax.Array) -> Any:
    """`fn()` computed into buffers: XLA's CPU compiler drops optimization barriers before
    fusing and would fuse gathers, scatters and long chains into every consumer element
    (recomputed per channel / tap, without vector code, 4-8x slower); a conditional's
    result cannot be fused. Its predicate is always true but derived from the runtime
    array `token` (a constant would be folded away)."""
    pred = (token.reshape(-1)[0].astype(jnp.int32) | 1) != 0
    return jax.lax.cond(pred, fn, lambda: jax.tree.map(jnp.zeros_like, jax.eval_shape(fn)))


# ----- LUT ops -----------------------------------------------------------------------------

def _floor_div(a: jax.Array, b: jax.Array) -> jax.Array:
    """`a // b` for int32 |a| < 2**17, 1 <= b <= 255, in float32 (CPUs lack vector integer
    division): `floor((a + .5) / b)` is >= .5 / b from an integer, far more than the error
    of a division compiled as reciprocal and Newton step."""
    q = (a.astype(jnp.float32) + 0.5) / b.astype(jnp.float32)
    return jnp.floor(q).astype(jnp.int32)


CHANNELS = 3


def pack(images: jax.Array) -> jax.Array:
    """uint8 `[..., C <= 4]` -> uint32 `[...]` with channel c in bits 8c..8c+7 (the kernels
    work on packed pixels: one channel plane at a time is contiguous, which vectorises).
    A bitcast (XLA's CPU and GPU targets are little-endian; the tests check the layout)."""
    c = images.shape[-1]
    x = jnp.pad(images, [(0, 0)] * (images.ndim - 1) + [(0, 4 - c)])
    return jax.lax.bitcast_convert_type(x, jnp.uint32)


def unpack(words: jax.Array, channels: int = CHANNELS) -> jax.Array:
    """Inverse of `pack` -> uint8 `[..., channels]` (a bitcast and a slice)."""
    return jax.lax.bitcast_convert_type(words, jnp.uint8)[..., :channels]


def _planes(words: jax.Array) -> list[jax.Array]:
    """int32 channel planes of packed words."""
    return [((words >> (8 * c)) & 255).astype(jnp.int32) for c in range(CHANNELS)]


def _repack(planes: Sequence[jax.Array]) -> jax.Array:
    """uint32 words from planes of values in 0..255."""
    return sum(p.astype(jnp.uint32) << (8 * c) for c, p in enumerate(planes))


def _apply_luts(words: jax.Array, luts: jax.Array) -> jax.Array:
    """Per image and channel lookup in int32 tables `[N, C, 256]` (packed words)."""
    n = words.shape[0]
    idx = [p.reshape(n, -1) + 256 * c for c, p in enumerate(_planes(words))]
    flat = luts.reshape(n, -1)
    return _repack([jnp.take_along_axis(flat, i, axis=1).reshape(words.shape) for i in idx])


def _range(words: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per image and channel min and max, int32 `[N, C, 1]`."""
    n = words.shape[0]
    planes = [p.reshape(n, -1) for p in _planes(words)]
    lo = jnp.stack([p.min(axis=1) for p in planes], 1)[..., None]
    hi = jnp.stack([p.max(axis=1) for p in planes], 1)[..., None]
    return lo, hi


def _exclusive_cumsum(x: jax.Array) -> jax.Array:
    """Exclusive prefix sum over the last axis (length 256) in 8 shifted adds."""
    total = x
    for k in range(8):
        s = 1 << k
        total = total + jnp.pad(total[..., :-s], [(0, 0)] * (x.ndim - 1) + [(s, 0)])
    return total - x


def autocontrast(words: jax.Array, p: dict) -> jax.Array:
    """ImageOps.autocontrast (cutoff 0), per channel, on packed words `[N, H, W]`."""
    del p
    lo, hi = _range(words)
    i = jnp.arange(256, dtype=jnp.int32)
    ac = _floor_div(255 * (i - lo), jnp.maximum(hi - lo, 1))
    row, bits = _autocontrast_drop_bits()
    masks = jnp.asarray(bits)[jnp.asarray(row)[lo[..., 0] * 256 + hi[..., 0]]]  # [N, C, 8]
    drop = (jnp.repeat(masks, 32, axis=-1) >> (i & 31).astype(jnp.uint32)) & 1
    ac = jnp.clip(ac - drop.astype(jnp.int32), 0, 255)
    return _apply_luts(words, jnp.where(hi > lo, ac, i))


def equalize(words: jax.Array, p: dict) -> jax.Array:
    """ImageOps.equalize, per channel, on packed words `[N, H, W]`."""
    del p
    n, h, w = words.shape

    def luts() -> jax.Array:
        _, hi = _range(words)
        flat = [(jnp.arange(n)[:, None] * CHANNELS + c) * 256 + x.reshape(n, -1)
                for c, x in enumerate(_planes(words))]
        hist = jnp.zeros((n * CHANNELS * 256,), jnp.int32).at[
            jnp.stack(flat, 1).reshape(-1)].add(1)
        hist = _materialize(lambda: hist.reshape(n, CHANNELS, 256), words)
        last = jnp.take_along_axis(hist, hi, axis=2)
        step = (h * w - last) // 255
        eq = _floor_div(step // 2 + _exclusive_cumsum(hist), jnp.maximum(step, 1))
        return jnp.where(step > 0, jnp.minimum(eq, 255), jnp.arange(256, dtype=jnp.int32))

    return _apply_luts(words, _materialize(luts, words))


def posterize_solarize(words: jax.Array, p: dict) -> jax.Array:
    """ImageOps.posterize(int(3 f + 1)) (op 3) or ImageOps.solarize(int(256 f)) (op 4)."""
    m = p["m"][:, None, None]
    bits = 1 + sum((m >= t).astype(jnp.int32) for t in _posterize_steps())
    keep = (255 - ((1 << (8 - bits)) - 1)).astype(jnp.uint32)
    post = words & (keep | (keep << 8) | (keep << 16))  # every byte at once
    thr = jnp.floor(m * 32.0).astype(jnp.int32)  # int(m / 8 * 256), exact in float32
    sol = _repack([jnp.where(x < thr, x, 255 - x) for x in _planes(words)])
    return jnp.where(p["op"][:, None, None] == 3, post, sol)


# ----- enhance ops -------------------------------------------------------------------------

def _smooth(x: jax.Array) -> jax.Array:
    """Pillow's SMOOTH filter (`ImagingFilter3x3`, kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13,
    +0.5, truncated, 1-px border copied) on an int32 plane `[N, H, W]`.

    Pillow sums float32 products; with S the integer weighted sum, `S / 13 + .5` is at least
    1/26 from an integer, far above float32 rounding, so the truncation equals the exact
    `(2 S + 13) // 26`, computed here in integers.
    """
    rows = x[:, :-2] + x[:, 1:-1] + x[:, 2:]  # [N, H - 2, W]
    s = rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:] + 4 * x[:, 1:-1, 1:-1]
    return x.at[:, 1:-1, 1:-1].set((2 * s + 13) // 26)


def _blend(x: jax.Array, deg: jax.Array, a: jax.Array) -> jax.Array:
    """`(UINT8) clip(deg + a (x - deg))` in float32 as Pillow's `Blend.c` (planes)."""
    a = a[:, None, None]
    ah = _hi12(a)
    diff = x.astype(jnp.float32) - deg
    prod = diff * ah + diff * (a - ah)  # the float32 product a * diff, rounded once
    return jnp.trunc(jnp.clip(deg + prod, 0.0, 255.0))


def color_contrast_brightness(words: jax.Array, p: dict) -> jax.Array:
    """ImageEnhance.{Color (op 5), Contrast (6), Brightness (7)}(img).enhance(a)."""
    n, h, w = words.shape
    planes = _planes(words)
    grey = (19595 * planes[0] + 38470 * planes[1] + 7471 * planes[2] + 32768) >> 16
    total = grey.reshape(n, -1).sum(axis=1)
    mean = (2 * total + h * w) // (2 * h * w)  # int(mean(L) + 0.5)
    sel = p["op"][:, None, None]
    deg = jnp.where(sel == 5, grey.astype(jnp.float32),
                    jnp.where(sel == 6, mean[:, None, None].astype(jnp.float32), 0.0))
    return _repack([_blend(x, deg, p["a"]) for x in planes])


def sharpness(words: jax.Array, p: dict) -> jax.Array:
    """ImageEnhance.Sharpness(img).enhance(a)."""
    planes = _planes(words)
    smooth = _materialize(lambda: [_smooth(x).astype(jnp.float32) for x in planes], words)
    return _repack([_blend(x, d, p["a"]) for x, d in zip(planes, smooth, strict=True)])
