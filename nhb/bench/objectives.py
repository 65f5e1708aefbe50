"""Multi-objective values of NAS-HPO-Bench-II cells: parameters and FLOPs of the network.

Every cell's network (`nhb.models.cell_net.CellNet`) is fixed by its conv pattern, and its
parameter and FLOP counts are affine in the number of conv3x3 edges: each conv edge adds one
ReLU-Conv3x3-BN per normal cell (15 at the paper scale); pooling, skip and zero edges add
nothing. The closed forms here are checked against the model itself (`model_counts`, the
Linen variables and the jaxpr of one forward pass) for every one of the 64 conv patterns.

Conventions:

- parameters: trainable variables of the Linen model ("params": conv kernels and biases, BN
  scales and shifts, the classifier); BN running statistics are not counted;
- FLOPs: multiply-accumulates (MACs) of one eval-mode forward pass of one 32x32x3 image, as
  in NAS-Bench-201 and `thop` ("FLOPs" = MACs; about twice as many floating-point
  operations): every convolution (kernel size x input channels per output element) and the
  classifier's matrix product. Biases, BatchNorm, ReLU, pooling, global averaging and the
  additions of node sums and residuals are not counted. Taps on the zero padding count too
  (XLA's `cost_analysis` skips them and counts 2 flops per MAC; for unpadded convolutions
  and matrix products it gives exactly 2x `jaxpr_macs`);
- both are the counts of the cell *as built*: a conv edge that does not reach the cell output
  (a pruned vertex of the compressed graph, `nhb.space.cells.compress`) still has its
  parameters and is computed by `CellNet` (as in NB201's PyTorch cells), so it is counted.
  Cells of one equivalence class therefore share their accuracy but not always these counts
  (26 of the 1011 classes hold cells with different numbers of conv edges).

`objective_tables()` gives both for the 4096 cells (index = base-4 cell number);
`PARAMS` and `FLOPS` are those of the paper scale (channels 16/32/64, 5 cells per stage).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np

from nhb.space.cells import CONV, NUM_CELLS, NUM_EDGES, cell_digits, digits_of_index

PAPER_CHANNELS = (16, 32, 64)
PAPER_CELLS_PER_STAGE = 5
IMAGE_SIZE = 32
IMAGE_CHANNELS = 3
NUM_CLASSES = 10


class Objectives(NamedTuple):
    """Per-cell objective tables (read-only int64 [4096], index = base-4 cell number).

    Attributes:
        params: trainable parameter count of each cell's network.
        flops: multiply-accumulates of one forward pass of one image.
    """

    params: np.ndarray
    flops: np.ndarray


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def affine_counts(channels: Sequence[int] = PAPER_CHANNELS,
                  cells_per_stage: int = PAPER_CELLS_PER_STAGE,
                  num_classes: int = NUM_CLASSES,
                  image_size: int = IMAGE_SIZE) -> dict[str, tuple[int, int]]:
    """The closed form: counts of the network without conv edges and per conv edge.

    Args:
        channels: per-stage channels.
        cells_per_stage: normal cells per stage.
        num_classes: classifier outputs.
        image_size: input height and width.

    Returns:
        {"params": (base, per_conv_edge), "flops": (base, per_conv_edge)}; a cell with n conv
        edges has base + n * per_conv_edge.
    """
    c0 = channels[0]
    s = image_size  # stem: conv3x3 (bias) + BN
    params = IMAGE_CHANNELS * 9 * c0 + c0 + 2 * c0
    flops = s * s * IMAGE_CHANNELS * 9 * c0
    edge_params = edge_flops = 0
    cin = c0
    for k, c in enumerate(channels):
        if k > 0:  # ResNet reduction: conv3x3/2 (bias) + BN, conv3x3 (bias) + BN, shortcut
            s_a = _out_size(s, 3, 2, 1)
            s_pool = _out_size(s, 2, 2, 0)
            params += (9 * cin * c + c + 2 * c) + (9 * c * c + c + 2 * c) + (cin * c + c)
            flops += s_a * s_a * 9 * cin * c + s_a * s_a * 9 * c * c + s_pool * s_pool * cin * c
            s = s_a
        edge_params += cells_per_stage * (9 * c * c + 2 * c)  # conv3x3 (no bias) + BN
        edge_flops += cells_per_stage * s * s * 9 * c * c
        cin = c
    params += 2 * cin + cin * num_classes + num_classes  # head BN + classifier
    flops += cin * num_classes
    return {"params": (params, edge_params), "flops": (flops, edge_flops)}


def _num_conv(cell: Any) -> int:
    if isinstance(cell, int | np.integer) and not isinstance(cell, bool):
        if not 0 <= cell < NUM_CELLS:
            raise ValueError(f"cell index {cell} is out of range 0..{NUM_CELLS - 1}")
        digits = digits_of_index(int(cell))
    else:
        digits = cell_digits(cell)
    return sum(d == CONV for d in digits)


def cell_params(cell: Any, **scale: Any) -> int:
    """Trainable parameters of a cell's network (see the module docstring).

    Args:
        cell: a cell index 0..4095, 6 op digits, or a code string such as "0|12|333".
        **scale: `affine_counts` arguments (channels, cells_per_stage, ...; default paper).

    Returns:
        The count (1,531,850 for the all-conv cell at the paper scale).
    """
    base, per_edge = affine_counts(**scale)["params"]
    return base + _num_conv(cell) * per_edge


def cell_flops(cell: Any, **scale: Any) -> int:
    """Multiply-accumulates of one forward pass of a 32x32x3 image (module docstring).

    Args:
        cell: a cell index 0..4095, 6 op digits, or a code string such as "0|12|333".
        **scale: `affine_counts` arguments (channels, cells_per_stage, ...; default paper).

    Returns:
        The count (220,119,680 for the all-conv cell at the paper scale).
    """
    base, per_edge = affine_counts(**scale)["flops"]
    return base + _num_conv(cell) * per_edge


@functools.cache
def _tables(channels: tuple[int, ...], cells_per_stage: int, num_classes: int) -> Objectives:
    index = np.arange(NUM_CELLS)
    digits = (index[:, None] // 4 ** np.arange(NUM_EDGES - 1, -1, -1)) % 4
    n_conv = (digits == CONV).sum(1).astype(np.int64)
    counts = affine_counts(channels, cells_per_stage, num_classes)
    out = []
    for name in ("params", "flops"):
        base, per_edge = counts[name]
        table = base + n_conv * per_edge
        table.setflags(write=False)
        out.append(table)
    return Objectives(*out)


def objective_tables(channels: Sequence[int] = PAPER_CHANNELS,
                     cells_per_stage: int = PAPER_CELLS_PER_STAGE,
                     num_classes: int = NUM_CLASSES) -> Objectives:
    """Parameters and FLOPs of all 4096 cells (cached per scale).

    Args:
        channels: per-stage channels.
        cells_per_stage: normal cells per stage.
        num_classes: classifier outputs.

    Returns:
        `Objectives` of read-only int64 [4096] arrays.
    """
    return _tables(tuple(int(c) for c in channels), int(cells_per_stage), int(num_classes))


def scale_of_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The network scale a table was built at (its meta "scale"; official data: paper).

    Args:
        meta: a `Table.meta`.

    Returns:
        {"channels": ..., "cells_per_stage": ...} for `objective_tables`.
    """
    name = meta.get("scale") or "paper"
    if name == "paper":
        return {"channels": PAPER_CHANNELS, "cells_per_stage": PAPER_CELLS_PER_STAGE}
    from nhb.train.grid import get_scale  # heavy import, only for built sub-scale tables

    s = get_scale(str(name))
    return {"channels": tuple(s.channels), "cells_per_stage": s.cells_per_stage}


