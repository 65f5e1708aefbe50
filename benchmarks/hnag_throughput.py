r"""NAGO's network in nhb vs the authors' network in PyTorch: parity, then training throughput.

(1) Parity (`benchmarks/hnag_torch.py` restates the authors' `layer.py` in PyTorch). For the
paper's Table-3 CIFAR-10 optima (HNAG-BOHB and HNAG-MOBO) at the paper's 4M limit and at
nhb's CPU limit, a few sampled HNAG (paper ranges) and RNAG hierarchies, and one 64-px
network (the stride-4 stem), it checks

* parameter counts: torch == nhb's Linen `HNAGNet` == `nhb.models.hnag.param_count`;
* with the same weights (random, non-default values for every parameter and BN statistic,
  copied Linen -> torch): eval-mode logits and train-mode logits (batch statistics, dropout
  off) as max |diff| / max |logit|, the updated BN running statistics, and the
  cross-entropy gradients. Float32 gradients of these BN networks at batch 4 are
  ill-conditioned (torch's own float32 gradients differ from its float64 ones by up to a few
  % of the largest gradient, worst at the stem), so nhb's float32 gradients are compared
  with torch's FLOAT64 gradients next to torch's float32 ones (pass: within 4x of torch's
  own error), as max |diff| over tensors / max |gradient| of the network;
* whether the authors' output selection by dict position would pick other cells than
  nhb's selection by node id (their bug, reference/nago.md §2).

(2) Training throughput of ONE network (default: the Table-3 CIFAR-10 HNAG-BOHB optimum
sampled at nhb's CPU limit of 0.1M parameters, 32x32 images) in nhb (the engine's jitted
`sgd_step` in the CPU host loop, exactly what `nhb.nago.evaluate` runs) and in PyTorch
(the same protocol: Nesterov SGD lr 0.1, weight decay 1e-4, flip/crop, batch 64), both from
the same initial weights. Only the SGD loop is timed (batch gather, flip/crop, forward,
backward, update), after compilation / warm-up; an "epoch" here is `--steps` steps; best and
median of `--repeats` epochs. PyTorch runs once per `--torch_threads` entry (default: the
core count and 1 - on a shared, loaded machine OpenMP threads can be several times slower
than one). As `benchmarks/train_throughput.py`, whose flags and JSON layout this follows.
The default run takes about 5 minutes on 2 cores.

    python benchmarks/hnag_throughput.py                      # parity + throughput
    python benchmarks/hnag_throughput.py --throughput=false        # parity only
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os
import pathlib
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from provenance import write_result

from nhb.bench.table import code_version
from nhb.data import load_dataset
from nhb.models import hnag
from nhb.nago import graphs
from nhb.space import generators
from nhb.train.engine import HParams, Protocol, TrainData, make_train
from nhb.train.grid import resolve_sgd_loop
from nhb.train.programs import host_loop_epoch

_HERE = pathlib.Path(__file__).resolve().parent
PAPER_LIMIT, CPU_LIMIT = 4e6, 1e5
PARITY_TOL = 1e-4  # relative; float32 in both

flags.DEFINE_string("vector", "table3:bohb:cifar10", "Throughput network: 'table3:<bohb|mobo>:"
                    "<dataset>' or 8 comma-separated HNAG values.")
flags.DEFINE_float("param_limit", CPU_LIMIT, "Parameter limit that sets the width.")
flags.DEFINE_integer("batch_size", 64, "SGD batch size.")
flags.DEFINE_integer("steps", 5, "SGD steps per timed epoch.")
flags.DEFINE_integer("repeats", 3, "Timed epochs per row (after warm-up).")
flags.DEFINE_float("learning_rate", 0.1, "SGD learning rate (nhb's NAGO default).")
flags.DEFINE_float("weight_decay", 1e-4, "Coupled weight decay (nhb's NAGO default).")
flags.DEFINE_boolean("parity", True, "Run the parity checks.")
flags.DEFINE_integer("parity_samples", 1, "Sampled HNAG and RNAG hierarchies each (plus the "
                     "Table-3 optima and a 64-px network).")
flags.DEFINE_integer("parity_batch", 4, "Batch of the parity forward/backward passes.")
flags.DEFINE_integer("bug_samples", 200, "Sampled HNAG vectors for the statistics of the "
                     "authors' output-selection bug (graphs only, no networks).")
flags.DEFINE_integer("parity_max_ops", 200, "Skip sampled hierarchies with more bottom ops "
                     "(keeps the eager passes short).")
flags.DEFINE_boolean("throughput", True, "Run the throughput measurement.")
flags.DEFINE_boolean("torch", True, "Measure the PyTorch implementation if torch imports.")
flags.DEFINE_list("torch_threads", ["0", "1"], "torch.set_num_threads per torch row (0: "
                  "os.cpu_count()); 1 is kept because OpenMP threads on a busy machine can be "
                  "several times slower than one.")
flags.DEFINE_string("output_json", "", "Output path (default: "
                    "benchmarks/results/hnag_throughput_<backend>.json; 'none': no file).")
FLAGS = flags.FLAGS


def parse_vector(text: str) -> tuple[str, tuple[float, ...]]:
    """(label, HNAG values) of the --vector flag."""
    if text.startswith("table3:"):
        _, method, ds = text.split(":")
        return text, tuple(float(v) for v in generators.TABLE3[method][ds])
    values = tuple(float(v) for v in text.split(","))
    return "vector", values


def random_variables(shapes: Any, seed: int) -> dict:
    """Non-default values for every Linen variable (so parity exercises each of them).

    Conv kernels ~ N(0, 2 / fan_out) (the init's distribution), Dense kernels ~
    U(+-1/sqrt(fan_in)), biases ~ U(+-0.1), BN scale ~ U(0.5, 1.5), BN bias ~ N(0, 0.1),
    merge weights ~ N(0, 1), running means ~ N(0, 0.1), running variances ~ U(0.5, 1.5).
    """
    rng = np.random.default_rng(seed)

    def fill(path: tuple[str, ...], leaf: Any) -> np.ndarray:
        shape, name = tuple(leaf.shape), path[-1]
        if name == "kernel" and len(shape) == 4:
            return rng.normal(0, math.sqrt(2.0 / (shape[0] * shape[1] * shape[3])), shape)
        if name == "kernel":
            return rng.uniform(-1, 1, shape) / math.sqrt(shape[0])
        if path[0] == "batch_stats":
            return rng.normal(0, 0.1, shape) if name == "mean" else rng.uniform(0.5, 1.5, shape)
        if name == "scale":
            return rng.uniform(0.5, 1.5, shape)
        if name.startswith("merge_w"):
            return rng.normal(0, 1, shape)
        is_bn = path[-2].endswith(("bn", "bn0", "bn1"))
        return rng.normal(0, 0.1, shape) if is_bn else rng.uniform(-0.1, 0.1, shape)

    def walk(tree: Any, path: tuple[str, ...]) -> Any:
        if isinstance(tree, Mapping):
            return {k: walk(v, (*path, k)) for k, v in tree.items()}
        return jnp.asarray(fill(path, tree), jnp.float32)

    return walk(shapes, ())


def _rel(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max |a - b|, that / max(|b|max, 1e-12))."""
    d = float(np.max(np.abs(a - b))) if a.size else 0.0
    return d, d / max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-12)


