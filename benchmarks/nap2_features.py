r"""What NAP2's snapshots add to a training epoch, side by side on this machine.

The same compiled epoch (the grid runner's program: the CPU host loop over the jitted,
vmapped SGD step, or the scanned epoch on accelerators) of one NAS-HPO-Bench-II config is
timed without a hook, with the snapshot hook computing the feature maps only
(`SnapshotSpec(valid_images=0)`), and with the feature maps plus the snapshot's validation
loss (what the study records), for each snapshot interval S. Variants alternate within each
repeat so drift in the machine's load hits all of them; the first epoch (compilation) is
dropped; the overhead is the median epoch time's ratio to the plain epoch's.

    python benchmarks/nap2_features.py [--every=4,16,100] [--repeats=5] [--scale=tiny]

Writes `benchmarks/results/nap2_features_<backend>.json`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax
import jax.numpy as jnp
from provenance import RESULTS, write_result

from nhb.bench.executors import GroupSettings, load_data
from nhb.models.cell_net import conv_edges_of
from nhb.nap2.features import SnapshotSpec
from nhb.train.cellnet import TrainStatic
from nhb.train.grid import Job, get_scale, member_inputs, resolve_sgd_loop
from nhb.train.programs import compile_program

CELL = (0, 1, 2, 1, 0, 3)  # 3 conv edges: 14 layers at the tiny scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--every", default="4,16,100", help="snapshot intervals S (SGD steps)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per variant and repeat")
    ap.add_argument("--scale", default="tiny")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--images", type=int, default=1000, help="training images (epoch size)")
    ap.add_argument("--group", type=int, default=1, help="members of the vmapped program")
    ap.add_argument("--valid_images", type=int, default=256)
    args = ap.parse_args()
    scale = get_scale(args.scale)
    data = load_data(GroupSettings(scale=args.scale, epochs=12, mode="auto",
                                   eval_batch_size=None, dataset="subset", data_dir=None,
                                   max_per_split=args.images))
    sgd_loop = resolve_sgd_loop("auto")
    jobs = [Job(CELL, 0.1, args.batch_size, 222 + i) for i in range(args.group)]
    keys, hp, ops = member_inputs(jobs)
    steps = -(-data.train_x.shape[0] // args.batch_size)
    variants = {"plain": None}
    for s in (int(v) for v in args.every.split(",")):
        count = max(1, (steps * (args.epochs + 1)) // s)
        variants[f"features_S{s}"] = SnapshotSpec(every=s, count=count, valid_images=0)
        variants[f"features_valid_S{s}"] = SnapshotSpec(every=s, count=count,
                                                        valid_images=args.valid_images)
    programs, states = {}, {}
    for name, hook in variants.items():
        static = TrainStatic(batch_size=args.batch_size, conv_edges=conv_edges_of(CELL),
                             n_train=data.train_x.shape[0], n_valid=data.valid_x.shape[0],
                             n_test=data.test_x.shape[0], channels=scale.channels,
                             cells_per_stage=scale.cells_per_stage, train_eval=False,
                             hook=hook)
        t0 = time.perf_counter()
        programs[name] = compile_program(static, sgd_loop, keys, hp, ops, data)
        states[name] = programs[name].init(keys, hp, ops)
        jax.block_until_ready(programs[name].epoch(states[name], jnp.int32(0), hp, ops, data))
        print(f"{name}: compiled + first epoch {time.perf_counter() - t0:.1f} s", flush=True)
    times: dict[str, list[float]] = {n: [] for n in variants}
    for r in range(args.repeats):
        for name, prog in programs.items():
            state = states[name]
            for e in range(args.epochs):
                t0 = time.perf_counter()
                state, _ = jax.block_until_ready(prog.epoch(state, jnp.int32(e + 1), hp, ops,
                                                            data))
                times[name].append(time.perf_counter() - t0)
        print(f"repeat {r + 1}/{args.repeats} done", flush=True)
    base = statistics.median(times["plain"])
    rows = {}
    print(f"\n{'variant':24s} {'epoch s (median)':>17s} {'vs plain':>9s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        rows[name] = dict(epoch_s_median=med, epoch_s=ts, ratio=med / base,
                          overhead_pct=100 * (med / base - 1))
        print(f"{name:24s} {med:17.4f} {med / base:9.3f}")
    payload = dict(
        benchmark="nap2_features", cell=list(CELL), scale=args.scale,
        batch_size=args.batch_size, images=int(data.train_x.shape[0]), steps_per_epoch=steps,
        group=args.group, sgd_loop=sgd_loop, valid_images=args.valid_images,
        repeats=args.repeats, epochs_per_repeat=args.epochs, results=rows,
        note="overhead_pct: median epoch time with the hook vs without, same compiled "
             "epoch otherwise; features = the 12 statistics x (whole layer + 99 groups) of "
             "every layer's weights and gradients at each snapshot; features_valid adds the "
             "snapshot's eval-mode validation loss on valid_images images")
    out = RESULTS / f"nap2_features_{jax.default_backend()}.json"
    write_result(out, payload)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
