r"""DHA: one-shot joint search of augmentation policy, lr / weight decay and architecture.

  python experiments/dha.py --variant=dha --space=nhb2 --output_dir=/tmp/dha
  python experiments/dha.py --variant=ista_two_stage --space=darts --output_dir=/tmp/ista2
  python experiments/dha.py --variant=dha --output_dir=/tmp/dha_q --quick
  python experiments/dha.py --variant=dha --space=nhb2 --table=runs/nhb2_study --output_dir=DIR

Runs one variant (`--variant`: dha, sequential_dha, joint_nas_da, joint_nas_hpo,
sequential_nas_da, sequential_nas_hpo, ista_one_stage, ista_two_stage) on the DARTS or the
NAS-HPO-Bench-II cell space and writes `<output_dir>/summary.json` (variant, test_acc,
lr_trajectory, wd_trajectory, policy_entropy per epoch, cell, seconds per phase), the model,
the per-epoch log and `trajectories.png`; with `--table` (NAS-HPO-Bench-II space) the derived
cell's 12-epoch test accuracies on that table. Rerunning the same command resumes. Config:
`experiments/configs/dha.py`.
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags
from ml_collections import config_flags

from nhb.bench.cli import define_table_flag, load_table_arg, main_guard
from nhb.dha.config import VARIANTS, DHAConfig
from nhb.dha.report import finish_report
from nhb.dha.run import run_dha
from nhb.space.arch import ARCH_SPACES

_CONFIG = pathlib.Path(__file__).resolve().parent / "configs" / "dha.py"
config_flags.DEFINE_config_file("config", str(_CONFIG), "DHA configuration.")
flags.DEFINE_enum("variant", None, list(VARIANTS), "Variant (overrides --config.variant).")
flags.DEFINE_enum("space", None, sorted(ARCH_SPACES), "Cell space (overrides --config.space).")
flags.DEFINE_string("output_dir", "runs/dha", "Where summary.json and the figures go.")
flags.DEFINE_boolean("quick", None, "Smallest meaningful run (overrides --config.quick).")
_TABLE = define_table_flag(" Scores the derived cell of --space=nhb2 on it (optional).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    c = FLAGS.config.to_dict()
    quick = c.pop("quick") if FLAGS.quick is None else (c.pop("quick"), FLAGS.quick)[1]
    progress = c.pop("progress")
    for name, value in (("variant", FLAGS.variant), ("space", FLAGS.space)):
        if value is not None:
            c[name] = value
    if quick:
        defaults = DHAConfig().to_dict()
        config = DHAConfig.quick(**{k: v for k, v in c.items() if v != defaults[k]})
    else:
        config = DHAConfig.from_dict(c)
    table = load_table_arg(_TABLE.value)[0] if _TABLE.value else None
    if table is not None and config.space != "nhb2":
        raise ValueError("--table scores NAS-HPO-Bench-II cells: use it with --space=nhb2")
    result = run_dha(config, FLAGS.output_dir, progress=progress)
    summary = finish_report(result, FLAGS.output_dir, table=table)
    keys = ("variant", "test_acc", "cell", "seconds")
    print(json.dumps({k: summary[k] for k in keys}, indent=1))


if __name__ == "__main__":
    app.run(main_guard(main))
