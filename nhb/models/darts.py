"""The DARTS-space one-shot supernet of one-stage ISTA-NAS / DHA, and DARTS' discrete network.

`DartsSupernet` follows DHA `model/ista_sup_single.py` (reference `shared/reference/dha.md`
§3), itself ISTA-NAS' `ista_nas_single/search/models/model_search.py`:

* stem conv3x3(3 -> 3C, no bias) + BN; `layers` cells; reduction cells (channels x2, stride 2
  on the edges from c_{k-2}, c_{k-1}) at layers//3 and 2*layers//3; preprocess0 =
  FactorizedReduce after a reduction cell, else ReLUConvBN 1x1; preprocess1 = ReLUConvBN 1x1;
  cell output = concat of the 4 nodes; GAP + linear; auxiliary head (`AuxiliaryHeadCIFAR`)
  on the output of cell 2*layers//3, train mode only.
* Edge e (node-major order of `nhb.space.arch.DARTS`) is a mixed op over the 7 ops of
  `DARTS_OPS` (no 'none'): sum_o alpha[t, e, o] * op_o(h), alpha raw (no softmax, may be
  negative), t = 0 normal / 1 reduce. Pools and the identity skip get an extra BN.
* All BNs inside mixed ops are affine with scale 1 / bias 0 at init; DHA does not train them
  until the edge's node is frozen: use `affine_update_mask` to zero their updates.
* Drop-path (DARTS `utils.drop_path`) on every op output of a mixed op in train mode: in DHA
  every op is a non-identity module there (the skip carries its BN), so all are dropped.

Deviations / choices: `pool_bn=True` (default) reproduces DHA's pools, which are
`PoolBN` (pool - BN) *plus* the mixed op's extra BN, i.e. two BNs; `pool_bn=False` gives
ISTA-NAS' pool - BN. DHA skips an op whose alpha is exactly 0 at run time (its BN running
stats then stay unchanged); here that is the static `active` mask, while a dense supernet
(`active=None`) computes every op (multiplying by alpha = 0 gives the same output, but the
running stats of zero-alpha ops are updated). Module paths: `cell{i}/edge{e}/op{o}/...`,
`cell{i}/pre0`, `cell{i}/pre1`, `stem_conv`, `stem_bn`, `aux_head`, `classifier`.

`DartsNetwork` is DARTS' `NetworkCIFAR` for a genotype (`cnn/model.py`), or with
`style="dha"` DHA's `model/ista_model.py` variant used for its param-size check (PoolBN pools
plus an extra BN on pools and identity skips; drop-path then on every op). `darts_param_count`
counts its parameters without the auxiliary head (DARTS `utils.count_parameters_in_MB`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from nhb.models.darts_ops import (
    AuxiliaryHeadCIFAR,
    FactorizedReduce,
    StdConv,
    drop_path,
    make_op,
    may_drop,
)
from nhb.models.layers import TorchBatchNorm, TorchConv, TorchDense
from nhb.space.arch import DARTS, DARTS_OPS, ArchSpace, Genotype

Array = jax.Array


def reduction_cells(layers: int) -> tuple[int, int]:
    """Indices of the two reduction cells (DARTS: layers//3 and 2*layers//3)."""
    return layers // 3, 2 * layers // 3


def _check_active(active: Any, shape: tuple[int, ...]) -> None:
    a = np.asarray(active, dtype=object)
    if a.shape != shape:
        raise ValueError(f"active must be a nested tuple of shape {shape}, got {a.shape}")


class MixedOp(nn.Module):
    """One supernet edge: sum over the active ops of alpha_o * op_o(h), drop-path per op.

    Attributes:
        features: channels.
        stride: 1, or 2 on a reduction cell's input edges.
        active: 7 static flags (None: all ops).
        pool_bn: DHA's PoolBN BN on pools (see the module docstring).
    """

    features: int
    stride: int
    active: tuple[bool, ...] | None = None
    pool_bn: bool = True

    @nn.compact
    def __call__(self, x: Array, alpha: Array, train: bool, mask: Array | None,
                 drop_prob: Any) -> Array | None:
        """Args: x [B, H, W, C], alpha [7], BN mode, valid mask, drop-path prob.

        Returns:
            [B, H / stride, W / stride, C], or None when no op is active.
        """
        out = None
        for o, op in enumerate(DARTS_OPS):
            if self.active is not None and not self.active[o]:
                continue
            y = make_op(op, self.features, self.stride, self.pool_bn, True,
                        name=f"op{o}")(x, train, mask) * alpha[o].astype(x.dtype)
            if train and may_drop(drop_prob):
                y = drop_path(y, drop_prob, self.make_rng("drop_path"))
            out = y if out is None else out + y
        return out


class SearchCell(nn.Module):
    """A supernet cell (4 nodes over 14 mixed edges).

    Attributes:
        features: channels C of the cell (output 4C).
        reduction: reduction cell (stride 2 on the edges from the two inputs).
        reduction_prev: the previous cell reduced (preprocess0 = FactorizedReduce).
        active: static [14][7] flags of this cell type (None: all ops).
        pool_bn: see `MixedOp`.
    """

    features: int
    reduction: bool
    reduction_prev: bool
    active: tuple[tuple[bool, ...], ...] | None = None
    pool_bn: bool = True

    @nn.compact
    def __call__(self, s0: Array, s1: Array, alphas: Array, train: bool,
                 mask: Array | None = None, drop_prob: Any = 0.0) -> Array:
        """Args: the two inputs, alphas [14, 7] of this cell type, BN mode, mask, drop prob.

        Returns:
            Concat of the 4 nodes [B, H', W', 4C].
        """
        c = self.features
        pre0 = FactorizedReduce(c, name="pre0") if self.reduction_prev else StdConv(
            c, name="pre0")
        states = [pre0(s0, train, mask), StdConv(c, name="pre1")(s1, train, mask)]
        b, h, w, _ = states[1].shape
        shape = (b, h // 2, w // 2, c) if self.reduction else (b, h, w, c)
        e = 0
        for _ in range(DARTS.num_nodes):
            total = None
            for j, inp in enumerate(states):
                stride = 2 if self.reduction and j < 2 else 1
                act = None if self.active is None else tuple(self.active[e])
                if act is None or any(act):
                    y = MixedOp(c, stride, act, self.pool_bn, name=f"edge{e}")(
                        inp, alphas[e], train, mask, drop_prob)
                    total = y if total is None else total + y
                e += 1
            states.append(jnp.zeros(shape, s1.dtype) if total is None else total)
        return jnp.concatenate(states[2:], axis=-1)


class DartsSupernet(nn.Module):
    """One-stage ISTA / DHA supernet over the DARTS space (see the module docstring).

    Initialise with `active=None` (creates every parameter; `auxiliary=True` also creates the
    head's). Applying a module with a subset `active` to the same full variables computes only
    those ops and leaves the others' parameters and BN statistics untouched. `fast_torch_init`
    of `jax.eval_shape(net.init, ...)` gives PyTorch's default initialisation in one draw.

    rngs: drop-path draws from the "drop_path" stream, needed when `train` and `drop_prob` is
    traced or > 0: `net.apply(v, x, a, True, drop_prob=p, rngs={"drop_path": key},
    mutable=["batch_stats"])`. Each op gets its own per-sample mask.

    Attributes:
        C: initial channels.
        layers: cells.
        num_classes: logits.
        stem_multiplier: stem channels = stem_multiplier * C.
        auxiliary: build the auxiliary head.
        active: static nested tuple of bools [2][14][7] (None: every op).
        pool_bn: DHA's PoolBN BN on pool ops (False: ISTA-NAS' single extra BN).
    """

    C: int = 16
    layers: int = 8
    num_classes: int = 10
    stem_multiplier: int = 3
    auxiliary: bool = False
    active: tuple | None = None
    pool_bn: bool = True

    @nn.compact
    def __call__(self, x: Array, alphas: Array, train: bool, mask: Array | None = None,
                 drop_prob: Any = 0.0) -> tuple[Array, Array | None]:
        """Computes the logits.

        Args:
            x: images [B, H, W, 3] (H, W divisible by 4; 32 for the auxiliary head).
            alphas: architecture weights [2, 14, 7] (raw, traced).
            train: BN batch statistics (and "batch_stats" updates), drop-path, aux head.
            mask: optional [B] valid-example mask for every BN.
            drop_prob: drop-path probability (Python float or traced scalar).

        Returns:
            (logits [B, num_classes], aux logits [B, num_classes] if auxiliary and train
            else None).
        """
        if tuple(alphas.shape) != DARTS.alpha_shape:
            raise ValueError(f"alphas must have shape {DARTS.alpha_shape}, got {alphas.shape}")
        if self.active is not None:
            _check_active(self.active, DARTS.alpha_shape)
        c = self.stem_multiplier * self.C
        h = TorchConv(c, 3, 1, 1, False, name="stem_conv")(x)
        s0 = s1 = TorchBatchNorm(name="stem_bn")(h, train, mask)
        reductions = reduction_cells(self.layers)
        c, reduction_prev, aux = self.C, False, None
        for i in range(self.layers):
            reduction = i in reductions
            c = c * 2 if reduction else c
            t = int(reduction)
            act = None if self.active is None else self.active[t]
            s0, s1 = s1, SearchCell(c, reduction, reduction_prev, act, self.pool_bn,
                                    name=f"cell{i}")(s0, s1, alphas[t], train, mask, drop_prob)
            reduction_prev = reduction
            if i == reductions[1] and self.auxiliary and (train or self.is_initializing()):
                aux = AuxiliaryHeadCIFAR(self.num_classes, name="aux_head")(s1, train, mask)
        logits = TorchDense(self.num_classes, name="classifier")(jnp.mean(s1, axis=(1, 2)))
        return logits, aux if train else None


class GenotypeCell(nn.Module):
    """A discrete DARTS cell (`cnn/model.py` `Cell`; `style="dha"`: `ista_model.Cell`).

    Attributes:
        features: channels C.
        gene: 8 (op name, input index) pairs.
        reduction / reduction_prev: as in `SearchCell`.
        style: "darts" or "dha".
    """

    features: int
    gene: tuple[tuple[str, int], ...]
    reduction: bool
    reduction_prev: bool
    style: str = "darts"

    @nn.compact
    def __call__(self, s0: Array, s1: Array, train: bool, mask: Array | None = None,
                 drop_prob: Any = 0.0) -> Array:
        """Args: the two inputs, BN mode, mask, drop-path prob. Returns: [B, H', W', 4C]."""
        c, dha = self.features, self.style == "dha"
        pre0 = FactorizedReduce(c, name="pre0") if self.reduction_prev else StdConv(
            c, name="pre0")
        states = [pre0(s0, train, mask), StdConv(c, name="pre1")(s1, train, mask)]
        for node in range(len(self.gene) // 2):
            total = None
            for k in (2 * node, 2 * node + 1):
                op, index = self.gene[k]
                stride = 2 if self.reduction and index < 2 else 1
                y = make_op(op, c, stride, dha, dha, name=f"op{k}")(states[index], train, mask)
                identity = op == "skip_connect" and stride == 1 and not dha
                if train and may_drop(drop_prob) and not identity:
                    y = drop_path(y, drop_prob, self.make_rng("drop_path"))
                total = y if total is None else total + y
            states.append(total)
        return jnp.concatenate(states[2:], axis=-1)


class DartsNetwork(nn.Module):
    """DARTS' `NetworkCIFAR` for a genotype (concat = nodes 2..5, as every DARTS genotype).

    Attributes:
        genotype: the `Genotype` (tuples).
        C / layers / num_classes / stem_multiplier / auxiliary: as `DartsSupernet`.
        style: "darts" (`cnn/model.py`) or "dha" (`model/ista_model.py`).
    """

    genotype: Genotype
    C: int = 36
    layers: int = 20
    num_classes: int = 10
    stem_multiplier: int = 3
    auxiliary: bool = False
    style: str = "darts"

    @nn.compact
    def __call__(self, x: Array, train: bool, mask: Array | None = None,
                 drop_prob: Any = 0.0) -> tuple[Array, Array | None]:
        """Args/Returns: as `DartsSupernet.__call__` without alphas."""
        if self.style not in ("darts", "dha"):
            raise ValueError(f"style must be 'darts' or 'dha', got {self.style!r}")
        c = self.stem_multiplier * self.C
        s0 = s1 = TorchBatchNorm(name="stem_bn")(
            TorchConv(c, 3, 1, 1, False, name="stem_conv")(x), train, mask)
        reductions = reduction_cells(self.layers)
        c, reduction_prev, aux = self.C, False, None
        for i in range(self.layers):
            reduction = i in reductions
            c = c * 2 if reduction else c
            gene = tuple(tuple(g) for g in (self.genotype.reduce if reduction
                                            else self.genotype.normal))
            s0, s1 = s1, GenotypeCell(c, gene, reduction, reduction_prev, self.style,
                                      name=f"cell{i}")(s0, s1, train, mask, drop_prob)
            reduction_prev = reduction
            if i == reductions[1] and self.auxiliary and (train or self.is_initializing()):
                aux = AuxiliaryHeadCIFAR(self.num_classes, name="aux_head")(s1, train, mask)
        logits = TorchDense(self.num_classes, name="classifier")(jnp.mean(s1, axis=(1, 2)))
        return logits, aux if train else None


def _as_tuples(genotype: Genotype) -> Genotype:
    gene = lambda g: tuple((str(op), int(i)) for op, i in g)
    return Genotype(gene(genotype.normal), tuple(genotype.normal_concat),
                    gene(genotype.reduce), tuple(genotype.reduce_concat))


@functools.lru_cache(maxsize=256)
def _param_count(genotype: Genotype, C: int, layers: int, num_classes: int,
                 style: str) -> int:
    net = DartsNetwork(genotype, C, layers, num_classes, style=style)
    shapes = jax.eval_shape(
        lambda k: net.init(k, jnp.zeros((1, 32, 32, 3), jnp.float32), False),
        jax.random.key(0))
    return int(sum(np.prod(v.shape) for v in jax.tree_util.tree_leaves(shapes["params"])))


def darts_param_count(genotype: Genotype, C: int = 36, layers: int = 20,
                      num_classes: int = 10, style: str = "darts") -> int:
    """Parameters of the genotype's CIFAR network without the auxiliary head.

    Args:
        genotype: a DARTS `Genotype` (lists or tuples).
        C: initial channels.
        layers: cells.
        num_classes: classes.
        style: "darts" (DARTS `model.py`; DARTS_V2 at 36/20: 3,349,342) or "dha" (DHA's
            `ista_model.NetworkCIFAR`, what its param-limit check counts: extra BNs).

    Returns:
        The count (DHA / DARTS report it / 1e6 as "MB").
    """
    for concat in (genotype.normal_concat, genotype.reduce_concat):
        if tuple(concat) != (2, 3, 4, 5):
            raise ValueError(f"only concat (2, 3, 4, 5) is supported, got {tuple(concat)}")
    return _param_count(_as_tuples(genotype), C, layers, num_classes, style)


_CELL = re.compile(r"cell(\d+)$")
_STAGE_CELL = re.compile(r"stage\d+_cell\d+$")
_EDGE = re.compile(r"edge(\d+)$")


def affine_update_mask(params: Mapping[str, Any], space: ArchSpace, frozen: Any) -> Any:
    """Which parameters train: mixed-op BN scale/bias only once their node is frozen.

    Works for `DartsSupernet` (space `DARTS`, cells `cell{i}`; cell type from the index) and
    `NHB2Supernet` (space `NHB2`, cells `stage{s}_cell{k}`, one cell type).

    Args:
        params: the "params" collection (or a variables dict holding it); arrays or
            `jax.ShapeDtypeStruct`s.
        space: the architecture space.
        frozen: bool [cell type, node] (may be traced).

    Returns:
        A float32 tree like `params` (a params tree even when given variables): 0 for the
        scale/bias of a BN inside an edge of a non-frozen node, 1 everywhere else.
    """
    if "params" in params:
        params = params["params"]
    frozen = jnp.asarray(frozen).astype(jnp.float32)
    if frozen.shape != (space.num_cell_types, space.num_nodes):
        raise ValueError(f"frozen must have shape {(space.num_cell_types, space.num_nodes)}, "
                         f"got {frozen.shape}")
    flat = traverse_util.flatten_dict(dict(params))
    layers = len({k[0] for k in flat if _CELL.match(k[0])})
    out = {}
    for path, leaf in flat.items():
        value = None
        parent = path[:-1]
        is_bn = path[-1] in ("scale", "bias") and (*parent, "scale") in flat
        for d, part in enumerate(path[:-2]):
            m_edge = _EDGE.match(path[d + 1])
            if not (is_bn and m_edge):
                continue
            m_cell = _CELL.match(part)
            if m_cell:
                t = int(int(m_cell.group(1)) in reduction_cells(layers))
            elif _STAGE_CELL.match(part):
                t = 0
            else:
                continue
            node, _ = space.edge_node(int(m_edge.group(1)))
            value = jnp.broadcast_to(frozen[t, node], leaf.shape)
        out[path] = jnp.ones(leaf.shape, jnp.float32) if value is None else value
    return traverse_util.unflatten_dict(out)