def position_outputs(h: graphs.Hierarchy) -> list[int]:
    """The top-level cells the authors' `_parse_outputs` averages (dict position, a bug)."""
    order = list(h.top.inputs) + [v for v in range(h.top.n) if v not in h.top.inputs]
    return [k for i, k in enumerate(order) if i in h.top.outputs]


def position_bug_stats(n: int, seed: int = 0) -> dict:
    """How often the authors' positional output pick differs from nhb's pick by id, over `n`
    sampled HNAG vectors (paper ranges, thirds): "crash" = some picked cell has other
    channels than the cell its merger was built for (their forward raises), "silent" =
    other cells averaged without a crash."""
    space = generators.make("hnag")
    counts = dict(samples=0, failed=0, differ=0, crash=0, silent=0)
    for k in range(n):
        h = graphs.sample(space, np.asarray(space.sample(jax.random.key(seed + k))))
        counts["samples"] += 1
        if isinstance(h, graphs.SampleFailure):
            counts["failed"] += 1
            continue
        pos, ids = position_outputs(h), list(h.top.outputs)
        if pos != ids:
            counts["differ"] += 1
            crash = any(h.stages[a] != h.stages[b] for a, b in zip(pos, ids, strict=True))
            counts["crash" if crash else "silent"] += 1
    return counts


