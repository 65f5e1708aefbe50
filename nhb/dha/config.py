"""DHA settings and the variants of the paper's Tables 1 and 3, as one config of one code.

The authors' config files are not in their release (`../shared/reference/dha.md` §0), so
every number below is UNPUBLISHED: each is an nhb assumption chosen to make the method work
at the scale it runs, ISTA-NAS's public defaults where they exist (marked "ISTA"), and
labelled so in the field's comment. Change them with `DHAConfig(...)` /
`--config.FIELD=VALUE`.

Variants (reference §4; `Variant`): a one-stage search trains the supernet's weights, the
codes b and (per flags) the DA policy and (lr, wd) together, then keeps training the derived
network with alpha fixed ("retrain"). A two-stage search is ISTA-NAS's bi-level search (b on a
held-out batch, weights on the training batch, no node freezing), then the derived genotype
is trained from scratch with DA and/or HPO per flags. nhb implements the paper where the
released code differs (DESIGN §5): the DA sampler IS updated every step in every DA variant
(the release never updates it in Joint NAS+DA and Sequential DHA), and Joint NAS+DA uses the
per-sample DA loss (the release multiplies the batch-mean loss by the mean p).
"""

from __future__ import annotations

import dataclasses
from typing import Any

SEARCH_KINDS = ("one_stage", "two_stage")
COMPUTE_MODES = ("auto", "support", "all")


@dataclasses.dataclass(frozen=True)
class Variant:
    """What a variant searches and tunes.

    Attributes:
        search: "one_stage" (ISTA-NAS single-stage, DHA's) or "two_stage" (search, then
            train the derived genotype from scratch).
        da: learn the augmentation policy (else the standard crop + flip pipeline).
        hpo: learn lr and weight decay by hypergradients (else SGD + cosine schedule).
        paper_name: the name in the paper's tables.
    """

    search: str
    da: bool
    hpo: bool
    paper_name: str


VARIANTS = {
    "dha": Variant("one_stage", True, True, "DHA"),
    "sequential_dha": Variant("two_stage", True, True, "Sequential DHA"),
    "joint_nas_da": Variant("one_stage", True, False, "Joint NAS+DA"),
    "joint_nas_hpo": Variant("one_stage", False, True, "Joint NAS+HPO"),
    "sequential_nas_da": Variant("two_stage", True, False, "Sequential NAS+DA"),
    "sequential_nas_hpo": Variant("two_stage", False, True, "Sequential NAS+HPO"),
    "ista_one_stage": Variant("one_stage", False, False, "One-Stage ISTA"),
    "ista_two_stage": Variant("two_stage", False, False, "Two-Stage ISTA"),
}


