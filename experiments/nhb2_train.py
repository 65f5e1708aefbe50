r"""Trains NAS-HPO-Bench-II configs (one or a grid) and writes per-epoch metrics as JSON.

A thin front end of `nhb.train.train_grid`: the grid is cells x lrs x batch sizes x seeds,
trained with the benchmark protocol (DESIGN §3) at a chosen network scale. Example (quote
the cell codes: `|` is the shell's pipe; `000000` is accepted for `0|00|000` as well):

    python experiments/nhb2_train.py --cells='0|00|000' --lrs=0.1,0.05 --batch_sizes=64 \
        --seeds=222 --epochs=3 --scale=tiny --dataset=subset --output_json=/tmp/run.json

Defaults come from `experiments/configs/nhb2_train.py` (`--config=...`, `--config.FIELD=...`);
the top-level flags below override the config's fields of the same name.

The JSON holds `meta` (scale, dataset, epochs, device, versions, wall time, ...) and `runs`:
one record per run with `cell`, `lr`, `batch_size`, `seed`, `diverged`, `mode`,
`group_size` and `metrics` (per-epoch lists of train/valid/test accuracy (%) and loss and
train/valid/test time (s)). Non-finite values (diverged runs) are written as null.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from nhb.bench.table import atomic_write, code_version
from nhb.data import DATASET_NAMES, load_dataset
from nhb.space import cells as cell_lib
from nhb.space import nhb2
from nhb.train import (
    EXECUTION_MODES,
    SCALES,
    Job,
    RunResult,
    Scale,
    TrainData,
    get_scale,
    train_grid,
)
from nhb.train.grid import (
    CONV_CHOICES,
    SHARINGS,
    check_options,
    resolve_mode,
    resolve_sharing,
)

_CONFIG = pathlib.Path(__file__).resolve().parent / "configs" / "nhb2_train.py"

# (name, absl definer, help): top-level flags overriding the config field of the same name.
_OVERRIDES = (
    ("cells", flags.DEFINE_string,
     "Comma-separated official cell codes 'A|BC|DEF' (or 6 digits), or 'all' for the 1011 "
     "official class representatives."),
    ("lrs", flags.DEFINE_string, f"Comma-separated learning rates (benchmark: {nhb2.LRS})."),
    ("batch_sizes", flags.DEFINE_string,
     f"Comma-separated batch sizes (benchmark: {nhb2.BATCH_SIZES})."),
    ("seeds", flags.DEFINE_string, f"Comma-separated seeds (benchmark: {nhb2.SEEDS})."),
    ("epochs", flags.DEFINE_integer, "Epochs per run (the cosine period; benchmark: 12)."),
    ("scale", flags.DEFINE_string, f"Network scale preset, one of {sorted(SCALES)}."),
    ("channels", flags.DEFINE_string, "Override the preset's channels: 'C1,C2,C3'."),
    ("cells_per_stage", flags.DEFINE_integer, "Override the preset's normal cells per stage."),
    ("dataset", flags.DEFINE_string, f"Data source, one of {list(DATASET_NAMES)}."),
    ("data_dir", flags.DEFINE_string, "TFDS data dir (cifar10) or .npz path (cifar10_npz)."),
    ("max_per_split", flags.DEFINE_integer, "Keep only the first N examples of each split."),
    ("mode", flags.DEFINE_string, f"Execution mode, one of {list(EXECUTION_MODES)}."),
    ("max_group", flags.DEFINE_integer, "Largest vmapped group (0: no limit)."),
    ("sharing", flags.DEFINE_string, f"Program sharing, one of {list(SHARINGS)}."),
    ("conv_impl", flags.DEFINE_string, f"Convolution implementation, one of "
     f"{list(CONV_CHOICES)}."),
    ("eval_batch_size", flags.DEFINE_integer, "Evaluation batch size (0: the run's)."),
    ("progress", flags.DEFINE_boolean, "Show a progress bar."),
    ("output_json", flags.DEFINE_string, "Where to write the results JSON ('' = nowhere)."),
    ("table_rows", flags.DEFINE_integer, "Rows of the final-accuracy table."),
)
METRIC_NAMES = ("train_acc", "train_loss", "valid_acc", "valid_loss", "test_acc", "test_loss",
                "train_time", "valid_time", "test_time")


def define_flags(flag_values: flags.FlagValues, argv: Sequence[str] | None = None) -> None:
    """Registers `--config` and the override flags (all default None = keep the config's)."""
    config_flags.DEFINE_config_file("config", str(_CONFIG), "Config file (get_config()).",
                                    flag_values=flag_values, lock_config=True,
                                    sys_argv=list(argv) if argv is not None else None)
    for name, define, help_string in _OVERRIDES:
        define(name, None, help_string, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues) -> ml_collections.ConfigDict:
    """The config file's values with every explicitly given top-level flag applied."""
    cfg = flag_values["config"].value
    cfg.unlock()
    for name, _, _ in _OVERRIDES:
        value = flag_values[name].value
        if value is not None:
            cfg[name] = value
    cfg.lock()
    return cfg


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


def resolve_scale(cfg: ml_collections.ConfigDict) -> Scale:
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


def build_jobs(cfg: ml_collections.ConfigDict) -> list[Job]:
    """The grid cells x lrs x batch sizes x seeds as `Job`s (validates every field)."""
    codes = parse_cells(cfg.cells)
    lrs = parse_lrs(cfg.lrs)
    sizes = parse_batch_sizes(cfg.batch_sizes)
    seeds = _parse_numbers(cfg.seeds, "seeds", int, positive=False)
    return [Job(cell=tuple(int(d) for d in nhb2.cell_from_string(code)), lr=lr,
                batch_size=bs, seed=seed)
            for code in codes for lr in lrs for bs in sizes for seed in seeds]


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Checks the scalar fields; raises ValueError naming the valid choices."""
    get_scale(cfg.scale)
    if cfg.dataset not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; valid choices: {list(DATASET_NAMES)}")
    check_options(cfg.mode, cfg.sharing, cfg.conv_impl)
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
    return dict(cell=r.job.code, lr=r.job.lr, batch_size=r.job.batch_size, seed=r.job.seed,
                diverged=r.diverged, mode=r.mode, group_size=r.group_size,
                metrics={n: [_clean(v) for v in r.metrics[n]] for n in METRIC_NAMES})


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
        lines.append(f"{r['cell']:<9} {r['lr']:>9g} {r['batch_size']:>4} {r['seed']:>5} "
                     f"{pct(m['train_acc'][-1]):>7} {pct(m['valid_acc'][-1]):>7} "
                     f"{pct(m['test_acc'][-1]):>7} {t:>8.2f}  "
                     f"{'DIVERGED' if r['diverged'] else ''}")
    return note + "\n".join(lines)


# ----------------------------------------------------------------------------- main


def prepare(cfg: ml_collections.ConfigDict) -> tuple[Scale, list[Job], str]:
    """Validates `cfg`; returns the scale, the jobs and the resolved execution mode.

    Raises:
        ValueError: a bad field (the message names the valid choices).
    """
    validate(cfg)
    return resolve_scale(cfg), build_jobs(cfg), resolve_mode(cfg.mode)


def run(cfg: ml_collections.ConfigDict, argv: Sequence[str] = (),
        plan: tuple[Scale, list[Job], str] | None = None) -> dict:
    """Trains the grid of `cfg`, writes the JSON if asked and prints the table.

    Args:
        cfg: a config as `experiments/configs/nhb2_train.get_config()` returns.
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
                         sharing=cfg.sharing, conv_impl=cfg.conv_impl)
    train_wall = time.perf_counter() - t_train
    records = [run_record(r) for r in results]
    meta = dict(
        scale=scale.name, channels=list(scale.channels), cells_per_stage=scale.cells_per_stage,
        dataset=cfg.dataset, dataset_sizes=ds.sizes, max_per_split=cfg.max_per_split or None,
        epochs=cfg.epochs, mode=mode, requested_mode=cfg.mode, max_group=cfg.max_group or None,
        sharing=resolve_sharing(cfg.sharing, scale), conv_impl=cfg.conv_impl,
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


def cli(argv: Sequence[str]) -> dict:
    """Parses a full command line (`argv[0]` = program name) into fresh flags and runs it."""
    fv = flags.FlagValues()
    define_flags(fv, argv)
    fv(list(argv))
    return run(config_from_flags(fv), argv)


def main(argv: Sequence[str]) -> None:
    """absl entry point."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cfg = config_from_flags(flags.FLAGS)
    try:
        plan = prepare(cfg)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    run(cfg, sys.argv, plan)


if __name__ == "__main__":
    define_flags(flags.FLAGS)
    app.run(main)
