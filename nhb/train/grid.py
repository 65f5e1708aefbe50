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
  on CPUs this is faster (docs/protocol.md §7: vmapped grouped convs are 4-6x slower there).
* `"auto"`: `"sequential"` on CPU; on GPU/TPU `"vmap"` for batch sizes up to
  `AUTO_VMAP_MAX_BATCH` (128) and `"sequential"` above. Measured on one H100 at paper scale
  (`benchmarks/results/train_throughput_gpu*.json`): a vmapped group of 48 trains 5.3x the
  images/s of the one-at-a-time loop at batch 16, 1.13x at batch 128, and a group of 8-24
  only 0.65-0.71x at batch 512, where a single network already fills the GPU.

SGD loop (`sgd_loop`, `SGD_LOOPS`): `"scan"` runs an epoch's steps as the trainer's
`train_epoch` (one `lax.scan` inside the compiled epoch); `"host"` loops over the trainer's
jitted `sgd_step` on the host; `"auto"` is "host" on CPUs, because XLA:CPU runs the
weight-gradient convolutions far slower inside any loop that carries the weights
(`benchmarks/cpu_step_loop.py`), and "scan" elsewhere. Every (mode, SGD loop) pair gives the
numbers of `Trainer.train`, the whole run as one scan, up to float reassociation
(`tests/grid_test.py` runs all four on the CPU).

One protocol: every epoch is the trainer's SGD loop, then its `eval_phases` (the authors'
train pass unless `train_eval=False`, validation, test), assembled by `epoch_metrics`
(`nhb.train.engine`). Compiled programs come from a bounded `ProgramCache`
(`nhb.train.programs`; the default one unless `cache=` is given).

Time attribution: each phase (the SGD loop of an epoch, the validation pass, the test pass)
is a separate call timed on the host after `block_until_ready`; the authors' train pass is
untimed, as theirs. In `"sequential"` mode that is each config's own time, as in the
reference. In `"vmap"` mode the group's phase time is divided equally among its members:
the amortised cost of that config on this device.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from nhb.data.batching import num_batches
from nhb.models.cell_net import conv_edges_of
from nhb.models.layers import CONV_IMPLS
from nhb.space import cells as _cells
from nhb.train.cellnet import TrainStatic
from nhb.train.engine import (
    EPOCH_METRICS,
    MOMENTUM,
    RUN_METRICS,
    WEIGHT_DECAY,
    HParams,
    TrainData,
)
from nhb.train.programs import DEFAULT_CACHE, SGD_LOOPS, ProgramCache

EXECUTION_MODES = ("auto", "vmap", "sequential")
AUTO_VMAP_MAX_BATCH = 128
SHARINGS = ("auto", "pattern", "supernet")
CONV_CHOICES = ("auto", *CONV_IMPLS)
AUTO_SUPERNET_MAX_CHANNELS = 16
ALL_CONV = (True,) * _cells.NUM_EDGES


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
    """One training run, by values: cell op digits, learning rate, batch size, training seed.

    Attributes:
        cell: 6 op digits (code order "A|BC|DEF").
        learning_rate: the initial learning rate (a value, e.g. 0.1; not an index).
        batch_size: the batch size (a value).
        seed: the training seed (a value, e.g. 222; the run's PRNG key is `key(seed)`).
    """

    cell: tuple[int, ...]
    learning_rate: float
    batch_size: int
    seed: int

    @property
    def code(self) -> str:
        """The official cell code."""
        return _cells.code_of(self.cell)


@dataclasses.dataclass
class RunResult:
    """One job's results.

    Attributes:
        job: the job.
        metrics: each of `nhb.train.RUN_METRICS` -> float64 [epochs] (accuracies in %,
            times in seconds).
        diverged: a training or evaluation loss was not finite.
        mode: the execution mode it ran in ("vmap" or "sequential").
        group_size: members trained together (1 in "sequential" mode).
        extras: what the program's hook recorded for this run (the hook state's entries
            whose names do not start with "_"; e.g. NAP2's snapshots), else empty.
    """

    job: Job
    metrics: dict[str, np.ndarray]
    diverged: bool
    mode: str
    group_size: int
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def check_options(mode: str = "auto", sharing: str = "auto", conv_impl: str = "auto",
                  sgd_loop: str = "auto") -> None:
    """Validates the execution options of a grid.

    Args:
        mode: one of `EXECUTION_MODES`.
        sharing: one of `SHARINGS`.
        conv_impl: one of `CONV_CHOICES`.
        sgd_loop: one of `SGD_LOOPS`.

    Raises:
        ValueError: an unknown value; the message names the valid choices.
    """
    for what, value, choices in (("execution mode", mode, EXECUTION_MODES),
                                 ("program sharing", sharing, SHARINGS),
                                 ("conv_impl", conv_impl, CONV_CHOICES),
                                 ("sgd_loop", sgd_loop, SGD_LOOPS)):
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