def get_variant(name: str) -> Variant:
    """The `Variant` called `name`; a clear error names the valid choices."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; valid choices: {', '.join(VARIANTS)}")
    return VARIANTS[name]


@dataclasses.dataclass(frozen=True)
class DHAConfig:
    """Everything one DHA run needs (static; hashable).

    Attributes (all numeric settings are unpublished by the authors: nhb assumptions):
        variant: one of `VARIANTS`.
        space: "nhb2" (NAS-HPO-Bench-II cell, the derived cell scores on an NHB-II table)
            or "darts".
        dataset: `nhb.data.load_dataset` name ("subset" = the embedded CIFAR-10 slice).
        max_train / max_test: truncate the train / test splits (None = all).
        seed: run seed.
        darts_channels / darts_layers: DARTS supernet width and cells (ISTA: 36 / 20 at
            retrain; tiny here for a CPU).
        nhb2_channels / nhb2_cells_per_stage: NHB-II supernet size (benchmark: 16-32-64, 5).
        auxiliary / aux_weight: DARTS auxiliary head and its loss weight (ISTA 0.4).
        batch_size: SGD batch of the training and the hyper batches (ISTA 96).
        search_epochs: maximum search epochs (the one-stage search stops earlier once every
            node is frozen).
        retrain_epochs: epochs of the retrain phase.
        val_ratio: the last fraction of the training split that also feeds the hyper
            batches ("a subset of the training set", paper §3.2).
        proj_dims: length of each node's code b (ISTA 7).
        alpha_lr / alpha_weight_decay: Adam(0.5, 0.999) on b (ISTA 3e-4 / 1e-3; nhb uses a
            larger lr so b moves within a few CPU epochs).
        dist_limit: a node freezes when its recovered x moves less than this in L2.
        param_limit_mb: reject a support whose DARTS genotype at 36 channels, 20 layers has
            at least this many million parameters (ISTA 3.7); None disables.
        drop_path_prob: final drop-path probability of the retrain phase (ISTA 0.2).
        grad_clip: global-norm clip of the weight gradients (ISTA 5).
        w_momentum: momentum of the weight update (ISTA 0.9).
        w_lr / w_lr_min / w_weight_decay: SGD of the variants without HPO, cosine from w_lr
            to w_lr_min over the retrain phase (ISTA 0.025 / 0.001 / 3e-4).
        cutout_size: Cutout on training batches, 0 = off (ISTA 16; off at 32 px tiny runs).
        magnitude / magnitude_tune: cap M of the op magnitudes U(0, M) clipped to 8 in the
            search / retrain phase (paper: [0, 10]).
        temperature: Gumbel-softmax temperature of the per-step pair distribution.
        d_lr / d_lr_tune / d_momentum: SGD on the policy logits. The DA gradient is about
            loss / (196 * batch) per entry, and the objective feeds back on itself (pairs
            drawn more often are raised more), so p stays near uniform for a while and then
            collapses onto one pair; the collapse comes after roughly 6,000 / d_lr steps
            (measured at batch 64 with uncorrelated losses). 15 keeps the CPU-size runs
            (a few hundred steps) before it.
        lr_bounds / wd_bounds: clamps of the learned lr and weight decay; both start at the
            midpoint.
        h_lr / h_lr_tune / h_momentum: SGD on (lr, wd).
        restart_hpo: reset (lr, wd) to the midpoints before the retrain phase.
        compute: which ops the supernet computes. "support": only the current support's
            (alpha is zero elsewhere within an epoch, and the reference skips those ops; the
            program is recompiled when the support changes); "all": every op, times its
            alpha (one program for every support, variant and vmapped seed; BatchNorm
            statistics of zero-alpha ops keep updating); "auto" (default): "support" on
            DARTS (every op costs ~4x the support's there), "all" on NHB-II.
    """

    variant: str = "dha"
    space: str = "nhb2"
    dataset: str = "subset"
    max_train: int | None = None
    max_test: int | None = None
    seed: int = 0
    darts_channels: int = 8
    darts_layers: int = 5
    nhb2_channels: tuple[int, int, int] = (8, 16, 32)
    nhb2_cells_per_stage: int = 1
    auxiliary: bool = False
    aux_weight: float = 0.4
    batch_size: int = 64
    search_epochs: int = 10
    retrain_epochs: int = 5
    val_ratio: float = 0.2
    proj_dims: int = 7
    alpha_lr: float = 3e-3
    alpha_weight_decay: float = 1e-3
    dist_limit: float = 1e-3
    param_limit_mb: float | None = 3.7
    drop_path_prob: float = 0.2
    grad_clip: float = 5.0
    w_momentum: float = 0.9
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_weight_decay: float = 3e-4
    cutout_size: int = 0
    magnitude: float = 10.0
    magnitude_tune: float = 10.0
    temperature: float = 1.0
    d_lr: float = 15.0
    d_lr_tune: float = 15.0
    d_momentum: float = 0.0
    lr_bounds: tuple[float, float] = (0.005, 0.1)
    wd_bounds: tuple[float, float] = (0.0, 1e-3)
    h_lr: float = 1e-3
    h_lr_tune: float = 1e-3
    h_momentum: float = 0.0
    restart_hpo: bool = False
    compute: str = "auto"

    def __post_init__(self):
        get_variant(self.variant)
        from nhb.space.arch import get_space

        get_space(self.space)
        for name in ("batch_size", "search_epochs", "proj_dims"):
            if getattr(self, name) < 1:
                raise ValueError(f"DHAConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.retrain_epochs < 0:
            raise ValueError(f"retrain_epochs must be >= 0, got {self.retrain_epochs}")
        if not 0.0 < self.val_ratio <= 1.0:
            raise ValueError(f"val_ratio must be in (0, 1], got {self.val_ratio}")
        if self.compute not in COMPUTE_MODES:
            raise ValueError(f"compute must be one of {COMPUTE_MODES}, got {self.compute!r}")
        for name in ("lr_bounds", "wd_bounds"):
            lo, up = getattr(self, name)
            if not 0 <= lo <= up:
                raise ValueError(f"{name} must satisfy 0 <= low <= up, got ({lo}, {up})")

    @property
    def variant_spec(self) -> Variant:
        """The `Variant` of `variant`."""
        return VARIANTS[self.variant]

    @property
    def computes_support_only(self) -> bool:
        """Whether the supernet computes only the support's ops (`compute`)."""
        return self.compute == "support" or (self.compute == "auto" and self.space == "darts")

    @property
    def hparam_bounds(self) -> dict[str, tuple[float, float]]:
        """{"learning_rate": lr_bounds, "weight_decay": wd_bounds}."""
        return {"learning_rate": tuple(self.lr_bounds), "weight_decay": tuple(self.wd_bounds)}

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python fields (JSON-ready)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DHAConfig:
        """From `to_dict()` output or an ml_collections dict; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown DHAConfig fields {unknown}; valid: {sorted(names)}")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**fixed)

    @classmethod
    def quick(cls, **overrides: Any) -> DHAConfig:
        """The smallest meaningful run (minutes on 2 CPU cores): same pipeline, tiny sizes."""
        base = dict(max_train=1024, max_test=512, batch_size=32, search_epochs=4,
                    retrain_epochs=2, darts_channels=4, darts_layers=3,
                    nhb2_channels=(4, 8, 16))
        base.update(overrides)
        return cls.from_dict(base)
