r"""Training throughput of the NAS-HPO-Bench-II engine: sequential vs vmapped groups vs PyTorch.

One run measures, side by side, training images/s for

* (a) one config at a time: the size-1 program of `nhb.train` run for one config after
  another (what `train_grid(mode="sequential")` does);
* (b) vmapped groups of G configs (`mode="vmap"`): members are different cells of one
  conv-edge pattern x learning rates x seeds, as `nhb.train.plan_groups` groups them;
* (c) the same network and protocol in PyTorch (`benchmarks/torch_reference.py`), one config
  at a time, if torch is installed.

Only the SGD loop is timed (batch gather, flip/crop, forward, backward, update), after
compilation and a warm-up epoch; an "epoch" here is `--steps` SGD steps. Each row reports the
best and the median of `--repeats` epochs as aggregate images/s (all members together) and
per config (aggregate / G), and the ratio of the aggregate to the one-at-a-time loop.

On a GPU it also measures matmul/conv precision variants (`jax.default_matmul_precision`:
TF32, bf16) and projects the hours of the full 12-epoch build (1011 cells x 48 hps x 3 seeds
= 145,584 runs, each 12 x (25,000 training images + 25,000 valid + 10,000 test forward
passes)) from the best measured training throughput and a measured evaluation throughput.

Rows here use the engine's defaults for the pattern-keyed program with XLA's convolution;
`benchmarks/program_sharing.py` compares the program-sharing options (one program per conv
pattern or one masked supernet) and the convolution implementations (grouped conv vs
im2col + batched matmul) side by side, and `benchmarks/conv_impl.py` times one layer.

    python benchmarks/train_throughput.py --scale=tiny --batch_size=64 --steps=20 \
        --group_sizes=1,8,24,48
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import math
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
from nhb.data import load_dataset
from nhb.models.cell_net import conv_edges_of
from nhb.space import nhb2
from nhb.train import (
    Job,
    TrainData,
    TrainStatic,
    get_scale,
    grid,
    make_cell_train,
    programs,
)

_HERE = pathlib.Path(__file__).resolve().parent
FULL_BUILD = dict(runs=1011 * 48 * 3, epochs=12, n_train=25_000, n_valid=25_000, n_test=10_000)

flags.DEFINE_string("scale", "tiny", "Network scale preset: paper, small or tiny.")
flags.DEFINE_integer("batch_size", 64, "SGD batch size.")
flags.DEFINE_integer("steps", 20, "SGD steps per timed epoch.")
flags.DEFINE_integer("repeats", 3, "Timed epochs per row (after one warm-up epoch).")
flags.DEFINE_list("group_sizes", ["1", "8", "24", "48"], "Group sizes; 1 = one at a time.")
flags.DEFINE_string("cell", "0|10|201", "Cell (code) whose conv pattern the groups share.")
flags.DEFINE_list("precisions", [], "Matmul precisions for jax.default_matmul_precision "
                  "(default, highest, tensorfloat32, bfloat16); empty: 'default' on CPU, "
                  "'default,tensorfloat32,bfloat16' on GPU.")
flags.DEFINE_list("precision_group_sizes", [], "Group sizes measured at the non-default "
                  "precisions (empty: 1 and the largest group size).")
flags.DEFINE_boolean("torch", True, "Measure the PyTorch implementation if torch imports.")
flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0: torch's default).")
flags.DEFINE_boolean("project", None, "Measure eval throughput and project the full build's "
                     "hours (default: on GPU only).")
flags.DEFINE_string("output_json", "", "Output path (default: "
                    "benchmarks/results/train_throughput_<backend>.json; 'none': no file).")
FLAGS = flags.FLAGS


def group_jobs(cell: str, size: int, batch_size: int) -> list[Job]:
    """`size` jobs sharing `cell`'s conv pattern: other cells of it x LRS x SEEDS, mixed."""
    digits = tuple(int(d) for d in nhb2.cell_from_string(cell))
    free = [i for i, d in enumerate(digits) if d != 0]
    cells = []
    for choice in itertools.product((1, 2, 3), repeat=len(free)):
        c = list(digits)
        for i, v in zip(free, choice, strict=True):
            c[i] = v
        cells.append(tuple(c))
    cells.sort(key=lambda c: c != digits)  # the given cell first
    combos = list(itertools.product(range(len(cells)), nhb2.LRS, nhb2.SEEDS))
    order = np.random.default_rng(0).permutation(len(combos))
    jobs = [Job(digits, 0.1, batch_size, nhb2.SEEDS[0])]
    for k in order:
        if len(jobs) == size:
            break
        ci, lr, seed = combos[k]
        job = Job(cells[ci], lr, batch_size, seed)
        if job != jobs[0]:
            jobs.append(job)
    return jobs[:size]


