"""Building NAS-HPO-Bench-II tables: resumable, sharded builds of a `Preset` (`nhb.bench.presets`).

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

import json
import logging
import os
import pathlib
import time
import uuid
import warnings
from typing import Any

import numpy as np

from nhb.bench import executors as _executors
from nhb.bench.presets import (
    PRESETS,
    Preset,
    _digits,
    get_preset,
    plan,
    plan_shards,
    preset_sharing,
    representative_codes,
)
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
from nhb.space import nhb2
from nhb.train.engine import TRAIN_METRICS
from nhb.train.grid import (
    Job,
    RunResult,
)

log = logging.getLogger(__name__)
__all__ = ["EXECUTORS", "PLAN_FILE", "PRESETS", "REPORT_FILE", "SHARD_DIR", "TABLE_FILE",
           "Preset", "PresetMismatchError", "build", "get_preset", "plan", "plan_shards",
           "preset_sharing", "representative_codes"]

PLAN_FILE = "plan.json"
REPORT_FILE = "build_report.json"
SHARD_DIR = "shards"
EXECUTORS = _executors.EXECUTORS


class PresetMismatchError(ValueError):
    """The output directory was started with a different preset or grouping."""


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
        train_eval=preset.train_eval, hook=preset.snapshot_spec())

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
