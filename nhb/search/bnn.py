"""Bayesian neural-network regression by adaptive SGHMC (pybnn's Bohamiann; NAGO's surrogate).

NAGO's MOBO models each objective with an SGHMC BNN (paper P:25-27, P:240): 3 fully-connected
tanh layers of 10 units, two outputs (mean, log-variance), "all else pybnn defaults". This
follows pybnn 0.0.5 (`bohamiann.py`, `priors.py`, `util/layers.py`, `util/normalization.py`;
the sampler is `nhb.search.sghmc`):

- network: Linear-tanh per hidden layer, then Linear(h, 2) [heteroscedastic] or Linear(h, 1)
  plus AppendLayer, one learned constant log-variance init log(1e-3) [homoscedastic]; torch's
  default Linear init, weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in));
- minibatch loss (b rows; the sampler scales its gradient by N, so the potential is
  N * loss): `mean_b[0.5 (y - mu)^2 / (exp(lv) + 1e-16) + 0.5 lv] - lvp / N - wp / N`,
  `lvp = mean_b[-(lv - log 1e-6)^2 / (2 * 0.01) - 0.5 log 0.01]` on output[:, 1],
  `wp = sum(-0.5 p^2) / #params` over all parameters (AppendLayer's included);
- inputs and targets z-scored with the training mean and population std (a constant input
  column gets std 1 instead of pybnn's division by zero);
- minibatches as torch's `DataLoader(shuffle=True)` behind `infinite_dataloader`: each epoch a
  fresh permutation cut into ceil(N / b) batches, the last one short (the loss divides by its
  true size), b = min(batch_size, N);
- the state after the update with 0-based index s is kept iff `s > num_burn_in_steps and
  (s - num_burn_in_steps) % keep_every == 0` (bohamiann.py:310); the sampler adapts in
  updates s < num_burn_in_steps;
- predict: mean = mean of sample means; var = mean over samples of (squared deviation +
  exp(log-variance)); then `mean * y_std + y_mean`, `var * y_std**2`.

Behaviour to know: pybnn's log-variance prior (mean log 1e-6, variance 0.01) weighs like one
data point with a gradient of (lv + 13.8) / 0.01, so at N ~ 150 the fitted noise variance is
~15-20x smaller than the squared residuals (measured on a 1-D set: test E[r^2 / var] ~ 14-18,
~0.93 with `log_var_prior=False`): test NLLs are large, as in NAGO's Table 1.

Assumptions (numbers the paper lost or pybnn leaves open; all in `BNNConfig`):
- burn-in 3000 (pybnn's default; NAGO's is lost); keep every 10th, 100 samples (paper);
- lr 1e-2: pybnn 0.0.5's `Bohamiann.train` defaults to 1e-5 (lr**2 = 1e-10 per step barely
  moves the chain); its `train_and_evaluate` and RoBO's wrapper use 1e-2, as here;
- heteroscedastic head = Linear(h, 2), log-variance prior kept (not published);
- `num_steps = burn-in + keep_every * num_samples + 1`, the fewest pybnn steps that keep
  `num_samples` states (pybnn's 13000 steps keep 99; `pybnn_default()` keeps those 99 and
  skips the 99 steps after the last one, which change nothing pybnn returns);
- `num_chains` (vmapped, samples pooled) is nhb's extension; pybnn runs one chain;
- float32 (float64 when `jax_enable_x64` is on; pybnn uses float64): the constants (epsilon
  1e-10, the 1e-16 floors) are representable, and on `benchmarks/bnn_fit.py`'s set the test
  NLL matches pybnn's within the seed spread (3 seeds: 10.0 +- 1.8 vs 10.7 +- 1.4);
- `table1` (NAGO Table 1: het vs hom, median test NLL / RMSE over 10 random splits): the
  split ratio is lost, 20% test is assumed.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.flatten_util import ravel_pytree

from nhb.search import sghmc

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class BNNConfig:
    """BNN surrogate settings (DESIGN §4 defaults; see the module docstring for sources).

    Attributes:
        hidden: hidden layer widths, tanh after each (paper: 3 x 10).
        heteroscedastic: True: two outputs (mean, log-variance); False: AppendLayer.
        lr, mdecay, epsilon: adaptive SGHMC constants (pybnn: 1e-2 [assumed, see above],
            0.05, 1e-10).
        batch_size: minibatch size (pybnn 20).
        num_burn_in_steps: burn-in updates (pybnn's 3000; the paper's number is lost).
        keep_every: keep every k-th state after burn-in (paper 10).
        num_samples: samples kept per chain (paper 100).
        num_chains: independent chains, vmapped, samples pooled (pybnn: 1).
        log_var_init: AppendLayer's initial log-variance (log 1e-3).
        log_var_prior: apply pybnn's log-variance prior to output[:, 1].
        log_var_prior_mean: the prior's mean is log(this) (pybnn 1e-6).
        log_var_prior_var: the prior's variance (pybnn 0.01).
        weight_decay: pybnn's `wdecay` of the N(0, 1/wdecay) weight prior (1.0).
    """

    hidden: tuple[int, ...] = (10, 10, 10)
    heteroscedastic: bool = True
    lr: float = 1e-2
    mdecay: float = 0.05
    epsilon: float = 1e-10
    batch_size: int = 20
    num_burn_in_steps: int = 3000
    keep_every: int = 10
    num_samples: int = 100
    num_chains: int = 1
    log_var_init: float = math.log(1e-3)
    log_var_prior: bool = True
    log_var_prior_mean: float = 1e-6
    log_var_prior_var: float = 0.01
    weight_decay: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("batch_size", "keep_every", "num_samples", "num_chains"):
            if getattr(self, name) < 1:
                raise ValueError(f"BNNConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_burn_in_steps < 0 or any(h < 1 for h in self.hidden):
            raise ValueError(f"BNNConfig needs num_burn_in_steps >= 0 and hidden widths >= 1, "
                             f"got {self.num_burn_in_steps}, {self.hidden}")
        if self.lr <= 0 or self.log_var_prior_var <= 0 or self.log_var_prior_mean <= 0:
            raise ValueError("BNNConfig.lr, log_var_prior_mean and log_var_prior_var must be > 0")

    @classmethod
    def pybnn_default(cls) -> BNNConfig:
        """pybnn Bohamiann's defaults: 2 x 50 tanh, AppendLayer, burn-in 3000, keep every 100.

        pybnn's `train(num_steps=13000)` keeps 99 samples (steps 3100, ..., 12900); this
        config keeps the same 99 and stops after the last (12901 steps). lr 1e-2 (see the
        module docstring).
        """
        return cls(hidden=(50, 50), heteroscedastic=False, num_burn_in_steps=3000,
                   keep_every=100, num_samples=99)

    @property
    def num_steps(self) -> int:
        """Sampler updates per chain: burn-in + keep_every * num_samples + 1."""
        return self.num_burn_in_steps + self.keep_every * self.num_samples + 1

    def hyper(self, n: int) -> sghmc.SGHMCHyper:
        """The sampler constants for `n` training points (scale_grad = n)."""
        return sghmc.SGHMCHyper(lr=self.lr, mdecay=self.mdecay, epsilon=self.epsilon,
                                num_burn_in_steps=self.num_burn_in_steps, scale_grad=float(n))


@struct.dataclass
class BNNPosterior:
    """Pooled SGHMC samples and the normalisation they were fit under.

    Attributes:
        params: network parameters stacked on a leading sample axis [S, ...]
            (S = num_chains * num_samples, chain-major).
        x_mean, x_std: input z-scoring, [d].
        y_mean, y_std: target z-scoring, scalars.
        steps: 0-based sampler step after which each sample was recorded, [S].
    """

    params: Params
    x_mean: jax.Array
    x_std: jax.Array
    y_mean: jax.Array
    y_std: jax.Array
    steps: jax.Array


def kept_steps(config: BNNConfig) -> np.ndarray:
    """pybnn's rule: 0-based steps s < num_steps with s > burn-in and (s - burn-in) % keep == 0.

    Args:
        config: the settings.

    Returns:
        int array [num_samples].
    """
    b, k = config.num_burn_in_steps, config.keep_every
    return np.array([s for s in range(config.num_steps) if s > b and (s - b) % k == 0])


def init_params(key: jax.Array, config: BNNConfig, d: int, dtype: Any = jnp.float32) -> Params:
    """torch `nn.Linear` default init: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Args:
        key: PRNG key.
        config: the settings (widths, head).
        d: input dimension.
        dtype: parameter dtype.

    Returns:
        {"layers": ({"w": [in, out], "b": [out]}, ...)} plus "log_var" [1, 1] (AppendLayer)
        for the homoscedastic model.
    """
    widths = (d, *config.hidden, 2 if config.heteroscedastic else 1)
    shapes = [shape for fan_in, fan_out in itertools.pairwise(widths)
              for shape in ((fan_in, fan_out), (fan_out,))]
    u = jax.random.uniform(key, (sum(math.prod(s) for s in shapes),), dtype, -1.0, 1.0)
    offsets = np.cumsum([0] + [math.prod(s) for s in shapes])
    arrays = [u[a:b].reshape(s) for a, b, s in zip(offsets[:-1], offsets[1:], shapes,
                                                   strict=True)]
    layers = [{"w": arrays[2 * i] / math.sqrt(fan_in), "b": arrays[2 * i + 1] / math.sqrt(fan_in)}
              for i, fan_in in enumerate(widths[:-1])]
    params: Params = {"layers": tuple(layers)}
    if not config.heteroscedastic:
        params["log_var"] = jnp.full((1, 1), config.log_var_init, dtype)
    return params


def forward(params: Params, x: jax.Array) -> jax.Array:
    """Network output [n, 2]: column 0 the mean, column 1 the log-variance (normalised units).

    Args:
        params: one sample's parameters.
        x: normalised inputs [n, d].

    Returns:
        [n, 2].
    """
    h = x
    layers = params["layers"]
    for layer in layers[:-1]:
        h = jnp.tanh(h @ layer["w"] + layer["b"])
    out = h @ layers[-1]["w"] + layers[-1]["b"]
    if "log_var" in params:  # AppendLayer: cat(x, log_var * ones_like(x))
        out = jnp.concatenate([out, params["log_var"] * jnp.ones_like(out)], axis=1)
    return out


def loss(params: Params, x: jax.Array, y: jax.Array, mask: jax.Array, n_data: int,
         config: BNNConfig) -> jax.Array:
    """pybnn's minibatch loss: Gaussian NLL (mean over the batch) - priors / N.

    Args:
        params: parameters.
        x: normalised inputs [b, d].
        y: normalised targets [b].
        mask: [b] bool, False for padding rows (a short last batch of an epoch).
        n_data: N, the number of training points.
        config: prior settings.

    Returns:
        Scalar loss (the sampler multiplies its gradient by N).
    """
    out = forward(params, x)
    mu, lv = out[:, 0], out[:, 1]
    w = mask.astype(out.dtype)
    count = jnp.sum(w)
    nll = -jnp.sum(w * (-(y - mu) ** 2 * (0.5 / (jnp.exp(lv) + 1e-16)) - 0.5 * lv)) / count
    total = nll
    if config.log_var_prior:
        var = config.log_var_prior_var
        lp = -((lv - math.log(config.log_var_prior_mean)) ** 2) / (2.0 * var) - 0.5 * math.log(var)
        total = total - jnp.sum(w * lp) / count / n_data
    leaves = jax.tree.leaves(params)
    num = sum(p.size for p in leaves)
    wp = sum(jnp.sum(-config.weight_decay * 0.5 * p**2) for p in leaves) / num
    return total - wp / n_data


def minibatches(key: jax.Array, n: int, batch_size: int, num_steps: int
                ) -> tuple[jax.Array, jax.Array]:
    """Row indices of every step's batch, as a reshuffling DataLoader without drop_last.

    Args:
        key: PRNG key.
        n: number of training points.
        batch_size: pybnn's batch size (reduced to n if larger).
        num_steps: steps to cover.

    Returns:
        (indices int32 [num_steps, b], mask bool [num_steps, b]); padding rows of a short last
        batch have index 0 and mask False.
    """
    b = min(batch_size, n)
    per_epoch = -(-n // b)
    epochs = -(-num_steps // per_epoch)
    # a uniform permutation per epoch: rank of i.i.d. 32-bit draws (ties ~ n^2 / 2^33)
    perms = jnp.argsort(jax.random.bits(key, (epochs, n), jnp.uint32), axis=1, stable=True)
    perms = jnp.pad(perms.astype(jnp.int32), ((0, 0), (0, per_epoch * b - n)))
    idx = perms.reshape(epochs * per_epoch, b)[:num_steps]
    valid = (jnp.arange(per_epoch * b) < n).reshape(per_epoch, b)
    mask = jnp.tile(valid, (epochs, 1))[:num_steps]
    return idx, mask


def _check_xy(x: jax.Array, y: jax.Array) -> None:
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [n, d], got shape {x.shape}")
    if not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)) or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape [n] or [n, 1] with n = x.shape[0] = {x.shape[0]}, "
                         f"got {y.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 training points (x: [n, d] with n >= 2), got "
                         f"{x.shape}")


def _chain(key: jax.Array, config: BNNConfig, xn: jax.Array, yn: jax.Array
           ) -> tuple[Params, jax.Array]:
    """One pybnn training run; returns ([num_samples, ...] params, [num_samples] steps).

    The sampler runs on the flattened parameter vector (one noise draw per step); one
    `lax.scan` over all steps writes each kept state into its slot of a sample buffer.
    """
    n, d = xn.shape
    k_init, k_batch, k_noise = jax.random.split(key, 3)
    flat, unravel = ravel_pytree(init_params(k_init, config, d, xn.dtype))
    idx, mask = minibatches(k_batch, n, config.batch_size, config.num_steps)
    hyper = config.hyper(n)
    grad_fn = jax.grad(lambda f, *a: loss(unravel(f), *a))
    burn, keep = config.num_burn_in_steps, config.keep_every

    def one(carry, batch):
        params, state, samples, steps = carry
        i, m, noise_key = batch
        s = state.iteration  # 0-based index of this update
        grads = grad_fn(params, xn[i], yn[i], m, n, config)
        params, state = sghmc.step(noise_key, params, state, grads, hyper)
        kept = (s > burn) & ((s - burn) % keep == 0)  # bohamiann.py:310
        slot = jnp.clip((s - burn) // keep - 1, 0, config.num_samples - 1)
        samples = samples.at[slot].set(jnp.where(kept, params, samples[slot]))
        steps = steps.at[slot].set(jnp.where(kept, s, steps[slot]))
        return (params, state, samples, steps), None

    init = (flat, sghmc.init(flat), jnp.zeros((config.num_samples, flat.size), flat.dtype),
            jnp.full((config.num_samples,), -1, jnp.int32))
    (_, _, samples, steps), _ = jax.lax.scan(
        one, init, (idx, mask, jax.random.split(k_noise, config.num_steps)))
    return jax.vmap(unravel)(samples), steps


@functools.partial(jax.jit, static_argnames="config")
def fit(key: jax.Array, config: BNNConfig, x: jax.Array, y: jax.Array) -> BNNPosterior:
    """Samples the BNN posterior with pybnn's adaptive SGHMC (one compiled program).

    Args:
        key: PRNG key (init, minibatch order and sampler noise of every chain).
        config: settings (static).
        x: training inputs [n, d].
        y: training targets [n] or [n, 1].

    Returns:
        The pooled samples and normalisation statistics.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    _check_xy(x, y)
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    x, y = x.astype(dtype), y.reshape(-1).astype(dtype)
    x_mean, x_std = jnp.mean(x, axis=0), jnp.std(x, axis=0)
    x_std = jnp.where(x_std > 0, x_std, 1.0)
    y_mean, y_std = jnp.mean(y), jnp.std(y)
    y_std = jnp.where(y_std > 0, y_std, 1.0)
    xn, yn = (x - x_mean) / x_std, (y - y_mean) / y_std
    keys = jax.random.split(key, config.num_chains)
    samples, steps = jax.vmap(lambda k: _chain(k, config, xn, yn))(keys)
    pool = lambda a: a.reshape(-1, *a.shape[2:])
    return BNNPosterior(params=jax.tree.map(pool, samples), x_mean=x_mean, x_std=x_std,
                        y_mean=y_mean, y_std=y_std, steps=pool(steps))