def parity_case(name: str, h: graphs.Hierarchy, width: int, image_size: int, batch: int,
                seed: int, num_classes: int = 10) -> dict:
    """Counts and forward/backward agreement of one network (see the module docstring)."""
    import hnag_torch
    import torch

    t0 = time.perf_counter()
    net = hnag.HNAGNet(h, width, num_classes, image_size)
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(
        (1, image_size, image_size, 3)), train=False))
    variables = random_variables(shapes, seed)
    tm = hnag_torch.build_torch(h, width, num_classes, image_size, seed=seed)
    counts = dict(torch=hnag_torch.param_count(tm),
                  linen=int(sum(math.prod(a.shape) for a in jax.tree.leaves(shapes["params"]))),
                  closed_form=int(hnag.param_count(h, width, num_classes, image_size)))
    hnag_torch.copy_from_linen(tm, variables)
    rng = np.random.default_rng(seed + 1)
    x = rng.normal(size=(batch, image_size, image_size, 3)).astype(np.float32)
    y = rng.integers(0, num_classes, batch)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    net0 = hnag.HNAGNet(h, width, num_classes, image_size, dropout_rate=0.0)

    @jax.jit
    def passes(variables: Any, x: jax.Array) -> tuple:
        """Eval logits; train-mode (dropout off) logits, new BN statistics, CE gradients."""
        def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
            out, new = net0.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                  x, train=True, mutable=["batch_stats"])
            ce = -jnp.mean(jax.nn.log_softmax(out)[jnp.arange(batch), y])
            return ce, (out, new["batch_stats"])

        (_, (train, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            variables["params"])
        return net.apply(variables, x, train=False), train, stats, grads

    logits_j, train_j, stats_j, grads_j = jax.block_until_ready(
        passes(variables, jnp.asarray(x)))
    tm.eval()
    with torch.no_grad():
        logits_t = tm(xt).numpy()
    eval_abs, eval_rel = _rel(np.asarray(logits_j), logits_t)
    tm.train()
    tm.dropout.p = 0.0
    tm64 = copy.deepcopy(tm).double()
    out = {}
    for key, model, xin in (("t32", tm, xt), ("t64", tm64, xt.double())):
        model.zero_grad(set_to_none=True)
        logits = model(xin)
        torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)).backward()
        out[key] = logits.detach().double().numpy()
    train_abs, train_rel = _rel(np.asarray(train_j), out["t32"])
    named = {k: dict(m.named_parameters()) | dict(m.named_buffers()) for k, m in
             (("t32", tm), ("t64", tm64))}
    # running statistics after the train-mode pass: nhb vs torch float32
    stats = []
    for path, value in hnag_torch._flat({"batch_stats": stats_j}).items():
        ref = named["t32"][hnag_torch.torch_name(path, tm.large_images)].detach().numpy()
        stats.append(_rel(np.asarray(value, np.float32).reshape(ref.shape), ref)[1])
    # gradients: float32 training is ill-conditioned here (BN nets at init amplify
    # gradients with depth), so both float32 gradients are compared with torch's FLOAT64
    # gradients of the same weights: nhb's error should be of the size of torch's own.
    errs: dict[str, list[tuple[float, str]]] = {"nhb": [], "torch32": [], "nhb_vs_torch32": []}
    grads = []
    for path, value in hnag_torch._flat({"params": grads_j}).items():
        tname = hnag_torch.torch_name(path, tm.large_images)
        g32 = named["t32"][tname].grad.detach().double().numpy()
        g64 = named["t64"][tname].grad.detach().numpy()
        v = np.asarray(value, np.float64)
        v = (v.transpose(3, 2, 0, 1) if v.ndim == 4 else v.T if v.ndim == 2
             else v.reshape(g64.shape))
        grads.append((tname, v, g32, g64))
    scale = max(float(np.max(np.abs(g64))) for *_, g64 in grads)
    for tname, v, g32, g64 in grads:
        errs["nhb"].append((float(np.max(np.abs(v - g64))) / scale, tname))
        errs["torch32"].append((float(np.max(np.abs(g32 - g64))) / scale, tname))
        errs["nhb_vs_torch32"].append((float(np.max(np.abs(v - g32))) / scale, tname))
    worst = {k: max(e) for k, e in errs.items()}
    pos = position_outputs(h)
    return dict(
        name=name, family=h.family, image_size=image_size, width=width, ops=h.num_ops,
        top_inputs=list(h.top.inputs), top_outputs=list(h.top.outputs),
        authors_position_outputs=pos, authors_outputs_differ=pos != list(h.top.outputs),
        params=counts, counts_equal=len(set(counts.values())) == 1,
        eval_logit_max_abs_diff=eval_abs, eval_logit_max_rel_diff=eval_rel,
        eval_logit_max_abs=float(np.max(np.abs(logits_t))),
        train_logit_max_abs_diff=train_abs, train_logit_max_rel_diff=train_rel,
        grad_scale=scale, grad_err_nhb_vs_torch64=worst["nhb"][0],
        grad_err_nhb_worst_param=worst["nhb"][1],
        grad_err_torch32_vs_torch64=worst["torch32"][0],
        grad_diff_nhb_vs_torch32=worst["nhb_vs_torch32"][0],
        train_logit_torch32_vs_torch64=_rel(out["t32"], out["t64"])[1],
        running_stat_worst_rel_diff=max(stats),
        seconds=time.perf_counter() - t0)


