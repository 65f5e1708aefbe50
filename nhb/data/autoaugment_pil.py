"""The DHA augmentation ops through Pillow, as the authors' `data/auto_augment.py` runs them.

Reference pipeline for the tests and the throughput benchmark of `nhb.data.autoaugment`
(see `shared/reference/dha.md` section 1). Each op converts the uint8 HxWx3 array to a PIL
image, calls the same Pillow function as the authors (`auto_augment.py:45-130`) with the
argument of their magnitude mapping (`:148-194`), and converts back. Per op call the batch
pipeline draws, in the authors' order, the magnitude `clip(U(0, M), 0, 8)` (`:264-265`), the
sign (`random() > 0.5` negates, signed ops only, `:148-150`) and the resampling filter
(BILINEAR or BICUBIC, geometric ops only, `:20-27`). The random flip of the full pipeline is
left out.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from nhb.data.autoaugment import (
    FILL,
    GEOMETRIC_OPS,
    MAX_LEVEL,
    NUM_OPS,
    OP_NAMES,
    SIGNED_OPS,
)

_ENHANCERS = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast,
              "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}


def pil_op(img: Image.Image, op: int, magnitude: float, negate: bool, bicubic: bool,
           fill: Sequence[int] = FILL) -> Image.Image:
    """Applies op `op` to a PIL image exactly as the authors' code does.

    Args:
        img: RGB PIL image.
        op: op index into `OP_NAMES`.
        magnitude: level in [0, MAX_LEVEL].
        negate: negate the argument (signed ops only).
        bicubic: BICUBIC (True) or BILINEAR (False) resampling (geometric ops only).
        fill: RGB colour of uncovered pixels (geometric ops).

    Returns:
        The augmented PIL image.
    """
    name = OP_NAMES[op]
    f = float(magnitude) / MAX_LEVEL
    sign = -1.0 if (negate and op in SIGNED_OPS) else 1.0
    kw = dict(resample=Image.Resampling.BICUBIC if bicubic else Image.Resampling.BILINEAR,
              fillcolor=tuple(int(c) for c in fill))
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Rotate":
        return img.rotate(sign * f * 30.0, **kw)
    if name == "Posterize":
        return ImageOps.posterize(img, int(f * 3 + 1))
    if name == "Solarize":
        return ImageOps.solarize(img, int(f * 256))
    if name in _ENHANCERS:
        return _ENHANCERS[name](img).enhance(f * 1.8 + 0.1)
    if name == "ShearX":
        return img.transform(img.size, Image.Transform.AFFINE, (1, sign * f * 0.3, 0, 0, 1, 0),
                             **kw)
    if name == "ShearY":
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, 0, sign * f * 0.3, 1, 0),
                             **kw)
    if name == "TranslateX":
        px = sign * f * 0.45 * img.size[0]
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, px, 0, 1, 0), **kw)
    if name == "TranslateY":
        px = sign * f * 0.45 * img.size[1]
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, 0, 0, 1, px), **kw)
    if name == "Identity":
        return img
    raise ValueError(f"unknown op {op}")


def pil_apply_op(img: np.ndarray, op: int, magnitude: float, negate: bool, bicubic: bool,
                 fill: Sequence[int] = FILL) -> np.ndarray:
    """`pil_op` on a uint8 array.

    Args:
        img: uint8 `[H, W, 3]`.
        op, magnitude, negate, bicubic, fill: as `pil_op`.

    Returns:
        uint8 `[H, W, 3]`.
    """
    out = pil_op(Image.fromarray(np.asarray(img, np.uint8)), op, magnitude, negate, bicubic,
                 fill)
    return np.asarray(out, np.uint8)


def pil_apply_pair(img: np.ndarray, first: int, second: int, magnitudes: Sequence[float],
                   negate: Sequence[bool], bicubic: Sequence[bool],
                   fill: Sequence[int] = FILL) -> np.ndarray:
    """Two ops in sequence on one PIL image (uint8 between them, as in Pillow).

    Args:
        img: uint8 `[H, W, 3]`.
        first, second: op indices.
        magnitudes, negate, bicubic: per op (length 2).
        fill: RGB fill colour.

    Returns:
        uint8 `[H, W, 3]`.
    """
    pil = Image.fromarray(np.asarray(img, np.uint8))
    for i, op in enumerate((first, second)):
        pil = pil_op(pil, int(op), magnitudes[i], bool(negate[i]), bool(bicubic[i]), fill)
    return np.asarray(pil, np.uint8)


def pil_augment_batch(rng: np.random.Generator | random.Random, images: np.ndarray,
                      pairs: Sequence[int], max_magnitude: float,
                      fill: Sequence[int] = FILL) -> np.ndarray:
    """The reference per-image Pillow pipeline for a batch (random flip excluded).

    Per op call: magnitude `clip(U(0, max_magnitude), 0, MAX_LEVEL)`, then for signed ops a
    sign (negate when `random() > 0.5`), then for geometric ops the filter (BICUBIC with
    probability 0.5), as the authors' `AugmentOp.__call__`.

    Args:
        rng: `random.Random` or `np.random.Generator`.
        images: uint8 `[N, H, W, 3]`.
        pairs: pair codes in 0..195 (first op = k // 14, second = k % 14).
        max_magnitude: M of the uniform magnitude draw.
        fill: RGB fill colour.

    Returns:
        uint8 `[N, H, W, 3]`.
    """
    out = np.empty_like(np.asarray(images, np.uint8))
    for n, (img, k) in enumerate(zip(images, pairs, strict=True)):
        pil = Image.fromarray(np.asarray(img, np.uint8))
        for op in (int(k) // NUM_OPS, int(k) % NUM_OPS):
            m = min(max(rng.uniform(0.0, max_magnitude), 0.0), MAX_LEVEL)
            negate = op in SIGNED_OPS and rng.random() > 0.5
            bicubic = op in GEOMETRIC_OPS and rng.random() > 0.5
            pil = pil_op(pil, op, m, negate, bicubic, fill)
        out[n] = np.asarray(pil, np.uint8)
    return out
