r"""Per-config cost of the Syne Tune blackbox's batched queries against the raw query API.

`nhb.bench.synetune.NHB2Blackbox.objective_function_batch` on an `nhb2.Config` batch (checks,
one jitted query, the metrics back on the host as NumPy arrays) and the jitted
`Benchmark.query` on the same configs (the whole `QueryResult`, on device), at epoch 12 over a
synthetic full table (`random_table`, all 1011 classes; the gather does not depend on the
values). Goal (issue 15): the adapter within 2x of the raw API per config. For information:
the batched call on Syne Tune's config dicts (their parsing is Python, per config) and Syne
Tune's per-call path `blackbox(config, fidelity, seed)` (on at most `--per_call` configs).
Reported: microseconds per config (median of `--repeats`) and the ratios to the raw API.

    python benchmarks/synetune_speed.py [--sizes=100,10000] [--repeats=200]

Writes `benchmarks/results/synetune_speed_<backend>.json`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax
from adapter_speed import GOAL, _time
from provenance import RESULTS, write_result

from nhb import bench
from nhb.bench.synetune import NHB2Blackbox
from nhb.space import nhb2

EPOCH = 12


def _time_per_call(bb: NHB2Blackbox, dicts: list[dict], repeats: int) -> float:
    """Median seconds of one `bb(config, fidelity, seed)` call, over the configs."""
    bb(dicts[0], fidelity=EPOCH, seed=0)  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for d in dicts:
            bb(d, fidelity=EPOCH, seed=0)
        times.append((time.perf_counter() - t) / len(dicts))
    return statistics.median(times)


def main() -> None:
    """Runs the measurement and writes the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,10000")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--dict_repeats", type=int, default=20, help="repeats of the dict paths")
    ap.add_argument("--per_call", type=int, default=200, help="configs of the per-call path")
    ap.add_argument("--output_json", default=None)
    args = ap.parse_args()
    bb = NHB2Blackbox(bench.Benchmark(bench.random_table(0)))
    raw = jax.jit(lambda b, c: b.query(c, epoch=EPOCH))
    rows = []
    for n in (int(v) for v in args.sizes.split(",")):
        cfgs = nhb2.sample(jax.random.key(n), n)
        dicts = bb.decode(cfgs)
        t_raw = _time(raw, bb.bench, cfgs, repeats=args.repeats)
        t_ad = _time(bb.objective_function_batch, cfgs, EPOCH, repeats=args.repeats)
        t_dict = _time(bb.objective_function_batch, dicts, EPOCH, repeats=args.dict_repeats)
        t_one = _time_per_call(bb, dicts[:args.per_call], repeats=3)
        us = lambda t, k=n: 1e6 * t / k
        rows.append(dict(batch=n, raw_us_per_config=us(t_raw), batch_us_per_config=us(t_ad),
                         ratio=t_ad / t_raw, dicts_us_per_config=us(t_dict),
                         dicts_ratio=t_dict / t_raw, per_call_us_per_config=us(t_one, 1),
                         per_call_ratio=t_one * n / t_raw))
        print(f"batch {n:>6}: raw query {us(t_raw):8.4f} us/config | blackbox batch (Config) "
              f"{us(t_ad):8.4f} us/config, {t_ad / t_raw:5.2f}x (goal <= {GOAL}x) | batch "
              f"(dicts) {us(t_dict):8.3f}, {t_dict / t_raw:6.1f}x | per call "
              f"{us(t_one, 1):8.1f}, {t_one * n / t_raw:8.1f}x")
    out = args.output_json or RESULTS / f"synetune_speed_{jax.default_backend()}.json"
    write_result(out, dict(benchmark="synetune_speed", goal=GOAL, epoch=EPOCH,
                           repeats=args.repeats, dict_repeats=args.dict_repeats,
                           per_call_configs=args.per_call, rows=rows,
                           backend=jax.default_backend()))


if __name__ == "__main__":
    main()
