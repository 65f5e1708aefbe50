r"""One vmapped 3x3 convolution, forward + backward, for each `nhb.models.layers.conv2d` impl.

A vmapped grid trains G networks whose kernels differ, so every convolution of the network
is a convolution with per-member kernels. This times exactly that (G members, each its own
[B, H, W, C] input and [3, 3, C, C] kernel; loss = sum(conv(x) * cotangent), gradients for
input and kernel, all jitted), for the shapes of the NAS-HPO-Bench-II network's stages at the
tiny and paper scales, and prints milliseconds, the ratio to the `xla` implementation (a
grouped convolution) and the achieved rate of the minimal memory traffic: the forward reads
x and writes y, the backward reads x and dy and writes dx: 5 passes over a [G, B, H, W, C]
float32 tensor (kernels are negligible).

    python benchmarks/conv_impl.py --shapes=tiny --repeats=5
"""

from __future__ import annotations

import pathlib
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from provenance import write_result

from nhb.bench.table import code_version
from nhb.models.layers import CONV_IMPLS, conv2d

_HERE = pathlib.Path(__file__).resolve().parent
# (name, G members, batch, spatial side, channels): the stages of the two scales.
SHAPES = {
    "tiny": [("tiny-s1", 728, 64, 32, 4), ("tiny-s3", 728, 64, 8, 16)],
    "paper": [("paper-s1", 48, 128, 32, 16), ("paper-s3", 48, 128, 8, 64)],
    "cpu": [("cpu-tiny-s1", 8, 16, 32, 4), ("cpu-paper-s1", 4, 16, 32, 16)],
}

flags.DEFINE_list("shapes", ["tiny", "paper"], f"Shape sets, of {sorted(SHAPES)}.")
flags.DEFINE_list("impls", list(CONV_IMPLS), "Implementations to time.")
flags.DEFINE_integer("repeats", 10, "Timed calls per row (after one warm-up call).")
flags.DEFINE_string("output_json", "", "Output path (default: benchmarks/results/"
                    "conv_impl_<backend>.json; 'none': no file).")
FLAGS = flags.FLAGS


def time_conv(impl: str, g: int, b: int, hw: int, c: int, repeats: int) -> dict:
    """Times the vmapped forward+backward of one conv; returns ms (best, median) and error."""
    kx, kw, kd = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (g, b, hw, hw, c), jnp.float32)
    w = jax.random.normal(kw, (g, 3, 3, c, c), jnp.float32) / np.sqrt(9 * c)
    dy = jax.random.normal(kd, (g, b, hw, hw, c), jnp.float32)

    def loss(x, w, dy):
        return jnp.sum(conv2d(x, w, 1, 1, impl) * dy)

    fn = jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1))))
    t0 = time.perf_counter()
    compiled = fn.lower(x, w, dy).compile()
    compile_s = time.perf_counter() - t0
    out = jax.block_until_ready(compiled(x, w, dy))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(x, w, dy))
        times.append(time.perf_counter() - t0)
    return dict(compile_s=compile_s, ms=1e3 * min(times), ms_median=1e3 * float(np.median(times)),
                out=out)


def main(argv: Sequence[str]) -> None:
    """Times every (shape, impl), prints the table, writes the JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    bad = [s for s in FLAGS.shapes if s not in SHAPES] + [
        i for i in FLAGS.impls if i not in CONV_IMPLS]
    if bad:
        raise app.UsageError(f"unknown {bad}; shapes: {sorted(SHAPES)}, impls: {CONV_IMPLS}")
    rows = []
    for set_name in FLAGS.shapes:
        for name, g, b, hw, c in SHAPES[set_name]:
            ref = None
            for impl in FLAGS.impls:
                print(f"{name} {impl} ...", flush=True)
                row = dict(shape=name, members=g, batch=b, side=hw, channels=c, impl=impl)
                try:
                    r = time_conv(impl, g, b, hw, c, FLAGS.repeats)
                    out = r.pop("out")
                    if ref is None:
                        ref = out
                    rel = max(float(jnp.linalg.norm((a - e).ravel()) /
                                    jnp.linalg.norm(e.ravel()))
                              for a, e in zip(jax.tree_util.tree_leaves(out),
                                              jax.tree_util.tree_leaves(ref), strict=True))
                    gb = 5 * g * b * hw * hw * c * 4 / 1e9
                    row.update(r, rel_err_vs_first=rel, gb_per_s=gb / (r["ms"] / 1e3))
                except Exception as e:  # e.g. out of memory for the patch tensor
                    row.update(error=f"{type(e).__name__}: {str(e)[:200]}")
                rows.append(row)
    print(f"{'shape':<13} {'impl':<12} {'ms':>9} {'vs xla':>8} {'GB/s':>8} {'rel err':>9}")
    for r in rows:
        if "ms" not in r:
            print(f"{r['shape']:<13} {r['impl']:<12} {r['error']}")
            continue
        base = next((q["ms"] for q in rows if q["shape"] == r["shape"] and q["impl"] == "xla"
                     and "ms" in q), None)
        r["speedup_vs_xla"] = base / r["ms"] if base else None
        sp = f"{r['speedup_vs_xla']:.2f}x" if base else "-"
        print(f"{r['shape']:<13} {r['impl']:<12} {r['ms']:>9.2f} {sp:>8} "
              f"{r['gb_per_s']:>8.0f} {r['rel_err_vs_first']:>9.1e}")
    device = jax.devices()[0]
    meta = dict(backend=jax.default_backend(), device_kind=getattr(device, "device_kind", ""),
                jax_version=jax.__version__, code_version=code_version(),
                repeats=FLAGS.repeats, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                argv=sys.argv)
    out = FLAGS.output_json or str(_HERE / "results" / f"conv_impl_{meta['backend']}.json")
    if out.lower() != "none":
        print(f"wrote {write_result(out, dict(meta=meta, rows=rows))}")


if __name__ == "__main__":
    app.run(main)
