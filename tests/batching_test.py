"""Tests for nhb.data.batching: static-shape epoch batching."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb.data.batching import epoch_batches, eval_batches, gather_batch, num_batches

N, BS = 103, 16  # 7 batches, the last one holds 103 % 16 = 7 examples

epoch_jit = jax.jit(epoch_batches, static_argnums=(1, 2))


def _check_epoch(idx: np.ndarray, mask: np.ndarray, n: int, bs: int) -> None:
    nb = num_batches(n, bs)
    assert idx.shape == (nb, bs) and mask.shape == (nb, bs)
    assert idx.dtype == np.int32 and mask.dtype == np.bool_
    np.testing.assert_array_equal(np.sort(idx[mask]), np.arange(n))  # each exactly once
    assert mask[:-1].all()
    assert mask[-1].sum() == (n % bs or bs)
    assert ((idx >= 0) & (idx < n)).all()  # padding is a valid index too


def test_num_batches() -> None:
    assert num_batches(103, 16) == 7
    assert num_batches(96, 16) == 6
    assert num_batches(1, 512) == 1
    assert num_batches(25_000, 512) == 49
    assert num_batches(np.int64(103), 16) == 7
    with pytest.raises(ValueError):
        num_batches(0, 16)
    with pytest.raises(ValueError):
        num_batches(10, 0)
    with pytest.raises(ValueError, match="static"):
        num_batches(10.0, 4)


@pytest.mark.parametrize(("n", "bs"), [(N, BS), (96, 16), (5, 8), (1, 1)])
def test_epoch_covers_every_index_once(n: int, bs: int) -> None:
    idx, mask = epoch_jit(jax.random.key(0), n, bs)
    _check_epoch(np.asarray(idx), np.asarray(mask), n, bs)


def test_last_batch_partial() -> None:
    idx, mask = (np.asarray(a) for a in epoch_jit(jax.random.key(1), N, BS))
    np.testing.assert_array_equal(mask[-1], np.arange(BS) < N % BS)
    assert (idx[-1, N % BS:] == 0).all()


def test_shuffled_and_key_dependent() -> None:
    a = np.asarray(epoch_jit(jax.random.key(0), N, BS)[0])
    b = np.asarray(epoch_jit(jax.random.key(0), N, BS)[0])
    c = np.asarray(epoch_jit(jax.random.key(1), N, BS)[0])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a.ravel()[:N], np.arange(N))


def test_eval_batches_in_order() -> None:
    idx, mask = (np.asarray(a) for a in eval_batches(N, BS))
    _check_epoch(idx, mask, N, BS)
    np.testing.assert_array_equal(idx.ravel()[:N], np.arange(N))
    ej = jax.jit(eval_batches, static_argnums=(0, 1))(N, BS)
    np.testing.assert_array_equal(np.asarray(ej[0]), idx)


def test_scan_over_epochs() -> None:
    """Batch loop inside an epoch loop, both `lax.scan`, key split per epoch."""
    labels = jnp.arange(N, dtype=jnp.int32) * 3
    images = jnp.arange(N, dtype=jnp.float32)[:, None]

    @functools.partial(jax.jit, static_argnums=1)
    def run(key: jax.Array, num_epochs: int) -> tuple[jax.Array, jax.Array]:
        def epoch(key, _):
            key, k_epoch = jax.random.split(key)
            idx, mask = epoch_batches(k_epoch, N, BS)

            def step(total, batch):
                x, y, m = gather_batch(images, labels, *batch)
                return total + jnp.sum(jnp.where(m, y, 0)), jnp.sum(jnp.where(m, x[:, 0], 0))

            total, _ = jax.lax.scan(step, jnp.int32(0), (idx, mask))
            return key, (idx, total)

        _, (idxs, totals) = jax.lax.scan(epoch, key, None, length=num_epochs)
        return idxs, totals

    idxs, totals = run(jax.random.key(7), 4)
    idxs = np.asarray(idxs)
    assert idxs.shape == (4, 7, BS)
    np.testing.assert_array_equal(np.asarray(totals), np.full(4, 3 * N * (N - 1) // 2))
    mask = np.asarray(eval_batches(N, BS)[1])
    for e in range(4):
        _check_epoch(idxs[e], mask, N, BS)
    assert len({idxs[e].tobytes() for e in range(4)}) == 4  # a new permutation every epoch


def test_vmap_over_keys() -> None:
    keys = jax.random.split(jax.random.key(3), 5)
    idx, mask = jax.jit(jax.vmap(lambda k: epoch_batches(k, N, BS)))(keys)
    idx, mask = np.asarray(idx), np.asarray(mask)
    assert idx.shape == (5, 7, BS) and mask.shape == (5, 7, BS)
    for i in range(5):
        _check_epoch(idx[i], mask[i], N, BS)
    np.testing.assert_array_equal(idx[2], np.asarray(epoch_jit(keys[2], N, BS)[0]))