def make_data(n: int) -> TrainData:
    """`n` training images (the vendored subset, tiled); tiny valid/test splits."""
    ds = load_dataset("subset")
    reps = -(-n // len(ds.train_labels))
    x = np.concatenate([ds.train_images] * reps)[:n]
    y = np.concatenate([ds.train_labels] * reps)[:n].astype(np.int32)
    return TrainData(jnp.asarray(x), jnp.asarray(y), jnp.asarray(x[:8]), jnp.asarray(y[:8]),
                     jnp.asarray(x[:8]), jnp.asarray(y[:8]))


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def _precision(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if name == "default" else jax.default_matmul_precision(name)


def time_jax(jobs: Sequence[Job], data: TrainData, static: TrainStatic, *, repeats: int,
             precision: str, sequential: bool) -> dict:
    """Times the engine's training epoch for `jobs` (after compilation and a warm-up epoch).

    Args:
        jobs: the group (vmapped together), or the configs run one after another.
        data: device arrays; `static.n_train` images per epoch.
        static: the program's static settings.
        repeats: timed epochs after one warm-up epoch.
        precision: a `jax.default_matmul_precision` name or "default".
        sequential: run a size-1 program over `jobs` in turn (one epoch each, cycling).

    Returns:
        Dict with group_size, compile_s, epoch_times_s, images_per_s (aggregate, best),
        images_per_s_median, per_config_images_per_s, final_loss.
    """
    t = make_cell_train(static)
    init = jax.jit(jax.vmap(t.init))
    epoch_fn = jax.jit(jax.vmap(t.train_epoch, in_axes=(0, None, 0, 0, None)))
    units = ([[jobs[k % len(jobs)]] for k in range(repeats + 1)] if sequential
             else [list(jobs)] * (repeats + 1))
    with _precision(precision):
        keys, hp, ops = grid.member_inputs(units[0])
        state = init(keys, hp, ops)
        t0 = time.perf_counter()
        if jax.default_backend() == "cpu":  # what the grid runner does on CPU (host loop)
            compiled = programs.host_loop_epoch(t, state, hp, ops, data)
            memory = None
        else:
            compiled = epoch_fn.lower(state, jnp.int32(0), hp, ops, data).compile()
            memory = memory_mb(compiled)
        compile_s = time.perf_counter() - t0
        times, loss = [], None
        for k, unit in enumerate(units):
            keys, hp, ops = grid.member_inputs(unit)
            if sequential or k == 0:
                state = jax.block_until_ready(init(keys, hp, ops))
            t0 = time.perf_counter()
            state, stats = jax.block_until_ready(
                compiled(state, jnp.int32(0 if sequential else k), hp, ops, data))
            loss = stats.loss
            if k > 0:
                times.append(time.perf_counter() - t0)
    size = 1 if sequential else len(jobs)
    images = size * static.n_train
    return dict(group_size=size, compile_s=compile_s, epoch_times_s=times, memory_mb=memory,
                images_per_s=images / min(times),
                images_per_s_median=images / float(np.median(times)),
                per_config_images_per_s=images / min(times) / size,
                final_loss=[_finite(v) for v in np.asarray(loss)])


def memory_mb(compiled: jax.stages.Compiled) -> float | None:
    """XLA's memory estimate of a compiled program (arguments + outputs + temporaries), MB."""
    try:
        m = compiled.memory_analysis()
        total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                 - m.alias_size_in_bytes)
    except Exception:  # not every backend / version reports it
        return None
    return total / 2**20


def time_jax_eval(jobs: Sequence[Job], data: TrainData, static: TrainStatic, *,
                  repeats: int, precision: str) -> float:
    """Aggregate images/s of the vmapped augmented evaluation pass (the validation pass)."""
    t = make_cell_train(static)
    ev = jax.jit(jax.vmap(t.eval_phases["valid"], in_axes=(0, None, 0, None)))
    with _precision(precision):
        keys, hp, ops = grid.member_inputs(jobs)
        state = jax.jit(jax.vmap(t.init))(keys, hp, ops)
        args = (state, jnp.int32(0), ops, data)
        compiled = ev.lower(*args).compile()
        jax.block_until_ready(compiled(*args))
        times = []
        for _ in range(max(repeats, 2)):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - t0)
    return len(jobs) * data.valid_x.shape[0] / min(times)


