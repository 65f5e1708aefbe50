"""One jitted DHA step in the reference's order, and the epoch and evaluation around it.

Reference order (`../shared/reference/dha.md` §4, `searchmanager_darts.py:543-581`):

1. draw the batch's pair distribution q (Gumbel-softmax over the policy) and augment the
   batch with it (flip, two ops, normalise, optional Cutout); variants without DA use the
   standard crop + flip;
2. forward the batch through the supernet with alpha from the codes b (Eq. 7);
3. DA: SGD step on the policy logits with the importance-weighted loss;
4. the same backward gives the gradients of the weights and of b; Adam step on b (frozen
   nodes excluded);
5. the weight step, differentiable in (lr, wd) with HPO;
6. HPO: the hyper batch (un-augmented, from the training set's last `val_ratio` fraction)
   through the network with w' and alpha from the new b; SGD on (lr, wd), clamp.

Every variant and phase composes the same `make_step`. What differs is traced (`Phase`:
DA or crop + flip, code training with freezing, the retrain phase's fixed alpha and
trainable affines, the magnitude cap; drop-path is an argument) or a static program choice
(`hpo_step`, the two-stage search's `bilevel` code step, the `active` ops). An epoch is a
`lax.scan` of the step on accelerators and a host loop over the jitted step on CPUs
(`make_train_epoch`); `batched=True` runs several seeds at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from nhb.data.augment import augment_batch, cutout, normalize, random_flip
from nhb.data.autoaugment import augment_pairs
from nhb.data.batching import epoch_batches, eval_batches
from nhb.dha import hpo, ista, policy
from nhb.dha.config import DHAConfig
from nhb.dha.networks import Network
from nhb.train.grid import resolve_sgd_loop


@struct.dataclass
class DHAState:
    """Everything a DHA run carries between steps (a pytree; vmappable over seeds).

    Attributes:
        params / batch_stats: the supernet's variables.
        w_opt: the weight update's state (`hpo.weight_optimizer`; its hyperparams hold the
            lr and weight decay in use).
        hparams: {"learning_rate", "weight_decay"}: learned (HPO) or scheduled values.
        h_opt: SGD state of (lr, wd).
        tau / tau_opt: the DA policy's 196 pair logits and their SGD state.
        ista: the sparse-coding state (codes b, measurements, x, support, frozen nodes).
        b_opt: Adam state of the codes.
        alphas: the architecture weights of the retrain phase (fixed); unused in search.
        key: the run's PRNG key.
        step: global step count.
    """

    params: Any
    batch_stats: Any
    w_opt: Any
    hparams: dict
    h_opt: Any
    tau: jax.Array
    tau_opt: Any
    ista: Any
    b_opt: Any
    alphas: jax.Array
    key: jax.Array
    step: jax.Array


@struct.dataclass
class Phase:
    """What one phase of one variant does, as traced flags (scalars; see the module doc).

    Variants and phases that share the static choices of `make_step` (`hpo`, `bilevel`,
    `active`) run the same compiled step: the flags pick branches with `lax.cond` (only the
    taken branch runs unless the flags are batched) or `jnp.where`.

    Attributes:
        da: learn the policy and augment with it (else crop + flip).
        train_codes: one-stage search: b from the training loss, with node freezing.
        retrain: alpha fixed (`DHAState.alphas`) and every BatchNorm affine trains.
        magnitude: cap of the op magnitudes in this phase.
    """

    da: jax.Array
    train_codes: jax.Array
    retrain: jax.Array
    magnitude: jax.Array

    @classmethod
    def make(cls, *, da: bool, train_codes: bool = False, retrain: bool = False,
             magnitude: float = 10.0) -> Phase:
        """From Python values."""
        b = lambda v: jnp.asarray(bool(v))
        return cls(da=b(da), train_codes=b(train_codes), retrain=b(retrain),
                   magnitude=jnp.float32(magnitude))


@struct.dataclass
class EpochStats:
    """The training loop's meters of one epoch."""

    loss: jax.Array
    acc: jax.Array
    hyper_loss: jax.Array
    nonfinite: jax.Array


def per_sample_ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy of each example."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over the valid examples."""
    m = mask.astype(jnp.float32)
    return jnp.sum(values * m) / jnp.maximum(jnp.sum(m), 1.0)


