"""DHA's augmentation policy: 196 pair logits, Gumbel-softmax sampling, importance-weighted loss.

Reference (`../shared/reference/dha.md` §1, `kaichen-z/DHA`):

* tau: 14 x 14 = 196 ordered-pair logits (flattened here, pair k = (k // 14, k % 14),
  `nhb.data.autoaugment.decode_pairs`), initialised to 1/196 everywhere so p = softmax(tau)
  starts uniform (`model/hpo_da.py:68-69`);
* every step ONE Gumbel-softmax draw q = softmax((g + log p) / T) over the 196 entries is the
  categorical distribution of the whole batch's pairs (`hpo_da.py:78-87`,
  `searchmanager_darts.py:545`). nhb draws q at the start of the step and augments that step's
  batch with it; the reference's loader augments with the previous step's draw (a DataLoader
  artefact, and with worker processes an even older one);
* L_DA = -mean_k(stopgrad(l_k) * p[pair_k]) with l_k the per-sample training loss (+ aux head
  loss), minimised by its own SGD (`hpo_da.py:92-99`, `searchmanager_darts.py:532-533,557`).
  Its gradient is dL/dtau_j = -(1/n) sum_k l_k p_{a_k} (delta_{a_k j} - p_j).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from nhb.data.autoaugment import NUM_PAIRS, OP_NAMES, decode_pairs

MAX_ENTROPY = float(jnp.log(NUM_PAIRS))  # ln 196 = 5.278, the uniform policy's entropy


def init_policy() -> jax.Array:
    """Pair logits tau [196] = 1/196 each (uniform p), as the reference."""
    return jnp.full((NUM_PAIRS,), 1.0 / NUM_PAIRS, jnp.float32)


def probabilities(tau: jax.Array) -> jax.Array:
    """p = softmax over all 196 pair logits."""
    return jax.nn.softmax(tau)


def gumbel_draw(key: jax.Array, tau: jax.Array, temperature: float | jax.Array) -> jax.Array:
    """One Gumbel-softmax sample q = softmax((g + log p) / T), the batch's pair distribution.

    Args:
        key: PRNG key.
        tau: pair logits [196].
        temperature: T > 0 (lower = peakier draws).

    Returns:
        q [196], a probability vector.
    """
    g = jax.random.gumbel(key, tau.shape, jnp.float32)
    return jax.nn.softmax((g + jax.nn.log_softmax(tau)) / temperature)


def sample_pairs(key: jax.Array, q: jax.Array, n: int) -> jax.Array:
    """n pair codes drawn i.i.d. from the categorical q [196] (int32 [n])."""
    return jax.random.categorical(key, jnp.log(q), shape=(n,)).astype(jnp.int32)


def da_loss(tau: jax.Array, sample_losses: jax.Array, pairs: jax.Array,
            mask: jax.Array | None = None) -> jax.Array:
    """The importance-weighted DA loss -mean_k(stopgrad(l_k) * p[pair_k]).

    Args:
        tau: pair logits [196].
        sample_losses: per-sample training losses l_k [n] (gradients are stopped).
        pairs: the samples' pair codes [n].
        mask: optional [n] valid-example mask (the mean is over valid samples).

    Returns:
        The scalar loss; its gradient raises p for pairs with above-average loss.
    """
    p = probabilities(tau)[pairs]
    w = jax.lax.stop_gradient(sample_losses) * p
    if mask is None:
        return -jnp.mean(w)
    m = mask.astype(jnp.float32)
    return -jnp.sum(w * m) / jnp.maximum(jnp.sum(m), 1.0)


def entropy(tau: jax.Array) -> jax.Array:
    """Entropy of p in nats (ln 196 = 5.278 at the uniform start)."""
    logp = jax.nn.log_softmax(tau)
    return -jnp.sum(jnp.exp(logp) * logp)


def top_pairs(tau, k: int = 5) -> list[tuple[str, str, float]]:
    """The k most probable pairs as (first op, second op, probability), host-side."""
    import numpy as np

    p = np.asarray(probabilities(jnp.asarray(tau)))
    order = np.argsort(-p, kind="stable")[:k]
    first, second = decode_pairs(order)
    return [(OP_NAMES[int(a)], OP_NAMES[int(b)], float(p[i]))
            for a, b, i in zip(np.asarray(first), np.asarray(second), order, strict=True)]


def policy_optimizer(learning_rate: float, momentum: float = 0.0, nesterov: bool = False,
                     weight_decay: float = 0.0) -> optax.GradientTransformation:
    """PyTorch `SGD([tau], lr, momentum, nesterov, weight_decay)` (coupled decay) with an
    injectable learning rate (the retrain phase switches it to `d_lr_tune`)."""

    def sgd(learning_rate):
        return optax.chain(optax.add_decayed_weights(weight_decay),
                           optax.sgd(learning_rate, momentum=momentum or None,
                                     nesterov=nesterov))

    return optax.inject_hyperparams(sgd)(learning_rate=learning_rate)
