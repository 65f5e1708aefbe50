"""Epoch batching with static shapes, usable under `jax.jit`, `vmap` and `lax.scan`.

An epoch over `n` examples is an index matrix `idx [num_batches, batch_size]` with a mask of
the same shape. The reference keeps the last partial batch (`drop_last=False`); here it is
padded with index 0 and `mask == False`, so every example appears exactly once among the
`True` entries and losses/accuracies should be averaged with the mask.
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp


def _check(n: int, batch_size: int) -> tuple[int, int]:
    """Validates the static sizes; returns them as Python ints."""
    out = []
    for name, v in (("n", n), ("batch_size", batch_size)):
        try:
            v = operator.index(v)
        except TypeError:
            raise ValueError(f"{name} must be a static positive int, got {v!r}") from None
        if v < 1:
            raise ValueError(f"{name} must be a static positive int, got {v!r}")
        out.append(v)
    return out[0], out[1]


def num_batches(n: int, batch_size: int) -> int:
    """Batches per epoch, keeping the last partial batch.

    Args:
        n: number of examples.
        batch_size: examples per batch.

    Returns:
        `ceil(n / batch_size)`.
    """
    n, batch_size = _check(n, batch_size)
    return -(-n // batch_size)


def _layout(order: jax.Array, n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    n, batch_size = _check(n, batch_size)
    nb = num_batches(n, batch_size)
    total = nb * batch_size
    idx = jnp.concatenate([order.astype(jnp.int32), jnp.zeros((total - n,), jnp.int32)])
    mask = jnp.arange(total) < n
    return idx.reshape(nb, batch_size), mask.reshape(nb, batch_size)


def epoch_batches(key: jax.Array, n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """A shuffled epoch laid out batch by batch.

    Args:
        key: PRNG key (may be traced).
        n: number of examples (static).
        batch_size: examples per batch (static).

    Returns:
        `(idx int32[nb, batch_size], mask bool[nb, batch_size])`, `nb = num_batches(n,
        batch_size)`: a random permutation of `range(n)` in row-major order, then padding
        (index 0, mask False) at the end of the last batch.
    """
    n, batch_size = _check(n, batch_size)
    return _layout(jax.random.permutation(key, n), n, batch_size)


def eval_batches(n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """Like `epoch_batches` but in the order `0..n-1`, for deterministic evaluation.

    Args:
        n: number of examples (static).
        batch_size: examples per batch (static).

    Returns:
        `(idx int32[nb, batch_size], mask bool[nb, batch_size])`.
    """
    n, batch_size = _check(n, batch_size)
    return _layout(jnp.arange(n, dtype=jnp.int32), n, batch_size)


def gather_batch(
    images: jax.Array, labels: jax.Array, idx_row: jax.Array, mask_row: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Fetches one batch.

    Args:
        images: `[n, ...]` all examples (on device).
        labels: `[n]`.
        idx_row: int `[batch_size]`, one row of an `epoch_batches`/`eval_batches` index matrix.
        mask_row: bool `[batch_size]`, the matching mask row.

    Returns:
        `(images[idx_row], labels[idx_row], mask_row)`.
    """
    return jnp.take(images, idx_row, axis=0), jnp.take(labels, idx_row, axis=0), mask_row