def hyper_pool(config: DHAConfig, n_train: int) -> tuple[int, int]:
    """(first index, size) of the training split's tail that feeds the hyper batches."""
    size = max(1, min(n_train, round(config.val_ratio * n_train)))
    return n_train - size, size


def optimizers(config: DHAConfig) -> dict[str, optax.GradientTransformation]:
    """The four update rules. Their step sizes live in the states' injected hyperparameters
    (`nhb.dha.run.start_retrain` switches the policy and HPO ones to the `_tune` values)."""
    return {
        "w": hpo.weight_optimizer(config.w_lr, config.w_weight_decay, config.w_momentum,
                                  config.grad_clip),
        "h": hpo.hyper_optimizer(config.h_lr, momentum=config.h_momentum),
        "tau": policy.policy_optimizer(config.d_lr, momentum=config.d_momentum),
        "b": ista.code_optimizer(config.alpha_lr, config.alpha_weight_decay),
    }


def init_state(key: jax.Array, config: DHAConfig, network: Network) -> DHAState:
    """Fresh weights, codes, policy and hyperparameters (the midpoints of their bounds)."""
    k_net, k_ista, k_run = jax.random.split(key, 3)
    variables = network.init(k_net)
    opts = optimizers(config)
    codes = ista.init_ista(k_ista, network.space, config.proj_dims)
    hparams = (hpo.midpoints(config.hparam_bounds) if config.variant_spec.hpo
               else {"learning_rate": jnp.float32(config.w_lr),
                     "weight_decay": jnp.float32(config.w_weight_decay)})
    tau = policy.init_policy()
    return DHAState(params=variables["params"], batch_stats=variables["batch_stats"],
                    w_opt=opts["w"].init(variables["params"]), hparams=hparams,
                    h_opt=opts["h"].init(hparams), tau=tau, tau_opt=opts["tau"].init(tau),
                    ista=codes, b_opt=opts["b"].init(codes.b),
                    alphas=ista.alphas(codes), key=k_run, step=jnp.zeros((), jnp.int32))


