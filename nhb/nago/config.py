"""NAGO run settings: the five searches of the paper at a chosen scale, as one config.

Methods (paper §4, Table 2): `hnag_bohb`, `rnag_bohb` (BOHB over the generator vector),
`hnag_mobo`, `rnag_mobo` (multi-objective BO of validation error and memory per sample,
started from random queries), `hnag_rs` (random search).

Scale. The paper trains at a 4M parameter limit for 30/60/120 epochs (BOHB, eta 2) on full
datasets; its training numbers (epochs, lr, batch size for the complete and the BO-phase
protocol) are LOST (reference/nago.md §3). The defaults below are nhb's CPU scale (DESIGN §4):
the embedded CIFAR-10 slice, a 0.1M parameter limit, budgets of 1/2/4 epochs (eta 2, the
paper's bracket shapes 4-2-1 / 2-1 / 3). Training follows nhb's one protocol
(`nhb.train.engine`: Nesterov SGD, coupled weight decay, cosine annealing per epoch,
flip/crop) with the released example's lr 0.1 and weight decay 1e-4 (nago.yml:69-83); the
paper's cutout and batch/lr scaling are not applied (ASSUMPTIONS, their numbers are lost).
"""

from __future__ import annotations

import dataclasses
from typing import Any

METHODS = ("hnag_bohb", "rnag_bohb", "hnag_mobo", "rnag_mobo", "hnag_rs")
STAGE_RATIOS = {"thirds": (1 / 3, 1 / 3, 1 / 3), "released": (1.0, 1.0, 1.0)}
MEMORY_KINDS = ("torch", "activations", "peak")


def family_of(method: str) -> str:
    """"hnag" or "rnag" of a method name (validated)."""
    check_method(method)
    return method.split("_")[0]


def check_method(method: str) -> None:
    """Raises a ValueError naming the valid methods."""
    if method not in METHODS:
        raise ValueError(f"unknown NAGO method {method!r}; valid: {', '.join(METHODS)}")


@dataclasses.dataclass(frozen=True)
class NAGOConfig:
    """Everything one NAGO search needs (static, hashable).

    Attributes:
        method: one of `METHODS`.
        ranges: range set: "paper", "released" (HNAG; RNAG uses nhb's ranges for both),
            "cpu" (default: a sub-box whose networks compile in well under a minute on a
            2-core CPU) or "tiny" (tests; see `nhb.space.generators`).
        seed_scheme: graph seeding, "released" or "legacy" (`nhb.nago.graphs`).
        stage_ratios: "thirds" (the paper's, DESIGN §4) or "released" (1, 1, 1).
        dataset: `nhb.data.load_dataset` name ("subset" = the embedded CIFAR-10 slice).
        max_train / max_valid: truncate the training / validation splits (None: all).
        param_limit: the parameter limit that sets the width (paper: 4e6 on CIFAR).
        batch_size: SGD batch size (nhb assumption; the paper's is lost).
        learning_rate / weight_decay: SGD settings (the released example's 0.1 / 1e-4).
        min_budget / max_budget / eta: BOHB budgets in epochs (paper: 30 / 120 / 2).
        bohb_iterations: Hyperband iterations (brackets) of a BOHB run (vega: 50).
        bohb_num_samples / bohb_random_fraction: HpBandSter's KDE candidates (64) and
            share of random configs (1/3).
        mobo_budget: the fixed training budget of MOBO queries in epochs (paper: lost,
            probably 60 of 120, i.e. half the largest; here max_budget / 2).
        mobo_init: random queries before the first MOBO batch (paper: BOHB data, count lost).
        mobo_batches / mobo_batch_size: MOBO iterations and proposals per batch (paper: 8).
        memory: memory per sample, the MOBO objective: "torch" (the bytes PyTorch's
            autograd saves for the authors' network per image, closed form: reproduces the
            paper's Table-3 MPS), "activations" (the residuals JAX saves) or "peak" (XLA's
            peak train-step memory); see `nhb.nago.evaluate.memory_per_sample`.
        rs_queries: random-search queries (at max_budget).
        bnn_burn_in / bnn_samples / bnn_keep_every: SGHMC of the BNN surrogates (paper: keep
            every 10th, 100 samples; burn-in lost, pybnn's 3000).
        table1_splits: random train/test splits of the Table-1 BNN comparison (paper: 10).
        fast_compile: compile each query's programs at XLA's low optimisation level on
            CPUs (each query is a new network: compiling dominates at the CPU scale).
        seed: run seed (search randomness, graph base seeds, training keys).
    """

    method: str = "hnag_bohb"
    ranges: str = "cpu"
    seed_scheme: str = "released"
    stage_ratios: str = "thirds"
    dataset: str = "subset"
    max_train: int | None = 512
    max_valid: int | None = 256
    param_limit: float = 1e5
    batch_size: int = 64
    learning_rate: float = 0.1
    weight_decay: float = 1e-4
    min_budget: float = 1.0
    max_budget: float = 4.0
    eta: float = 2.0
    bohb_iterations: int = 3
    bohb_num_samples: int = 64
    bohb_random_fraction: float = 1 / 3
    mobo_budget: float = 2.0
    mobo_init: int = 8
    mobo_batches: int = 1
    mobo_batch_size: int = 8
    memory: str = "torch"
    rs_queries: int = 8
    bnn_burn_in: int = 3000
    bnn_samples: int = 100
    bnn_keep_every: int = 10
    table1_splits: int = 10
    fast_compile: bool = True
    seed: int = 0

    def __post_init__(self):
        check_method(self.method)
        if self.stage_ratios not in STAGE_RATIOS:
            raise ValueError(f"unknown stage_ratios {self.stage_ratios!r}; valid: "
                             f"{', '.join(STAGE_RATIOS)}")
        if self.memory not in MEMORY_KINDS:
            raise ValueError(f"unknown memory {self.memory!r}; valid: {', '.join(MEMORY_KINDS)}")
        if not 0 < self.min_budget < self.max_budget:
            raise ValueError("need 0 < min_budget < max_budget, got "
                             f"{self.min_budget}, {self.max_budget}")

    @property
    def family(self) -> str:
        """"hnag" or "rnag"."""
        return family_of(self.method)

    @classmethod
    def quick(cls, **overrides: Any) -> NAGOConfig:
        """The smallest meaningful run (tests, notebook, `--quick`): the "tiny" generator box,
        1/2-epoch budgets on 256 training images, two BOHB iterations (5 queries), 4 random
        + one MOBO batch of 4, a short BNN."""
        base = dict(ranges="tiny", max_train=256, max_valid=128, min_budget=1.0, max_budget=2.0,
                    bohb_iterations=2, mobo_budget=1.0, mobo_init=4, mobo_batch_size=4,
                    rs_queries=4, bnn_burn_in=300, bnn_samples=50, bnn_keep_every=5,
                    table1_splits=3, batch_size=32)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-friendly dict."""
        return dataclasses.asdict(self)
