"""Default config of `experiments/nago.py` (NAGO's searches on the embedded CIFAR-10 slice).

  python experiments/nago.py --method=hnag_bohb --output_dir=/tmp/nago_bohb
  python experiments/nago.py --method=hnag_mobo --output_dir=/tmp/nago_mobo
  python experiments/nago.py --method=rnag_bohb --output_dir=/tmp/nago_q --quick  # smallest

Every field can be overridden with `--config.FIELD=VALUE`, e.g. `--config.param_limit=4e6
--config.min_budget=30 --config.max_budget=120 --config.bohb_iterations=50` (the paper's
CIFAR-10 BOHB, for an accelerator; add `--config.ranges=paper` for the paper's generator
ranges). Defaults are nhb's CPU scale (0.1M parameters, 1/2/4-epoch budgets, the "cpu"
generator box, 512 training images); each field is documented in `nhb.nago.NAGOConfig`.
"""

import dataclasses

import ml_collections

from nhb.nago.config import NAGOConfig


def get_config() -> ml_collections.ConfigDict:
    """`nhb.nago.NAGOConfig()`'s fields, plus the binary's `quick` and `progress`.

    Returns:
        The config; `quick=True` starts from `NAGOConfig.quick()` (fields set explicitly
        still apply on top of it).
    """
    c = ml_collections.ConfigDict(dataclasses.asdict(NAGOConfig()))
    for name in ("max_train", "max_valid"):  # None -> typed placeholders
        c[name] = ml_collections.FieldReference(getattr(NAGOConfig(), name), field_type=int)
    c.quick = False
    c.progress = True
    return c
