"""Executors of a table build (`nhb.bench.build`): where the groups of runs are trained.

* `LocalExecutor` ("local"): this process. With one local device the groups run one after
  another; with several, one thread per device, each with its own copy of the data. Groups
  are assigned to devices by program (batch size x conv-edge pattern, longest-processing-time
  first), so every compiled program lives on one device only: `nhb.train.grid` caches
  compiled executables per program, and an executable compiled for one device cannot run on
  another.
* `RayExecutor` ("ray"): one Ray task per group, each requesting 1 GPU when the cluster has
  GPUs, else 1 CPU. A task loads the data (cached per worker process), trains its group and
  returns the results; the driver writes the shards as results arrive and never touches an
  accelerator itself. Uses the running Ray cluster (`ray.init` done by the caller, or
  `RAY_ADDRESS`), else starts a local one and shuts it down when done.

Each executor calls `on_done(task, results, info)` in the driver thread that owns the
output, once per finished group, with `info` = device kind, platform and the group's wall
time (compilation included). The builder stores each group's results as one shard file
(`shard_bytes` / `read_shard`: an `.npz` of a JSON header and [runs, epochs] arrays).
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import io
import json
import logging
import os
import pathlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import tqdm

from nhb.bench.table import METRICS
from nhb.data.cifar10 import load_dataset
from nhb.space.cells import code_of
from nhb.train.engine import TrainData
from nhb.train.grid import Job, RunResult, get_scale, program_edges, run_group

EXECUTORS = ("local", "ray")
DATA_CACHE_SIZE = 2
SHARD_FORMAT = 1
RAY_HINT = "the 'ray' executor needs Ray: pip install 'ray>=2.9' (or use executor='local')"

log = logging.getLogger(__name__)
OnDone = Callable[["GroupTask", list[RunResult], dict], None]


@dataclasses.dataclass(frozen=True)
class GroupTask:
    """One group of runs to train: its position in the plan, shard name and jobs."""

    index: int
    name: str
    jobs: Sequence[Job]


@dataclasses.dataclass(frozen=True)
class GroupSettings:
    """Everything a worker needs besides the jobs (picklable, for Ray)."""

    scale: str
    epochs: int
    mode: str
    eval_batch_size: int | None
    dataset: str
    data_dir: str | None
    max_per_split: int | None
    compile_cache_dir: str | None = None
    sharing: str = "auto"
    conv_impl: str = "auto"
    train_eval: bool = True
    hook: Any = None  # a picklable, hashable `Model -> StepHook` factory (NAP2 snapshots)


def set_compile_cache(path: str | os.PathLike | None) -> None:
    """Turns on JAX's persistent compilation cache at `path` unless one is already set."""
    if path and not jax.config.jax_compilation_cache_dir:
        os.makedirs(path, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", os.fspath(path))


@functools.lru_cache(maxsize=DATA_CACHE_SIZE)
def _device_data(dataset: str, data_dir: str | None, max_per_split: int | None) -> TrainData:
    ds = load_dataset(dataset, data_dir=data_dir, max_per_split=max_per_split)
    return TrainData.from_dataset(ds)


def load_data(settings: GroupSettings) -> TrainData:
    """The settings' dataset as device arrays.

    Cached per process: the `DATA_CACHE_SIZE` most recently used datasets stay on device
    (`_device_data.cache_clear()` frees them), so a Ray worker loads its data once.
    """
    return _device_data(settings.dataset, settings.data_dir, settings.max_per_split)


def train_group(jobs: Sequence[Job], data: TrainData,
                settings: GroupSettings) -> tuple[list[RunResult], dict]:
    """Trains one group with `nhb.train.run_group`.

    Args:
        jobs: the group (one program: same batch size and program edges).
        data: the data, on the device to train on.
        settings: scale, epochs, mode, eval batch size.

    Returns:
        The results (in job order) and info: device kind, platform, wall time in seconds.
    """
    t0 = time.perf_counter()
    results = run_group(list(jobs), data, scale=get_scale(settings.scale),
                        epochs=settings.epochs, mode=settings.mode,
                        eval_batch_size=settings.eval_batch_size, sharing=settings.sharing,
                        conv_impl=settings.conv_impl, train_eval=settings.train_eval,
                        hook=settings.hook)
    device = next(iter(data.train_x.devices()))
    return results, dict(device=device.device_kind, platform=device.platform, device_id=device.id,
                         wall_s=time.perf_counter() - t0)


def _bar(progress: bool, initial: int, total: int) -> tqdm.tqdm:
    return tqdm.tqdm(total=total, initial=initial, disable=not progress, unit="run",
                     dynamic_ncols=True, smoothing=0.1)


class LocalExecutor:
    """Trains in this process, over all local devices (see the module docstring)."""

    def __init__(self, compile_cache_dir: str | None = None):
        set_compile_cache(compile_cache_dir)

    def accelerated(self) -> bool:
        """Whether the default backend is an accelerator (GPU/TPU)."""
        return jax.default_backend() != "cpu"

    def run(self, tasks: Sequence[GroupTask], settings: GroupSettings, on_done: OnDone, *,
            progress: bool = True, initial: int = 0, total: int | None = None) -> None:
        """Trains every task, calling `on_done` after each (see the module docstring)."""
        total = total if total is not None else initial + sum(len(t.jobs) for t in tasks)
        data = load_data(settings)
        devices = jax.local_devices()
        with _bar(progress, initial, total) as bar:
            if len(devices) == 1:
                for task in tasks:
                    results, info = train_group(task.jobs, data, settings)
                    on_done(task, results, info)
                    bar.update(len(task.jobs))
                return
            self._run_threads(devices, tasks, data, settings, on_done, bar)

    @staticmethod
    def _run_threads(devices: list, tasks: Sequence[GroupTask], data: TrainData,
                     settings: GroupSettings, on_done: OnDone, bar: tqdm.tqdm) -> None:
        programs: dict[tuple, list[GroupTask]] = {}
        for task in tasks:
            j = task.jobs[0]
            programs.setdefault((j.batch_size, program_edges(j.cell, settings.sharing)),
                                []).append(task)
        queues: list[list[GroupTask]] = [[] for _ in devices]
        load = [0] * len(devices)
        for key in sorted(programs, key=lambda k: -sum(len(t.jobs) * k[0] for t in programs[k])):
            d = load.index(min(load))
            queues[d].extend(programs[key])
            load[d] += sum(len(t.jobs) for t in programs[key])
        lock, stop, errors = threading.Lock(), threading.Event(), []

        def work(device: Any, queue: list[GroupTask]) -> None:
            try:
                with jax.default_device(device):
                    local = jax.device_put(data, device)
                    for task in sorted(queue, key=lambda t: t.index):
                        if stop.is_set():
                            return
                        results, info = train_group(task.jobs, local, settings)
                        with lock:
                            on_done(task, results, info)
                            bar.update(len(task.jobs))
            except BaseException as e:  # re-raised in the main thread
                errors.append(e)
                stop.set()

        threads = [threading.Thread(target=work, args=(d, q), daemon=True, name=f"nhb-{d}")
                   for d, q in zip(devices, queues, strict=True) if q]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Nothing to release."""


def _ray_train(settings: GroupSettings, jobs: Sequence[Job]) -> tuple[list[RunResult], dict]:
    """The body of one Ray task (runs in a worker process)."""
    set_compile_cache(settings.compile_cache_dir)
    return train_group(jobs, load_data(settings), settings)


class RayExecutor:
    """One Ray task per group (see the module docstring)."""

    def __init__(self, compile_cache_dir: str | None = None):
        try:
            import ray
        except ImportError as e:
            raise ImportError(RAY_HINT) from e
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
        gpus = ray.cluster_resources().get("GPU", 0)
        self.options = dict(num_gpus=1) if gpus >= 1 else dict(num_cpus=1)

    def accelerated(self) -> bool:
        """Whether the cluster has GPUs (then each task takes one)."""
        return "num_gpus" in self.options

    def run(self, tasks: Sequence[GroupTask], settings: GroupSettings, on_done: OnDone, *,
            progress: bool = True, initial: int = 0, total: int | None = None) -> None:
        """Submits every task, then writes results as they arrive (see the module docstring)."""
        ray = self.ray
        total = total if total is not None else initial + sum(len(t.jobs) for t in tasks)
        remote = ray.remote(_ray_train).options(**self.options, max_retries=1)
        settings_ref = ray.put(settings)
        refs = {remote.remote(settings_ref, list(t.jobs)): t for t in tasks}
        try:
            with _bar(progress, initial, total) as bar:
                while refs:
                    ready, _ = ray.wait(list(refs), num_returns=1)
                    for ref in ready:
                        task = refs.pop(ref)
                        results, info = ray.get(ref)
                        on_done(task, results, info)
                        bar.update(len(task.jobs))
        finally:
            for ref in refs:
                ray.cancel(ref)

    def close(self) -> None:
        """Shuts down the Ray cluster if this executor started it."""
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()


def make_executor(name: str, compile_cache_dir: str | None = None) -> Any:
    """An executor by name ("local" or "ray"); ValueError names the valid choices.

    Args:
        name: executor name.
        compile_cache_dir: JAX persistent compilation cache for the training processes.

    Returns:
        An object with `accelerated()`, `run(tasks, settings, on_done, ...)` and `close()`.
    """
    if name == "local":
        return LocalExecutor(compile_cache_dir)
    if name == "ray":
        return RayExecutor(compile_cache_dir)
    raise ValueError(f"unknown executor {name!r}; valid choices: {list(EXECUTORS)}")


# ----------------------------------------------------------------------------- shard files


def job_key(job: Job) -> list:
    """A job as JSON: [cell code, learning rate, batch size, seed] (values)."""
    return [code_of(job.cell), job.learning_rate, job.batch_size, job.seed]


def shard_bytes(results: Sequence[RunResult], info: dict) -> bytes:
    """One group's results as an `.npz`: a JSON header and [runs, epochs] metric arrays.

    What a hook recorded (`RunResult.extras`) is stored as `extras/<name>` [runs, ...].

    Args:
        results: the group's results.
        info: header entries (name, fingerprint, device, timing, ...).

    Returns:
        The file's bytes.
    """
    header = dict(info, shard_format=SHARD_FORMAT, jobs=[job_key(r.job) for r in results],
                  mode=results[0].mode, group_size=results[0].group_size)
    arrays = {f"metrics/{m}": np.stack([np.asarray(r.metrics[m], np.float64) for r in results])
              for m in METRICS}
    for name in results[0].extras:
        arrays[f"extras/{name}"] = np.stack([np.asarray(r.extras[name]) for r in results])
    buf = io.BytesIO()
    np.savez(buf, header=np.array(json.dumps(header)),
             diverged=np.array([r.diverged for r in results]), **arrays)
    return buf.getvalue()


def read_shard(path: pathlib.Path, fingerprint: str, jobs: Sequence[Job],
               epochs: int, extras: bool = False) -> tuple[dict, dict]:
    """Loads a shard and checks that it holds exactly `jobs` of this preset.

    Args:
        path: the shard file.
        fingerprint: the preset's fingerprint.
        jobs: the planned group.
        epochs: epochs per run.
        extras: also load the hook's `extras/...` arrays (else their CRCs are still checked
            but they are not kept in memory).

    Returns:
        (header, arrays).

    Raises:
        Exception: on any damage (zipfile checks every member's CRC-32) or mismatch.
    """
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
        header = json.loads(str(z["header"]))
        arrays = {}
        for k in z.files:
            if k != "header":
                value = z[k]  # reading checks the member's CRC
                if extras or not k.startswith("extras/"):
                    arrays[k] = value
    if (header.get("shard_format") != SHARD_FORMAT or header.get("fingerprint") != fingerprint
            or header.get("jobs") != [job_key(j) for j in jobs]):
        raise ValueError("its header does not match the planned group")
    shape = (len(jobs), epochs)
    if arrays["diverged"].shape != shape[:1] or any(
            arrays[f"metrics/{m}"].shape != shape for m in METRICS):
        raise ValueError("its arrays have the wrong shapes")
    return header, arrays


class DirLock:
    """An exclusive `flock` on `<dir>/.lock`, released on exit or when the process dies."""

    def __init__(self, directory: pathlib.Path):
        self.path = pathlib.Path(directory) / ".lock"

    def __enter__(self) -> DirLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self.fd)
            raise RuntimeError(f"another build is running in {self.path.parent} (it holds "
                               f"{self.path}); wait for it or use another output_dir") from e
        return self

    def __exit__(self, *exc: Any) -> None:
        os.close(self.fd)