def parity_cases(samples: int, max_ops: int) -> list[tuple[str, graphs.Hierarchy, float, int]]:
    """(name, hierarchy, parameter limit, image size) of every parity case."""
    hnag_space, rnag_space = generators.make("hnag"), generators.make("rnag")
    cases = []
    for method in ("bohb", "mobo"):
        h = graphs.sample(hnag_space, generators.TABLE3[method]["cifar10"])
        cases += [(f"table3_{method}_cifar10@4M", h, PAPER_LIMIT, 32),
                  (f"table3_{method}_cifar10@0.1M", h, CPU_LIMIT, 32)]
    for family, space in (("hnag", hnag_space), ("rnag", rnag_space)):
        found, k = 0, 0
        while found < samples and k < 200:
            v = np.asarray(space.sample(jax.random.key(1000 + k)))
            k += 1
            h = graphs.sample(space, v)
            if isinstance(h, graphs.SampleFailure) or h.num_ops > max_ops:
                continue
            cases.append((f"{family}_sample{k - 1}[{','.join(f'{x:g}' for x in v)}]", h,
                          CPU_LIMIT, 32))
            found += 1
    h = graphs.sample(hnag_space, generators.TABLE3["mobo"]["cifar10"])
    cases.append(("table3_mobo_cifar10@0.1M_64px", h, CPU_LIMIT, 64))
    return cases


def init_stats(model: Any) -> dict:
    """Initialisation statistics of a torch `MasterNetwork` (also after copying nhb's init).

    conv_var_ratio: sum over conv weights of w^2 * fan_out / 2 / count (kaiming_normal_
    fan_out: 1); conv_bias_max_scaled: max |b| sqrt(fan_in) (PyTorch's default: <= 1);
    linear_var_ratio: Var(w) * 3 fan_in (default U(+-1/sqrt(fan_in)): 1); bn_weight_range,
    bn_bias_max_abs, merge_w_range.
    """
    import torch

    sq, count, bias_max, lin, bn_w, bn_b, merge = 0.0, 0, 0.0, [], [], [], []
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            w = mod.weight.detach().numpy()
            sq += float(np.sum(w**2)) * w.shape[0] * w.shape[2] * w.shape[3] / 2
            count += w.size
            fan_in = w.shape[1] * w.shape[2] * w.shape[3]
            bias_max = max(bias_max, float(np.max(np.abs(mod.bias.detach().numpy())))
                           * math.sqrt(fan_in))
        elif isinstance(mod, torch.nn.Linear):
            w = mod.weight.detach().numpy()
            lin.append(float(np.var(w)) * 3 * w.shape[1])
        elif isinstance(mod, torch.nn.BatchNorm2d):
            bn_w.append(mod.weight.detach().numpy())
            bn_b.append(mod.bias.detach().numpy())
        elif hasattr(mod, "mean") and isinstance(mod.mean, torch.nn.Parameter):
            merge.append(float(mod.mean.detach()))
    bn_w_all = np.concatenate(bn_w)
    return dict(conv_var_ratio=sq / count, conv_bias_max_scaled=bias_max,
                linear_var_ratio=lin[0] if lin else None,
                bn_weight_range=[float(bn_w_all.min()), float(bn_w_all.max())],
                bn_bias_max_abs=float(np.max(np.abs(np.concatenate(bn_b)))),
                merge_w_range=[min(merge), max(merge)] if merge else None)


