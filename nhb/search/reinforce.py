"""REINFORCE (Williams 1992) with independent categoricals, as `bench_algos/reinforce.py`.

Policy: logits for 6 edges x 4 ops, 8 learning rates and 6 batch sizes, initialised to
`1e-3 * N(0, 1)`; a config is one sample of each categorical. After each full 12-epoch query
with reward r = validation accuracy (%), the baseline (a bias-corrected exponential moving
average with momentum 0.9) is updated with r *first*, then one Adam step (lr 0.01, PyTorch
defaults betas (0.9, 0.999), eps 1e-8) on `loss = -sum(log_prob(actions)) * (r - baseline)`.
The first step therefore has advantage 0 (the baseline equals r) but still advances Adam's
step count, as in PyTorch. A non-finite reward (failed/absent entry) skips the update (the
reference would turn the policy into NaN).

On a sub-space the policy is the product of categoricals restricted to the space and
renormalised: the lr / bs categoricals are over the allowed values only (the other logits are
kept but unused, so their gradient is 0), and the cell distribution is
pi(c) = prod_e softmax(l_e)[c_e] / Z over the covered cells, Z = sum over covered cells of the
product (computed exactly with a logsumexp over the covered list), so a cell is drawn by one
inverse-CDF categorical over the covered cells and the policy gradient of log pi is exact.
With all 4096 cells covered Z = 1 and the cells are drawn edge by edge as on the full space.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from nhb.bench.subspace import SearchSpace
from nhb.search import rng, sampling
from nhb.search.base import Strategy, pick
from nhb.space import cells as _cells
from nhb.space import nhb2


@struct.dataclass
class ReinforceParams:
    """REINFORCE settings.

    Attributes:
        learning_rate: Adam learning rate.
        ema_momentum: baseline EMA momentum.
        init_scale: std of the initial logits.
    """

    learning_rate: float = 0.01
    ema_momentum: float = 0.9
    init_scale: float = 1e-3


@struct.dataclass
class ReinforceState:
    """Policy logits {"cell": [6, 4], "lr": [8], "bs": [6]}, Adam state and the EMA."""

    logits: dict
    opt_state: optax.OptState
    ema_num: jax.Array
    ema_den: jax.Array
    steps: jax.Array


def cell_log_probs(logits_cell: jax.Array, digits: jax.Array) -> jax.Array:
    """Log-probabilities [N] of the cells `digits` [N, 6] under the product policy restricted
    to those N cells and renormalised."""
    lp_cell = jax.nn.log_softmax(logits_cell, -1)
    per = lp_cell[jnp.arange(_cells.NUM_EDGES), digits.astype(jnp.int32)].sum(-1)
    return per - jax.nn.logsumexp(per)


def _hp_log_prob(logits: jax.Array, index: jax.Array, allowed: tuple[int, ...],
                 slot: jax.Array, full: bool) -> jax.Array:
    if full:
        return pick(jax.nn.log_softmax(logits), index)
    return pick(jax.nn.log_softmax(logits[jnp.asarray(allowed)]), slot[index])


def log_prob(logits: dict, cfg: nhb2.Config, space: SearchSpace | None = None) -> jax.Array:
    """Log-probability of the config under the policy (restricted to `space`; None: full)."""
    sp = sampling.resolve(space)
    lp_cell = jax.nn.log_softmax(logits["cell"], -1)
    lp = pick(lp_cell, cfg.cell.astype(jnp.int32)).sum()  # gradient: a select, no scatter
    if not sp.all_cells:
        per = lp_cell[jnp.arange(_cells.NUM_EDGES), jnp.asarray(sampling.cell_digits(sp),
                                                                 jnp.int32)].sum(-1)
        lp -= jax.nn.logsumexp(per)
    full = sp.full_hps
    lp += _hp_log_prob(logits["lr"], cfg.lr, sp.lrs, jnp.asarray(sp.lr_slot), full)
    return lp + _hp_log_prob(logits["bs"], cfg.bs, sp.bss, jnp.asarray(sp.bs_slot), full)


def sample_policy(u: jax.Array, logits: dict, space: SearchSpace | None = None) -> nhb2.Config:
    """One config from the (restricted) policy with 8 uniforms."""
    sp = sampling.resolve(space)
    logits = jax.tree.map(jnp.asarray, logits)
    if sp.all_cells:
        cell = rng.categorical(u[:_cells.NUM_EDGES], logits["cell"])
    else:
        digits = jnp.asarray(sampling.cell_digits(sp))
        cell = digits[rng.categorical(u[0], cell_log_probs(logits["cell"], digits))]
    if sp.full_hps:
        return nhb2.make(cell, rng.categorical(u[6], logits["lr"]),
                         rng.categorical(u[7], logits["bs"]))
    lrs, bss = jnp.asarray(sp.lrs), jnp.asarray(sp.bss)
    return nhb2.make(cell, lrs[rng.categorical(u[6], logits["lr"][lrs])],
                     bss[rng.categorical(u[7], logits["bs"][bss])])


@dataclasses.dataclass(frozen=True)
class Reinforce(Strategy):
    """REINFORCE over the joint space with an EMA baseline (reference settings by default).

    Attributes:
        space: the space searched (None: full); see the module docstring.
    """

    space: SearchSpace | None = None
    name = "reinforce"

    def default_params(self) -> ReinforceParams:
        """lr 0.01, EMA momentum 0.9, init scale 1e-3."""
        return ReinforceParams()

    def _opt(self, params: ReinforceParams) -> optax.GradientTransformation:
        return optax.adam(params.learning_rate, b1=0.9, b2=0.999, eps=1e-8)

    def init(self, key: jax.Array, params: ReinforceParams) -> ReinforceState:
        """Logits `init_scale * N(0, 1)`, fresh Adam state, empty EMA."""
        z = params.init_scale * jax.random.normal(key, (nhb2.ONEHOT_DIM,))
        n = _cells.NUM_EDGES * _cells.NUM_OPS
        logits = {"cell": z[:n].reshape(_cells.NUM_EDGES, _cells.NUM_OPS),
                  "lr": z[n:n + nhb2.NUM_LRS], "bs": z[n + nhb2.NUM_LRS:]}
        zero = jnp.zeros((), jnp.float32)
        return ReinforceState(logits=logits, opt_state=self._opt(params).init(logits),
                              ema_num=zero, ema_den=zero, steps=jnp.zeros((), jnp.int32))

    def ask(self, key: jax.Array, state: ReinforceState,
            params: ReinforceParams) -> tuple[nhb2.Config, jax.Array, ReinforceState]:
        """One sample of each categorical (restricted to the space), at 12 epochs."""
        del params
        u = rng.uniforms(key, _cells.NUM_EDGES + 2)
        return sample_policy(u, state.logits, self.space), jnp.int32(self.full_epoch), state

    def baseline(self, state: ReinforceState) -> jax.Array:
        """The bias-corrected EMA of the rewards seen so far."""
        return state.ema_num / state.ema_den

    def tell(self, state: ReinforceState, cfg: nhb2.Config, fitness: jax.Array,
             params: ReinforceParams, cost: jax.Array | float = 0.0) -> ReinforceState:
        """EMA update with the reward, then one Adam step on the policy-gradient loss."""
        del cost
        m = params.ema_momentum
        ok = jnp.isfinite(fitness)
        r = jnp.where(ok, fitness, 0.0).astype(jnp.float32)
        num = m * state.ema_num + (1 - m) * r
        den = m * state.ema_den + (1 - m)
        advantage = r - num / den
        grads = jax.grad(lambda lg: -log_prob(lg, cfg, self.space) * advantage)(state.logits)
        updates, opt_state = self._opt(params).update(grads, state.opt_state, state.logits)
        new = ReinforceState(logits=optax.apply_updates(state.logits, updates),
                             opt_state=opt_state, ema_num=num, ema_den=den, steps=state.steps + 1)
        return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)