def time_torch(cell: str, data: TrainData, static: TrainStatic, repeats: int,
               threads: int, device: str) -> dict:
    """The PyTorch reference, one config; `{"available": False, "reason": ...}` without torch."""
    if importlib.util.find_spec("torch") is None:
        return dict(available=False, reason="torch is not installed (pip install torch)")
    sys.path.insert(0, str(_HERE))
    try:
        import torch
        import torch_reference
    except Exception as e:  # a broken torch install
        return dict(available=False, reason=f"import torch failed: {e!r}")
    if threads:
        torch.set_num_threads(threads)
    res = torch_reference.time_training(
        nhb2.cell_from_string(cell), np.asarray(data.train_x), np.asarray(data.train_y),
        batch_size=static.batch_size, steps=static.n_train // static.batch_size,
        repeats=repeats, channels=static.channels, cells_per_stage=static.cells_per_stage,
        epochs=static.epochs, device=device)
    return dict(available=True, group_size=1, precision="float32 (torch defaults)",
                per_config_images_per_s=res["images_per_s"], **res)


def project(train_ips: float, eval_ips: float) -> dict:
    """Hours of the full 12-epoch build at the given aggregate throughputs (compiles excluded)."""
    b = FULL_BUILD
    train_s = b["runs"] * b["epochs"] * b["n_train"] / train_ips
    eval_s = b["runs"] * b["epochs"] * (b["n_valid"] + b["n_test"]) / eval_ips
    return dict(**b, train_images_per_s=train_ips, eval_images_per_s=eval_ips,
                train_hours=train_s / 3600, eval_hours=eval_s / 3600,
                total_hours=(train_s + eval_s) / 3600)


