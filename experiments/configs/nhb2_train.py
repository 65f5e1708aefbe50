"""Default config of `experiments/nhb2_train.py` (trains NAS-HPO-Bench-II configs).

Every field can be overridden with `--config.FIELD=VALUE`; the binary's top-level flags
(`--cells`, `--lrs`, `--epochs`, ...) override the same fields and take precedence.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The defaults: one config, the benchmark's 12 epochs, tiny scale on the vendored subset.

    Returns:
        The config. List-valued fields are comma-separated strings, as on the command line.
    """
    c = ml_collections.ConfigDict()
    # Grid: cells x lrs x batch_sizes x seeds.
    c.cells = "0|00|000"  # comma-separated official codes "A|BC|DEF", or "all" (1011 classes)
    c.lrs = "0.1"  # comma-separated learning rates (the benchmark's: 0.003125 * 2^k, k=0..7)
    c.batch_sizes = "64"  # comma-separated (the benchmark's: 16, 32, 64, 128, 256, 512)
    c.seeds = "222"  # comma-separated ints (the benchmark's: 222, 555, 888)
    c.epochs = 12  # the cosine period equals the number of epochs
    # Network scale: a preset ("paper", "small", "tiny"), optionally overridden.
    c.scale = "tiny"
    c.channels = ""  # "" or three comma-separated ints, e.g. "16,32,64"
    c.cells_per_stage = 0  # 0 keeps the preset's
    # Data.
    c.dataset = "subset"  # "subset", "cifar10" (TFDS) or "cifar10_npz"
    c.data_dir = ""  # TFDS data dir or the .npz path ("" = default)
    c.max_per_split = 0  # 0 = all examples of each split
    # Execution.
    c.mode = "auto"  # "auto", "vmap" or "sequential"
    c.max_group = 0  # 0 = no limit on a vmapped group's size
    c.sharing = "auto"  # programs shared per conv "pattern", one "supernet", or "auto"
    c.conv_impl = "auto"  # "auto", "xla", "patches", "shifts" or "elementwise"
    c.eval_batch_size = 0  # 0 = each run's batch size, as the reference loaders
    c.train_eval = True  # the authors' train metrics pass (False: running meters, faster)
    c.sgd_loop = "auto"  # "auto" (host loop on CPUs, scan elsewhere), "scan" or "host"
    c.progress = True
    # Output.
    c.output_json = ""  # "" = do not write
    c.table_rows = 40  # rows of the final-accuracy table printed at the end
    return c
