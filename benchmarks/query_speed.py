r"""Query throughput: `nhb.bench.api.Benchmark.query` (batched, jitted) vs the official client.

Both answer the same questions on the same data: a full 1011-class synthetic table
(`random_table`, 3 seeds, with `avg_acc_200` because the client refuses to start without
`avgaccs200.pkl`) exported with `export_official` and loaded by `nashpobench2api`. The
client is driven as the reference scripts drive it: one `query_by_key(code, lr, bs,
epoch=12, iepoch=e)` per Python call (verbose=False). Ours is one jitted call on a batch of
configs with random epochs 1..12 (best of `--repeats` after compilation). A sample of the
answers is checked to agree, then the side-by-side ratio is printed and written to
`benchmarks/results/query_speed.json`.

    python benchmarks/query_speed.py [--batch=1048576] [--client_queries=20000]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from provenance import write_result

from nhb import bench
from nhb.bench.api import Benchmark
from nhb.space import nhb2

RESULTS = pathlib.Path(__file__).parent / "results"


def official_setup(seed: int = 0, cache_dir: str | None = None) -> tuple[bench.Table, object]:
    """The full synthetic table and the official client over its exported pickles."""
    import nashpobench2api

    table = bench.random_table(seed)
    d = pathlib.Path(cache_dir or f"/tmp/nhb_official_random_{seed}")
    if not all((d / f).is_file() for f in ("bench12.pkl", "cellinfo.pkl", "avgaccs200.pkl")):
        bench.export_official(table, d)
    return table, nashpobench2api.NASHPOBench2API(str(d), verbose=False)


def machine() -> dict:
    """What the numbers were measured on (the load matters on shared machines)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return dict(backend=jax.default_backend(), devices=[str(d) for d in jax.devices()],
                cpu_count=os.cpu_count(), loadavg=load, python=platform.python_version(),
                jax=jax.__version__)


def time_best(fn, args, repeats: int) -> float:
    """Best wall time of `repeats` calls (after one warm-up call)."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    """Measures both sides and writes the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1 << 20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--client_queries", type=int, default=20000)
    ap.add_argument("--official_dir", default=None)
    args = ap.parse_args()

    t0 = time.perf_counter()
    table, client = official_setup(0, args.official_dir)
    b = Benchmark(table)
    setup_s = time.perf_counter() - t0
    key = jax.random.key(0)
    idx = jax.random.randint(key, (args.batch,), 0, nhb2.NUM_CONFIGS)
    epochs = jax.random.randint(jax.random.key(1), (args.batch,), 1, 13)
    cfg = jax.jit(nhb2.from_index)(idx)
    ours = {}
    for label, fn in {
        "valid": jax.jit(lambda b, c, e: b.query(c, e)),
        "test": jax.jit(lambda b, c, e: b.query(c, e, mode="test")),
        "mean_seed": jax.jit(lambda b, c, e: b.query(c, e, seed="mean")),
    }.items():
        t = time_best(fn, (b, cfg, epochs), args.repeats)
        ours[label] = dict(seconds=t, configs_per_s=args.batch / t)

    # the official client, one query per call
    n = args.client_queries
    keys = nhb2.to_keys(jax.tree.map(lambda a: a[:n], cfg))
    ep = np.asarray(epochs[:n]).tolist()
    client.reset_logdata()
    t = time.perf_counter()
    for (code, lr, bs), e in zip(keys, ep, strict=True):
        client.query_by_key(code, lr, bs, epoch=12, iepoch=e)
    client_s = time.perf_counter() - t
    got = jax.tree.map(np.asarray, b.query(jax.tree.map(lambda a: a[:n], cfg), epochs[:n]))
    np.testing.assert_allclose(got.valid_acc, client.acc_trans, rtol=1e-6)
    np.testing.assert_allclose(np.cumsum(got.cost.astype(np.float64)), client.total_cost_trans,
                               rtol=1e-5)
    client_rate = n / client_s
    ratio = ours["valid"]["configs_per_s"] / client_rate
    res = dict(name="query_speed", batch=args.batch, ours=ours,
               official=dict(queries=n, seconds=client_s, queries_per_s=client_rate),
               ratio_valid=ratio, setup_s=setup_s, agree_checked=n, machine=machine())
    write_result(RESULTS / "query_speed.json", res)
    print(f"nhb Benchmark.query, batch {args.batch:,}: "
          + ", ".join(f"{k} {v['configs_per_s'] / 1e6:.1f} M configs/s" for k, v in ours.items()))
    print(f"official nashpobench2api, one query per call: {client_rate:,.0f} queries/s "
          f"({n:,} queries, values and costs agree)")
    print(f"ratio (ours valid / official): {ratio:,.0f}x   [load average {machine()['loadavg']}]")


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing
    main()
