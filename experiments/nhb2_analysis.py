r"""NAS-HPO-Bench-II analysis figures (paper §4) for any table (`nhb.bench.analysis`).

  python experiments/nhb2_analysis.py --table=runs/nhb2_lite --output_dir=runs/analysis
  python experiments/nhb2_analysis.py --table=PATH/table.nhb --output_dir=DIR
  python experiments/nhb2_analysis.py --table=random --output_dir=/tmp/analysis   # demo

Writes `fig3_hparams.png` (lr x batch-size heatmap over the table's own lrs and batch sizes,
scaling-rule curves), `fig4_seed_spread.png` (needs >= 2 seeds), `fig5_groups.png` and
`analysis.json`; see `nhb.bench.analysis.write_figures`.
"""

from __future__ import annotations

from absl import app, flags

from nhb.bench.analysis import write_figures
from nhb.bench.cli import define_table_flag, load_table_arg, main_guard

_TABLE = define_table_flag()
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Output directory.")
_RANDOM_SEED = flags.DEFINE_integer("random_table_seed", 0, "Seed of --table=random.")
_MAX_LINES = flags.DEFINE_integer("max_lines", 1011, "Architectures drawn in Figure 5 (left).")


@main_guard
def main(argv: list[str]) -> None:
    """Loads the table and writes the figures."""
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    if not _OUTPUT_DIR.value:
        raise ValueError("--output_dir is required")
    table, desc = load_table_arg(_TABLE.value, _RANDOM_SEED.value)
    write_figures(table, _OUTPUT_DIR.value, _MAX_LINES.value, table_desc=desc)
    print(f"wrote {_OUTPUT_DIR.value}/fig3_hparams.png, fig4_seed_spread.png, fig5_groups.png,"
          " analysis.json")


if __name__ == "__main__":
    app.run(main)
