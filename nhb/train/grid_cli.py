"""Training a NAS-HPO-Bench-II grid from a config: parsing, validation, the JSON record.

The library side of `experiments/nhb2_train.py` (the binary only defines flags): `run(cfg)`
trains the grid cells x lrs x batch sizes x seeds of a config with `nhb.train.train_grid`,
prints a table of final accuracies and returns (and optionally writes, atomically) the JSON
payload `{"meta": ..., "runs": [...]}`, one record per run with `cell`, `learning_rate`,
`batch_size`, `seed`, `diverged`, `mode`, `group_size` and `metrics` (per-epoch lists of each
of `RUN_METRICS`; non-finite values as null).
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
from absl import logging

from nhb._io import atomic_write, code_version
from nhb.data import DATASET_NAMES, load_dataset
from nhb.space import cells as cell_lib
from nhb.space import nhb2
from nhb.train.engine import RUN_METRICS, TRAIN_METRICS, TrainData
from nhb.train.grid import (
    Job,
    RunResult,
    Scale,
    check_options,
    get_scale,
    resolve_mode,
    resolve_sharing,
    train_grid,
)

# ----------------------------------------------------------------------------- validation


def _split(spec: Any, what: str) -> list[str]:
    items = [s.strip() for s in str(spec).split(",") if s.strip()]
    if not items:
        raise ValueError(f"--{what} is empty; give a comma-separated list")
    return items


def parse_cells(spec: str) -> list[str]:
    """Official codes from `'all'` or comma-separated codes (`'0|12|300'` or `'012300'`)."""
    if str(spec).strip().lower() == "all":
        return list(cell_lib.cell_tables().unique_codes)
    codes = []
    for item in _split(spec, "cells"):
        if "|" not in item and len(item) == 6 and item.isdigit():
            item = f"{item[0]}|{item[1:3]}|{item[3:]}"
        try:
            digits = nhb2.cell_from_string(item)
        except ValueError as e:
            raise ValueError(f"--cells: {e}; or pass --cells=all") from None
        codes.append(cell_lib.code_of(tuple(int(d) for d in digits)))
    return list(dict.fromkeys(codes))  # drop repeats, keep order


def _parse_numbers(spec: Any, what: str, cast: type, positive: bool) -> list:
    out = []
    for item in _split(spec, what):
        try:
            value = cast(item)
        except ValueError:
            raise ValueError(f"--{what}: {item!r} is not a{'n int' if cast is int else ' number'}"
                             ) from None
        if positive and not (value > 0 and math.isfinite(value)):
            raise ValueError(f"--{what}: {item!r} must be positive")
        out.append(value)
    return list(dict.fromkeys(out))


def parse_lrs(spec: Any) -> list[float]:
    """Positive learning rates; warns about values outside the benchmark's `LRS`."""
    lrs = _parse_numbers(spec, "lrs", float, positive=True)
    for lr in lrs:
        if not any(math.isclose(lr, v, rel_tol=1e-9) for v in nhb2.LRS):
            logging.warning("learning rate %g is not one of the benchmark's %s", lr, nhb2.LRS)
    return lrs


def parse_batch_sizes(spec: Any) -> list[int]:
    """Positive batch sizes; warns about values outside the benchmark's `BATCH_SIZES`."""
    sizes = _parse_numbers(spec, "batch_sizes", int, positive=True)
    for bs in sizes:
        if bs not in nhb2.BATCH_SIZES:
            logging.warning("batch size %d is not one of the benchmark's %s", bs,
                            nhb2.BATCH_SIZES)
    return sizes


def resolve_scale(cfg: Any) -> Scale:
    """The scale preset with the optional `channels` / `cells_per_stage` overrides."""
    scale = get_scale(cfg.scale)
    channels, per_stage = scale.channels, scale.cells_per_stage
    if cfg.channels:
        channels = tuple(_parse_numbers(cfg.channels, "channels", int, positive=True))
        if len(channels) != 3:
            raise ValueError(f"--channels needs 3 comma-separated ints, got {cfg.channels!r}")
    if cfg.cells_per_stage:
        if cfg.cells_per_stage < 0:
            raise ValueError(f"--cells_per_stage must be positive, got {cfg.cells_per_stage}")
        per_stage = cfg.cells_per_stage
    if (channels, per_stage) == (scale.channels, scale.cells_per_stage):
        return scale
    return Scale(f"{scale.name}-custom", channels, per_stage)


def build_jobs(cfg: Any) -> list[Job]:
    """The grid cells x lrs x batch sizes x seeds as `Job`s (validates every field)."""
    codes = parse_cells(cfg.cells)
    lrs = parse_lrs(cfg.lrs)
    sizes = parse_batch_sizes(cfg.batch_sizes)
    seeds = _parse_numbers(cfg.seeds, "seeds", int, positive=False)
    return [Job(cell=tuple(int(d) for d in nhb2.cell_from_string(code)), learning_rate=lr,
                batch_size=bs, seed=seed)
            for code in codes for lr in lrs for bs in sizes for seed in seeds]


def validate(cfg: Any) -> None:
    """Checks the scalar fields; raises ValueError naming the valid choices."""
    get_scale(cfg.scale)
    if cfg.dataset not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; valid choices: {list(DATASET_NAMES)}")
    check_options(cfg.mode, cfg.sharing, cfg.conv_impl, cfg.sgd_loop)
    for name in ("epochs",):
        if cfg[name] < 1:
            raise ValueError(f"--{name} must be >= 1, got {cfg[name]}")
    for name in ("max_per_split", "max_group", "eval_batch_size"):
        if cfg[name] < 0:
            raise ValueError(f"--{name} must be >= 0 (0 = default), got {cfg[name]}")


# ----------------------------------------------------------------------------- output


