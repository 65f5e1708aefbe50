"""Throughput of DHA's two-op augmentation: jitted JAX (`augment_pairs`) vs the Pillow pipeline.

The same 256 CIFAR-10 images of the embedded slice, pair codes uniform over the 196 pairs,
magnitudes clip(U(0, 10), 0, 8), random sign and filter per op (random flip excluded). JAX
is compiled and warmed up first; each repeat times one full batch of each side, alternating,
and the medians are reported (the ratio and goal use these). Goal: JAX >= 5x Pillow on the
2-core CPU. Also reported: JAX timed back to back (warm caches, typically ~1.5x faster than
right after a Pillow batch) and one jitted `apply_op` layer with all images in one op group
(ms per batch), per group.

    python benchmarks/dha_augment.py [--repeats=5] [--batch=256]

Writes `benchmarks/results/dha_augment.json`.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax
import jax.numpy as jnp
import numpy as np
from provenance import RESULTS, write_result

from nhb.data import load_dataset
from nhb.data.autoaugment import _GROUPS, NUM_PAIRS, OP_NAMES, apply_op, augment_pairs
from nhb.data.autoaugment_pil import pil_augment_batch

GOAL = 5.0


def group_times(images: np.ndarray, repeats: int) -> dict[str, float]:
    """Median ms of one `apply_op` layer on the whole batch, every image in one op group."""
    n = images.shape[0]
    rng = np.random.default_rng(0)
    mags = jnp.asarray(rng.uniform(0, 8, n), jnp.float32)
    negate, bicubic = jnp.asarray(rng.random(n) > 0.5), jnp.asarray(rng.random(n) > 0.5)
    fn, x = jax.jit(apply_op), jnp.asarray(images)
    out = {}
    for ops in dict.fromkeys(ops for ops, *_ in _GROUPS):  # both filters: random per image
        op = jnp.asarray(np.resize(ops, n), jnp.int32)
        jax.block_until_ready(fn(x, op, mags, negate, bicubic))
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(x, op, mags, negate, bicubic))
            ts.append(time.perf_counter() - t0)
        out["/".join(OP_NAMES[o] for o in ops)] = 1e3 * statistics.median(ts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--max_magnitude", type=float, default=10.0)
    args = ap.parse_args()
    images = np.asarray(load_dataset("subset").train_images[:args.batch])
    pairs = np.random.default_rng(0).integers(0, NUM_PAIRS, images.shape[0])
    fn = jax.jit(augment_pairs)
    x, p = jnp.asarray(images), jnp.asarray(pairs)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(jax.random.key(0), x, p, args.max_magnitude))
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(fn(jax.random.key(1), x, p, args.max_magnitude))  # warm-up
    rng = random.Random(0)
    pil_augment_batch(rng, images[:16], pairs[:16], args.max_magnitude)  # warm-up
    t_jax, t_pil = [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(jax.random.key(2 + r), x, p, args.max_magnitude))
        t_jax.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pil_augment_batch(rng, images, pairs, args.max_magnitude)
        t_pil.append(time.perf_counter() - t0)
    t_hot = []  # JAX back to back (warm caches): context for the alternating numbers
    for r in range(args.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(jax.random.key(100 + r), x, p, args.max_magnitude))
        t_hot.append(time.perf_counter() - t0)
    n = images.shape[0]
    hot_ips = n / statistics.median(t_hot)
    jax_ips, pil_ips = n / statistics.median(t_jax), n / statistics.median(t_pil)
    ratio = jax_ips / pil_ips
    print(f"{'pipeline':10s} {'images/s':>10s} {'ms/batch':>9s}")
    print(f"{'jax':10s} {jax_ips:10.0f} {1e3 * statistics.median(t_jax):9.1f}")
    print(f"{'pillow':10s} {pil_ips:10.0f} {1e3 * statistics.median(t_pil):9.1f}")
    print(f"(jax back to back, not alternating with pillow: {hot_ips:.0f} images/s, "
          f"{1e3 * statistics.median(t_hot):.1f} ms/batch, {hot_ips / pil_ips:.2f}x)")
    print(f"ratio jax/pillow {ratio:.2f} (goal >= {GOAL}: {'met' if ratio >= GOAL else 'NOT met'})")
    groups = group_times(images, args.repeats)
    print(f"one apply_op layer, all {n} images in one group (ms/batch):")
    for name, ms in groups.items():
        print(f"  {name:34s} {ms:7.2f}")
    payload = dict(
        benchmark="dha_augment", batch=n, repeats=args.repeats,
        max_magnitude=args.max_magnitude, compile_s=compile_s,
        jax=dict(images_per_s=jax_ips, batch_s=t_jax),
        jax_back_to_back=dict(images_per_s=hot_ips, batch_s=t_hot),
        pillow=dict(images_per_s=pil_ips, batch_s=t_pil),
        ratio=ratio, goal_ratio=GOAL, goal_met=ratio >= GOAL, jax_group_layer_ms=groups,
        note="two ops per image (pair codes uniform over 196), flip excluded; JAX: jitted "
             "augment_pairs on the whole batch (images sorted by op group, each group's "
             "kernel run on chunks of that group only); Pillow: per-image "
             "pil_augment_batch as the authors' pipeline; jax_group_layer_ms: one apply_op "
             "layer with every image in that op group")
    out = RESULTS / "dha_augment.json"
    write_result(out, payload)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
