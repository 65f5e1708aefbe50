"""Default config of `experiments/nap2.py` (NAP2 on NAS-HPO-Bench-II configs).

  python experiments/nap2.py --output_dir=runs/nap2            # this config
  python experiments/nap2.py --output_dir=/tmp/nap2 --quick    # smallest size, minutes

Every field can be overridden with `--config.FIELD=VALUE`, e.g.
`--config.predictor.ae_widths="(512, 256)"` (the paper's autoencoder, slow on a CPU) or
`--config.grid.final_sizes="(10, 25, 50)"`. The numbers the paper does not publish are nhb
assumptions, documented in `nhb.nap2.study.CPU_PREDICTOR`, `nhb.nap2.PredictorConfig` and
`nhb.nap2.evaluation.AgentGrid`.
"""

import dataclasses

import ml_collections

from nhb.nap2.study import StudyConfig


def _to_config(value):
    if dataclasses.is_dataclass(value):
        return ml_collections.ConfigDict({f.name: _to_config(getattr(value, f.name))
                                          for f in dataclasses.fields(value)})
    return value


def get_config() -> ml_collections.ConfigDict:
    """The defaults: `nhb.nap2.StudyConfig()` (nap2_cifar -> nap2_fmnist transfer).

    Returns:
        The config; `quick=True` replaces everything by `StudyConfig.quick()` (other
        explicitly set fields still apply on top of it).
    """
    c = _to_config(StudyConfig())
    c.transfer_preset = ml_collections.FieldReference("nap2_fmnist", field_type=str)
    c.quick = False
    c.progress = True
    return c
