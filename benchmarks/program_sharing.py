r"""How configs with different cells should share compiled programs: measured side by side.

For one network scale and batch size, this times the engine's training epoch (after
compilation and a warm-up epoch) for every combination of

* program sharing (`nhb.train.grid`): `pattern` (one program per conv-edge pattern; the
  group's members are cells of one pattern x lrs x seeds) and `supernet` (one masked program
  per batch size; the members are random official classes x lrs x seeds, any patterns);
* convolution implementation (`nhb.models.layers.conv2d`): `xla` (vmapped kernels become a
  grouped convolution), `patches` (im2col + batched matmul), `shifts` (k*k batched matmuls);
* group size G (1 = one config at a time, the baseline of every ratio),

and reports compile seconds, XLA's memory estimate of the program (GPU), aggregate images/s
and the ratio to the one-at-a-time loop. From the best row of each sharing it projects the
hours of a whole build (`--build=lite|paper`): every run's training images at the measured
rate, the evaluation passes at the best measured evaluation rate (of any conv impl: the
engine can train with one and evaluate with another), plus one compile of the three
phases per program (64 conv patterns x 6 batch sizes for `pattern`, 6 for `supernet`),
assuming every batch size trains at this one's rate (the builds mix 16..512).

    python benchmarks/program_sharing.py --scale=tiny --batch_size=64 --steps=4 \
        --group_sizes=1,8 --conv_impls=xla,patches --build=lite
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import train_throughput as tt
from provenance import write_result

from nhb.bench.build import representative_codes
from nhb.bench.table import code_version
from nhb.models.cell_net import conv_edges_of
from nhb.models.layers import CONV_IMPLS
from nhb.space import nhb2
from nhb.train import Job, TrainStatic, get_scale

_HERE = pathlib.Path(__file__).resolve().parent
BUILDS = {  # runs, epochs, images per split (train, valid, test), batch sizes
    "lite": dict(runs=1011 * 48, epochs=12, n_train=2499, n_valid=2586, n_test=1017),
    "paper": tt.FULL_BUILD,
}
N_PATTERNS = 64

# --scale, --batch_size, --steps, --repeats, --group_sizes, --cell and --output_json are
# train_throughput's flags (imported above); the output default here is
# benchmarks/results/program_sharing_<backend>_<scale>.json.
flags.DEFINE_list("sharings", ["pattern", "supernet"], "Program sharings to measure.")
flags.DEFINE_list("conv_impls", ["xla"], f"Conv implementations, of {CONV_IMPLS}.")
flags.DEFINE_enum("build", "", ["", "lite", "paper"], "Project this build's hours.")
flags.DEFINE_string("from_json", "", "Re-report (table and projections) the rows of this "
                    "earlier output, in place, without measuring.")
FLAGS = flags.FLAGS


def supernet_jobs(size: int, batch_size: int) -> list[Job]:
    """`size` jobs of random official classes x LRS x SEEDS (seeded, so repeatable)."""
    codes = representative_codes()
    rng = np.random.default_rng(0)
    return [Job(tuple(int(d) for d in nhb2.cell_from_string(codes[rng.integers(len(codes))])),
                float(rng.choice(nhb2.LRS)), batch_size, int(rng.choice(nhb2.SEEDS)))
            for _ in range(size)]


def build_hours(build: dict, train_ips: float, eval_ips: float, compile_s: float,
                programs: int) -> dict:
    """Projected hours of a build at the measured rates (see the module docstring)."""
    train_s = build["runs"] * build["epochs"] * build["n_train"] / train_ips
    eval_s = build["runs"] * build["epochs"] * (build["n_valid"] + build["n_test"]) / eval_ips
    comp_s = programs * compile_s
    return dict(train_hours=train_s / 3600, eval_hours=eval_s / 3600,
                compile_hours=comp_s / 3600, programs=programs,
                total_hours=(train_s + eval_s + comp_s) / 3600)


def report(rows: list[dict], build_name: str, batch_size: int) -> list[dict]:
    """Prints the side-by-side table (adding `ratio` to rows) and returns the projections."""
    base = next((r["images_per_s"] for r in rows if r["group_size"] == 1
                 and r["sharing"] == "pattern" and "images_per_s" in r), None)
    head = (f"{'sharing':<9} {'conv':<8} {'G':>4} {'compile s':>9} {'memory MB':>9} "
            f"{'img/s (all)':>12} {'vs 1-at-a-time':>15}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        if "images_per_s" not in r:
            print(f"{r['sharing']:<9} {r['conv_impl']:<8} {r['group_size']:>4} {r['error']}")
            continue
        r["ratio"] = r["images_per_s"] / base if base else None
        mem = f"{r['memory_mb']:.0f}" if r.get("memory_mb") is not None else "-"
        ratio = f"{r['ratio']:.2f}x" if base else "-"
        print(f"{r['sharing']:<9} {r['conv_impl']:<8} {r['group_size']:>4} "
              f"{r['compile_s']:>9.1f} {mem:>9} {r['images_per_s']:>12.1f} {ratio:>15}")
    projections = []
    if build_name:
        build = BUILDS[build_name]
        for sharing in FLAGS.sharings:
            ok = [r for r in rows if r["sharing"] == sharing and "eval_images_per_s" in r]
            if not ok:
                continue
            best = max(ok, key=lambda r: r["images_per_s"])
            best_eval = max(ok, key=lambda r: r["eval_images_per_s"])
            programs = 6 * (N_PATTERNS if sharing == "pattern" else 1)
            p = dict(build=build_name, sharing=sharing, conv_impl=best["conv_impl"],
                     eval_conv_impl=best_eval["conv_impl"], group_size=best["group_size"],
                     batch_size=batch_size,
                     **build_hours(build, best["images_per_s"], best_eval["eval_images_per_s"],
                                   best["compile_s"] * 3, programs))
            projections.append(p)
            print(f"projected {build_name} build, {sharing} (train {best['conv_impl']}, eval "
                  f"{best_eval['conv_impl']}, G={best['group_size']}): {p['total_hours']:.2f} h = "
                  f"{p['train_hours']:.2f} train + {p['eval_hours']:.2f} eval + "
                  f"{p['compile_hours']:.2f} compile ({programs} programs x 3 phases, each "
                  f"charged the epoch's compile time)")
    return projections


def main(argv: Sequence[str]) -> None:
    """Runs every measurement, prints the table and writes the JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.from_json:
        saved = json.loads(pathlib.Path(FLAGS.from_json).read_text())
        build_name = FLAGS.build or next(
            (p["build"] for p in saved.get("projections", [])), "")
        saved["projections"] = report(saved["rows"], build_name, saved["meta"]["batch_size"])
        saved["meta"]["reported_by_code_version"] = code_version()
        # The rows keep the provenance of their measurement; "provenance" becomes the
        # re-report's.
        measured = saved.pop("provenance", None)
        saved.setdefault("measurement_provenance", measured)
        print(f"wrote {write_result(FLAGS.from_json, saved)}")
        return
    try:
        scale = get_scale(FLAGS.scale)
        sizes = sorted({int(g) for g in FLAGS.group_sizes})
        bad = [i for i in FLAGS.conv_impls if i not in CONV_IMPLS] + [
            s for s in FLAGS.sharings if s not in ("pattern", "supernet")]
        if bad:
            raise ValueError(f"unknown {bad}; conv impls: {CONV_IMPLS}, sharings: "
                             "('pattern', 'supernet')")
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    n = FLAGS.steps * FLAGS.batch_size
    data = tt.make_data(n)
    t_start = time.perf_counter()
    rows = []
    for sharing in FLAGS.sharings:
        for impl in FLAGS.conv_impls:
            static = TrainStatic(
                batch_size=FLAGS.batch_size, n_train=n, n_valid=8, n_test=8, epochs=12,
                conv_edges=(True,) * 6 if sharing == "supernet" else conv_edges_of(FLAGS.cell),
                channels=scale.channels, cells_per_stage=scale.cells_per_stage,
                masked=sharing == "supernet", conv_impl=impl)
            for g in sizes:
                if g == 1 and impl != "xla" and "xla" in FLAGS.conv_impls:
                    continue  # one config at a time: the grouped-conv question does not arise
                count = g if g > 1 else FLAGS.repeats + 1
                jobs = (supernet_jobs(count, FLAGS.batch_size) if sharing == "supernet"
                        else tt.group_jobs(FLAGS.cell, count, FLAGS.batch_size))
                row = dict(sharing=sharing, conv_impl=impl, group_size=g)
                print(f"{sharing} {impl} G={g} ...", flush=True)
                try:
                    row.update(tt.time_jax(jobs, data, static, repeats=FLAGS.repeats,
                                           precision="default", sequential=g == 1))
                    if FLAGS.build and g == max(sizes):
                        row["eval_images_per_s"] = tt.time_jax_eval(
                            jobs, data, static, repeats=FLAGS.repeats, precision="default")
                except Exception as e:  # e.g. out of device memory for a large group
                    row.update(error=f"{type(e).__name__}: {str(e)[:300]}")
                rows.append(row)
                print({k: v for k, v in row.items() if k not in ("final_loss",)}, flush=True)
    projections = report(rows, FLAGS.build, FLAGS.batch_size)
    device = jax.devices()[0]
    meta = dict(backend=jax.default_backend(), device_kind=getattr(device, "device_kind", ""),
                jax_version=jax.__version__, code_version=code_version(), scale=scale.name,
                channels=list(scale.channels), cells_per_stage=scale.cells_per_stage,
                batch_size=FLAGS.batch_size, steps=FLAGS.steps, repeats=FLAGS.repeats,
                cell=FLAGS.cell, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                wall_time_s=time.perf_counter() - t_start, argv=sys.argv)
    out = FLAGS.output_json or str(
        _HERE / "results" / f"program_sharing_{meta['backend']}_{scale.name}.json")
    if out.lower() != "none":
        print(f"wrote {write_result(out, dict(meta=meta, rows=rows, projections=projections))}")


if __name__ == "__main__":
    app.run(main)
