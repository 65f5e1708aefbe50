r"""Scan-carried vs host-loop SGD steps: why the grid runner loops on the host on CPUs.

    python benchmarks/cpu_step_loop.py [--output_json=benchmarks/results/cpu_step_loop.json]

Side by side, for the tiny network (4/8/16 channels, 1 cell per stage, batch 64):
(a) one jitted SGD step called from Python, (b) the same steps inside a `lax.scan` that
carries the weights (the engine's `train_epoch`), (c) the grid runner's host-loop epoch.
Prints ms per step and images/s with ratios, and writes JSON.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from absl import app, flags
from provenance import write_result

from nhb.data import load_dataset
from nhb.train import HParams, TrainData, TrainStatic, make_cell_train, programs

_OUT = flags.DEFINE_string("output_json", "benchmarks/results/cpu_step_loop.json", "JSON path.")
_N = flags.DEFINE_integer("n_train", 640, "Training images per epoch (10 steps of 64).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed epochs (best is reported).")


def _best(fn, repeats: int) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str]) -> None:
    del argv
    n, bs = _N.value, 64
    data = TrainData.from_dataset(load_dataset("subset", max_per_split=n))
    static = TrainStatic(batch_size=bs, conv_edges=(True, False, True, False, True, False),
                         n_train=n, n_valid=n, n_test=n, epochs=1, channels=(4, 8, 16),
                         cells_per_stage=1)
    t = make_cell_train(static)
    ops = jnp.array([0, 1, 0, 2, 0, 3])
    keys = jnp.stack([jax.random.key(0)])
    hp = HParams(learning_rate=jnp.array([0.1]), momentum=jnp.array([0.9]),
                 weight_decay=jnp.array([5e-4]))
    opsb = ops[None]
    state = jax.jit(jax.vmap(t.init))(keys, hp, opsb)
    epoch = jnp.int32(0)
    scan_epoch = jax.jit(jax.vmap(t.train_epoch, in_axes=(0, None, 0, 0, None)))
    host_epoch = programs.host_loop_epoch(t, state, hp, opsb, data)
    scan_s = _best(lambda: scan_epoch(state, epoch, hp, opsb, data), _REPEATS.value)
    host_s = _best(lambda: host_epoch(state, epoch, hp, opsb, data), _REPEATS.value)
    steps = t.steps
    rows = {
        "scan_carried_weights": {"ms_per_step": 1e3 * scan_s / steps, "images_per_s": n / scan_s},
        "host_loop": {"ms_per_step": 1e3 * host_s / steps, "images_per_s": n / host_s},
    }
    ratio = scan_s / host_s
    print(f"{'loop':24s} {'ms/step':>9s} {'img/s':>9s}")
    for name, r in rows.items():
        print(f"{name:24s} {r['ms_per_step']:9.1f} {r['images_per_s']:9.1f}")
    print(f"host loop is {ratio:.2f}x faster than the scan on {jax.default_backend()}")
    out = {"backend": jax.default_backend(), "jax_version": jax.__version__, "batch_size": bs,
           "n_train": n, "steps": steps, "channels": [4, 8, 16], "cells_per_stage": 1,
           "rows": rows, "host_over_scan_speedup": ratio}
    if _OUT.value and _OUT.value != "none":
        write_result(_OUT.value, out)
        print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