@jax.jit
def predict(posterior: BNNPosterior, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Predictive mean and variance in the original target units (pybnn's formula).

    Args:
        posterior: from `fit`.
        x: inputs [m, d].

    Returns:
        (mean [m], var [m]): mean of sample means; mean of squared deviations plus mean of
        the predicted noise variances, both de-normalised.
    """
    x = jnp.asarray(x)
    d = posterior.x_mean.shape[0]
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"x must be 2-D [m, {d}] (the training input dimension), got "
                         f"{x.shape}")
    xn = (x.astype(posterior.x_mean.dtype) - posterior.x_mean) / posterior.x_std
    out = jax.vmap(forward, in_axes=(0, None))(posterior.params, xn)
    mean, var = predictive_moments(out)
    return mean * posterior.y_std + posterior.y_mean, var * posterior.y_std**2


def predictive_moments(out: jax.Array) -> tuple[jax.Array, jax.Array]:
    """pybnn's moments of per-sample outputs (normalised units).

    Args:
        out: [S, m, 2] network outputs, [..., 0] means, [..., 1] log-variances.

    Returns:
        (mean [m], var [m]).
    """
    mean = jnp.mean(out[:, :, 0], axis=0)
    var = jnp.mean((out[:, :, 0] - mean) ** 2 + jnp.exp(out[:, :, 1]), axis=0)
    return mean, var


def gaussian_nll(mean: jax.Array, var: jax.Array, y: jax.Array) -> jax.Array:
    """Mean over points of 0.5 log(2 pi var) + (y - mean)^2 / (2 var).

    Args:
        mean, var, y: predictive moments and targets, [m] each.

    Returns:
        Scalar.
    """
    return jnp.mean(0.5 * jnp.log(2.0 * jnp.pi * var) + 0.5 * (y - mean) ** 2 / var)


def rmse(mean: jax.Array, y: jax.Array) -> jax.Array:
    """Root mean squared error.

    Args:
        mean, y: predictions and targets, [m] each.

    Returns:
        Scalar.
    """
    return jnp.sqrt(jnp.mean((y - mean) ** 2))


def table1(key: jax.Array, x: jax.Array, y: jax.Array, n_splits: int = 10,
           test_fraction: float = 0.2, config: BNNConfig | None = None
           ) -> dict[str, dict[str, Any]]:
    """NAGO Table 1: het vs hom BNN, median test NLL and RMSE over random splits.

    Both models see the same splits and the same fit keys (splits are vmapped). The split
    ratio is lost in the paper: `test_fraction` = 0.2 is an assumption.

    Args:
        key: PRNG key (splits and fits).
        x: inputs [n, d].
        y: targets [n].
        n_splits: random train/test splits (paper 10).
        test_fraction: share of points held out (round(fraction * n), at least 1).
        config: BNN settings (default `BNNConfig()`); `heteroscedastic` is overridden.

    Returns:
        {"het"|"hom": {"nll": median, "rmse": median, "nll_splits": [..], "rmse_splits": [..]}}.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    _check_xy(x, y)
    y = y.reshape(-1)
    n = x.shape[0]
    n_test = max(1, round(test_fraction * n))
    if n - n_test < 2:
        raise ValueError(f"test_fraction={test_fraction} leaves {n - n_test} of {n} points "
                         "for training; need at least 2")
    config = config or BNNConfig()
    k_split, k_fit = jax.random.split(key)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(k_split, n_splits))
    test, train = perms[:, :n_test], perms[:, n_test:]
    fit_keys = jax.random.split(k_fit, n_splits)
    result = {}
    for name, het in (("het", True), ("hom", False)):
        cfg = dataclasses.replace(config, heteroscedastic=het)
        nll, err = (np.asarray(a) for a in _split_scores(
            fit_keys, cfg, x[train], y[train], x[test], y[test]))
        result[name] = {"nll": float(np.median(nll)), "rmse": float(np.median(err)),
                        "nll_splits": nll.tolist(), "rmse_splits": err.tolist()}
    return result


@functools.partial(jax.jit, static_argnames="config")
def _split_scores(keys: jax.Array, config: BNNConfig, x_train: jax.Array, y_train: jax.Array,
                  x_test: jax.Array, y_test: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Test NLL and RMSE of one fit per split, splits vmapped (leading axis of every array)."""

    def one(key, xa, ya, xb, yb):
        mean, var = predict(fit(key, config, xa, ya), xb)
        return gaussian_nll(mean, var, yb), rmse(mean, yb)

    return jax.vmap(one)(keys, x_train, y_train, x_test, y_test)
