"""NAS-HPO-Bench-II cell analysis: compressed graphs, equivalence classes, groups.

Everything here is plain NumPy/Python, run once per process (cached) over the 4096 cells; the
jittable space (`nhb.space.nhb2`) gathers from the resulting tables.

The equivalence procedure follows the paper (§3.1, Figure 2) as pinned down in docs/protocol.md §2:
1. Edge-labelled cell -> node-labelled op-DAG: one vertex per non-zero edge, plus the cell
   input and output; sum nodes are eliminated (an op vertex on edge j<-i feeds every op vertex
   on an edge leaving node j).
2. Zero edges are dropped; every skip vertex is contracted, *adding path multiplicities*
   (parallel paths remain distinct, so the adjacency holds integer counts).
3. Vertices that are not on an input -> output path are pruned.
4. The graph is hashed with Ying's iterative hash (NAS-Bench-101 `hash_module`), extended to
   integer adjacency counts by repeating a neighbour's hash once per parallel edge.
This reproduces exactly the 1011 classes of the official release; the class of each cell is
reported as the index of its official representative in `unique_cellcodes`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any

import numpy as np

from nhb._vendor import load_npz

NUM_EDGES = 6
NUM_OPS = 4
NUM_CELLS = NUM_OPS**NUM_EDGES
OP_NAMES = ("conv3x3", "avgpool3x3", "skip", "zero")
CONV, POOL, SKIP, ZERO = 0, 1, 2, 3
VALID_OPS_MSG = ", ".join(f"{i} {name}" for i, name in enumerate(OP_NAMES))
# (to, from) node pair of each digit of the code "A|BC|DEF".
EDGE_TO_FROM = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
# Vertex labels of the compressed graph (node feature one-hot order).
VERTEX_LABELS = ("input", "output", "conv3x3", "avgpool3x3")
MAX_VERTICES = 2 + NUM_EDGES

_NPZ = "nashpobench2/nashpobench2_cells_split.npz"


@dataclasses.dataclass(frozen=True)
class CompressedCell:
    """A compressed cell graph.

    Attributes:
        labels: vertex labels (indices into `VERTEX_LABELS`); vertex 0 is the input, vertex 1
            the output, then the surviving conv/pool vertices in digit order.
        adjacency: int matrix [V, V]; adjacency[u, v] = number of parallel u -> v edges.
        connected: whether the output is reachable from the input.
    """

    labels: tuple[int, ...]
    adjacency: np.ndarray
    connected: bool


def digits_of_index(index: int) -> tuple[int, ...]:
    """The 6 op digits of a cell index (base-4, digit A most significant)."""
    return tuple((index // NUM_OPS ** (NUM_EDGES - 1 - k)) % NUM_OPS for k in range(NUM_EDGES))


def compress(cell: tuple[int, ...]) -> CompressedCell:
    """Compresses one cell (6 op digits) as in the module docstring.

    Args:
        cell: the op digit of each edge, in code order.

    Returns:
        The compressed graph (empty of op vertices and disconnected when no path exists).
    """
    # Vertices: 0 = input, 1 = output, 2 + e = op vertex of edge e.
    n = 2 + NUM_EDGES
    adj = np.zeros((n, n), dtype=np.int64)
    alive = [True, True] + [cell[e] != ZERO for e in range(NUM_EDGES)]
    for e, (to, frm) in enumerate(EDGE_TO_FROM):
        if not alive[2 + e]:
            continue
        if frm == 0:
            adj[0, 2 + e] += 1
        if to == 3:
            adj[2 + e, 1] += 1
        for f, (_, frm2) in enumerate(EDGE_TO_FROM):
            if alive[2 + f] and frm2 == to:
                adj[2 + e, 2 + f] += 1
    # Contract skip vertices in topological (digit) order, multiplying path counts.
    for e in range(NUM_EDGES):
        v = 2 + e
        if not alive[v] or cell[e] != SKIP:
            continue
        adj += np.outer(adj[:, v], adj[v, :])
        adj[:, v] = 0
        adj[v, :] = 0
        alive[v] = False
    # Prune vertices not on an input -> output path.
    reach_fwd = _reachable(adj, 0)
    reach_bwd = _reachable(adj.T, 1)
    connected = bool(reach_fwd[1])
    keep = [v for v in range(n) if alive[v] and reach_fwd[v] and reach_bwd[v]]
    if not connected:
        keep = [0, 1]
    keep = sorted(set(keep) | {0, 1})
    labels = tuple(
        0 if v == 0 else 1 if v == 1 else (2 if cell[v - 2] == CONV else 3) for v in keep
    )
    sub = adj[np.ix_(keep, keep)] if connected else np.zeros((2, 2), dtype=np.int64)
    return CompressedCell(labels=labels, adjacency=sub, connected=connected)


def _reachable(adj: np.ndarray, start: int) -> np.ndarray:
    seen = np.zeros(adj.shape[0], dtype=bool)
    stack = [start]
    seen[start] = True
    while stack:
        u = stack.pop()
        for v in np.nonzero(adj[u])[0]:
            if not seen[v]:
                seen[v] = True
                stack.append(int(v))
    return seen


def graph_hash(g: CompressedCell) -> str:
    """Ying (2019) iterative hash of a compressed graph with integer multiplicities.

    Args:
        g: a compressed cell.

    Returns:
        A hex digest identical for isomorphic graphs (as NAS-Bench-101's `hash_module`, with
        each neighbour repeated once per parallel edge).
    """
    adj = g.adjacency
    v = len(g.labels)
    in_deg = adj.sum(axis=0)
    out_deg = adj.sum(axis=1)
    hashes = [
        hashlib.md5(f"{out_deg[i]}|{in_deg[i]}|{g.labels[i]}".encode()).hexdigest()
        for i in range(v)
    ]
    for _ in range(v):
        new = []
        for i in range(v):
            ins = sorted(h for j in range(v) for h in [hashes[j]] * int(adj[j, i]))
            outs = sorted(h for j in range(v) for h in [hashes[j]] * int(adj[i, j]))
            new.append(hashlib.md5(("".join(ins) + "|" + "".join(outs) + "|" + hashes[i])
                                   .encode()).hexdigest())
        hashes = new
    tag = "connected" if g.connected else "disconnected"
    return hashlib.md5((tag + "".join(sorted(hashes))).encode()).hexdigest()


def architecture_group(g: CompressedCell) -> int:
    """The paper's heuristic architecture group (§4.3) of a compressed cell.

    Group 1: a direct input -> output edge exists in the compressed graph (skip paths only).
    Group 2: not group 1, at most one pooling path (an input -> output path whose vertices are
    all average pooling, counted with multiplicity) and at least one convolution.
    Group 3: the rest (including the 169 cells without an input -> output path).

    Args:
        g: a compressed cell.

    Returns:
        1, 2 or 3.
    """
    if g.connected and g.adjacency[0, 1] > 0:
        return 1
    has_conv = any(lab == 2 for lab in g.labels)
    if has_conv and num_pooling_paths(g) <= 1:
        return 2
    return 3


def num_pooling_paths(g: CompressedCell) -> int:
    """Number of input -> output paths through pooling vertices only (with multiplicity)."""
    if not g.connected:
        return 0
    v = len(g.labels)
    pool = [g.labels[i] == 3 for i in range(v)]
    # Vertices are in topological order after the input (0) and output (1) slots.
    paths = np.zeros(v, dtype=np.int64)
    paths[0] = 1
    order = [*range(2, v), 1]
    for i in order:
        if i == 1 or pool[i]:
            paths[i] = sum(paths[j] * g.adjacency[j, i] for j in [0, *range(2, v)]
                           if (j == 0 or pool[j]))
    return int(paths[1] - g.adjacency[0, 1])


@dataclasses.dataclass(frozen=True)
class CellTables:
    """Per-cell lookup tables over all 4096 cells (index = base-4 cell number).

    Attributes:
        digits: int8 [4096, 6] op digits.
        codes: the 4096 official code strings.
        class_id: int32 [4096] index of the cell's official representative in
            `unique_codes` (its equivalence class).
        unique_codes: the 1011 official representative codes (training order).
        representative: int32 [1011] cell index of each representative.
        class_size: int32 [1011] number of cells per class.
        disconnected: bool [4096] no input -> output path.
        group: int8 [4096] architecture group 1/2/3.
        node_labels: int8 [4096, 8] compressed-graph vertex label, -1 for padding slots.
        adjacency: int8 [4096, 8, 8] compressed-graph multiplicities (0 on padding).
    """

    digits: np.ndarray
    codes: tuple[str, ...]
    class_id: np.ndarray
    unique_codes: tuple[str, ...]
    representative: np.ndarray
    class_size: np.ndarray
    disconnected: np.ndarray
    group: np.ndarray
    node_labels: np.ndarray
    adjacency: np.ndarray


def cell_digits(cell: Any) -> tuple[int, ...]:
    """Parses a cell into its 6 op digits.

    Args:
        cell: a sequence of 6 ints, or a cell-code string such as `"0|12|333"`.

    Returns:
        The 6 digits as a tuple of Python ints.

    Raises:
        ValueError: wrong length or a digit outside 0..3.
    """
    if isinstance(cell, str):
        chars = [ch for ch in cell if ch != "|"]
        if not all(ch.isdigit() for ch in chars):
            raise ValueError(f"cell code {cell!r} has non-digit characters; "
                             f"valid edge ops: {VALID_OPS_MSG}")
        digits = [int(ch) for ch in chars]
    else:
        arr = np.asarray(cell)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"cell must be 6 integer op digits, got {cell!r}; "
                             f"valid edge ops: {VALID_OPS_MSG}")
        digits = [int(d) for d in arr]
    if len(digits) != NUM_EDGES:
        raise ValueError(f"cell must have {NUM_EDGES} edge ops, got {len(digits)} ({cell!r}); "
                         f"valid edge ops: {VALID_OPS_MSG}")
    bad = [d for d in digits if not 0 <= d <= 3]
    if bad:
        raise ValueError(f"invalid edge op(s) {bad} in cell {cell!r}; "
                         f"valid edge ops: {VALID_OPS_MSG}")
    return tuple(digits)


def code_of(cell: tuple[int, ...]) -> str:
    """The official code string `"A|BC|DEF"` of 6 op digits."""
    d = "".join(str(int(x)) for x in cell)
    return f"{d[0]}|{d[1:3]}|{d[3:6]}"


@functools.cache
def cell_tables() -> CellTables:
    """Computes (once) the per-cell tables from our own canonicalisation.

    The official representative list is read from the vendored `unique_cellcodes`; each of our
    hash classes must contain exactly one of them, which is checked here.

    Returns:
        The tables.
    """
    official = load_npz(_NPZ)
    unique_codes = tuple(str(c) for c in official["unique_cellcodes"])
    digits = np.array([digits_of_index(i) for i in range(NUM_CELLS)], dtype=np.int8)
    codes = tuple(code_of(d) for d in digits)
    graphs = [compress(tuple(int(x) for x in d)) for d in digits]
    hashes = [graph_hash(g) for g in graphs]
    code_to_index = {c: i for i, c in enumerate(codes)}
    hash_to_class: dict[str, int] = {}
    for k, c in enumerate(unique_codes):
        h = hashes[code_to_index[c]]
        if h in hash_to_class:
            raise AssertionError(f"two official representatives share a class: {c}")
        hash_to_class[h] = k
    missing = {h for h in hashes if h not in hash_to_class}
    if missing:
        raise AssertionError(f"{len(missing)} classes have no official representative")
    class_id = np.array([hash_to_class[h] for h in hashes], dtype=np.int32)
    node_labels = np.full((NUM_CELLS, MAX_VERTICES), -1, dtype=np.int8)
    adjacency = np.zeros((NUM_CELLS, MAX_VERTICES, MAX_VERTICES), dtype=np.int8)
    for i, g in enumerate(graphs):
        v = len(g.labels)
        node_labels[i, :v] = g.labels
        adjacency[i, :v, :v] = g.adjacency
    return CellTables(
        digits=digits,
        codes=codes,
        class_id=class_id,
        unique_codes=unique_codes,
        representative=np.array([code_to_index[c] for c in unique_codes], dtype=np.int32),
        class_size=np.bincount(class_id, minlength=len(unique_codes)).astype(np.int32),
        disconnected=np.array([not g.connected for g in graphs]),
        group=np.array([architecture_group(g) for g in graphs], dtype=np.int8),
        node_labels=node_labels,
        adjacency=adjacency,
    )