def grad_ok(r: dict) -> bool:
    """nhb's float32 gradients are as close to torch's float64 ones as torch's float32 ones
    (within 4x, or 1e-5 of the largest gradient)."""
    return r["grad_err_nhb_vs_torch64"] <= max(4 * r["grad_err_torch32_vs_torch64"], 1e-5)


def make_data(n: int) -> TrainData:
    """`n` training images (the vendored CIFAR-10 subset, tiled); tiny valid/test splits."""
    ds = load_dataset("subset")
    reps = -(-n // len(ds.train_labels))
    x = np.concatenate([ds.train_images] * reps)[:n]
    y = np.concatenate([ds.train_labels] * reps)[:n].astype(np.int32)
    return TrainData(jnp.asarray(x), jnp.asarray(y), jnp.asarray(x[:8]), jnp.asarray(y[:8]),
                     jnp.asarray(x[:8]), jnp.asarray(y[:8]))


def time_jax(h: graphs.Hierarchy, width: int, data: TrainData, *, batch_size: int,
             repeats: int, lr: float, weight_decay: float) -> tuple[dict, dict]:
    """Times the engine's SGD loop for the network (as `nhb.nago.evaluate` runs it).

    Returns:
        (row, initial variables) - the row has compile_s, epoch_times_s, images_per_s
        (best epoch), images_per_s_median, final_loss, sgd_loop.
    """
    n = int(data.train_x.shape[0])
    model = hnag.make_model(h, width, 10, int(data.train_x.shape[1]))
    protocol = Protocol(batch_size=batch_size, n_train=n, n_valid=8, n_test=8, epochs=12,
                        train_eval=False)
    t = make_train(model, protocol)
    hps = jax.tree.map(lambda a: a[None], HParams(learning_rate=jnp.float32(lr),
                                                  weight_decay=jnp.float32(weight_decay)))
    keys = jax.random.key(0)[None]
    ops = jnp.zeros((1, 0), jnp.float32)
    state = jax.block_until_ready(jax.jit(jax.vmap(t.init))(keys, hps, ops))
    init_vars = {"params": jax.tree.map(lambda a: a[0], state.params),
                 "batch_stats": jax.tree.map(lambda a: a[0], state.batch_stats)}
    loop = resolve_sgd_loop("auto")
    t0 = time.perf_counter()
    if loop == "host":
        run_epoch = host_loop_epoch(t, state, hps, ops, data)
    else:
        run_epoch = jax.jit(jax.vmap(t.train_epoch, in_axes=(0, None, 0, 0, None))).lower(
            state, jnp.int32(0), hps, ops, data).compile()
    compile_s = time.perf_counter() - t0
    times, loss = [], None
    for e in range(repeats + 1):  # epoch 0 = warm-up
        t0 = time.perf_counter()
        state, stats = jax.block_until_ready(run_epoch(state, jnp.int32(e), hps, ops, data))
        if e > 0:
            times.append(time.perf_counter() - t0)
        loss = float(np.asarray(stats.loss)[0])
    return dict(compile_s=compile_s, epoch_times_s=times, images_per_s=n / min(times),
                images_per_s_median=n / float(np.median(times)), final_loss=loss,
                sgd_loop=loop, precision="float32 (XLA default)"), init_vars


def time_torch(h: graphs.Hierarchy, width: int, init_vars: dict, data: TrainData, *,
               batch_size: int, repeats: int, lr: float, weight_decay: float,
               threads: int) -> dict:
    """The PyTorch re-statement, same network and initial weights; `{"available": False}`
    without torch."""
    if importlib.util.find_spec("torch") is None:
        return dict(available=False, reason="torch is not installed (pip install torch)")
    try:
        import hnag_torch
        import torch
    except Exception as e:  # a broken torch install
        return dict(available=False, reason=f"import torch failed: {e!r}")
    torch.set_num_threads(threads)
    model = hnag_torch.build_torch(h, width, 10, int(data.train_x.shape[1]), seed=0)
    init = dict(torch=init_stats(model))
    hnag_torch.copy_from_linen(model, init_vars)
    init["nhb"] = init_stats(model)
    n = int(data.train_x.shape[0])
    res = hnag_torch.time_training(
        model, np.asarray(data.train_x), np.asarray(data.train_y), batch_size=batch_size,
        steps=n // batch_size, repeats=repeats, lr=lr, weight_decay=weight_decay)
    return dict(available=True, precision="float32 (torch defaults)", init_stats=init, **res)


def format_parity(rows: Sequence[dict]) -> str:
    """Parity table."""
    head = (f"{'case':<44} {'ops':>4} {'params torch/linen/closed':>27} {'eval |d|':>9} "
            f"{'rel':>8} {'train rel':>9} {'stat rel':>9} {'grad nhb':>9} {'grad t32':>9} "
            f"{'pos bug':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        c = r["params"]
        lines.append(f"{r['name'][:44]:<44} {r['ops']:>4} "
                     f"{c['torch']:>9}/{c['linen']}/{c['closed_form']:<9}"
                     f"{r['eval_logit_max_abs_diff']:>9.1e} {r['eval_logit_max_rel_diff']:>8.1e} "
                     f"{r['train_logit_max_rel_diff']:>9.1e} "
                     f"{r['running_stat_worst_rel_diff']:>9.1e} "
                     f"{r['grad_err_nhb_vs_torch64']:>9.1e} "
                     f"{r['grad_err_torch32_vs_torch64']:>9.1e} "
                     f"{'differs' if r['authors_outputs_differ'] else 'same':>7}")
    return "\n".join(lines)


def format_rows(rows: Sequence[dict]) -> str:
    """Side-by-side throughput table with the ratio to nhb."""
    base = next((r["images_per_s"] for r in rows if r["impl"] == "jax"
                 and "images_per_s" in r), None)
    head = (f"{'impl':<6} {'threads':>7} {'compile s':>9} {'img/s (best)':>12} "
            f"{'median':>9} {'vs nhb':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "images_per_s" not in r:
            lines.append(f"{r['impl']:<6} {r.get('reason', r.get('error', ''))}")
            continue
        comp = f"{r['compile_s']:.1f}" if "compile_s" in r else "-"
        ratio = f"{r['images_per_s'] / base:.2f}x" if base else "-"
        lines.append(f"{r['impl']:<6} {r.get('threads', '-')!s:>7} {comp:>9} "
                     f"{r['images_per_s']:>12.1f} {r['images_per_s_median']:>9.1f} {ratio:>8}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    """Parity, throughput, table, JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.steps < 1 or FLAGS.repeats < 1 or FLAGS.batch_size < 1:
        raise app.UsageError("--steps, --repeats and --batch_size must be >= 1")
    try:
        label, vector = parse_vector(FLAGS.vector)
        h = graphs.sample(generators.make("hnag"), vector)
    except (ValueError, KeyError) as e:
        raise app.UsageError(f"--vector: {e!r}") from e
    if isinstance(h, graphs.SampleFailure):
        raise app.UsageError(f"--vector cannot be sampled: {h}")
    sys.path.insert(0, str(_HERE))
    have_torch = FLAGS.torch and importlib.util.find_spec("torch") is not None
    try:
        thread_list = list(dict.fromkeys(int(t) or os.cpu_count() or 1
                                         for t in FLAGS.torch_threads))
    except ValueError as e:
        raise app.UsageError(f"--torch_threads: {e}") from e
    threads = thread_list[0]
    if have_torch:
        import torch
        torch.set_num_threads(threads)
    t_start = time.perf_counter()
    parity: list[dict] = []
    if FLAGS.parity and have_torch:
        for name, hp, limit, size in parity_cases(FLAGS.parity_samples, FLAGS.parity_max_ops):
            width = graphs.channel_multiplier(hp, limit)
            print(f"parity {name} (m={width}, {size} px) ...", flush=True)
            parity.append(parity_case(name, hp, width, size, FLAGS.parity_batch, seed=0))
        print(format_parity(parity), flush=True)
    bug = position_bug_stats(FLAGS.bug_samples) if FLAGS.bug_samples > 0 else None
    if bug:
        print(f"authors' output pick by dict position vs by id over {bug['samples']} sampled "
              f"HNAG vectors: {bug['failed']} unsampleable, {bug['differ']} differ "
              f"({bug['crash']} would crash, {bug['silent']} silently average other cells)",
              flush=True)
    width = graphs.channel_multiplier(h, FLAGS.param_limit)
    n = FLAGS.steps * FLAGS.batch_size
    data = make_data(n)
    print(f"throughput: {label} {vector} at limit {FLAGS.param_limit:g}: m={width}, "
          f"{hnag.param_count(h, width)} params, {h.num_ops} ops", flush=True)
    opt = dict(batch_size=FLAGS.batch_size, repeats=FLAGS.repeats, lr=FLAGS.learning_rate,
               weight_decay=FLAGS.weight_decay)
    rows: list[dict] = []
    if FLAGS.throughput:
        print("jax (nhb engine) ...", flush=True)
        jrow, init_vars = time_jax(h, width, data, **opt)
        rows.append(dict(impl="jax", **jrow))
    for th in thread_list if FLAGS.torch and FLAGS.throughput else []:
        print(f"torch ({th} threads) ...", flush=True)
        rows.append(dict(impl="torch", **time_torch(h, width, init_vars, data, threads=th,
                                                     **opt)))
    if rows:
        print(format_rows(rows), flush=True)
    ratios = {str(r["threads"]): r["images_per_s"] / rows[0]["images_per_s"]
              for r in rows[1:] if "images_per_s" in r}
    for th, ratio in ratios.items():
        print(f"torch ({th} threads) / nhb images/s: {ratio:.2f} (best epochs; machine load "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    backend = jax.default_backend()
    device = jax.devices()[0]
    meta = dict(backend=backend, device_kind=getattr(device, "device_kind", ""),
                device=str(device), jax_version=jax.__version__, code_version=code_version(),
                network=label, vector=list(vector), param_limit=FLAGS.param_limit,
                width=width, params=int(hnag.param_count(h, width)), ops=h.num_ops,
                graph=graphs.summary(h), image_size=32, batch_size=FLAGS.batch_size,
                steps=FLAGS.steps, repeats=FLAGS.repeats, learning_rate=FLAGS.learning_rate,
                weight_decay=FLAGS.weight_decay, torch_threads=thread_list,
                cpu_cores=os.cpu_count(), loadavg_end=list(os.getloadavg()),
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                wall_time_s=time.perf_counter() - t_start, argv=sys.argv)
    parity_ok = all(r["counts_equal"] and r["eval_logit_max_rel_diff"] < PARITY_TOL
                    and r["train_logit_max_rel_diff"] < PARITY_TOL
                    and r["running_stat_worst_rel_diff"] < PARITY_TOL
                    and grad_ok(r) for r in parity)
    payload = dict(meta=meta, rows=rows, torch_over_nhb_by_threads=ratios, parity=parity,
                   parity_ok=parity_ok if parity else None, position_bug=bug)
    out = FLAGS.output_json or str(_HERE / "results" / f"hnag_throughput_{backend}.json")
    if out.lower() != "none":
        print(f"wrote {write_result(out, payload, allow_nan=False)}")


if __name__ == "__main__":
    app.run(main)
