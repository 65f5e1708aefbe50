r"""Seconds for one NAGO MOBO batch of 8 on this machine: surrogates + USeMO + penalisation.

Two heteroscedastic BNNs at the paper's settings (`nhb.search.bnn.BNNConfig()`: 3 x 10 tanh,
burn-in 3000, keep every 10th, 100 samples) are fit to `--n_obs` observations of a synthetic
two-objective problem on HNAG's 8-dim unit cube (an error-like and a memory-like objective),
then `nhb.search.mobo.propose_batch` picks a batch of 8 (EI per objective, the Pareto set of
the acquisitions by the archive search, the uncertainty volume, hard local penalisation with
the multi-start Lipschitz ascent). Reported: the BNN fits, the first batch (compilation
included) and the median of `--repeats` later batches (new keys, same program).

    python benchmarks/mobo_batch.py [--n_obs=50] [--repeats=5]

Writes `benchmarks/results/mobo_batch_<backend>.json`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax
import numpy as np
from provenance import RESULTS, write_result

from nhb.nago.run import _posterior
from nhb.search import bnn, mobo


def objectives(u: np.ndarray) -> np.ndarray:
    """[n, 2]: an error-like objective (lowest near 0.35) and a memory-like one."""
    err = 0.2 + 0.3 * np.mean((u - 0.35) ** 2, axis=1) + 0.02 * np.sin(7 * u[:, 1])
    mem = 1.0 + 4.0 * (u[:, 0] + u[:, 3] + u[:, 5]) / 3
    return np.stack([err, mem], 1).astype(np.float32)


def main() -> None:
    """Runs the measurement and writes the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n_obs", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--output_json", default=None)
    args = ap.parse_args()
    u = np.asarray(jax.random.uniform(jax.random.key(0), (args.n_obs, 8)))
    y = objectives(u)
    cfg = bnn.BNNConfig()
    t = time.perf_counter()
    posts = [bnn.fit(jax.random.key(1 + j), cfg, u, y[:, j]) for j in range(2)]
    jax.block_until_ready(posts)
    fit_first = time.perf_counter() - t
    t = time.perf_counter()
    posts = [bnn.fit(jax.random.key(3 + j), cfg, u, y[:, j]) for j in range(2)]
    jax.block_until_ready(posts)
    fit_warm = time.perf_counter() - t
    post = jax.tree_util.Partial(_posterior, *posts)
    times, batch = [], None
    for r in range(args.repeats + 1):
        t = time.perf_counter()
        batch, info = mobo.propose_batch(jax.random.key(100 + r), post, u, y, 1 + r,
                                         mobo.MOBOConfig(batch_size=8))
        jax.block_until_ready(batch)
        times.append(time.perf_counter() - t)
    batch = np.asarray(batch)
    d = np.sqrt(((batch[:, None] - batch[None]) ** 2).sum(-1))
    result = dict(
        benchmark="mobo_batch", n_obs=args.n_obs, dim=8, batch_size=8,
        bnn=dict(hidden=list(cfg.hidden), burn_in=cfg.num_burn_in_steps,
                 keep_every=cfg.keep_every, samples=cfg.num_samples),
        bnn_fits_first_s=fit_first, bnn_fits_warm_s=fit_warm, batch_first_s=times[0],
        batch_warm_s=statistics.median(times[1:]), batch_warm_all_s=times[1:],
        n_front=int(info["n_front"]), lipschitz=np.asarray(info["lipschitz"]).tolist(),
        min_pairwise_distance=float(d[np.triu_indices(8, 1)].min()),
        backend=jax.default_backend())
    print(f"BNN fits (2 objectives): {fit_first:.2f} s first, {fit_warm:.2f} s warm")
    print(f"one batch of 8: {times[0]:.2f} s first (compile), "
          f"{result['batch_warm_s']:.2f} s warm (median of {args.repeats})")
    print(f"front size {result['n_front']}, min pairwise distance "
          f"{result['min_pairwise_distance']:.3f}")
    out = args.output_json or RESULTS / f"mobo_batch_{jax.default_backend()}.json"
    write_result(out, result)


if __name__ == "__main__":
    main()
