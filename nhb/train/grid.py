"""Training a grid of NAS-HPO-Bench-II configs: grouping, execution modes and timing.

Program sharing (how configs with different cells share compiled programs), `SHARINGS`:

* `"pattern"`: a program per (batch size, conv-edge pattern, scale, epochs). The pattern
  (which of the 6 edges are ReLU-Conv-BN; all 2^6 = 64 occur among the 1011 classes) fixes the
  parameter structure; the other edges' ops (pool / skip / zero) are traced inputs, so no
  convolution FLOPs go to edges that are not convolutions. Up to 63 programs per batch size.
* `"supernet"`: one program per batch size: a masked network with a conv on every edge whose
  ops are all traced (`CellNet(masked=True)`), so any cells share a group. It spends conv
  FLOPs on non-conv edges (6 conv edges per cell instead of 2.03 on average over the 1011
  classes) but compiles 6 programs instead of 384, and groups are as large as memory allows.
* `"auto"`: `"pattern"` except for small networks on accelerators (`AUTO_SUPERNET_MAX_CHANNELS`),
  where compiling dominates and a step is launch-bound rather than FLOP-bound.

Both give the same numbers for a config up to float reassociation (`tests/grid_test.py`):
`init_cell_net` draws the same initial values for the parameters both networks have.
`benchmarks/program_sharing.py` measures compile time, step time and memory of the two.

Execution modes, identical up to float reassociation:
* `"vmap"`: a group's members (cells x lrs x seeds) are one `jax.vmap`-ed program; convs
  with per-member weights become grouped convolutions (`conv_impl="xla"`) or batched
  matmuls over im2col patches (`"patches"`, what `"auto"` trains with; `resolve_conv_impl`).
  The mode for GPUs.
* `"sequential"`: one member at a time through the same single-config compiled functions;
  on CPUs this is faster (DESIGN §8: vmapped grouped convs are 4-6x slower there).
* `"auto"`: `"sequential"` on CPU; on GPU/TPU `"vmap"` for batch sizes up to
  `AUTO_VMAP_MAX_BATCH` (128) and `"sequential"` above. Measured on one H100 at paper scale
  (`benchmarks/results/train_throughput_gpu*.json`): a vmapped group of 48 trains 5.3x the
  images/s of the one-at-a-time loop at batch 16, 1.13x at batch 128, and a group of 8-24
  only 0.65-0.71x at batch 512, where a single network already fills the GPU.

SGD loop: on GPUs an epoch's steps are one `lax.scan` inside the compiled epoch; on CPUs the
runner loops over a jitted step on the host instead, because XLA:CPU runs the weight-gradient
convolutions far slower inside any loop that carries the weights (`benchmarks/
cpu_step_loop.py` on the 2-core CPU, tiny network, batch 64: 434 vs 68 ms per step, 6.4x).
Both give the same numbers up to float reassociation (`tests/grid_test.py`).

Time attribution: each phase (the SGD loop of an epoch, the validation pass, the test pass)
is a separate call timed on the host after `block_until_ready`. In `"sequential"` mode that is
each config's own time, as in the reference. In `"vmap"` mode the group's phase time is
divided equally among its members: the amortised cost of that config on this device.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from nhb.models.cell_net import conv_edges_of
from nhb.models.layers import CONV_IMPLS
from nhb.space import nhb2
from nhb.train.engine import HParams, TrainData, TrainStatic, make_train

EXECUTION_MODES = ("auto", "vmap", "sequential")
AUTO_VMAP_MAX_BATCH = 128
SHARINGS = ("auto", "pattern", "supernet")
CONV_CHOICES = ("auto", *CONV_IMPLS)
AUTO_SUPERNET_MAX_CHANNELS = 16
ALL_CONV = (True,) * 6


@dataclasses.dataclass(frozen=True)
class Scale:
    """A network scale preset (channels per stage, normal cells per stage)."""

    name: str
    channels: tuple[int, int, int]
    cells_per_stage: int


SCALES = {
    "paper": Scale("paper", (16, 32, 64), 5),
    "small": Scale("small", (8, 16, 32), 2),
    "tiny": Scale("tiny", (4, 8, 16), 1),
}


def get_scale(name: str) -> Scale:
    """Scale preset by name; raises ValueError naming the valid choices."""
    if name not in SCALES:
        raise ValueError(f"unknown scale {name!r}; valid choices: {sorted(SCALES)}")
    return SCALES[name]


@dataclasses.dataclass(frozen=True)
class Job:
    """One training run: a cell (op digits), learning rate and batch size values, a seed."""

    cell: tuple[int, ...]
    lr: float
    batch_size: int
    seed: int

    @property
    def code(self) -> str:
        """The official cell code."""
        return nhb2.to_string(nhb2.make(self.cell, 0, 0))


@dataclasses.dataclass
class RunResult:
    """Per-epoch metrics of one job (numpy arrays of length `epochs`; accuracies in %)."""

    job: Job
    metrics: dict[str, np.ndarray]
    diverged: bool
    mode: str
    group_size: int


def check_options(mode: str = "auto", sharing: str = "auto", conv_impl: str = "auto") -> None:
    """Validates the execution options of a grid.

    Args:
        mode: one of `EXECUTION_MODES`.
        sharing: one of `SHARINGS`.
        conv_impl: one of `CONV_CHOICES`.

    Raises:
        ValueError: an unknown value; the message names the valid choices.
    """
    for what, value, choices in (("execution mode", mode, EXECUTION_MODES),
                                 ("program sharing", sharing, SHARINGS),
                                 ("conv_impl", conv_impl, CONV_CHOICES)):
        if value not in choices:
            raise ValueError(f"unknown {what} {value!r}; valid choices: {list(choices)}")


def resolve_sharing(sharing: str, scale: Scale | None = None,
                    accelerated: bool | None = None) -> str:
    """Maps "auto" to "pattern" or "supernet" (see the module docstring); validates the name.

    Args:
        sharing: one of `SHARINGS`.
        scale: the network scale (None: assume a large one).
        accelerated: whether the programs run on an accelerator (None: this process's
            default backend is not the CPU).

    Returns:
        "pattern" or "supernet".
    """
    check_options(sharing=sharing)
    if sharing == "auto":
        if accelerated is None:
            accelerated = jax.default_backend() != "cpu"
        small = scale is not None and max(scale.channels) <= AUTO_SUPERNET_MAX_CHANNELS
        return "supernet" if small and accelerated else "pattern"
    return sharing


def resolve_conv_impl(conv_impl: str, mode: str) -> tuple[str, str]:
    """The convolution implementations of the SGD steps and of the evaluation passes.

    "auto" trains vmapped groups with "patches" (im2col + batched matmul) and everything
    else with "xla", and always evaluates with "xla". Measured (`benchmarks/conv_impl.py`,
    `benchmarks/program_sharing.py`): with per-member kernels, XLA's grouped convolution
    trains slower than im2col + batched matmul at every shape we timed (H100: 1.05-2.96x
    per layer, 2.8-3.0x for the whole tiny network; 2-core CPU: 1.7-1.8x per layer), while the
    forward-only evaluation pass ran 3.7-4.2x faster with "xla" on the H100.

    Args:
        conv_impl: "auto" or one of `nhb.models.layers.CONV_IMPLS` (then used for both).
        mode: the resolved execution mode ("vmap" or "sequential").

    Returns:
        (training impl, evaluation impl).
    """
    check_options(conv_impl=conv_impl)
    if conv_impl == "auto":
        return ("patches" if mode == "vmap" else "xla"), "xla"
    return conv_impl, conv_impl


def program_edges(cell: Sequence[int], sharing: str) -> tuple[bool, ...]:
    """The conv-parameter pattern of the program that trains `cell` under `sharing`.

    Args:
        cell: 6 op digits.
        sharing: "pattern" or "supernet" (resolved).

    Returns:
        6 flags: the cell's conv edges, or all six for the supernet.
    """
    if sharing == "supernet":
        return ALL_CONV
    if sharing != "pattern":
        raise ValueError(f"program sharing must be resolved to 'pattern' or 'supernet', got "
                         f"{sharing!r}")
    return conv_edges_of(cell)


def plan_groups(jobs: Sequence[Job], max_group: int | None = None,
                sharing: str = "pattern") -> list[list[Job]]:
    """Groups jobs that can share one compiled program: same batch size and program edges.

    Args:
        jobs: the jobs.
        max_group: split groups into chunks of at most this many members (memory bound).
        sharing: "pattern" (same conv pattern) or "supernet" (same batch size only).

    Returns:
        Lists of jobs, in a deterministic order (by batch size, then pattern, then input order).
    """
    buckets: dict[tuple, list[Job]] = {}
    for job in jobs:
        buckets.setdefault((job.batch_size, program_edges(job.cell, sharing)), []).append(job)
    groups = []
    for key in sorted(buckets):
        members = buckets[key]
        step = max_group or len(members)
        groups.extend(members[i:i + step] for i in range(0, len(members), step))
    return groups


def resolve_mode(mode: str, batch_size: int | None = None) -> str:
    """Maps "auto" to the faster mode for this backend and batch size; validates the name.

    Args:
        mode: one of `EXECUTION_MODES`.
        batch_size: the group's batch size (None: assume a small one).

    Returns:
        "vmap" or "sequential".
    """
    check_options(mode=mode)
    if mode == "auto":
        if jax.default_backend() == "cpu":
            return "sequential"
        small = batch_size is None or batch_size <= AUTO_VMAP_MAX_BATCH
        return "vmap" if small else "sequential"
    return mode


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def run_group(group: Sequence[Job], data: TrainData, *, scale: Scale, epochs: int,
              mode: str = "auto", eval_batch_size: int | None = None,
              sharing: str = "pattern", conv_impl: str = "auto") -> list[RunResult]:
    """Trains one group of jobs (one program: see `plan_groups`), timing every phase.

    Args:
        group: jobs from `plan_groups` (with the same `sharing`).
        data: device arrays.
        scale: network scale.
        epochs: epochs (the cosine period equals it).
        mode: execution mode (see module docstring).
        eval_batch_size: evaluation batch size (None: the job's batch size).
        sharing: program sharing, one of `SHARINGS`.
        conv_impl: convolution implementation, one of `CONV_CHOICES` (`resolve_conv_impl`).

    Returns:
        One `RunResult` per job, in group order.
    """
    bs = group[0].batch_size
    mode = resolve_mode(mode, bs)
    sharing = resolve_sharing(sharing, scale)
    train_impl, eval_impl = resolve_conv_impl(conv_impl, mode)
    edges = {program_edges(j.cell, sharing) for j in group}
    if len(edges) != 1 or len({j.batch_size for j in group}) != 1:
        raise ValueError(f"a group must share one program (batch size and "
                         f"{sharing} edges); use plan_groups(..., sharing={sharing!r})")
    static = TrainStatic(batch_size=bs, conv_edges=edges.pop(),
                         n_train=data.train_x.shape[0], n_valid=data.valid_x.shape[0],
                         n_test=data.test_x.shape[0], epochs=epochs,
                         channels=scale.channels, cells_per_stage=scale.cells_per_stage,
                         eval_batch_size=eval_batch_size, masked=sharing == "supernet",
                         conv_impl=train_impl, eval_conv_impl=eval_impl)
    if mode == "vmap":
        units = [list(range(len(group)))]
    else:
        units = [[i] for i in range(len(group))]
    names = ("train_acc", "train_loss", "valid_acc", "valid_loss", "test_acc", "test_loss",
             "train_time", "valid_time", "test_time")
    out = {n: np.zeros((len(group), epochs), np.float64) for n in names}
    nonfinite = np.zeros((len(group), epochs), bool)
    for members in units:
        keys = jnp.stack([jax.random.key(group[i].seed) for i in members])
        hp = HParams(lr=jnp.asarray([group[i].lr for i in members], jnp.float32),
                     momentum=jnp.full((len(members),), 0.9, jnp.float32),
                     weight_decay=jnp.full((len(members),), 5e-4, jnp.float32))
        ops = jnp.asarray([group[i].cell for i in members], jnp.int32)
        tr = _jitted(static)
        state = tr["init"](keys, hp, ops)
        tr = _compiled(static, state, hp, ops, data)
        share = 1.0 / len(members)
        for e in range(epochs):
            epoch = jnp.int32(e)
            (state, (tr_acc, tr_loss, bad)), t_train = _timed(
                tr["epoch"], state, epoch, hp, ops, data)
            vkeys = tr["valid_key"](state, epoch)
            (va_acc, va_loss), t_valid = _timed(
                tr["eval_aug"], state, ops, data.valid_x, data.valid_y, vkeys)
            (te_acc, te_loss), t_test = _timed(
                tr["eval"], state, ops, data.test_x, data.test_y, vkeys)
            vals = dict(train_acc=tr_acc, train_loss=tr_loss, valid_acc=va_acc,
                        valid_loss=va_loss, test_acc=te_acc, test_loss=te_loss)
            for n, v in vals.items():
                out[n][members, e] = np.asarray(v)
            out["train_time"][members, e] = t_train * share
            out["valid_time"][members, e] = t_valid * share
            out["test_time"][members, e] = t_test * share
            nonfinite[members, e] = np.asarray(bad)
    finite = np.isfinite(out["train_loss"]).all(1) & np.isfinite(out["test_loss"]).all(1)
    diverged = nonfinite.any(1) | ~finite
    return [RunResult(job=job, metrics={n: out[n][i] for n in names},
                      diverged=bool(diverged[i]), mode=mode, group_size=len(units[0]))
            for i, job in enumerate(group)]


_JITTED: dict[TrainStatic, dict] = {}
_COMPILED: dict[tuple, dict] = {}


def _jitted(static: TrainStatic) -> dict:
    """Jitted phase functions of one program, vmapped over group members (cached)."""
    if static not in _JITTED:
        t = make_train(static)
        member = (0, None, 0, 0, None)
        evals = {name: jax.jit(jax.vmap(
            lambda s, o, x, y, k, aug=aug: t.evaluate(s, o, x, y, k, aug),
            in_axes=(0, 0, None, None, 0))) for name, aug in
            (("eval_aug", static.augment_valid), ("eval", False))}
        _JITTED[static] = {
            "init": jax.jit(jax.vmap(t.init)),
            "epoch": jax.jit(jax.vmap(t.train_epoch, in_axes=member)),
            "valid_key": jax.jit(jax.vmap(t.valid_key, in_axes=(0, None))),
            # The same epoch in pieces, for the host loop (`_host_loop_epoch`).
            "setup": jax.jit(jax.vmap(t.epoch_setup, in_axes=(0, None, 0))),
            "step": jax.jit(jax.vmap(t.sgd_step, in_axes=(0, None, 0, 0, 0, 0, 0, None))),
            "finish": jax.jit(jax.vmap(t.epoch_finish)),
            "steps": t.steps,
            **evals,
        }
    return _JITTED[static]


def _compiled(static: TrainStatic, state, hp, ops, data: TrainData) -> dict:
    """Ahead-of-time compiled phases for one group size, so timings exclude compilation."""
    key = (static, ops.shape[0])
    if key not in _COMPILED:
        fns = _jitted(static)
        epoch = jnp.int32(0)
        vkeys = fns["valid_key"](state, epoch)
        if jax.default_backend() == "cpu":
            run_epoch = _host_loop_epoch(static, state, hp, ops, data)
        else:
            run_epoch = fns["epoch"].lower(state, epoch, hp, ops, data).compile()
        _COMPILED[key] = {
            "epoch": run_epoch,
            "valid_key": fns["valid_key"],
            "eval_aug": fns["eval_aug"].lower(state, ops, data.valid_x, data.valid_y,
                                              vkeys).compile(),
            "eval": fns["eval"].lower(state, ops, data.test_x, data.test_y, vkeys).compile(),
        }
    return _COMPILED[key]


def _host_loop_epoch(static: TrainStatic, state, hp, ops, data: TrainData):
    """An epoch as a host loop over one compiled (vmapped) SGD step; see the module doc."""
    fns = _jitted(static)
    setup, steps = fns["setup"], fns["steps"]
    carry, (k_aug, idx, mask) = setup(state, jnp.int32(0), hp)
    i0 = jnp.int32(0)
    step_c = fns["step"].lower(carry, i0, idx[:, 0], mask[:, 0], k_aug, hp, ops,
                               data).compile()
    sums = jnp.zeros((ops.shape[0], steps), jnp.float32)
    finish_c = fns["finish"].lower(state, carry, sums, sums).compile()

    def run_epoch(state, epoch, hp, ops, data):
        carry, (k_aug, idx, mask) = setup(state, epoch, hp)
        losses, corrects = [], []
        for i in range(steps):
            carry, (loss_sum, correct) = step_c(carry, jnp.int32(i), idx[:, i], mask[:, i],
                                                k_aug, hp, ops, data)
            losses.append(loss_sum)
            corrects.append(correct)
        return finish_c(state, carry, jnp.stack(losses, 1), jnp.stack(corrects, 1))

    return run_epoch


def train_grid(jobs: Sequence[Job], data: TrainData, *, scale: Scale, epochs: int,
               mode: str = "auto", max_group: int | None = None,
               eval_batch_size: int | None = None, progress: bool = True,
               sharing: str = "pattern", conv_impl: str = "auto") -> list[RunResult]:
    """Trains every job, grouped so that compiled programs are shared.

    Args:
        jobs: the jobs.
        data: device arrays.
        scale: network scale.
        epochs: epochs per run.
        mode: execution mode ("auto", "vmap", "sequential").
        max_group: chunk size of vmapped groups.
        eval_batch_size: evaluation batch size (None: each job's batch size).
        progress: show a progress bar (jobs done).
        sharing: program sharing, one of `SHARINGS`.
        conv_impl: convolution implementation, one of `CONV_CHOICES` (`resolve_conv_impl`).

    Returns:
        Results in the order of `jobs`.
    """
    sharing = resolve_sharing(sharing, scale)
    groups = plan_groups(jobs, max_group, sharing)
    results: dict[Job, RunResult] = {}
    with tqdm.tqdm(total=len(jobs), disable=not progress, unit="run") as bar:
        for group in groups:
            for r in run_group(group, data, scale=scale, epochs=epochs, mode=mode,
                               eval_batch_size=eval_batch_size, sharing=sharing,
                               conv_impl=conv_impl):
                results[r.job] = r
            bar.update(len(group))
    return [results[j] for j in jobs]
