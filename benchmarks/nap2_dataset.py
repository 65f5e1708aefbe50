r"""How fast a NAP2 snapshot dataset builds here: configs/hour at the study's CPU scale.

Builds a fresh sample of the `nap2_cifar` preset (same protocol, data, network and snapshot
settings; `--cells` cells of ONE conv pattern x its 4 learning rates) with the table
builder and the persistent compilation cache off, then reads the shards' own wall times: the
first shard of a program includes its compilation, later shards do not, so

    compile_s ~ shard_1 - shard_2,  run_s = shard_2 / runs per shard,
    projected hours(n configs, p programs) = (p * compile_s + n * run_s) / 3600.

It prints the measured configs/hour (compilation included), the steady-state configs/hour,
and the projection for the full `nap2_cifar` preset (160 configs, 8 programs), and writes
`benchmarks/results/nap2_dataset_<backend>.json`.

    python benchmarks/nap2_dataset.py [--cells=2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax
import numpy as np
from provenance import RESULTS, write_result

from nhb.bench import build as nhb_build
from nhb.models.cell_net import conv_edges_of
from nhb.nap2.dataset import PRESETS, build_snapshots
from nhb.space import nhb2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, default=2, help="cells of the first conv pattern")
    args = ap.parse_args()
    full = PRESETS["nap2_cifar"]
    patterns: dict[tuple, list[str]] = {}
    for c in full.cells:
        patterns.setdefault(tuple(conv_edges_of(nhb2.cell_from_string(c))), []).append(c)
    cells = next(iter(patterns.values()))[:args.cells]
    preset = dataclasses.replace(full, name="nap2_cifar_sample", cells=tuple(cells))
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "build"
        t0 = time.perf_counter()
        ds = build_snapshots(preset, out, progress=True)
        wall = time.perf_counter() - t0
        shards = []
        for name, jobs in nhb_build.plan_shards(preset, False):
            with np.load(out / nhb_build.SHARD_DIR / name) as z:
                header = json.loads(str(z["header"]))
            shards.append(dict(runs=len(jobs), wall_s=header["wall_s"]))
    per_shard = shards[0]["runs"]
    run_s = sum(s["wall_s"] for s in shards[1:]) / sum(s["runs"] for s in shards[1:])
    compile_s = shards[0]["wall_s"] - run_s * per_shard
    n_full, p_full = full.n_runs, len(patterns)
    projected_h = (p_full * compile_s + n_full * run_s) / 3600
    result = dict(
        benchmark="nap2_dataset", preset=preset.to_dict(), configs=len(ds), wall_s=wall,
        shards=shards, run_s=run_s, compile_s=compile_s,
        configs_per_hour_measured=len(ds) / wall * 3600,
        configs_per_hour_steady=3600 / run_s,
        projection=dict(preset="nap2_cifar", configs=n_full, programs=p_full,
                        hours=projected_h, configs_per_hour=n_full / projected_h,
                        how="programs x compile_s + configs x run_s"))
    print(f"\n{len(ds)} configs in {wall:.0f} s: {result['configs_per_hour_measured']:.0f} "
          f"configs/hour measured (compilation included), "
          f"{result['configs_per_hour_steady']:.0f} steady; compile {compile_s:.0f} s per "
          f"program, {run_s:.1f} s per config")
    print(f"projected nap2_cifar ({n_full} configs, {p_full} programs): {projected_h * 60:.0f} "
          f"min = {n_full / projected_h:.0f} configs/hour")
    path = RESULTS / f"nap2_dataset_{jax.default_backend()}.json"
    write_result(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