def resolve_sgd_loop(sgd_loop: str) -> str:
    """Maps "auto" to "host" on CPUs and "scan" elsewhere (see the module docstring)."""
    check_options(sgd_loop=sgd_loop)
    if sgd_loop == "auto":
        return "host" if jax.default_backend() == "cpu" else "scan"
    return sgd_loop


def group_static(group: Sequence[Job], data: TrainData, *,
                 scale: Scale, epochs: int, mode: str, eval_batch_size: int | None = None,
                 sharing: str = "auto", conv_impl: str = "auto",
                 train_eval: bool = True, hook: Any = None) -> TrainStatic:
    """The static settings of the one program that trains `group` (validated).

    Args:
        group: jobs of one program (`plan_groups` with the same `sharing`).
        data: the device arrays (their split sizes).
        scale, epochs, eval_batch_size, sharing, conv_impl, train_eval, hook: see
            `run_group`.
        mode: the resolved execution mode ("vmap" or "sequential").

    Returns:
        The `TrainStatic`.
    """
    sharing = resolve_sharing(sharing, scale)
    train_impl, eval_impl = resolve_conv_impl(conv_impl, mode)
    edges = {program_edges(j.cell, sharing) for j in group}
    if len(edges) != 1 or len({j.batch_size for j in group}) != 1:
        raise ValueError(f"a group must share one program (batch size and "
                         f"{sharing} edges); use plan_groups(..., sharing={sharing!r})")
    return TrainStatic(batch_size=group[0].batch_size, conv_edges=edges.pop(),
                       n_train=data.train_x.shape[0], n_valid=data.valid_x.shape[0],
                       n_test=data.test_x.shape[0], epochs=epochs,
                       channels=scale.channels, cells_per_stage=scale.cells_per_stage,
                       eval_batch_size=eval_batch_size, train_eval=train_eval,
                       masked=sharing == "supernet", conv_impl=train_impl,
                       eval_conv_impl=eval_impl, hook=hook)


def member_inputs(jobs: Sequence[Job]) -> tuple[jax.Array, HParams, jax.Array]:
    """Stacked (PRNG keys, hyperparameters, cell ops) of jobs, the members of one program."""
    keys = jnp.stack([jax.random.key(j.seed) for j in jobs])
    hp = HParams(learning_rate=jnp.asarray([j.learning_rate for j in jobs], jnp.float32),
                 momentum=jnp.full((len(jobs),), MOMENTUM, jnp.float32),
                 weight_decay=jnp.full((len(jobs),), WEIGHT_DECAY, jnp.float32))
    return keys, hp, jnp.asarray([j.cell for j in jobs], jnp.int32)


