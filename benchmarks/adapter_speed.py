r"""Per-config cost of the evosax-style adapter against the raw batched query API.

`nhb.bench.evosax_problem.NHB2Problem.eval` (decode real vectors, query, fitness, state) and
`Benchmark.query` on the same configs (decoded beforehand), both jitted, on populations of
`--sizes` random vectors over a synthetic full table (`random_table`, all 1011 classes; the
gather does not depend on the values). Goal (issue 15): the adapter within 2x of the raw API
per config. Reported: microseconds per config (median of `--repeats`) and the ratio.

    python benchmarks/adapter_speed.py [--sizes=100,10000] [--repeats=200]

Writes `benchmarks/results/adapter_speed_<backend>.json`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax
from provenance import RESULTS, write_result

from nhb import bench
from nhb.bench.evosax_problem import NHB2Problem

GOAL = 2.0


def _time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    """Runs the measurement and writes the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,10000")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--output_json", default=None)
    args = ap.parse_args()
    problem = NHB2Problem(bench.Benchmark(bench.random_table(0)))
    raw = jax.jit(lambda c: problem.bench.query(c).valid_acc)
    adapter = jax.jit(lambda k, x, s: problem.eval(k, x, s)[0])
    rows = []
    for n in (int(v) for v in args.sizes.split(",")):
        key = jax.random.key(n)
        x = jax.random.uniform(key, (n, problem.num_dims))
        cfgs = problem.decode(x)
        t_raw = _time(raw, cfgs, repeats=args.repeats)
        t_ad = _time(adapter, key, x, problem.init(key), repeats=args.repeats)
        rows.append(dict(population=n, raw_us_per_config=1e6 * t_raw / n,
                         adapter_us_per_config=1e6 * t_ad / n, ratio=t_ad / t_raw))
        print(f"population {n:>6}: raw query {1e6 * t_raw / n:8.4f} us/config, adapter "
              f"{1e6 * t_ad / n:8.4f} us/config, adapter / raw {t_ad / t_raw:.2f}x "
              f"(goal <= {GOAL}x)")
    out = args.output_json or RESULTS / f"adapter_speed_{jax.default_backend()}.json"
    write_result(out, dict(benchmark="adapter_speed", goal=GOAL, repeats=args.repeats,
                           rows=rows, backend=jax.default_backend()))


if __name__ == "__main__":
    main()