def make_step(config: DHAConfig, network: Network, n_train: int,
              active: tuple | None = None, bilevel: bool = False,
              hpo_step: bool = False) -> Callable:
    """The jittable step `(state, phase, row, mask, drop_prob, data) -> (state, (loss,
    correct, hyper_loss))` (`row`: the batch's training indices, `mask`: the valid ones).

    Args:
        config / network / n_train: the run's settings, supernet and training-set size.
        active: static support the module computes (None = every op).
        bilevel: the two-stage search's program: b steps on the hyper batch before the
            weight step; no DA, no HPO.
        hpo_step: the hypergradient step on (lr, wd) (else the weights step with the
            scheduled lr in `state.hparams`).

    `bilevel` and `hpo_step` are static (separate programs), not `Phase` flags: XLA's CPU
    backend runs convolutions inside `lax.cond` branches about 14x slower than outside
    (measured: a DHA step 2.3 s with the HPO branch under `lax.cond`, 0.3 s without).
    """
    module = network.module(active)
    opts = optimizers(config)
    bounds = config.hparam_bounds
    h0, hn = hyper_pool(config, n_train)
    bs, shape = config.batch_size, (network.space.num_cell_types, network.space.num_nodes)

    def alphas_of(state, phase, b):
        return jnp.where(phase.retrain, state.alphas, ista.alphas(state.ista.replace(b=b)))

    def augment(key, phase, x_raw, tau):
        k_q, k_pairs, k_flip, k_ops, k_cut = jax.random.split(key, 5)
        n = x_raw.shape[0]

        def with_policy(_):
            q = policy.gumbel_draw(k_q, tau, config.temperature)
            pairs = policy.sample_pairs(k_pairs, q, n)
            x = augment_pairs(k_ops, random_flip(k_flip, x_raw), pairs, phase.magnitude)
            return normalize(x), pairs

        def standard(_):
            return augment_batch(k_flip, x_raw), jnp.zeros((n,), jnp.int32)

        if bilevel:
            x, pairs = standard(None)
        else:
            x, pairs = jax.lax.cond(phase.da, with_policy, standard, None)
        return cutout(k_cut, x, config.cutout_size), pairs

    def forward_loss(params, batch_stats, x, y, m, alphas, drop_prob, key, use_aux):
        variables = {"params": params, "batch_stats": batch_stats}
        logits, aux, new_stats = network.apply_train(module, variables, x, alphas, m,
                                                     drop_prob, key)
        ce = per_sample_ce(logits, y)
        if use_aux and aux is not None:
            ce = ce + config.aux_weight * per_sample_ce(aux, y)
        correct = jnp.sum((jnp.argmax(logits, -1) == y) * m)
        return masked_mean(ce, m), (ce, new_stats, correct)

    def step(state, phase, row, m, drop_prob, data):
        key = jax.random.fold_in(state.key, state.step)
        k_aug, k_hyper, k_drop, k_drop2 = jax.random.split(key, 4)
        x, pairs = augment(k_aug, phase, data.train_x[row], state.tau)
        y = data.train_y[row]
        h_idx = h0 + jax.random.choice(k_hyper, hn, (bs,), replace=hn < bs)
        x_h, y_h, m_h = normalize(data.train_x[h_idx]), data.train_y[h_idx], jnp.ones(bs, bool)

        b, b_opt, batch_stats = state.ista.b, state.b_opt, state.batch_stats
        if bilevel:  # two-stage ISTA: b on the held-out batch first, then the weights
            def code_loss(b):
                out = forward_loss(state.params, batch_stats, x_h, y_h, m_h,
                                   alphas_of(state, phase, b), drop_prob, k_drop2, True)
                return out[0], out[1][1]

            g_b, batch_stats = jax.grad(code_loss, has_aux=True)(b)
            upd, b_opt = opts["b"].update(g_b, b_opt, b)
            b = optax.apply_updates(b, upd)

        (loss, (ce, batch_stats, correct)), (g_w, g_b) = jax.value_and_grad(
            lambda p, b: forward_loss(p, batch_stats, x, y, m, alphas_of(state, phase, b),
                                      drop_prob, k_drop, True),
            argnums=(0, 1), has_aux=True)(state.params, b)

        g_tau = jax.grad(policy.da_loss)(state.tau, ce, pairs, m)
        upd, tau_opt = opts["tau"].update(g_tau, state.tau_opt, state.tau)
        tau = jnp.where(phase.da, optax.apply_updates(state.tau, upd), state.tau)
        tau_opt = jax.tree.map(lambda a, o: jnp.where(phase.da, a, o), tau_opt, state.tau_opt)

        upd, b_opt_new = opts["b"].update(g_b, b_opt, b)
        upd = ista.mask_frozen_updates(upd, state.ista.frozen)
        b = jnp.where(phase.train_codes, optax.apply_updates(b, upd), b)
        b_opt = jax.tree.map(lambda a, o: jnp.where(phase.train_codes, a, o), b_opt_new, b_opt)
        frozen = jnp.where(phase.retrain, True,
                           jnp.where(phase.train_codes, state.ista.frozen, False))
        mask = network.affine_mask(state.params, jnp.broadcast_to(frozen, shape))

        if hpo_step and not bilevel:  # w' differentiable in (lr, wd); the hyper batch at w'
            def hyper(hp):
                params, w_opt = hpo.unrolled_update(opts["w"], hp, state.params, g_w,
                                                    state.w_opt, mask)
                out = forward_loss(params, batch_stats, x_h, y_h, m_h,
                                   alphas_of(state, phase, b), drop_prob, k_drop2, False)
                return out[0], (params, w_opt, out[1][1])

            (hyper_loss, (params, w_opt, batch_stats)), g_h = jax.value_and_grad(
                hyper, has_aux=True)(state.hparams)
            upd, h_opt = opts["h"].update(g_h, state.h_opt, state.hparams)
            hparams = hpo.clamp(optax.apply_updates(state.hparams, upd), bounds)
        else:  # the scheduled lr in state.hparams
            params, w_opt = hpo.unrolled_update(opts["w"], state.hparams, state.params, g_w,
                                                state.w_opt, mask)
            hparams, h_opt, hyper_loss = state.hparams, state.h_opt, jnp.float32(jnp.nan)
        new_state = state.replace(
            params=jax.lax.stop_gradient(params), batch_stats=batch_stats, w_opt=w_opt,
            hparams=hparams, h_opt=h_opt, tau=tau, tau_opt=tau_opt,
            ista=state.ista.replace(b=b), b_opt=b_opt, step=state.step + 1)
        return new_state, (loss, correct, hyper_loss)

    return step


