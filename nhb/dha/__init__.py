"""nhb.dha: DHA, one-shot joint search of augmentation policy, hyperparameters and cells.

* `policy`: the 196 pair logits, one Gumbel-softmax draw per step, the DA loss;
* `hpo`: lr and weight decay as differentiable hyperparameters (one-step unroll through an
  `optax.inject_hyperparams` update);
* `ista`: ISTA-NAS's sparse codes, LASSO recovery (scikit-learn's objective in jnp), the
  support, Eq. 7 and node freezing;
* `networks`: the supernet of a run (`nhb.models.darts` / `nhb.models.nhb2_supernet`);
* `step`: one jitted DHA step in the reference's order, the epoch and the evaluation;
* `run`: search + retrain, resumable, with per-epoch logs (`run_dha`, `DHAResult`);
* `config`: `DHAConfig` and the variants of the paper's Tables 1 and 3 (`VARIANTS`);
* `report`: the trajectory figure and the NAS-HPO-Bench-II table score.

A run: `python experiments/dha.py --variant=dha --space=nhb2 --output_dir=DIR`.
"""

from nhb.dha.config import VARIANTS, DHAConfig, Variant, get_variant
from nhb.dha.networks import Network, make_network
from nhb.dha.run import DerivedModel, DHAResult, load_data, load_model, run_dha
from nhb.dha.step import DHAState, Phase, init_state, make_evaluate, make_step, make_train_epoch

__all__ = [
    "VARIANTS",
    "DHAConfig",
    "DHAResult",
    "DHAState",
    "DerivedModel",
    "Network",
    "Phase",
    "Variant",
    "get_variant",
    "init_state",
    "load_data",
    "load_model",
    "make_evaluate",
    "make_network",
    "make_step",
    "make_train_epoch",
    "run_dha",
]