def format_table(rows: Sequence[dict]) -> str:
    """Side-by-side table; ratios vs the one-at-a-time JAX loop at default precision."""
    base = next((r["images_per_s"] for r in rows if r.get("mode") == "sequential"
                 and r.get("precision") == "default" and "images_per_s" in r), None)
    head = (f"{'impl':<6} {'mode':<11} {'G':>3} {'precision':<14} {'compile s':>9} "
            f"{'img/s (all)':>12} {'median':>10} {'img/s/config':>12} {'vs 1-at-a-time':>15}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "images_per_s" not in r:
            lines.append(f"{r['impl']:<6} {r.get('mode', ''):<11} {r.get('group_size', ''):>3} "
                         f"{r.get('precision', ''):<14} {r.get('reason', r.get('error', ''))}")
            continue
        ratio = f"{r['images_per_s'] / base:.2f}x" if base else "-"
        comp = f"{r['compile_s']:.1f}" if "compile_s" in r else "-"
        lines.append(f"{r['impl']:<6} {r['mode']:<11} {r['group_size']:>3} "
                     f"{r['precision'][:14]:<14} {comp:>9} {r['images_per_s']:>12.1f} "
                     f"{r['images_per_s_median']:>10.1f} "
                     f"{r['per_config_images_per_s']:>12.1f} {ratio:>15}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    """Runs every measurement, prints the table and writes the JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        scale = get_scale(FLAGS.scale)
        sizes = sorted({int(g) for g in FLAGS.group_sizes})
        nhb2.cell_from_string(FLAGS.cell)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    if min(sizes) < 1 or FLAGS.steps < 1 or FLAGS.repeats < 1 or FLAGS.batch_size < 1:
        raise app.UsageError("group sizes, --steps, --repeats and --batch_size must be >= 1")
    backend = jax.default_backend()
    on_gpu = backend in ("gpu", "cuda", "rocm")
    precisions = FLAGS.precisions or (["default", "tensorfloat32", "bfloat16"] if on_gpu
                                      else ["default"])
    prec_sizes = {int(g) for g in FLAGS.precision_group_sizes} or {1, max(sizes)}
    do_project = on_gpu if FLAGS.project is None else FLAGS.project
    n = FLAGS.steps * FLAGS.batch_size
    data = make_data(n)
    static = TrainStatic(batch_size=FLAGS.batch_size, conv_edges=conv_edges_of(FLAGS.cell),
                         n_train=n, n_valid=8, n_test=8, epochs=12, channels=scale.channels,
                         cells_per_stage=scale.cells_per_stage)
    t_start = time.perf_counter()
    rows = []
    for precision in precisions:
        for g in sizes:
            if precision != "default" and g not in prec_sizes:
                continue
            row = dict(impl="jax", mode="sequential" if g == 1 else "vmap", precision=precision)
            print(f"jax {row['mode']} G={g} precision={precision} ...", flush=True)
            try:
                jobs = group_jobs(FLAGS.cell, g if g > 1 else FLAGS.repeats + 1,
                                  FLAGS.batch_size)
                row.update(time_jax(jobs, data, static, repeats=FLAGS.repeats,
                                    precision=precision, sequential=g == 1))
            except Exception as e:  # e.g. out of device memory for a large group
                row.update(group_size=g, error=f"{type(e).__name__}: {str(e)[:300]}")
            rows.append(row)
    if FLAGS.torch:
        device = "cpu"
        if on_gpu and importlib.util.find_spec("torch") is not None:
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        print(f"torch sequential G=1 on {device} ...", flush=True)
        rows.append(dict(impl="torch", mode="sequential", **time_torch(
            FLAGS.cell, data, static, FLAGS.repeats, FLAGS.torch_threads, device)))
    print(format_table(rows), flush=True)
    projections = []
    ok = [r for r in rows if r["impl"] == "jax" and "images_per_s" in r]
    base = [r for r in ok if r["precision"] == "default"]
    if do_project and base:
        best = max(base, key=lambda r: r["images_per_s"])
        g = best["group_size"]
        print(f"eval throughput at G={g}, default precision ...", flush=True)
        eval_ips = time_jax_eval(group_jobs(FLAGS.cell, g, FLAGS.batch_size), data, static,
                                 repeats=FLAGS.repeats, precision="default")
        for r in (best, max(ok, key=lambda r: r["images_per_s"])):
            if projections and r is best:
                continue
            speedup = r["images_per_s"] / best["images_per_s"]
            projections.append(dict(
                group_size=r["group_size"], precision=r["precision"], scale=scale.name,
                batch_size=FLAGS.batch_size, eval_measured=r is best,
                **project(r["images_per_s"], eval_ips * speedup)))
    for p in projections:
        print(f"projected full build (145,584 runs x 12 epochs), G={p['group_size']} "
              f"{p['precision']}: {p['total_hours']:.1f} h ({p['train_hours']:.1f} h training "
              f"+ {p['eval_hours']:.1f} h evaluation{'' if p['eval_measured'] else ' scaled'}); "
              f"compiles excluded, every run at batch size {FLAGS.batch_size} (the build mixes "
              f"16..512)")
    device = jax.devices()[0]
    meta = dict(backend=backend, device_kind=getattr(device, "device_kind", ""),
                device=str(device), jax_version=jax.__version__, code_version=code_version(),
                scale=scale.name, channels=list(scale.channels),
                cells_per_stage=scale.cells_per_stage, batch_size=FLAGS.batch_size,
                steps=FLAGS.steps, repeats=FLAGS.repeats, cell=FLAGS.cell,
                group_sizes=sizes, precisions=precisions,
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                wall_time_s=time.perf_counter() - t_start, argv=sys.argv)
    payload = dict(meta=meta, rows=rows, projections=projections)
    out = FLAGS.output_json or str(_HERE / "results" / f"train_throughput_{backend}.json")
    if out.lower() != "none":
        print(f"wrote {write_result(out, payload, allow_nan=False)}")


if __name__ == "__main__":
    app.run(main)
