"""Default config of `experiments/nhb2_build.py` (build, search and analyse a table).

  python experiments/nhb2_build.py                                 # this config: `study`
  python experiments/nhb2_build.py --preset=smoke --config.study=False

Every field can be overridden with `--config.FIELD=VALUE`; the binary's top-level flags
(`--preset`, `--output_dir`, `--executor`, `--data_dir`, `--export_official`, `--table`)
override the same fields and take precedence.
"""

import dataclasses

import ml_collections

from nhb.bench.build import Preset
from nhb.search import PAPER_METHODS

_LISTS = ("cells", "lrs", "batch_sizes", "seeds")


def get_config() -> ml_collections.ConfigDict:
    """The defaults: build the `study` preset into `runs/nhb2_study`, then search it.

    Returns:
        The config. In `overrides`, empty strings / zeros / None mean "keep the preset's";
        list fields are comma-separated strings, as on the command line.
    """
    c = ml_collections.ConfigDict()
    c.preset = "study"  # see nhb.bench.build.PRESETS
    c.output_dir = ""  # "" = runs/nhb2_<preset name>
    c.executor = "local"  # "local" or "ray"
    c.data_dir = ""  # TFDS data dir or the .npz path of the preset's dataset ("" = default)
    c.compile_cache_dir = ""  # JAX persistent compile cache; "" = <output_dir>/jax_cache, "none"
    c.progress = True
    # The search study and analysis after the build (nhb.search.pipeline.build_and_study).
    c.study = True
    c.methods = ",".join(PAPER_METHODS)
    c.runs = 500
    c.budget = "auto"  # simulated seconds per run, "auto" (scaled to the table) or "paper"
    c.seed = 0
    # Export instead of building: write the official pickles of a built table.
    c.export_official = ""  # output directory of the pickles ("" = build)
    c.table = ""  # the table to export: a build directory or a table file
    # Changes to any preset field. A changed preset is a new build (another fingerprint),
    # so it needs its own output_dir.
    o = ml_collections.ConfigDict()
    for f in dataclasses.fields(Preset):
        if f.name in _LISTS or f.type in ("str", "str | None"):
            o[f.name] = ml_collections.FieldReference("", field_type=str)
        elif f.type == "bool":
            o[f.name] = ml_collections.FieldReference(None, field_type=bool)
        else:
            o[f.name] = ml_collections.FieldReference(0, field_type=int)
    c.overrides = o
    return c
