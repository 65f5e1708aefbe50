r"""NAP2 on NAS-HPO-Bench-II configs: snapshot datasets, predictor, agents, report, figures.

  python experiments/nap2.py --output_dir=runs/nap2          # CIFAR-10 slice -> Fashion-MNIST
  python experiments/nap2.py --output_dir=/tmp/nap2 --quick  # the smallest size (minutes)

Builds (or resumes) the snapshot datasets under `--config.runs_dir` (default `runs/`), fits the
predictor with 4-fold cross-validation over cell classes, runs NAP2's agent, successive
halving, Hyperband and BOHB over grids of their settings, applies the predictor unchanged to
Fashion-MNIST runs, and writes `<output_dir>/report.json` and the figures. Rerunning reuses
the datasets and the fitted fold predictors. Config: `experiments/configs/nap2.py`.
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags
from ml_collections import config_flags

from nhb.nap2.study import REPORT_FILE, StudyConfig, run_study

_CONFIG = pathlib.Path(__file__).resolve().parent / "configs" / "nap2.py"
config_flags.DEFINE_config_file("config", str(_CONFIG), "Study configuration.")
flags.DEFINE_string("output_dir", "runs/nap2", "Where report.json and the figures go.")
flags.DEFINE_boolean("quick", None, "Smallest meaningful study (overrides --config.quick).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    c = FLAGS.config.to_dict()
    quick = c.pop("quick") if FLAGS.quick is None else (c.pop("quick"), FLAGS.quick)[1]
    progress = c.pop("progress")
    c["transfer_preset"] = c["transfer_preset"] or None
    if quick:
        defaults = StudyConfig().to_dict()
        changed = {k: v for k, v in c.items() if v != defaults[k] and k in ("runs_dir", "seed")}
        config = StudyConfig.quick(**changed)
    else:
        config = StudyConfig.from_dict(c)
    report = run_study(config, FLAGS.output_dir, progress=progress)
    out = pathlib.Path(FLAGS.output_dir)
    print(f"wrote {out / REPORT_FILE} and {len(report.get('figures', []))} figures")
    print(json.dumps({k: report["predictor"][k] for k in ("nap2", "valid_acc",
                                                           "lc_extrapolation")}, indent=1))


if __name__ == "__main__":
    app.run(main)
