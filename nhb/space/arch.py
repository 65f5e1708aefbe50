"""Cell search spaces of the one-shot (DHA / ISTA-NAS) searches: the DARTS cell and NHB-II's.

An `ArchSpace` is the static description both the supernets (`nhb.models.darts`,
`nhb.models.nhb2_supernet`) and the sparse-coding search (`nhb.dha.ista`) read, so the edge
order and op ids are defined once, here.

Edges are numbered node by node: node i's incoming edges are
`edge_offset(i) .. edge_offset(i) + node_inputs[i] - 1`, in the order of the node's inputs.

* DARTS (Liu et al. 2019; DHA `model/darts_genotypes.py:18-25`): 4 intermediate nodes with
  inputs (c_{k-2}, c_{k-1}, node 0, ..., node i-1), so 2+3+4+5 = 14 edges, 7 ops (no 'none'),
  a normal and a reduction cell; the support keeps 2 edges per node (one op each), which is
  a DARTS genotype.
* NAS-HPO-Bench-II (`nhb.space.cells`): nodes 1..3 with 1, 2, 3 inputs in the official
  edge order A..F, 4 ops (conv3x3, avgpool3x3, skip, zero) and one normal cell type; every
  edge keeps exactly one op, so the support is an official cell code ("zero" removes the
  edge).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from nhb.space.cells import EDGE_TO_FROM, OP_NAMES, code_of

DARTS_OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
             "dil_conv_3x3", "dil_conv_5x5")
CELL_TYPES = ("normal", "reduce")


class Genotype(NamedTuple):
    """A DARTS genotype, as `genotypes.Genotype` in the DARTS code.

    Attributes:
        normal / reduce: per node two (op name, input index) pairs, flattened; input 0 is
            c_{k-2}, 1 is c_{k-1}, 2 + j is intermediate node j.
        normal_concat / reduce_concat: the nodes concatenated for the cell output.
    """

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ArchSpace:
    """A cell space for one-shot search.

    Attributes:
        name: "darts" or "nhb2" (one of `ARCH_SPACES`).
        op_names: candidate ops per edge, in op-id order.
        node_inputs: incoming edges of each searched node.
        keep_edges: edges each node keeps in the support (one op per kept edge).
        cell_types: searched cell types (each has its own codes and support).
    """

    name: str
    op_names: tuple[str, ...]
    node_inputs: tuple[int, ...]
    keep_edges: tuple[int, ...]
    cell_types: tuple[str, ...]

    @property
    def num_ops(self) -> int:
        """Candidate ops per edge."""
        return len(self.op_names)

    @property
    def num_nodes(self) -> int:
        """Searched nodes per cell."""
        return len(self.node_inputs)

    @property
    def num_edges(self) -> int:
        """Edges per cell."""
        return sum(self.node_inputs)

    @property
    def num_cell_types(self) -> int:
        """Cell types with their own architecture."""
        return len(self.cell_types)

    @property
    def max_columns(self) -> int:
        """Largest (edge, op) count of a node: the padded width of the per-node codes."""
        return max(self.node_inputs) * self.num_ops

    @property
    def alpha_shape(self) -> tuple[int, int, int]:
        """Shape of the architecture weights the supernets take: [cell type, edge, op]."""
        return (self.num_cell_types, self.num_edges, self.num_ops)

    def edge_offset(self, node: int) -> int:
        """Index of node `node`'s first incoming edge."""
        return sum(self.node_inputs[:node])

    def edge_node(self, edge: int) -> tuple[int, int]:
        """(node, input position) of an edge index."""
        if not 0 <= edge < self.num_edges:
            raise ValueError(f"edge must be in 0..{self.num_edges - 1}, got {edge}")
        for node, k in enumerate(self.node_inputs):
            if edge < k:
                return node, edge
            edge -= k
        raise AssertionError("unreachable")


DARTS = ArchSpace("darts", DARTS_OPS, (2, 3, 4, 5), (2, 2, 2, 2), CELL_TYPES)
NHB2 = ArchSpace("nhb2", OP_NAMES, (1, 2, 3), (1, 2, 3), ("normal",))
ARCH_SPACES = {"darts": DARTS, "nhb2": NHB2}
assert tuple(NHB2.edge_node(e)[0] + 1 for e in range(NHB2.num_edges)) == tuple(
    to for to, _ in EDGE_TO_FROM)  # NHB2 edges follow the official A..F order


def get_space(name: str) -> ArchSpace:
    """The `ArchSpace` called `name`; a clear error names the valid choices."""
    if name not in ARCH_SPACES:
        raise ValueError(f"unknown architecture space {name!r}; valid choices: "
                         f"{sorted(ARCH_SPACES)}")
    return ARCH_SPACES[name]


def selected_ops(space: ArchSpace, support) -> list[list[tuple[int, int]]]:
    """The (edge, op) pairs of a support mask, per cell type, in edge order.

    Args:
        space: the space.
        support: bool/0-1 array [cell type, edge, op] (e.g. `nhb.dha.ista.support`).

    Returns:
        One list of (edge, op) per cell type.
    """
    import numpy as np

    s = np.asarray(support).astype(bool)
    if s.shape != space.alpha_shape:
        raise ValueError(f"support must have shape {space.alpha_shape}, got {s.shape}")
    return [[(int(e), int(o)) for e, o in zip(*np.nonzero(s[t]), strict=True)]
            for t in range(space.num_cell_types)]


def to_genotype(support) -> Genotype:
    """The DARTS genotype of a DARTS support mask [2, 14, 7] (2 edges per node)."""
    cells = selected_ops(DARTS, support)
    parts = []
    for pairs in cells:
        gene = []
        for e, o in pairs:
            _, position = DARTS.edge_node(e)
            gene.append((DARTS_OPS[o], position))
        parts.append(tuple(gene))
    concat = tuple(range(2, 2 + DARTS.num_nodes))
    return Genotype(normal=parts[0], normal_concat=concat, reduce=parts[1], reduce_concat=concat)


def to_cell_code(support) -> str:
    """The official NAS-HPO-Bench-II code ("A|BC|DEF") of an NHB2 support mask [1, 6, 4]."""
    import numpy as np

    s = np.asarray(support).astype(bool)
    if s.shape != NHB2.alpha_shape or not np.all(s.sum(-1) == 1):
        raise ValueError(f"an NHB2 support has shape {NHB2.alpha_shape} with exactly one op "
                         f"per edge, got shape {s.shape}")
    return code_of(tuple(int(d) for d in s[0].argmax(-1)))
