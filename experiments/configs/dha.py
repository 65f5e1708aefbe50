"""Default config of `experiments/dha.py` (DHA and its variants on the embedded CIFAR slice).

  python experiments/dha.py --variant=dha --space=nhb2 --output_dir=/tmp/dha
  python experiments/dha.py --variant=ista_one_stage --space=darts --output_dir=/tmp/ista
  python experiments/dha.py --variant=dha --output_dir=/tmp/dha_q --quick   # smallest size

Every field can be overridden with `--config.FIELD=VALUE`, e.g. `--config.search_epochs=20`
or `--config.darts_channels=16 --config.darts_layers=8` (the DARTS CIFAR search size, for an
accelerator). The authors publish none of these numbers (their config files are missing from
the release): each default is an nhb assumption, documented field by field in
`nhb.dha.config.DHAConfig`.
"""

import dataclasses

import ml_collections

from nhb.dha.config import DHAConfig


def get_config() -> ml_collections.ConfigDict:
    """`nhb.dha.DHAConfig()`'s fields, plus the binary's `quick` and `progress`.

    Returns:
        The config; `quick=True` starts from `DHAConfig.quick()` (fields set explicitly still
        apply on top of it).
    """
    c = ml_collections.ConfigDict(dataclasses.asdict(DHAConfig()))
    for name in ("max_train", "max_test", "param_limit_mb"):  # None -> typed placeholders
        field_type = float if name == "param_limit_mb" else int
        c[name] = ml_collections.FieldReference(getattr(DHAConfig(), name),
                                                field_type=field_type)
    c.quick = False
    c.progress = True
    return c
