"""The NAS-HPO-Bench-II network (NAS-Bench-201 macro skeleton) as a Flax Linen module.

A cell is a 4-node DAG; node 0 is the cell input, node 3 the output, and node j is the sum
over i < j of op_{j<-i}(node i). The six edges follow the cell-code digit order
A = 1<-0, B = 2<-0, C = 2<-1, D = 3<-0, E = 3<-1, F = 3<-2, and each digit is one of
0 conv3x3 (ReLU-Conv-BN), 1 avgpool3x3, 2 skip, 3 zero.

`CellNet.conv_edges` (static) fixes the parameter structure; the `ops` argument may be
concrete (only the present ops are computed) or a traced int array of shape [6], so one
compiled program serves every cell with the same conv pattern (and `jax.vmap` can batch
such cells). With traced `ops` the caller must keep `ops[i] == 0` iff `conv_edges[i]`;
`check_ops` verifies this for concrete input.

`masked=True` makes the network a supernet: `conv_edges` is then only a superset of the
cell's conv edges (all six for one program serving every cell), a conv edge whose op is not
conv computes its convolution and discards it by a select (traced ops) or skips it
(concrete ops), and the unused edge's parameters get zero gradients. The cell's output is
the same function as in its exact-pattern network, and `init_cell_net` draws the same
values for the parameters both have, so the two train identically.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nhb.models.layers import (
    CONV_IMPLS,
    ReLUConvBN,
    ResNetReduction,
    TorchBatchNorm,
    TorchConv,
    TorchDense,
    avg_pool3x3,
    fast_torch_init,
)
from nhb.space.cells import (
    CONV,
    EDGE_TO_FROM,
    NUM_EDGES,
    POOL,
    SKIP,
    VALID_OPS_MSG,
    ZERO,
    cell_digits,
)

Array = jax.Array



def conv_edges_of(cell: Any) -> tuple[bool, ...]:
    """The static conv pattern of a cell.

    Args:
        cell: 6 op digits (or a cell-code string).

    Returns:
        6 bools, True where the edge is conv3x3 (op 0).
    """
    return tuple(d == CONV for d in cell_digits(cell))


def _check_conv_edges(conv_edges: Sequence[Any]) -> tuple[bool, ...]:
    if len(conv_edges) != NUM_EDGES:
        raise ValueError(f"conv_edges must have {NUM_EDGES} flags (one per edge A..F), got "
                         f"{len(conv_edges)}; valid edge ops: {VALID_OPS_MSG}")
    return tuple(bool(c) for c in conv_edges)


def check_ops(ops: Any, conv_edges: Sequence[bool], masked: bool = False) -> tuple[int, ...]:
    """Validates concrete `ops` against a conv pattern.

    Args:
        ops: 6 concrete op digits (or a cell-code string).
        conv_edges: the network's 6 conv flags.
        masked: the network is a supernet (`conv_edges` need only cover the conv ops).

    Returns:
        The digits as a tuple of ints.

    Raises:
        ValueError: bad digits, or `ops[i] == 0` disagrees with `conv_edges[i]` (masked:
            a conv op on an edge without conv parameters).
    """
    digits = cell_digits(ops)
    flags = _check_conv_edges(conv_edges)
    for i, (d, c) in enumerate(zip(digits, flags, strict=True)):
        if (d == CONV and not c) or (d != CONV and c and not masked):
            rule = "ops[i] == 0 needs conv_edges[i]" if masked else \
                "ops[i] must be 0 iff conv_edges[i]"
            raise ValueError(
                f"ops {digits} inconsistent with conv_edges {flags} at edge {i}: {rule}; "
                f"valid edge ops: {VALID_OPS_MSG}")
    return digits


def _concrete_ops(ops: Any) -> np.ndarray | None:
    """Returns `ops` as a NumPy array if concrete, else None (traced)."""
    if isinstance(ops, str):
        return np.asarray(cell_digits(ops))
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(ops)):
        return None
    return np.asarray(ops)


class Cell(nn.Module):
    """One normal cell (channels preserved, stride 1).

    Attributes:
        features: channels in and out.
        conv_edges: 6 static flags, True where the edge is conv3x3 (masked: may be).
        masked: supernet mode (see the module docstring).
        conv_impl: convolution implementation (`nhb.models.layers.conv2d`).
    """

    features: int
    conv_edges: tuple[bool, ...]
    masked: bool = False
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x: Array, ops: Any, train: bool, mask: Array | None = None) -> Array:
        """Evaluates the DAG.

        Args:
            x: cell input [B, H, W, features].
            ops: 6 op digits, concrete or a traced int array (must agree with conv_edges).
            train: BN mode.
            mask: optional [B] valid-example mask for BN statistics.

        Returns:
            The output node [B, H, W, features].
        """
        flags = _check_conv_edges(self.conv_edges)
        concrete = _concrete_ops(ops)
        if concrete is not None:
            digits = check_ops(concrete, flags, self.masked)
        else:
            ops = jnp.asarray(ops)
            if ops.shape != (NUM_EDGES,):
                raise ValueError(f"traced ops must have shape ({NUM_EDGES},), got {ops.shape}; "
                                 f"valid edge ops: {VALID_OPS_MSG}")
        nodes: list[Array] = [x]
        for j in range(1, 4):
            total: Array | None = None
            for e, (to, frm) in enumerate(EDGE_TO_FROM):
                if to != j:
                    continue
                h = nodes[frm]
                conv = ReLUConvBN(self.features, conv_impl=self.conv_impl, name=f"edge{e}")
                if concrete is not None:
                    d = digits[e]
                    if flags[e] and d != CONV and self.is_initializing():
                        conv(h, train, mask)  # masked: create the unused edge's parameters
                    if d == ZERO:
                        continue
                    y = (conv(h, train, mask) if d == CONV
                         else avg_pool3x3(h) if d == POOL else h)
                elif flags[e] and not self.masked:
                    y = conv(h, train, mask)
                else:
                    op = ops[e]
                    zero = jnp.zeros_like(h)
                    y = (jnp.where(op == POOL, avg_pool3x3(h), zero)
                         + jnp.where(op == SKIP, h, zero))
                    if flags[e]:
                        y = y + jnp.where(op == CONV, conv(h, train, mask), zero)
                total = y if total is None else total + y
            nodes.append(jnp.zeros_like(x) if total is None else total)
        return nodes[3]


class CellNet(nn.Module):
    """NAS-HPO-Bench-II / NB201 network: stem, 3 stages of cells, 2 reductions, head.

    Attributes:
        conv_edges: 6 static flags (which edges are conv3x3); defines the parameters.
        channels: per-stage channels.
        cells_per_stage: normal cells per stage.
        num_classes: logits.
        masked: supernet mode: `conv_edges` is a superset of the cell's conv edges (see the
            module docstring).
        conv_impl: convolution implementation, one of `nhb.models.layers.CONV_IMPLS`.
    """

    conv_edges: tuple[bool, ...]
    channels: tuple[int, int, int] = (16, 32, 64)
    cells_per_stage: int = 5
    num_classes: int = 10
    masked: bool = False
    conv_impl: str = "xla"

    def __post_init__(self) -> None:
        _check_conv_edges(self.conv_edges)
        if len(self.channels) != 3:
            raise ValueError(f"channels must have 3 entries, got {self.channels}")
        if self.conv_impl not in CONV_IMPLS:
            raise ValueError(f"unknown conv_impl {self.conv_impl!r}; valid choices: "
                             f"{CONV_IMPLS}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, ops: Any, train: bool, mask: Array | None = None) -> Array:
        """Computes logits.

        Args:
            x: images [B, 32, 32, 3] (NHWC, normalised floats).
            ops: the cell's 6 op digits: concrete (tuple / numpy / string) or a traced int
                array of shape [6]. It must satisfy `ops[i] == 0` iff `conv_edges[i]`
                (checked only when concrete, see `check_ops`).
            train: BN in train mode (batch stats, updates "batch_stats") or eval mode.
            mask: optional [B] valid-example mask, forwarded to every BN in train mode.

        Returns:
            Logits [B, num_classes].
        """
        flags = _check_conv_edges(self.conv_edges)
        c0, impl = self.channels[0], self.conv_impl
        h = TorchConv(c0, 3, 1, 1, True, impl, name="stem_conv")(x)
        h = TorchBatchNorm(name="stem_bn")(h, train, mask)
        for s, c in enumerate(self.channels):
            if s > 0:
                h = ResNetReduction(c, impl, name=f"reduction{s}")(h, train, mask)
            for k in range(self.cells_per_stage):
                h = Cell(c, flags, self.masked, impl, name=f"stage{s}_cell{k}")(
                    h, ops, train, mask)
        h = TorchBatchNorm(name="head_bn")(h, train, mask)
        h = nn.relu(h)
        h = jnp.mean(h, axis=(1, 2))
        return TorchDense(self.num_classes, name="classifier")(h)


def make_cell_net(cell: Any, **kwargs: Any) -> CellNet:
    """Builds the `CellNet` whose conv pattern matches `cell`.

    Args:
        cell: 6 op digits or a cell-code string.
        **kwargs: other `CellNet` fields (channels, cells_per_stage, num_classes).

    Returns:
        The module (pass the same cell's digits as `ops`).
    """
    return CellNet(conv_edges=conv_edges_of(cell), **kwargs)


def init_cell_net(key: Array, net: CellNet, ops: Any,
                  batch_shape: tuple[int, ...] = (1, 32, 32, 3),
                  fast: bool = True) -> dict[str, Any]:
    """Initialises the variables (jittable with `net` static; deterministic in `key`).

    Both paths give PyTorch's default initialisation. `fast=True` (default) traces
    `net.init` only for its shapes and fills them from one uniform draw
    (`layers.fast_torch_init`): XLA then compiles one RNG kernel instead of one per
    parameter (about 1 s instead of 10-40 s for the full network on a 2-core CPU).
    The draw is made for the all-conv network of the same scale and pruned to `net`'s
    parameters, so a parameter's value does not depend on the conv pattern: an exact-pattern
    network and a masked supernet start from the same values for the parameters they share.
    `fast=False` returns exactly `net.init(key, ...)`; the two give different values.

    Args:
        key: PRNG key.
        net: the module.
        ops: 6 op digits (concrete or traced); they do not affect the variables.
        batch_shape: dummy input shape.
        fast: use the single-draw initialiser.

    Returns:
        Variables {"params": ..., "batch_stats": ...}.
    """
    x = jnp.zeros(batch_shape, jnp.float32)
    if not fast:
        return dict(net.init(key, x, ops, train=False))
    shapes = jax.eval_shape(lambda k: net.init(k, x, ops, train=False), key)
    full = net.clone(conv_edges=(True,) * NUM_EDGES, masked=True)
    full_shapes = jax.eval_shape(lambda k: full.init(k, x, (3,) * NUM_EDGES, train=False), key)
    return _prune(fast_torch_init(key, full_shapes), shapes)


def _prune(tree: Mapping[str, Any], like: Mapping[str, Any]) -> dict[str, Any]:
    """The sub-tree of nested dict `tree` with the keys of `like`."""
    return {k: _prune(tree[k], v) if isinstance(v, Mapping) else tree[k]
            for k, v in like.items()}


def param_count(variables_or_params: Mapping[str, Any]) -> int:
    """Number of trainable parameters.

    Args:
        variables_or_params: a variables dict (its "params" collection is counted) or a
            params tree; leaves may be arrays or `jax.ShapeDtypeStruct`s.

    Returns:
        Total element count.
    """
    tree = variables_or_params
    if isinstance(tree, Mapping) and "params" in tree:
        tree = tree["params"]
    return int(sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree)))


def reference_param_count(cell: Any, channels: tuple[int, int, int] = (16, 32, 64),
                          cells_per_stage: int = 5, num_classes: int = 10) -> int:
    """Closed-form parameter count of the PyTorch reference network.

    Args:
        cell: 6 op digits or a cell-code string.
        channels: per-stage channels.
        cells_per_stage: normal cells per stage.
        num_classes: classifier outputs.

    Returns:
        Trainable parameter count (BN running statistics excluded).
    """
    n_conv = sum(conv_edges_of(cell))
    c0, _, c2 = channels
    stem = (3 * 9 * c0 + c0) + 2 * c0
    cells = sum(cells_per_stage * n_conv * (9 * c * c + 2 * c) for c in channels)
    reductions = 0
    for cin, cout in itertools.pairwise(channels):
        conv_a = 9 * cin * cout + cout + 2 * cout
        conv_b = 9 * cout * cout + cout + 2 * cout
        shortcut = cin * cout + cout
        reductions += conv_a + conv_b + shortcut
    head = 2 * c2 + c2 * num_classes + num_classes
    return stem + cells + reductions + head
