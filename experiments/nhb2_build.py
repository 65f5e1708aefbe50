r"""Builds a NAS-HPO-Bench-II table (resumable), or exports one as the official pickles.

Build (or resume, or just load) a preset's table:

  python experiments/nhb2_build.py                       # the smoke preset -> runs/nhb2_smoke
  python experiments/nhb2_build.py --preset=lite --output_dir=runs/lite [--executor=ray]

Killing it at any moment loses no finished group; running the same command again resumes,
and on a finished directory it trains nothing and prints the summary. Preset fields can be
changed with `--config.overrides.FIELD=VALUE` (see `experiments/configs/nhb2_build.py`).

Export a built 12-epoch table in the official schema (`bench12.pkl`, `cellinfo.pkl`):

  python experiments/nhb2_build.py --export_official=runs/official --table=runs/lite
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Sequence

from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

from nhb.bench import build as nhb_build
from nhb.bench import export_official, load_table

_CONFIG = pathlib.Path(__file__).resolve().parent / "configs" / "nhb2_build.py"
# (name, help): top-level string flags overriding the config field of the same name.
_OVERRIDES = (
    ("preset", f"Preset: {sorted(nhb_build.PRESETS)}."),
    ("output_dir", "Build directory (default runs/nhb2_<preset>)."),
    ("executor", f"Executor: {list(nhb_build.EXECUTORS)}."),
    ("data_dir", "Dataset location (TFDS data dir or .npz), for presets that need one."),
    ("export_official", "Write the official pickles of --table into this directory instead "
                        "of building."),
    ("table", "Table to export: a build directory or a table file."),
)


def define_flags(flag_values: flags.FlagValues, argv: Sequence[str] | None = None) -> None:
    """Registers `--config` and the top-level flags (default None = keep the config's)."""
    config_flags.DEFINE_config_file("config", str(_CONFIG), "Build configuration.",
                                    flag_values=flag_values,
                                    sys_argv=list(argv) if argv is not None else None)
    for name, help_string in _OVERRIDES:
        flags.DEFINE_string(name, None, help_string, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues) -> ConfigDict:
    """The config file's values with every explicitly given top-level flag applied."""
    cfg = ConfigDict(flag_values["config"].value.to_dict())
    for name, _ in _OVERRIDES:
        if flag_values[name].value is not None:
            cfg[name] = flag_values[name].value
    return cfg


_LISTS = {"cells": str, "lrs": float, "batch_sizes": int, "seeds": int}
_NOTE_200 = (
    "note: the official client (nashpobench2api.NASHPOBench2API) also loads avgaccs200.pkl, "
    "the 200-epoch surrogate means, which a built table does not have; only bench12.pkl and "
    "cellinfo.pkl were written, so the client will not start on this directory alone.")


def make_preset(cfg: ConfigDict) -> nhb_build.Preset:
    """The named preset with the config's non-empty overrides applied."""
    preset = nhb_build.get_preset(cfg.preset)
    changes = {}
    for field, value in cfg.overrides.items():
        if value in ("", 0, None):
            continue
        if field in _LISTS:
            value = tuple(_LISTS[field](v.strip()) for v in str(value).split(",") if v.strip())
        changes[field] = value
    return dataclasses.replace(preset, **changes) if changes else preset


def _export(cfg: ConfigDict) -> int:
    path = pathlib.Path(cfg.table or cfg.output_dir or f"runs/nhb2_{cfg.preset}")
    if path.is_dir():
        path = path / nhb_build.TABLE_FILE
    table = load_table(path)
    try:
        files = export_official(table, cfg.export_official)
    except ValueError as e:
        logging.error("cannot export %s: %s", path, e)
        return 1
    for file in sorted(files.values()):
        print(f"wrote {file}")
    if "avgaccs200.pkl" not in files:
        print(_NOTE_200)
    return 0


def _print_summary(table, path: pathlib.Path) -> None:
    s, m = table.summary(), table.meta
    print(f"\ntable: {path}  (preset {s['protocol']}, dataset {s['dataset']}, "
          f"scale {m.get('scale')})")
    print(f"  {s['runs']} runs = {s['rows']} classes x {len(table.lrs)} lrs x "
          f"{len(table.batch_sizes)} batch sizes x {len(s['seeds'])} seeds, {s['epochs']} "
          f"epochs; diverged {s['diverged_runs']}")
    rate = m.get("runs_per_s")
    print(f"  built on {m.get('device')} in {m.get('wall_time_s')} s wall "
          f"({rate and round(rate, 4)} runs/s, {m.get('sessions')} session(s))")
    acc = s["final_test_acc"]
    if acc:
        print(f"  final test accuracy (seed mean): min {acc['min']:.2f}  mean "
              f"{acc['mean']:.2f}  max {acc['max']:.2f} %")
    for key in ("best_by_valid", "best_by_test"):
        b = s[key]
        if b:
            print(f"  {key.replace('_', ' ')}: {b['code']}  lr={b['lr']}  bs={b['batch_size']}"
                  f"  valid {b['valid_acc']:.2f}  test {b['test_acc']:.2f} %")
    print(json.dumps(s, indent=1))


def run(cfg: ConfigDict) -> int:
    """Builds the configured preset, or exports a table; returns the exit status."""
    if cfg.export_official:
        return _export(cfg)
    try:
        preset = make_preset(cfg)
        out = pathlib.Path(cfg.output_dir or f"runs/nhb2_{preset.name}")
        cache = cfg.compile_cache_dir or str(out / "jax_cache")
        if (out / nhb_build.TABLE_FILE).exists():
            print(f"{out} is already built: loading its table (no training)")
        table = nhb_build.build(preset, out, executor=cfg.executor, progress=cfg.progress,
                                data_dir=cfg.data_dir or None,
                                compile_cache_dir=None if cache == "none" else cache)
    except (ValueError, RuntimeError, ImportError) as e:
        logging.error("%s", e)
        return 1
    _print_summary(table, out / nhb_build.TABLE_FILE)
    return 0


def cli(argv: Sequence[str]) -> int:
    """Parses a full command line (`argv[0]` = program name) into fresh flags and runs it."""
    fv = flags.FlagValues()
    define_flags(fv, argv)
    fv(list(argv))
    return run(config_from_flags(fv))


def main(argv: Sequence[str]) -> int:
    """absl entry point."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    return run(config_from_flags(flags.FLAGS))


if __name__ == "__main__":
    define_flags(flags.FLAGS)
    app.run(main)
