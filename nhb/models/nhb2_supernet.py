"""One-shot supernet over the NAS-HPO-Bench-II cell space (for ISTA / DHA-style search).

Same skeleton and module names as `nhb.models.cell_net.CellNet` (stem conv3x3 + BN, three
stages of `cells_per_stage` cells, `ResNetReduction` between stages, BN - ReLU - GAP - linear
head). Every cell edge e (official order A..F, `nhb.space.arch.NHB2`) computes
sum_o alpha[0, e, o] * op_o(h) over conv3x3 (NB201 ReLU-Conv-BN, no bias, module
`edge{e}` as in `CellNet`), avgpool3x3 (count_include_pad=True), skip; zero contributes
nothing and is never computed. Alphas are raw (no softmax) and shared by all cells.

The conv op's BN is the only BN inside a mixed edge: as in DHA's DARTS supernet its affine
parameters should be trained only once the edge's node is frozen (`nhb2_affine_update_mask`).
No extra BN is added to pool / skip (the NHB-II ops have none). Drop-path (DARTS
`utils.drop_path`) applies in train mode to the conv and pool outputs (skip is an identity).

Identity with `CellNet`: for a cell code, one-hot alphas on it and `active` = that one-hot
pattern, the supernet with variables `v` computes exactly `CellNet` of that cell with
variables `to_cell_net_params(v, cell)` (logits and batch-stat updates; with `active=None`
the same up to float rounding, but zero-alpha convs' BN statistics are updated too).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nhb.models.darts import affine_update_mask
from nhb.models.darts_ops import drop_path, may_drop
from nhb.models.layers import (
    ReLUConvBN,
    ResNetReduction,
    TorchBatchNorm,
    TorchConv,
    TorchDense,
    avg_pool3x3,
)
from nhb.space.arch import NHB2
from nhb.space.cells import CONV, EDGE_TO_FROM, POOL, SKIP, cell_digits

Array = jax.Array


class SupernetCell(nn.Module):
    """One mixed NHB-II cell (channels preserved).

    Attributes:
        features: channels.
        active: static [6][4] op flags (None: conv, pool and skip on every edge).
        conv_impl: convolution implementation (`nhb.models.layers.conv2d`).
    """

    features: int
    active: tuple[tuple[bool, ...], ...] | None = None
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x: Array, alphas: Array, train: bool, mask: Array | None = None,
                 drop_prob: Any = 0.0) -> Array:
        """Args: input [B, H, W, C], alphas [6, 4], BN mode, mask, drop prob.

        Returns:
            The output node [B, H, W, C].
        """
        nodes: list[Array] = [x]
        for j in range(1, 4):
            total = None
            for e, (to, frm) in enumerate(EDGE_TO_FROM):
                if to != j:
                    continue
                h = nodes[frm]
                for o in (CONV, POOL, SKIP):
                    if self.active is not None and not self.active[e][o]:
                        continue
                    if o == CONV:
                        y = ReLUConvBN(self.features, conv_impl=self.conv_impl,
                                       name=f"edge{e}")(h, train, mask)
                    else:
                        y = avg_pool3x3(h) if o == POOL else h
                    y = y * alphas[e, o].astype(h.dtype)
                    if o != SKIP and train and may_drop(drop_prob):
                        y = drop_path(y, drop_prob, self.make_rng("drop_path"))
                    total = y if total is None else total + y
            nodes.append(jnp.zeros_like(x) if total is None else total)
        return nodes[3]


class NHB2Supernet(nn.Module):
    """The NAS-HPO-Bench-II network with mixed edges (see the module docstring).

    Initialise with `active=None`; a subset `active` applies to the same variables.
    Drop-path rngs: the "drop_path" stream, needed when `train` and `drop_prob` is traced or
    > 0 (`rngs={"drop_path": key}`).

    Attributes:
        channels: per-stage channels.
        cells_per_stage: cells per stage.
        num_classes: logits.
        active: static nested tuple of bools [1][6][4] (None: every op).
        conv_impl: convolution implementation.
    """

    channels: tuple[int, int, int] = (16, 32, 64)
    cells_per_stage: int = 5
    num_classes: int = 10
    active: tuple | None = None
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x: Array, alphas: Array, train: bool, mask: Array | None = None,
                 drop_prob: Any = 0.0) -> tuple[Array, None]:
        """Computes the logits.

        Args:
            x: images [B, 32, 32, 3].
            alphas: architecture weights [1, 6, 4] (raw, traced).
            train: BN batch statistics (and "batch_stats" updates), drop-path.
            mask: optional [B] valid-example mask for every BN.
            drop_prob: drop-path probability (Python float or traced scalar).

        Returns:
            (logits [B, num_classes], None).
        """
        if tuple(alphas.shape) != NHB2.alpha_shape:
            raise ValueError(f"alphas must have shape {NHB2.alpha_shape}, got {alphas.shape}")
        act = None
        if self.active is not None:
            if (len(self.active) != 1 or len(self.active[0]) != NHB2.num_edges
                    or any(len(a) != NHB2.num_ops for a in self.active[0])):
                raise ValueError(f"active must be a nested tuple of shape {NHB2.alpha_shape}")
            act = tuple(tuple(bool(b) for b in a) for a in self.active[0])
        impl = self.conv_impl
        h = TorchConv(self.channels[0], 3, 1, 1, True, impl, name="stem_conv")(x)
        h = TorchBatchNorm(name="stem_bn")(h, train, mask)
        for s, c in enumerate(self.channels):
            if s > 0:
                h = ResNetReduction(c, impl, name=f"reduction{s}")(h, train, mask)
            for k in range(self.cells_per_stage):
                h = SupernetCell(c, act, impl, name=f"stage{s}_cell{k}")(
                    h, alphas[0], train, mask, drop_prob)
        h = nn.relu(TorchBatchNorm(name="head_bn")(h, train, mask))
        return TorchDense(self.num_classes, name="classifier")(jnp.mean(h, axis=(1, 2))), None


_STAGE_CELL = re.compile(r"stage\d+_cell\d+$")


def to_cell_net_params(supernet_vars: Mapping[str, Any], cell: Any) -> dict[str, Any]:
    """The `CellNet` variables of a cell taken from supernet variables.

    Args:
        supernet_vars: `NHB2Supernet` variables ({"params", "batch_stats"}).
        cell: 6 op digits or a cell code.

    Returns:
        Variables for `make_cell_net(cell, ...)` with the same channels / cells: the
        supernet's, without the conv modules of edges whose op is not conv3x3.
    """
    digits = cell_digits(cell)
    drop = {f"edge{e}" for e, d in enumerate(digits) if d != CONV}

    def prune(tree: Mapping[str, Any]) -> dict[str, Any]:
        return {k: ({e: v for e, v in sub.items() if e not in drop}
                    if _STAGE_CELL.match(k) else sub) for k, sub in tree.items()}

    return {col: prune(tree) for col, tree in supernet_vars.items()}


def nhb2_affine_update_mask(params: Mapping[str, Any], frozen: Any) -> Any:
    """`affine_update_mask(params, NHB2, frozen)`: frozen is bool [1, 3] (nodes 1..3)."""
    return affine_update_mask(params, NHB2, frozen)


def one_hot_alphas(cell: Any) -> tuple[Array, tuple]:
    """One-hot alphas [1, 6, 4] of a cell and the matching static `active` pattern.

    Args:
        cell: 6 op digits or a cell code.

    Returns:
        (alphas float32, active nested tuple of bools).
    """
    digits = cell_digits(cell)
    active = (tuple(tuple(o == d for o in range(NHB2.num_ops)) for d in digits),)
    return jnp.asarray(active, jnp.float32), active
