"""Cheap-to-compile randomness for search loops: a counter-based hash of the key's data.

Every `jax.random` sampler (randint, categorical, split, ...) expands into its own threefry
computation; inside a vmapped `while_loop` on the CPU each costs about a second of XLA compile
time and is slow to run (measured: 100 steps x 500 runs of 80 uniforms, threefry 1.5 s compile
and 120 ms run; this hash 0.7 s and 7 ms). So the runner derives each step's key with
`step_key` and the strategies draw all the randomness of one `ask` with one `uniforms(key, n)`
call, carved up by the helpers below (which give exactly the distributions of `nhb2.sample`,
`nhb2.mutate` and categorical sampling, at the 24-bit resolution of the uniforms).

The generator is MurmurHash3's 32-bit finaliser applied to (key words, counter): a
well-mixed counter-based hash (every output bit depends on every input bit), adequate for
Monte-Carlo simulation of search runs but not cryptographic and not threefry's stream. Keys of
any `jax.random` implementation work (their data words are hashed). `tests/rng_test.py`-style
checks live in `tests/runner_test.py` (uniformity, independence across counters and keys).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from nhb.space import cells as _cells
from nhb.space import nhb2

N_SAMPLE = _cells.NUM_EDGES + 2  # uniforms used by `sample`
N_MUTATE = 2  # uniforms used by `mutate`
_CARDS = (*(_cells.NUM_OPS,) * _cells.NUM_EDGES, nhb2.NUM_LRS, nhb2.NUM_BS)


_GOLDEN = 0x9E3779B9


_U32 = jnp.uint32


def _shr(h: jax.Array, k: int) -> jax.Array:
    return lax.shift_right_logical(h, _U32(k))


def _fmix(h: jax.Array) -> jax.Array:
    """MurmurHash3 fmix32 (uint32 arithmetic wraps). Written with `lax` ops, which trace
    several times faster than `jnp`'s operators (this runs in every step of every search)."""
    h = lax.bitwise_xor(h, _shr(h, 16))
    h = lax.mul(h, _U32(0x85EBCA6B))
    h = lax.bitwise_xor(h, _shr(h, 13))
    h = lax.mul(h, _U32(0xC2B2AE35))
    return lax.bitwise_xor(h, _shr(h, 16))


def _key_words(key: jax.Array) -> jax.Array:
    """The key's data as uint32 words [n] (any implementation)."""
    d = jax.random.key_data(key)
    return lax.convert_element_type(d.reshape(d.size), jnp.uint32)


def _seed_words(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two mixed uint32 words from a key's data (any implementation)."""
    d = _key_words(key)
    a, b = _U32(0x243F6A88), _U32(0x85A308D3)
    for i in range(d.shape[0]):
        w = lax.index_in_dim(d, i, keepdims=False)
        a = _fmix(lax.bitwise_xor(a, w))
        b = _fmix(lax.add(b, lax.mul(w, _U32(2 * i + 1))))
    return a, b


def bits(key: jax.Array, counter: jax.Array) -> jax.Array:
    """uint32 hash of (key, counter) for each element of the uint32 `counter` array."""
    a, b = _seed_words(key)
    c = lax.convert_element_type(jnp.asarray(counter), jnp.uint32)
    h = lax.add(lax.add(lax.mul(c, _U32(_GOLDEN)), _U32(0x7F4A7C15)), b)
    return _fmix(lax.bitwise_xor(_fmix(h), a))


def uniforms(key: jax.Array, n: int) -> jax.Array:
    """n independent uniforms in [0, 1) (24-bit resolution) from one hash of the key."""
    h = bits(key, lax.iota(jnp.uint32, n))
    return lax.mul(lax.convert_element_type(_shr(h, 8), jnp.float32), jnp.float32(2.0**-24))


def step_key(key: jax.Array, step: jax.Array | int) -> jax.Array:
    """A new key (same implementation as `key`) for counter `step`, without threefry."""
    shape = jax.random.key_data(key).shape
    words = math.prod(shape)
    c = lax.add(lax.mul(lax.convert_element_type(step, jnp.uint32), _U32(words)),
                lax.iota(jnp.uint32, words))
    data = bits(key, lax.add(c, _U32(0x5BD1E995))).reshape(shape)
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))


def randint(u: jax.Array, n: int | jax.Array) -> jax.Array:
    """Uniform integers in [0, n) from uniforms u (elementwise)."""
    n = jnp.asarray(n)
    return jnp.minimum(jnp.floor(u * n).astype(jnp.int32), n - 1)


def sample(u: jax.Array) -> nhb2.Config:
    """A uniform config (as `nhb2.sample`) from `N_SAMPLE` uniforms."""
    v = randint(u[:N_SAMPLE], jnp.asarray(_CARDS))
    return nhb2.make(v[:_cells.NUM_EDGES], v[6], v[7])


def mutate(u: jax.Array, cfg: nhb2.Config, arch_only: bool = False) -> nhb2.Config:
    """`nhb2.mutate` from 2 uniforms: one of the 8 elements (of the 6 edges if `arch_only`),
    chosen uniformly, changed to a uniformly chosen different value."""
    n_pos = _cells.NUM_EDGES if arch_only else _cells.NUM_EDGES + 2
    pos = randint(u[0], n_pos)
    card = jnp.where(pos < 6, _cells.NUM_OPS, jnp.where(pos == 6, nhb2.NUM_LRS, nhb2.NUM_BS))
    shift = 1 + randint(u[1], card - 1)
    hot = jax.nn.one_hot(pos, _cells.NUM_EDGES, dtype=jnp.int32)
    cell = (cfg.cell.astype(jnp.int32) + hot * shift) % _cells.NUM_OPS
    lr = jnp.where(pos == 6, (cfg.lr + shift) % nhb2.NUM_LRS, cfg.lr)
    bs = jnp.where(pos == 7, (cfg.bs + shift) % nhb2.NUM_BS, cfg.bs)
    return nhb2.make(cell, lr, bs)


def categorical(u: jax.Array, logits: jax.Array) -> jax.Array:
    """Samples of categoricals over the last axis of `logits` (inverse CDF), one uniform each."""
    cdf = jnp.cumsum(jax.nn.softmax(logits, -1), -1)
    k = jnp.sum(cdf < u[..., None] * cdf[..., -1:], -1)
    return jnp.minimum(k, logits.shape[-1] - 1).astype(jnp.int32)
