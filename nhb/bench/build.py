"""Building NAS-HPO-Bench-II tables: presets, the run plan, resumable sharded builds.

`build(preset, output_dir)` trains every run of a `Preset` (official class representatives x
learning rates x batch sizes x seeds) and assembles a `Table`. The output directory holds:

  plan.json          the preset (with its fingerprint) and the grouping; written first. A
                     later `build` into the same directory must ask for the same preset.
  shards/NNNNN-<hash>.npz
                     one file per finished group of runs (`plan_groups`: same batch size and
                     conv-edge pattern, so they share a compiled program). The name is the
                     group's position and a hash of the preset fingerprint and its jobs, so
                     it is a pure function of the plan. Format: `executors.shard_bytes`.
  table.nhb          the assembled table (`save_table`), once every shard exists.
  build_report.json  device, wall time, runs and runs/s of the build. Wall time sums, over
                     the build's sessions (calls), the time from a session's start to its
                     last shard (or to the table); time a killed session spent on groups it
                     did not finish is not counted.

Atomicity and resume: every file is written by `atomic_write` (a temp file `.<name>.*.tmp`
in the same directory, fsync, `os.replace`, fsync of the directory), so a kill at any
moment (SIGKILL included) leaves each file either absent or complete; a finished shard is
never lost. On start, a build takes an exclusive `flock` on `<output_dir>/.lock` (a second
concurrent build into the same directory fails at once), removes stale temp files left by a
killed build, keeps every valid shard and trains only the missing groups. A shard that
exists but does not load (truncated or otherwise damaged after it was written; a zip CRC
check covers every byte) or does not hold exactly its planned jobs is reported with a
`RuntimeWarning` and retrained. A directory whose `table.nhb` exists (with this preset's
fingerprint) is returned as is, without loading data, starting an executor or training.

Grouping: on CPUs runs go one at a time ("sequential" mode), so groups are cut into chunks of
`cpu_max_group` runs, which only sets how much work one shard holds; on GPUs the members of a
group are trained as one vmapped program, so a chunk holds at most `gpu_group_images //
batch_size` runs (a bound on the images in flight, i.e. on memory). Which of the two a
directory uses is decided at its first build and recorded in `plan.json`, so a resumed build
(even on another backend) keeps the same shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import time
import uuid
import warnings
from typing import Any

import numpy as np

from nhb._vendor import load_npz
from nhb.bench import executors as _executors
from nhb.bench.table import (
    METRICS,
    TABLE_FILE,
    Table,
    TableError,
    atomic_write,
    load_table,
    make_meta,
    save_table,
)
from nhb.data.cifar10 import DATASET_NAMES
from nhb.space import nhb2
from nhb.train.engine import TRAIN_METRICS
from nhb.train.grid import (
    Job,
    RunResult,
    check_options,
    get_scale,
    plan_groups,
    resolve_sharing,
)

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
REPORT_FILE = "build_report.json"
SHARD_DIR = "shards"
EXECUTORS = _executors.EXECUTORS
_CELLS_NPZ = "nashpobench2/nashpobench2_cells_split.npz"


class PresetMismatchError(ValueError):
    """The output directory was started with a different preset or grouping."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """What a build trains, and how (everything here is recorded in the table's meta).

    Attributes:
        name: the preset's name (`Table.meta["protocol"]`).
        dataset: `nhb.data.load_dataset` name ("subset", "cifar10", "cifar10_npz").
        scale: network scale name (`nhb.train.SCALES`).
        epochs: epochs per run (the cosine period).
        cells: official representative codes to train, or None for all 1011 classes.
        lrs: learning rates (values of `nhb2.LRS`).
        batch_sizes: batch sizes (values of `nhb2.BATCH_SIZES`).
        seeds: training seeds.
        max_per_split: keep only the first N images of each split (None: all).
        mode: execution mode ("auto": vmap on accelerators, sequential on CPU).
        cpu_max_group: runs per shard when grouping for CPUs.
        gpu_group_images: members x batch size bound of one vmapped group on accelerators
            (a memory bound). XLA's estimate on an H100 at the tiny scale, batch size 64,
            512 members: 1.6 MB per image in flight for the supernet trained with im2col
            (53.6 GB; `benchmarks/results/program_sharing_gpu_tiny.json`), hence lite's
            32768; the paper scale's 4096 is assumed, not measured.
        eval_batch_size: evaluation batch size (None: each run's batch size).
        sharing: program sharing (`nhb.train.SHARINGS`); "auto" resolves with the grouping
            (`preset_sharing`), so a resumed build keeps it.
        conv_impl: convolution implementation (`nhb.train.grid.resolve_conv_impl`).
        train_eval: train accuracy/loss from the authors' eval-mode pass over the augmented
            training set after each epoch (True, faithful); False records the SGD loop's
            running meters instead and skips that pass (`nhb.train.Protocol`). Recorded in
            the table's meta as `train_metrics`.
        description: free text (not part of the fingerprint).
    """

    name: str
    dataset: str
    scale: str
    epochs: int
    cells: tuple[str, ...] | None
    lrs: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    max_per_split: int | None = None
    mode: str = "auto"
    cpu_max_group: int = 4
    gpu_group_images: int = 4096
    eval_batch_size: int | None = None
    sharing: str = "auto"
    conv_impl: str = "auto"
    train_eval: bool = True
    description: str = ""

    def __post_init__(self):
        set_ = lambda name, v: object.__setattr__(self, name, v)
        if self.cells is not None:
            set_("cells", tuple(str(c) for c in self.cells))
        set_("lrs", tuple(float(v) for v in self.lrs))
        set_("batch_sizes", tuple(int(v) for v in self.batch_sizes))
        set_("seeds", tuple(int(v) for v in self.seeds))
        get_scale(self.scale)
        if self.dataset not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid choices: "
                             f"{list(DATASET_NAMES)}")
        check_options(self.mode, self.sharing, self.conv_impl)
        if self.epochs < 1 or self.cpu_max_group < 1 or self.gpu_group_images < 1:
            raise ValueError("epochs, cpu_max_group and gpu_group_images must be >= 1")
        for what, values, grid in (("learning rate", self.lrs, nhb2.LRS),
                                   ("batch size", self.batch_sizes, nhb2.BATCH_SIZES)):
            bad = [v for v in values if v not in grid]
            if bad or not values or len(set(values)) != len(values):
                raise ValueError(f"preset {what}s must be distinct values of {grid}; got "
                                 f"{values}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"preset seeds must be distinct; got {self.seeds}")
        if self.cells is not None:
            reps = set(representative_codes())
            bad = [c for c in self.cells if c not in reps]
            if bad or not self.cells or len(set(self.cells)) != len(self.cells):
                got = bad or self.cells
                raise ValueError(f"preset cells must be distinct official class representatives "
                                 f"(see nhb.space.cells.cell_tables().unique_codes); got {got}")

    def to_dict(self) -> dict:
        """JSON-serialisable fields (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Preset:
        """The inverse of `to_dict`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()
                      if k in fields})

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of every field but the description."""
        d = {k: v for k, v in self.to_dict().items() if k != "description"}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def cell_codes(self) -> tuple[str, ...]:
        """The trained cells: `cells`, or all 1011 official representatives."""
        return representative_codes() if self.cells is None else self.cells

    @property
    def n_runs(self) -> int:
        """Number of training runs."""
        return len(self.cell_codes()) * len(self.lrs) * len(self.batch_sizes) * len(self.seeds)


def representative_codes() -> tuple[str, ...]:
    """The 1011 official class representatives, in the official (training) order."""
    return tuple(str(c) for c in load_npz(_CELLS_NPZ)["unique_cellcodes"])


def _digits(code: str) -> tuple[int, ...]:
    return tuple(int(d) for d in nhb2.cell_from_string(code))


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("paper", dataset="cifar10", scale="paper", epochs=12, cells=None, lrs=nhb2.LRS,
           batch_sizes=nhb2.BATCH_SIZES, seeds=nhb2.SEEDS, gpu_group_images=4096,
           description="The NAS-HPO-Bench-II protocol: 1011 classes x 48 hps x 3 seeds, "
                       "full network, CIFAR-10 (TFDS), 12 epochs."),
    Preset("lite", dataset="subset", scale="tiny", epochs=12, cells=None, lrs=nhb2.LRS,
           batch_sizes=nhb2.BATCH_SIZES, seeds=(222,), gpu_group_images=32768,
           description="All 1011 classes x 48 hps, seed 222, 12 epochs, on the vendored "
                       "CIFAR-10 slice (2,499/2,586/1,017 images), tiny network. Projected "
                       "3.1 h on one H100 (supernet programs, im2col training; "
                       "benchmarks/results/program_sharing_gpu_tiny.json)."),
    Preset("study", dataset="subset", scale="tiny", epochs=12,
           cells=("0|12|021", "0|11|022", "0|10|132", "0|10|221"), lrs=(0.1, 0.2),
           batch_sizes=(64, 128), seeds=(222,), max_per_split=1000, cpu_max_group=4,
           train_eval=False,
           description="README main job: the 12-epoch protocol on 4 classes (two conv "
                       "patterns, parallel and serial convolutions, two cells each) x lrs "
                       "0.1, 0.2 x batch sizes 64, 128 (one batch-size/lr ratio shared, for "
                       "Figure 3's scaling panel), seed 222, tiny network, the first 1,000 "
                       "images of each split of the vendored CIFAR-10 slice, train metrics "
                       "from the SGD loop's meters (the authors' extra train pass is skipped "
                       "for time): a small real table for the search study, sized for about "
                       "5 minutes on a 2-core CPU."),
    Preset("smoke", dataset="subset", scale="tiny", epochs=3,
           cells=("0|00|000", "0|00|333", "0|00|122", "0|00|222"), lrs=(0.025, 0.1, 0.4),
           batch_sizes=(64,), seeds=(222,), max_per_split=128, cpu_max_group=3,
           description="4 classes (all-conv, the disconnected class, two mixed) x 3 lrs x "
                       "batch size 64, seed 222, 3 epochs, tiny network, 128 images per "
                       "split: a CPU check of the whole pipeline, not a benchmark."),
)}


def get_preset(preset: str | Preset) -> Preset:
    """A preset by name (or passes a `Preset` through); ValueError names the valid choices."""
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid choices: {sorted(PRESETS)}")
    return PRESETS[preset]


def plan(preset: str | Preset) -> list[Job]:
    """Every run of a preset: cells (class order) x lrs x batch sizes x seeds.

    Args:
        preset: a preset or its name.

    Returns:
        The jobs, in that nesting order.
    """
    p = get_preset(preset)
    return [Job(digits, lr, bs, seed) for digits in map(_digits, p.cell_codes())
            for lr in p.lrs for bs in p.batch_sizes for seed in p.seeds]


def preset_sharing(preset: str | Preset, accelerated: bool) -> str:
    """The preset's program sharing for a grouping (`nhb.train.grid.resolve_sharing`).

    Args:
        preset: a preset or its name.
        accelerated: grouping for accelerators.

    Returns:
        "pattern" or "supernet".
    """
    p = get_preset(preset)
    return resolve_sharing(p.sharing, get_scale(p.scale), accelerated)


def plan_shards(preset: str | Preset, accelerated: bool) -> list[tuple[str, list[Job]]]:
    """The groups of a build and their shard names (see the module docstring).

    Args:
        preset: a preset or its name.
        accelerated: group for accelerators (vmapped) rather than CPUs.

    Returns:
        (shard file name, jobs) per group, in training order.
    """
    p = get_preset(preset)
    jobs = plan(p)
    sharing = preset_sharing(p, accelerated)
    groups: list[list[Job]] = []
    for bs in sorted(p.batch_sizes):  # plan_groups orders by batch size first, too
        cap = max(1, p.gpu_group_images // bs) if accelerated else p.cpu_max_group
        groups.extend(plan_groups([j for j in jobs if j.batch_size == bs], max_group=cap,
                                  sharing=sharing))
    out = []
    for i, group in enumerate(groups):
        key = json.dumps([p.fingerprint, [_executors.job_key(j) for j in group]])
        out.append((f"{i:05d}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz", group))
    return out


def _write_json(path: pathlib.Path, obj: Any) -> None:
    data = json.dumps(obj, indent=1).encode()
    atomic_write(path, lambda f: f.write(data))


# ----------------------------------------------------------------------------- build


def build(preset: str | Preset, output_dir: str | os.PathLike, executor: str = "local",
          progress: bool = True, *, data_dir: str | None = None,
          compile_cache_dir: str | None = None) -> Table:
    """Builds (or resumes, or just loads) the table of a preset in `output_dir`.

    Args:
        preset: a preset or its name ("paper", "lite", "smoke").
        output_dir: the build directory (created; see the module docstring for its files).
        executor: "local" (this process; groups spread over the local devices) or "ray"
            (one Ray task per group; uses a running Ray cluster, or starts a local one).
        progress: show a progress bar over runs.
        data_dir: data location for datasets that need one (see `nhb.data.load_dataset`).
        compile_cache_dir: if given, JAX's persistent compilation cache directory (also used
            by Ray workers), so that resumed builds do not recompile.

    Returns:
        The table: one row per trained representative; cells of a class share its row.

    Raises:
        ValueError: unknown preset or executor.
        PresetMismatchError: `output_dir` was started with another preset.
        RuntimeError: another build holds `output_dir`.
    """
    preset = get_preset(preset)
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid choices: {list(EXECUTORS)}")
    out = pathlib.Path(output_dir)
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    with _executors.DirLock(out):
        return _build_locked(preset, out, executor, progress, data_dir, compile_cache_dir)


def _build_locked(preset: Preset, out: pathlib.Path, executor_name: str, progress: bool,
                  data_dir: str | None, compile_cache_dir: str | None) -> Table:
    session, start = uuid.uuid4().hex[:12], time.time()
    recorded = _read_plan(out, preset)
    if recorded is not None and (out / TABLE_FILE).exists():
        try:
            table = load_table(out / TABLE_FILE)
            if table.meta.get("fingerprint") == preset.fingerprint:
                return table
            log.warning("%s is not this preset's table; reassembling it", out / TABLE_FILE)
        except TableError as e:
            log.warning("%s; reassembling it from the shards", e)
    for tmp in (*out.glob(".*.tmp"), *(out / SHARD_DIR).glob(".*.tmp")):
        tmp.unlink(missing_ok=True)  # left by a killed build (we hold the lock)
    executor = None
    try:
        if recorded is None:
            executor = _executors.make_executor(executor_name, compile_cache_dir)
            grouping = "accelerator" if executor.accelerated() else "cpu"
        else:
            grouping = recorded["grouping"]
        shards = plan_shards(preset, grouping == "accelerator")
        names = [name for name, _ in shards]
        if recorded is None:
            _write_json(out / PLAN_FILE, dict(
                preset=preset.to_dict(), fingerprint=preset.fingerprint, grouping=grouping,
                runs=preset.n_runs, shards=names))
        elif recorded["shards"] != names:
            raise PresetMismatchError(
                f"{out / PLAN_FILE} lists other shards than this nhb plans for the same preset "
                "(the grouping code changed?); finish the build with the nhb that started it, "
                "or use a new output_dir")
        done, pending = {}, []
        for i, (name, group) in enumerate(shards):
            path = out / SHARD_DIR / name
            if path.exists():
                try:
                    done[name] = _executors.read_shard(path, preset.fingerprint, group,
                                                       preset.epochs)
                    continue
                except Exception as e:  # any damage means: train it again
                    warnings.warn(f"shard {path} is damaged ({type(e).__name__}: {e}); "
                                  "retraining its group", RuntimeWarning, stacklevel=4)
            pending.append(_executors.GroupTask(index=i, name=name, jobs=group))
        if pending:
            executor = executor or _executors.make_executor(executor_name, compile_cache_dir)
            _train(preset, out, executor, pending, done, progress, data_dir, compile_cache_dir,
                   dict(session=session, session_start=start, executor=executor_name), grouping)
    finally:
        if executor is not None:
            executor.close()
    table = _assemble(preset, shards, done, grouping, session)
    save_table(table, out / TABLE_FILE)
    report = {k: table.meta[k] for k in ("protocol", "fingerprint", "device", "devices",
                                         "executors", "runs", "groups", "wall_time_s",
                                         "train_time_s", "runs_per_s", "sessions")}
    _write_json(out / REPORT_FILE, dict(report, table=str(out / TABLE_FILE),
                                        summary=table.summary()))
    return table


def _train(preset: Preset, out: pathlib.Path, executor: Any, pending: list, done: dict,
           progress: bool, data_dir: str | None, compile_cache_dir: str | None,
           info: dict, grouping: str) -> None:
    """Trains the pending groups, writing each shard atomically as soon as it is done."""
    settings = _executors.GroupSettings(
        scale=preset.scale, epochs=preset.epochs, mode=preset.mode,
        sharing=preset_sharing(preset, grouping == "accelerator"), conv_impl=preset.conv_impl,
        eval_batch_size=preset.eval_batch_size, dataset=preset.dataset, data_dir=data_dir,
        max_per_split=preset.max_per_split, compile_cache_dir=compile_cache_dir,
        train_eval=preset.train_eval)

    def on_done(task: _executors.GroupTask, results: list[RunResult], meta: dict) -> None:
        data = _executors.shard_bytes(results, dict(
            info, **meta, name=task.name, fingerprint=preset.fingerprint, finished=time.time()))
        path = atomic_write(out / SHARD_DIR / task.name, lambda f: f.write(data))
        done[task.name] = _executors.read_shard(path, preset.fingerprint, task.jobs,
                                                preset.epochs)

    n_done = preset.n_runs - sum(len(t.jobs) for t in pending)
    log.info("%s: %d of %d runs done; training %d groups with the %s executor", out, n_done,
             preset.n_runs, len(pending), info["executor"])
    executor.run(pending, settings, on_done, progress=progress, initial=n_done,
                 total=preset.n_runs)


def _read_plan(out: pathlib.Path, preset: Preset) -> dict | None:
    path = out / PLAN_FILE
    if not path.exists():
        return None
    try:
        recorded = json.loads(path.read_text())
        old = recorded["preset"]
        missing = [k for k in ("grouping", "shards") if k not in recorded]
        if missing:
            raise KeyError(missing)
    except (ValueError, KeyError, TypeError) as e:
        raise PresetMismatchError(f"{path} is not a build plan ({e!r}); use a new "
                                  "output_dir") from e
    if recorded.get("fingerprint") != preset.fingerprint:
        diff = {k: (old.get(k), v) for k, v in preset.to_dict().items()
                if k != "description" and old.get(k) != v}
        raise PresetMismatchError(
            f"{out} holds a build of preset {old.get('name')!r} (fingerprint "
            f"{recorded.get('fingerprint')}), not of the requested {preset.name!r} "
            f"({preset.fingerprint}); differing fields (recorded, requested): {diff}. Resume "
            "with the recorded preset or use another output_dir")
    return recorded


def _assemble(preset: Preset, shards: list[tuple[str, list[Job]]],
              done: dict[str, tuple[dict, dict]], grouping: str, session: str) -> Table:
    codes = preset.cell_codes()
    cell_ix = {c: i for i, c in enumerate(codes)}
    lr_ix = {v: i for i, v in enumerate(preset.lrs)}
    bs_ix = {v: i for i, v in enumerate(preset.batch_sizes)}
    seed_ix = {v: i for i, v in enumerate(preset.seeds)}
    grid = (len(codes), len(preset.lrs), len(preset.batch_sizes), len(preset.seeds))
    metrics = {m: np.full((*grid, preset.epochs), np.nan, np.float32) for m in METRICS}
    diverged = np.zeros(grid, bool)
    filled = np.zeros(grid, bool)
    sessions: dict[str, list[float]] = {}
    devices, modes, executors, train_time = set(), set(), set(), 0.0
    for name, _ in shards:
        header, arrays = done[name]
        for k, (code, lr, bs, seed) in enumerate(header["jobs"]):
            at = (cell_ix[code], lr_ix[lr], bs_ix[bs], seed_ix[seed])
            for m in METRICS:
                metrics[m][at] = arrays[f"metrics/{m}"][k]
            diverged[at] = arrays["diverged"][k]
            filled[at] = True
        s = sessions.setdefault(header["session"], [header["session_start"], 0.0])
        s[1] = max(s[1], header["finished"])
        devices.add(header["device"])
        modes.add(header["mode"])
        executors.add(header["executor"])
        train_time += header["wall_s"]
    assert filled.all(), "every planned run has a shard"
    if session in sessions:
        sessions[session][1] = time.time()
    wall = sum(end - begin for begin, end in sessions.values())
    index = np.asarray(nhb2.cell_index(np.array([_digits(c) for c in codes])), np.int32)
    meta = make_meta(
        preset.name, dataset=preset.dataset, n_epochs=preset.epochs, preset=preset.to_dict(),
        fingerprint=preset.fingerprint, scale=preset.scale, seeds=list(preset.seeds),
        train_metrics=TRAIN_METRICS[0] if preset.train_eval else TRAIN_METRICS[1],
        max_per_split=preset.max_per_split, device=" + ".join(sorted(devices)),
        devices=sorted(devices), modes=sorted(modes), executors=sorted(executors),
        grouping=grouping, runs=preset.n_runs, groups=len(shards), sessions=len(sessions),
        wall_time_s=round(wall, 3), train_time_s=round(train_time, 3),
        runs_per_s=round(preset.n_runs / wall, 6) if wall > 0 else None)
    return Table(metrics=metrics, diverged=diverged, cells=np.asarray(index, np.int32),
                 seeds=preset.seeds, lrs=preset.lrs, batch_sizes=preset.batch_sizes,
                 meta=meta)
