"""The supernet of a DHA run: which Linen module, how it is applied, what it may train.

One place that knows both supernets (`nhb.models.darts.DartsSupernet`,
`nhb.models.nhb2_supernet.NHB2Supernet`): they take the architecture weights `alphas`
[cell type, edge, op] as an input and return `(logits, aux_logits)`. `active` (a static
support) restricts a module to the support's ops, for the retrain phase and the derived
network.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nhb.dha.config import DHAConfig
from nhb.models import darts as darts_models
from nhb.models import nhb2_supernet
from nhb.models.layers import fast_torch_init
from nhb.space.arch import ArchSpace, get_space, to_genotype

DRAW_SALT = 7_919  # fold-in salt of the drop-path key


def support_to_active(support: Any) -> tuple:
    """A support mask [T, E, O] as the nested tuple of bools the modules take as `active`."""
    s = np.asarray(support).astype(bool)
    return tuple(tuple(tuple(bool(v) for v in edge) for edge in cell) for cell in s)


@dataclasses.dataclass(frozen=True)
class Network:
    """The supernet of one configuration.

    Attributes:
        config: the run's settings.
        space: its `ArchSpace`.
        num_classes: logits.
    """

    config: DHAConfig
    space: ArchSpace
    num_classes: int = 10

    def module(self, active: tuple | None = None) -> Any:
        """The Linen module, computing every op (None) or only `active`'s."""
        c = self.config
        if self.space.name == "darts":
            return darts_models.DartsSupernet(C=c.darts_channels, layers=c.darts_layers,
                                              num_classes=self.num_classes,
                                              auxiliary=c.auxiliary, active=active)
        return nhb2_supernet.NHB2Supernet(channels=tuple(c.nhb2_channels),
                                          cells_per_stage=c.nhb2_cells_per_stage,
                                          num_classes=self.num_classes, active=active)

    def init(self, key: jax.Array) -> dict[str, Any]:
        """Variables of the full supernet (every op's parameters), PyTorch's default
        initialisation drawn in one go (`nhb.models.layers.fast_torch_init`)."""
        alphas = jnp.zeros(self.space.alpha_shape, jnp.float32)
        shapes = jax.eval_shape(lambda: self.module().init(
            jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.float32), alphas,
            train=False))
        return fast_torch_init(key, dict(shapes))

    def apply_train(self, module: Any, variables: dict[str, Any], x: jax.Array,
                    alphas: jax.Array, mask: jax.Array, drop_prob: jax.Array,
                    key: jax.Array) -> tuple[jax.Array, jax.Array | None, Any]:
        """Train mode: (logits, aux logits or None, new batch_stats)."""
        (logits, aux), new = module.apply(
            variables, x, alphas, train=True, mask=mask, drop_prob=drop_prob,
            rngs={"drop_path": jax.random.fold_in(key, DRAW_SALT)}, mutable=["batch_stats"])
        return logits, aux, new["batch_stats"]

    def apply_eval(self, module: Any, variables: dict[str, Any], x: jax.Array,
                   alphas: jax.Array) -> jax.Array:
        """Eval mode (running BatchNorm statistics, no drop-path): logits."""
        logits, _ = module.apply(variables, x, alphas, train=False)
        return logits

    def affine_mask(self, params: Any, frozen: jax.Array) -> Any:
        """1 where a parameter trains, 0 for mixed-op BatchNorm affines of unfrozen nodes."""
        if self.space.name == "darts":
            return darts_models.affine_update_mask(params, self.space, frozen)
        return nhb2_supernet.nhb2_affine_update_mask(params, frozen)

    def accept(self, support: Any) -> bool:
        """The parameter-limit test of a new support (DARTS only; reference §3): the derived
        genotype's DHA NetworkCIFAR at 36 channels, 20 cells, aux head excluded, counted
        as DHA counts it (its pool and skip ops carry extra BatchNorms)."""
        limit = self.config.param_limit_mb
        if self.space.name != "darts" or limit is None:
            return True
        return darts_models.darts_param_count(to_genotype(support), style="dha") / 1e6 < limit


def make_network(config: DHAConfig, num_classes: int = 10) -> Network:
    """The `Network` of a config."""
    return Network(config=config, space=get_space(config.space), num_classes=num_classes)
