r"""Builds a NAS-HPO-Bench-II table (resumable), searches it and analyses it; or exports one.

The README's main job (the `study` preset: a 12-epoch table on the embedded CIFAR-10 slice,
then the six search methods of paper §5 and the paper's figures for that table):

  python experiments/nhb2_build.py                       # -> runs/nhb2_study
  python experiments/nhb2_build.py --preset=lite --output_dir=runs/lite [--executor=ray]
  python experiments/nhb2_build.py --preset=smoke --config.study=False

Killing it at any moment loses no finished group of runs; the same command resumes, and on a
finished directory it trains nothing. Preset fields change with
`--config.overrides.FIELD=VALUE` (every `nhb.bench.build.Preset` field; see
`experiments/configs/nhb2_build.py`). Export a built 12-epoch table in the official schema:

  python experiments/nhb2_build.py --export_official=runs/official --table=runs/nhb2_study
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

from nhb.bench import build as nhb_build
from nhb.bench import export_official
from nhb.bench.cli import load_table_arg
from nhb.bench.presets import apply_overrides
from nhb.search.pipeline import build_and_study

_CONFIG = pathlib.Path(__file__).resolve().parent / "configs" / "nhb2_build.py"
_OVERRIDES = (  # (name, help): top-level flags overriding the config field of the same name
    ("preset", f"Preset: {sorted(nhb_build.PRESETS)}."),
    ("output_dir", "Build directory (default runs/nhb2_<preset>)."),
    ("executor", f"Executor: {list(nhb_build.EXECUTORS)}."),
    ("data_dir", "Dataset location (TFDS data dir or .npz), for presets that need one."),
    ("export_official", "Write the official pickles of --table here instead of building."),
    ("table", "Table to export: a build directory or a table file."),
)
_NOTE_200 = (
    "note: the official client (nashpobench2api.NASHPOBench2API) also loads avgaccs200.pkl, "
    "the 200-epoch surrogate means, which a built table does not have; only bench12.pkl and "
    "cellinfo.pkl were written, so the client will not start on this directory alone.")


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


def run(cfg: ConfigDict) -> int:
    """Builds (and studies) the configured preset, or exports a table; the exit status."""
    try:
        if cfg.export_official:
            table, _ = load_table_arg(cfg.table or cfg.output_dir or f"runs/nhb2_{cfg.preset}")
            files = export_official(table, cfg.export_official)
            print("\n".join(f"wrote {f}" for f in sorted(files.values())))
            if "avgaccs200.pkl" not in files:
                print(_NOTE_200)
            return 0
        preset = apply_overrides(nhb_build.get_preset(cfg.preset), cfg.overrides.to_dict())
        out = pathlib.Path(cfg.output_dir or f"runs/nhb2_{preset.name}")
        cache = cfg.compile_cache_dir or str(out / "jax_cache")
        if (out / nhb_build.TABLE_FILE).exists():
            print(f"{out} is already built: loading its table (no training)")
        build_and_study(preset, out, executor=cfg.executor, progress=cfg.progress,
                        data_dir=cfg.data_dir or None,
                        compile_cache_dir=None if cache == "none" else cache,
                        study=cfg.study, methods=cfg.methods, runs=cfg.runs,
                        budget=cfg.budget, seed=cfg.seed)
    except (ValueError, RuntimeError, ImportError, FileNotFoundError) as e:
        logging.error("%s", e)
        return 1
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
