r"""NAGO: network architecture generator optimisation (HNAG / RNAG with BOHB, MOBO or RS).

  python experiments/nago.py --method=hnag_mobo --output_dir=/tmp/nago_mobo
  python experiments/nago.py --method=rnag_bohb --output_dir=/tmp/nago_q --quick
  python experiments/nago.py --compare=/tmp/nago_bohb,/tmp/nago_rnag --output_dir=/tmp/cmp

Runs one search (`--method`: hnag_bohb, rnag_bohb, hnag_mobo, rnag_mobo, hnag_rs) and writes
`<output_dir>/summary.json` (method, queries, best, pareto and, after BOHB, bnn_table1: the
paper's Table-1 heteroscedastic vs homoscedastic BNN NLL / RMSE on the collected queries),
`queries.json` (every query: vector, seed, budget, validation accuracy, memory per sample,
parameters, train time) and `pareto.png`. `--compare` instead plots the fronts of finished
runs side by side (e.g. HNAG vs RNAG) into `<output_dir>/fronts.png`. Rerunning the same
command resumes. Config: `experiments/configs/nago.py`.
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags
from ml_collections import config_flags

from nhb.bench.cli import main_guard
from nhb.nago.config import METHODS, NAGOConfig
from nhb.nago.report import compare_runs
from nhb.nago.run import EXECUTORS, run_nago

_CONFIG = pathlib.Path(__file__).resolve().parent / "configs" / "nago.py"
config_flags.DEFINE_config_file("config", str(_CONFIG), "NAGO configuration.")
flags.DEFINE_enum("method", None, list(METHODS), "Search (overrides --config.method).")
flags.DEFINE_string("output_dir", "runs/nago", "Where summary.json, queries and plots go.")
flags.DEFINE_boolean("quick", None, "Smallest meaningful run (overrides --config.quick).")
flags.DEFINE_enum("executor", "local", list(EXECUTORS), "Where a batch's queries train.")
flags.DEFINE_list("compare", None, "Finished run directories to plot side by side.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if FLAGS.compare:
        path = compare_runs(FLAGS.compare, pathlib.Path(FLAGS.output_dir) / "fronts.png")
        print(path)
        return
    c = FLAGS.config.to_dict()
    quick = c.pop("quick") if FLAGS.quick is None else (c.pop("quick"), FLAGS.quick)[1]
    progress = c.pop("progress")
    if FLAGS.method is not None:
        c["method"] = FLAGS.method
    if quick:
        defaults = NAGOConfig().to_dict()
        config = NAGOConfig.quick(**{k: v for k, v in c.items() if v != defaults[k]})
    else:
        config = NAGOConfig(**c)
    summary = run_nago(config, FLAGS.output_dir, progress=progress, executor=FLAGS.executor)
    keys = ("method", "queries", "failed", "best", "bnn_table1")
    print(json.dumps({k: summary.get(k) for k in keys}, indent=1))


if __name__ == "__main__":
    app.run(main_guard(main))
