"""Default config of `experiments/nhb2_build.py` (builds NAS-HPO-Bench-II tables).

Every field can be overridden with `--config.FIELD=VALUE`; the binary's top-level flags
(`--preset`, `--output_dir`, `--executor`, `--data_dir`, `--export_official`, `--table`)
override the same fields and take precedence.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The defaults: build the `smoke` preset into `runs/nhb2_smoke` on this machine.

    Returns:
        The config. Empty strings and zeros mean "unset"; list-valued override fields are
        comma-separated strings, as on the command line.
    """
    c = ml_collections.ConfigDict()
    c.preset = "smoke"  # "paper", "lite" or "smoke" (see nhb.bench.build.PRESETS)
    c.output_dir = ""  # "" = runs/nhb2_<preset name>
    c.executor = "local"  # "local" or "ray"
    c.data_dir = ""  # TFDS data dir or the .npz path of the preset's dataset ("" = default)
    c.compile_cache_dir = ""  # JAX persistent compile cache; "" = <output_dir>/jax_cache, "none"
    c.progress = True
    # Export instead of building: write the official pickles of a built table.
    c.export_official = ""  # output directory of the pickles ("" = build)
    c.table = ""  # the table to export: a build directory or a table file
    # Changes to the preset's fields ("" / 0 = keep the preset's). A changed preset is a new
    # build: its fingerprint differs, so it needs its own output_dir.
    o = ml_collections.ConfigDict()
    o.name = ""
    o.dataset = ""  # "subset", "cifar10" (TFDS) or "cifar10_npz"
    o.scale = ""  # "paper", "small" or "tiny"
    o.epochs = 0
    o.cells = ""  # comma-separated official representative codes, e.g. "0|00|000,0|00|333"
    o.lrs = ""  # comma-separated values of 0.003125 * 2^k, k=0..7
    o.batch_sizes = ""  # comma-separated values of 16..512
    o.seeds = ""  # comma-separated ints
    o.max_per_split = 0
    o.mode = ""  # "auto", "vmap" or "sequential"
    o.cpu_max_group = 0
    o.gpu_group_images = 0
    o.eval_batch_size = 0
    c.overrides = o
    return c