PARAMS, FLOPS = objective_tables()

# ----------------------------------------------------------------------- model references

# Primitives whose sub-jaxprs run a data-dependent number of times (or one branch of many).
_CONTROL_FLOW = ("while", "scan", "cond", "switch", "fori_loop", "for")


def jaxpr_macs(jaxpr: Any) -> int:
    """Multiply-accumulates of the convolutions and dot products in a jaxpr.

    A convolution costs, per output element, the kernel's size divided by its output features
    (kernel spatial size x input channels per group); a `dot_general` costs, per output
    element, the product of its contracted dimensions. Nested call jaxprs (`jit`, custom
    derivatives, remat) are counted once; loops and conditionals are refused.

    Args:
        jaxpr: a `Jaxpr` or `ClosedJaxpr` (e.g. from `jax.make_jaxpr`).

    Returns:
        The count.

    Raises:
        ValueError: a loop or conditional containing sub-jaxprs.
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) // out_features
        elif name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += (math.prod(eqn.outvars[0].aval.shape)
                      * math.prod(lhs[d] for d in lhs_contract))
        subs = list(jax_core.jaxprs_in_params(eqn.params))
        if subs and name in _CONTROL_FLOW:
            raise ValueError(f"jaxpr_macs: cannot count through primitive {name!r}")
        total += sum(jaxpr_macs(s) for s in subs)
    return total


def model_counts(conv_edges: Sequence[bool], ops: Any = None,
                 channels: Sequence[int] = PAPER_CHANNELS,
                 cells_per_stage: int = PAPER_CELLS_PER_STAGE,
                 num_classes: int = NUM_CLASSES, via_apply: bool = False) -> tuple[int, int]:
    """Parameters and MACs of the `CellNet` itself (shape-only tracing, no compute).

    Parameters are the element count of the "params" collection `CellNet.init` creates; MACs
    are `jaxpr_macs` of the eval-mode forward pass of one 32x32x3 image: by default that of
    the jaxpr of `CellNet.init` (one trace: init runs the forward pass once, and its
    initialisers draw random numbers without products), or, with `via_apply`, of the jaxpr
    of `CellNet.apply` (a second trace).

    Args:
        conv_edges: the network's 6 conv flags.
        ops: concrete op digits agreeing with `conv_edges`, or None: traced ops of shape [6],
            the one program that `CellNet` runs for every cell of this conv pattern.
        channels: per-stage channels.
        cells_per_stage: normal cells per stage.
        num_classes: classifier outputs.
        via_apply: count the apply jaxpr's products instead of init's.

    Returns:
        (parameters, MACs).
    """
    from nhb.models.cell_net import CellNet, param_count  # Flax model, for references only

    net = CellNet(conv_edges=tuple(bool(c) for c in conv_edges), channels=tuple(channels),
                  cells_per_stage=cells_per_stage, num_classes=num_classes)
    x = jax.ShapeDtypeStruct((1, IMAGE_SIZE, IMAGE_SIZE, IMAGE_CHANNELS), jnp.float32)
    if ops is None:  # traced ops: the program shared by the pattern's cells
        extra: tuple[Any, ...] = (jax.ShapeDtypeStruct((NUM_EDGES,), jnp.int32),)
        fixed = None
    else:
        extra, fixed = (), np.asarray(cell_digits(ops), np.int32)

    def init(key: jax.Array, x: jax.Array, *o: jax.Array) -> Any:
        return net.init(key, x, o[0] if o else fixed, train=False)

    def apply(v: Any, x: jax.Array, *o: jax.Array) -> jax.Array:
        return net.apply(v, x, o[0] if o else fixed, train=False)

    jaxpr, variables = jax.make_jaxpr(init, return_shape=True)(jax.random.key(0), x, *extra)
    if via_apply:
        jaxpr = jax.make_jaxpr(apply)(variables, x, *extra)
    return param_count(variables), jaxpr_macs(jaxpr)