def make_train_epoch(config: DHAConfig, network: Network, n_train: int,
                     active: tuple | None = None, bilevel: bool = False,
                     hpo_step: bool = False, sgd_loop: str = "auto",
                     batched: bool = False) -> Callable:
    """`(state, phase, epoch, drop_prob, data) -> (state, EpochStats)`: one shuffled epoch of
    `make_step` (the last batch is partial and masked, not dropped).

    Args:
        config / network / n_train / active / bilevel / hpo_step: see `make_step`.
        sgd_loop: "scan" (the epoch is one jittable `lax.scan`, for accelerators), "host"
            (a host loop over the jitted step: XLA:CPU runs weight-gradient convolutions far
            slower inside a loop carrying the weights, `nhb.train.grid`), or "auto" (host on
            CPUs).
        batched: the state has a leading seed axis (several runs at once, data and flags
            shared): the step is vmapped.

    Returns:
        The epoch function; with "scan" it is jittable (the caller jits it), with "host" it
        is a Python function calling jitted pieces.
    """
    step = make_step(config, network, n_train, active, bilevel, hpo_step)
    loop = resolve_sgd_loop(sgd_loop)

    def batches(key, epoch):
        k_perm = jax.random.fold_in(jax.random.fold_in(key, 1_000_003), epoch)
        return epoch_batches(k_perm, n_train, config.batch_size)

    def finish(losses, corrects, hyper_losses):
        return EpochStats(loss=jnp.mean(losses, 0), acc=100.0 * jnp.sum(corrects, 0) / n_train,
                          hyper_loss=jnp.mean(hyper_losses, 0),
                          nonfinite=~jnp.all(jnp.isfinite(losses), 0))

    if loop == "scan":
        def one_run(state, phase, epoch, drop_prob, data):
            idx, mask = batches(state.key, epoch)

            def body(s, inp):
                row, m = inp
                return step(s, phase, row, m, drop_prob, data)

            state, outs = jax.lax.scan(body, state, (idx, mask))
            return state, finish(*outs)

        if not batched:
            return one_run
        return jax.vmap(one_run, in_axes=(0, None, None, None, None))

    jstep = jax.jit(step if not batched else jax.vmap(step, in_axes=(0, None, 0, 0, None, None)))
    jbatches = jax.jit(batches if not batched else jax.vmap(batches, in_axes=(0, None)))
    jfinish = jax.jit(finish)

    def host_epoch(state, phase, epoch, drop_prob, data):
        idx, mask = jbatches(state.key, epoch)
        outs = []
        for i in range(idx.shape[-2]):
            row = idx[..., i, :]
            m = mask[..., i, :]
            state, out = jstep(state, phase, row, m, drop_prob, data)
            outs.append(out)
        return state, jfinish(*(jnp.stack(o) for o in zip(*outs, strict=True)))

    return host_epoch


def make_evaluate(config: DHAConfig, network: Network, active: tuple | None,
                  batch_size: int = 256) -> Callable:
    """`(state, alphas, images, labels) -> (acc %, mean CE)`: eval-mode pass, no augmentation
    (and no Cutout: nhb does not copy the release's Cutout on the test set)."""
    module = network.module(active)

    def evaluate(state, alphas, images, labels):
        n = images.shape[0]
        idx, mask = eval_batches(n, min(batch_size, n))
        variables = {"params": state.params, "batch_stats": state.batch_stats}

        def body(carry, inp):
            row, m = inp
            logits = network.apply_eval(module, variables, normalize(images[row]), alphas)
            ce = per_sample_ce(logits, labels[row])
            correct = jnp.sum((jnp.argmax(logits, -1) == labels[row]) * m)
            return carry, (jnp.sum(ce * m), correct)

        _, (ce_sum, correct) = jax.lax.scan(body, None, (idx, mask))
        return 100.0 * jnp.sum(correct) / n, jnp.sum(ce_sum) / n

    return evaluate