def _clean(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def run_record(r: RunResult) -> dict:
    """One run as a JSON-ready dict (non-finite numbers become None)."""
    return dict(cell=r.job.code, learning_rate=r.job.learning_rate,
                batch_size=r.job.batch_size, seed=r.job.seed,
                diverged=r.diverged, mode=r.mode, group_size=r.group_size,
                metrics={n: [_clean(v) for v in r.metrics[n]] for n in RUN_METRICS})


def _device_info() -> dict:
    devices = jax.devices()
    d = devices[0]
    return dict(backend=jax.default_backend(), platform=d.platform,
                device_kind=getattr(d, "device_kind", ""), count=len(devices), name=str(d))


def write_json(path: str | pathlib.Path, payload: dict) -> pathlib.Path:
    """Writes `payload` atomically (temp file in the same folder, then `os.replace`)."""
    text = json.dumps(payload, indent=1, allow_nan=False).encode()
    return atomic_write(path, lambda f: f.write(text))


def format_table(records: Sequence[dict], max_rows: int) -> str:
    """Final-epoch accuracies; the best `max_rows` by valid accuracy when there are more."""
    rows = list(records)
    note = ""
    if len(rows) > max_rows:
        rows = sorted(rows, key=lambda r: -(r["metrics"]["valid_acc"][-1] or -1.0))[:max_rows]
        note = f"(best {max_rows} of {len(records)} runs by final valid accuracy)\n"

    def pct(v: float | None) -> str:
        return "nan" if v is None else f"{v:.2f}"

    head = (f"{'cell':<9} {'lr':>9} {'bs':>4} {'seed':>5} {'train%':>7} {'valid%':>7} "
            f"{'test%':>7} {'s/epoch':>8}  flags")
    lines = [head, "-" * len(head)]
    for r in rows:
        m = r["metrics"]
        t = sum(v or 0.0 for v in m["train_time"]) / max(len(m["train_time"]), 1)
        lines.append(f"{r['cell']:<9} {r['learning_rate']:>9g} {r['batch_size']:>4} "
                     f"{r['seed']:>5} "
                     f"{pct(m['train_acc'][-1]):>7} {pct(m['valid_acc'][-1]):>7} "
                     f"{pct(m['test_acc'][-1]):>7} {t:>8.2f}  "
                     f"{'DIVERGED' if r['diverged'] else ''}")
    return note + "\n".join(lines)


# ----------------------------------------------------------------------------- main


def prepare(cfg: Any) -> tuple[Scale, list[Job], str]:
    """Validates `cfg`; returns the scale, the jobs and the resolved execution mode.

    Raises:
        ValueError: a bad field (the message names the valid choices).
    """
    validate(cfg)
    return resolve_scale(cfg), build_jobs(cfg), resolve_mode(cfg.mode)


def run(cfg: Any, argv: Sequence[str] = (),
        plan: tuple[Scale, list[Job], str] | None = None) -> dict:
    """Trains the grid of `cfg`, writes the JSON if asked and prints the table.

    Args:
        cfg: a config as `experiments/configs/nhb2_train.py`'s `get_config()` returns (an
            `Any`; any object with those attributes and `to_json()`).
        argv: the command line, recorded in the JSON's meta.
        plan: `prepare(cfg)` if already computed.

    Returns:
        The JSON payload (`{"meta": ..., "runs": [...]}`).

    Raises:
        ValueError: a bad field (the message names the valid choices).
    """
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    scale, jobs, mode = plan or prepare(cfg)
    ds = load_dataset(cfg.dataset, cfg.data_dir or None, cfg.max_per_split or None)
    data = TrainData.from_dataset(ds)
    logging.info("training %d runs (%s mode, scale %s, %s %s)", len(jobs), mode, scale.name,
                 cfg.dataset, ds.sizes)
    t_train = time.perf_counter()
    results = train_grid(jobs, data, scale=scale, epochs=cfg.epochs, mode=cfg.mode,
                         max_group=cfg.max_group or None,
                         eval_batch_size=cfg.eval_batch_size or None, progress=cfg.progress,
                         sharing=cfg.sharing, conv_impl=cfg.conv_impl,
                         train_eval=cfg.train_eval, sgd_loop=cfg.sgd_loop)
    train_wall = time.perf_counter() - t_train
    records = [run_record(r) for r in results]
    meta = dict(
        scale=scale.name, channels=list(scale.channels), cells_per_stage=scale.cells_per_stage,
        dataset=cfg.dataset, dataset_sizes=ds.sizes, max_per_split=cfg.max_per_split or None,
        epochs=cfg.epochs, mode=mode, requested_mode=cfg.mode, max_group=cfg.max_group or None,
        sharing=resolve_sharing(cfg.sharing, scale), conv_impl=cfg.conv_impl,
        train_metrics=TRAIN_METRICS[0] if cfg.train_eval else TRAIN_METRICS[1],
        sgd_loop=cfg.sgd_loop,
        eval_batch_size=cfg.eval_batch_size or None, n_runs=len(records),
        n_diverged=sum(r["diverged"] for r in records), device=_device_info(),
        jax_version=jax.__version__, code_version=code_version(), started=started,
        train_wall_time_s=train_wall, wall_time_s=time.perf_counter() - t0,
        argv=list(argv), config=json.loads(cfg.to_json()))
    payload = {"meta": meta, "runs": records}
    if cfg.output_json:
        path = write_json(cfg.output_json, payload)
        logging.info("wrote %s", path)
    print(format_table(records, cfg.table_rows))
    print(f"{len(records)} runs, {meta['n_diverged']} diverged, {meta['wall_time_s']:.1f} s "
          f"wall ({mode} mode on {meta['device']['platform']})")
    return payload
