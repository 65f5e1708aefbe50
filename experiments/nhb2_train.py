r"""Trains NAS-HPO-Bench-II configs (one or a grid) and writes per-epoch metrics as JSON.

A thin front end of `nhb.train.grid_cli.run` (over `nhb.train.train_grid`): the grid is
cells x lrs x batch sizes x seeds, trained with the benchmark protocol (docs/protocol.md §4)
at a chosen network scale. Example (quote the cell codes: `|` is the shell's pipe; `000000`
is accepted for `0|00|000` as well):

    python experiments/nhb2_train.py --cells='0|00|000' --lrs=0.1,0.05 --batch_sizes=64 \
        --seeds=222 --epochs=3 --scale=tiny --dataset=subset --output_json=/tmp/run.json

Defaults come from `experiments/configs/nhb2_train.py` (`--config=...`, `--config.FIELD=...`);
the top-level flags below override the config's fields of the same name.

The JSON holds `meta` (scale, dataset, epochs, device, versions, wall time, ...) and `runs`:
one record per run with `cell`, `learning_rate`, `batch_size`, `seed`, `diverged`, `mode`,
`group_size` and `metrics` (per-epoch lists of train/valid/test accuracy (%) and loss and
train/valid/test time (s)). Non-finite values (diverged runs) are written as null.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Sequence

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from nhb.data import DATASET_NAMES
from nhb.space import nhb2
from nhb.train import EXECUTION_MODES, SCALES, SGD_LOOPS, grid_cli
from nhb.train.grid import CONV_CHOICES, SHARINGS

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
    ("train_eval", flags.DEFINE_boolean, "Train metrics from the authors' eval-mode pass "
     "over the augmented training set (False: the SGD loop's running meters, faster)."),
    ("sgd_loop", flags.DEFINE_string, f"SGD loop, one of {list(SGD_LOOPS)} (auto: host loop "
     "on CPUs, scan elsewhere)."),
    ("progress", flags.DEFINE_boolean, "Show a progress bar."),
    ("output_json", flags.DEFINE_string, "Where to write the results JSON ('' = nowhere)."),
    ("table_rows", flags.DEFINE_integer, "Rows of the final-accuracy table."),
)


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


def cli(argv: Sequence[str]) -> dict:
    """Parses a full command line (`argv[0]` = program name) into fresh flags and runs it."""
    fv = flags.FlagValues()
    define_flags(fv, argv)
    fv(list(argv))
    return grid_cli.run(config_from_flags(fv), argv)


def main(argv: Sequence[str]) -> None:
    """absl entry point."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cfg = config_from_flags(flags.FLAGS)
    try:
        plan = grid_cli.prepare(cfg)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    grid_cli.run(cfg, sys.argv, plan)


if __name__ == "__main__":
    define_flags(flags.FLAGS)
    app.run(main)