def run_group(group: Sequence[Job], data: TrainData, *, scale: Scale, epochs: int,
              mode: str = "auto", eval_batch_size: int | None = None,
              sharing: str = "auto", conv_impl: str = "auto", train_eval: bool = True,
              sgd_loop: str = "auto", cache: ProgramCache | None = None,
              hook: Any = None) -> list[RunResult]:
    """Trains one group of jobs (one program: see `plan_groups`), timing every phase.

    Every epoch runs the trainer's pieces (`nhb.train.Trainer`): the SGD loop (a compiled
    `lax.scan`, or a host loop over the compiled step), then each evaluation pass, each a
    separate compiled call timed on the host; `trainer.epoch_metrics` assembles them as
    `trainer.train` does.

    Args:
        group: jobs from `plan_groups` (with the same `sharing`).
        data: device arrays.
        scale: network scale.
        epochs: epochs (the cosine period equals it).
        mode: execution mode, one of `EXECUTION_MODES` (module docstring).
        eval_batch_size: evaluation batch size (None: the job's batch size).
        sharing: program sharing, one of `SHARINGS`.
        conv_impl: convolution implementation, one of `CONV_CHOICES` (`resolve_conv_impl`).
        train_eval: the authors' eval-mode pass over the training set for train metrics
            (False: the SGD loop's running meters; see `nhb.train.Protocol`).
        sgd_loop: "scan", "host" or "auto" (host on CPUs; module docstring).
        cache: compiled-program cache (None: `DEFAULT_CACHE`).
        hook: None, or a hashable factory `Model -> StepHook` run at every SGD step (e.g.
            `nhb.nap2.SnapshotSpec`); its public state lands in `RunResult.extras`. A factory
            with a `steps_needed()` method is checked against the run's SGD steps.

    Returns:
        One `RunResult` per job, in group order.

    Raises:
        ValueError: the runs are too short for the hook's `steps_needed()`.
    """
    mode = resolve_mode(mode, group[0].batch_size)
    sgd_loop = resolve_sgd_loop(sgd_loop)
    static = group_static(group, data, scale=scale, epochs=epochs, mode=mode,
                          eval_batch_size=eval_batch_size, sharing=sharing,
                          conv_impl=conv_impl, train_eval=train_eval, hook=hook)
    needed = getattr(hook, "steps_needed", lambda: 0)()
    total_steps = num_batches(static.n_train, static.batch_size) * epochs
    if needed > total_steps:
        raise ValueError(f"the hook needs {needed} SGD steps but a run at batch size "
                         f"{static.batch_size} on {static.n_train} images for {epochs} epochs "
                         f"has {total_steps}")
    cache = DEFAULT_CACHE if cache is None else cache
    extras: list[dict] = [{} for _ in group]
    units = [list(range(len(group)))] if mode == "vmap" else [[i] for i in range(len(group))]
    out = {n: np.zeros((len(group), epochs), np.float64) for n in RUN_METRICS}
    nonfinite = np.zeros((len(group), epochs), bool)
    for members in units:
        keys, hp, ops = member_inputs([group[i] for i in members])
        prog = cache.program(static, sgd_loop, keys, hp, ops, data)
        state = prog.init(keys, hp, ops)
        share = 1.0 / len(members)
        for e in range(epochs):
            epoch_index = jnp.int32(e)
            (state, stats), t_train = _timed(prog.epoch, state, epoch_index, hp, ops, data)
            results, seconds = {}, {}
            for name, fn in prog.phases.items():
                results[name], seconds[name] = _timed(fn, state, epoch_index, ops, data)
            metrics = prog.epoch_metrics(stats, results)
            for n in EPOCH_METRICS:
                out[n][members, e] = np.asarray(getattr(metrics, n))
            out["train_time"][members, e] = t_train * share
            out["valid_time"][members, e] = seconds["valid"] * share
            out["test_time"][members, e] = seconds["test"] * share
            nonfinite[members, e] = np.asarray(metrics.nonfinite)
        if isinstance(state.hook, dict):
            public = {k: np.asarray(v) for k, v in state.hook.items() if not k.startswith("_")}
            for j, i in enumerate(members):
                extras[i] = {k: v[j] for k, v in public.items()}
    finite = np.isfinite(out["train_loss"]).all(1) & np.isfinite(out["test_loss"]).all(1)
    diverged = nonfinite.any(1) | ~finite
    return [RunResult(job=job, metrics={n: out[n][i] for n in RUN_METRICS},
                      diverged=bool(diverged[i]), mode=mode, group_size=len(units[0]),
                      extras=extras[i])
            for i, job in enumerate(group)]


def train_grid(jobs: Sequence[Job], data: TrainData, *, scale: Scale, epochs: int,
               mode: str = "auto", max_group: int | None = None,
               eval_batch_size: int | None = None, progress: bool = True,
               sharing: str = "auto", conv_impl: str = "auto", train_eval: bool = True,
               sgd_loop: str = "auto", cache: ProgramCache | None = None,
               hook: Any = None) -> list[RunResult]:
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
        train_eval, sgd_loop, cache, hook: see `run_group`.

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
                               conv_impl=conv_impl, train_eval=train_eval,
                               sgd_loop=sgd_loop, cache=cache, hook=hook):
                results[r.job] = r
            bar.update(len(group))
    return [results[j] for j in jobs]
