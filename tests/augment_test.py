"""Tests for nhb.data.augment: normalisation and flip/crop augmentation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb.data.augment import (
    MEAN,
    STD,
    apply_flip_crop,
    augment_batch,
    normalize,
    random_flip_crop,
    sample_flip_crop_params,
)

augment_jit = jax.jit(augment_batch)
apply_jit = jax.jit(apply_flip_crop)
sample_jit = jax.jit(sample_flip_crop_params, static_argnums=1)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(1, 256, (8, 32, 32, 3), dtype=np.uint8)


def _np_flip_crop(img: np.ndarray, flip: bool, dy: int, dx: int, p: int = 4) -> np.ndarray:
    out = np.pad(img, ((p, p), (p, p), (0, 0)))[dy:dy + img.shape[0], dx:dx + img.shape[1]]
    return out[:, ::-1] if flip else out


def test_normalize_by_hand() -> None:
    x = np.array([[[0, 128, 255]], [[10, 20, 30]]], np.uint8)  # [2, 1, 3]
    got = jax.jit(normalize)(x)
    assert got.dtype == jnp.float32 and got.shape == x.shape
    mean = np.array([125.3, 123.0, 113.9]) / 255
    std = np.array([63.0, 62.1, 66.7]) / 255
    want = (x.astype(np.float64) / 255 - mean) / std
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    assert abs(float(got[0, 0, 0]) - (0 - 125.3 / 255) / (63.0 / 255)) < 1e-5


def test_same_key_same_output(images: np.ndarray) -> None:
    key = jax.random.key(1)
    a, b = augment_jit(key, images), augment_jit(key, images)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.dtype == jnp.float32 and a.shape == images.shape
    c = augment_jit(jax.random.key(2), images)
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_identity_params(images: np.ndarray) -> None:
    n = len(images)
    flip, off = jnp.zeros(n, bool), jnp.full(n, 4, jnp.int32)
    out = apply_jit(images, flip, off, off)
    np.testing.assert_array_equal(np.asarray(out), images)
    np.testing.assert_array_equal(np.asarray(normalize(out)), np.asarray(normalize(images)))


def test_matches_numpy_reference(images: np.ndarray) -> None:
    flip = np.array([True, False, True, True, False, False, True, False])
    dy = np.array([0, 8, 3, 8, 1, 0, 4, 7], np.int32)
    dx = np.array([8, 0, 5, 2, 6, 0, 4, 8], np.int32)
    out = np.asarray(apply_jit(images, flip, dy, dx))
    for i in range(len(images)):
        np.testing.assert_array_equal(out[i], _np_flip_crop(images[i], flip[i], dy[i], dx[i]))
    # Hand-checked case, image 0 (flip, dy=0, dx=8): the top 4 rows are the top padding; the
    # crop ends in the right padding, which the flip moves to the left 4 columns.
    assert (out[0, :4] == 0).all() and (out[0, :, :4] == 0).all()
    assert (out[0, 4:, 4:] != 0).all()
    np.testing.assert_array_equal(out[0, 4:, 4:], images[0, :28, 4:][:, ::-1])


def test_padding_is_normalized_zero(images: np.ndarray) -> None:
    n = len(images)
    flip = jnp.zeros(n, bool)
    dy = jnp.zeros(n, jnp.int32)  # shifted down: top 4 rows are padding
    dx = jnp.full(n, 8, jnp.int32)  # shifted left: right 4 columns are padding
    raw = apply_jit(images, flip, dy, dx)
    out = np.asarray(normalize(raw))
    zero = (0.0 - MEAN) / STD
    np.testing.assert_allclose(out[:, :4], np.broadcast_to(zero, out[:, :4].shape), rtol=1e-6)
    np.testing.assert_allclose(out[:, :, -4:], np.broadcast_to(zero, out[:, :, -4:].shape),
                               rtol=1e-6)
    assert (np.asarray(raw)[:, 4:, :-4] != 0).all()  # inputs have no zero pixels


def test_augment_batch_is_normalized_random_flip_crop(images: np.ndarray) -> None:
    key = jax.random.key(3)
    flip, dy, dx = (np.asarray(a) for a in sample_jit(key, len(images)))
    raw = jax.jit(random_flip_crop)(key, images)
    assert raw.dtype == jnp.uint8
    want = np.stack([_np_flip_crop(images[i], flip[i], dy[i], dx[i])
                     for i in range(len(images))])
    np.testing.assert_array_equal(np.asarray(raw), want)
    np.testing.assert_allclose(np.asarray(augment_jit(key, images)),
                               (want / np.float32(255) - MEAN) / STD, rtol=1e-5, atol=1e-5)


def test_params_distribution() -> None:
    n = 20_000
    flip, dy, dx = sample_jit(jax.random.key(0), n)
    assert flip.dtype == jnp.bool_ and dy.dtype == jnp.int32 and dx.dtype == jnp.int32
    assert abs(float(jnp.mean(flip)) - 0.5) < 0.02  # ~5.7 sigma
    for off in (np.asarray(dy), np.asarray(dx)):
        assert off.min() == 0 and off.max() == 8
        counts = np.bincount(off, minlength=9)
        expected = n / 9
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 40.0, (chi2, counts)  # 8 dof: p ~ 3e-6
    # Independent per image: offsets on the two axes are not identical.
    assert (np.asarray(dy) != np.asarray(dx)).mean() > 0.8


def test_vmap_over_keys(images: np.ndarray) -> None:
    keys = jax.random.split(jax.random.key(5), 3)
    out = jax.jit(jax.vmap(augment_batch, in_axes=(0, None)))(keys, images)
    assert out.shape == (3, *images.shape)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(out[i]), np.asarray(augment_jit(keys[i], images)),
                                   rtol=1e-6, atol=1e-6)


def test_cutout_matches_darts_cutout():
    """DARTS' utils.Cutout: rows/cols [c - L//2, c + L//2) clipped, zeroed, same centres."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nhb.data.augment import cutout

    x = jnp.ones((64, 32, 32, 3), jnp.float32)
    key = jax.random.PRNGKey(3)
    for size in (0, 5, 16):
        out = np.asarray(jax.jit(cutout, static_argnums=2)(key, x, size))
        if size == 0:
            np.testing.assert_array_equal(out, np.asarray(x))
            continue
        k_y, k_x = jax.random.split(key)
        cy = np.asarray(jax.random.randint(k_y, (64, 1, 1), 0, 32))[:, 0, 0]
        cx = np.asarray(jax.random.randint(k_x, (64, 1, 1), 0, 32))[:, 0, 0]
        for i in range(64):
            mask = np.ones((32, 32), np.float32)
            y1, y2 = np.clip([cy[i] - size // 2, cy[i] + size // 2], 0, 32)
            x1, x2 = np.clip([cx[i] - size // 2, cx[i] + size // 2], 0, 32)
            mask[y1:y2, x1:x2] = 0.0
            np.testing.assert_array_equal(out[i], np.broadcast_to(mask[..., None], (32, 32, 3)))


def test_random_flip_mirrors_about_half_the_images():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nhb.data.augment import random_flip

    x = jnp.arange(200 * 4 * 5 * 1, dtype=jnp.int32).reshape(200, 4, 5, 1)
    out = np.asarray(jax.jit(random_flip)(jax.random.PRNGKey(0), x))
    flipped = np.array([np.array_equal(o, np.asarray(i)[:, ::-1]) for o, i in zip(out, x,
                                                                                  strict=True)])
    same = np.array([np.array_equal(o, np.asarray(i)) for o, i in zip(out, x, strict=True)])
    assert np.all(flipped ^ same) and 70 < flipped.sum() < 130
