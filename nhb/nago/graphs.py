"""Sampling NAGO's hierarchical graphs from a generator vector, as the authors' code does.

Reference: `reference/nago.md` §1-2 (rubinxin/vega_NAGO `logical_graph.py`, "lg.py" below).

* **Draws** (lg.py:53-64): ER = `networkx.erdos_renyi_graph(N, P, seed)`, WS =
  `networkx.connected_watts_strogatz_graph(N, K, P, tries=200, seed=seed)` with K clamped to
  `min(N - 1, K)` first (nago.py:31-33). networkx links each WS node to K // 2 neighbours per
  side, so K = 2 and K = 3 give the same graph, and a WS graph has exactly N * (K // 2) edges.
* **Seeds** (lg.py:157-193). `seed_scheme="released"` (the authors' HEAD): a counter starting
  at `base_seed` (the class attribute `init_seed = 2` of a fresh process) is incremented
  before every graph and draw x = 0..29 uses seed `100 x + counter`; `"legacy"` (the parent
  commit and upstream vega): every graph uses seeds x = 0..29, so all cells share one middle
  graph and all middle nodes one bottom graph. A disconnected draw moves to the next seed.
  Graphs are drawn depth first: the top graph, then per top node its middle graph followed by
  the bottom graph of each of its middle nodes.
* **Failures** are results, not exceptions: networkx raising after its 200 WS tries (the
  authors' model construction crashes there) or 30 disconnected draws give a
  `SampleFailure` naming the graph.
* **Undirected -> DAG** (lg.py:30-50): a node's inputs are its lower-index neighbours
  (ascending), input nodes have no lower neighbour, output nodes no higher one. A one-node
  graph has input [0]; the authors list no output node and return the node itself, which
  `DAG.outputs = (0,)` states directly.
* **Stages** (lg.py:88-100): `stage_list`'s threshold walk over the top nodes with
  normalised thirds by default (DESIGN §4; the released config's unnormalised 1, 1, 1, which
  puts every node in stage 0 unless N = 3, is `stage_ratios=(1, 1, 1)`).
* **RNAG** (not in the released code; P:47): three WS graphs in sequence. nhb builds it as a
  hierarchy whose top level is the chain 0 -> 1 -> 2 (stages 0, 1, 2) of one-node cells with
  the stage's WS graph at the bottom, so both families share one network builder.
* **Channels** (nago.py:55-56, lg.py:212-221): `channel_multiplier` =
  `int(sqrt(limit / sum over bottom ops of 9 * in_ratio * out_ratio))`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import networkx as nx
import numpy as np

from nhb.space.generators import GeneratorSpace

SEED_SCHEMES = ("released", "legacy")
TOLERANCE = 30  # draws per graph (lg.py:160)
WS_TRIES = 200  # networkx's own retries (lg.py:64)
BASE_SEED = 2  # `BasicNode.init_seed` of a fresh process (lg.py:161)
THIRDS = (1 / 3, 1 / 3, 1 / 3)
RELEASED_STAGE_RATIOS = (1.0, 1.0, 1.0)
CHANNEL_RATIOS = (1, 2, 4)  # nago.yml:62-64


@dataclasses.dataclass(frozen=True)
class DAG:
    """A sampled graph as a DAG from lower to higher node index.

    Attributes:
        n: number of nodes.
        preds: per node its input nodes, ascending.
        inputs: nodes without inputs (they receive the graph's input).
        outputs: nodes without a higher neighbour (the graph's output is their mean); (0,)
            for a one-node graph.
    """

    n: int
    preds: tuple[tuple[int, ...], ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    @property
    def num_edges(self) -> int:
        """Number of edges."""
        return sum(len(p) for p in self.preds)


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """A sampled three-level network description.

    Attributes:
        family: "hnag" or "rnag".
        top: the top-level graph (one node per cell).
        stages: stage (0, 1, 2) of each top node.
        mids: per top node its middle-level graph.
        bottoms: per top node, per middle node, its bottom-level graph (one op per node).
        seeds: the networkx seed that produced each graph, in draw order.
    """

    family: str
    top: DAG
    stages: tuple[int, ...]
    mids: tuple[DAG, ...]
    bottoms: tuple[tuple[DAG, ...], ...]
    seeds: tuple[int, ...]

    @property
    def num_ops(self) -> int:
        """Number of bottom-level op nodes."""
        return sum(b.n for cell in self.bottoms for b in cell)


@dataclasses.dataclass(frozen=True)
class SampleFailure:
    """A generator vector whose graphs could not be sampled.

    Attributes:
        graph: which graph failed, e.g. "top", "mid[2]", "bottom[2][0]", "stage[1]".
        reason: what happened.
        seeds: the seeds tried for that graph.
    """

    graph: str
    reason: str
    seeds: tuple[int, ...]


class _Failed(Exception):
    def __init__(self, failure: SampleFailure):
        super().__init__(failure.reason)
        self.failure = failure


def to_dag(graph: nx.Graph) -> DAG:
    """The authors' `get_graph_info` (lg.py:30-50) for a connected graph with nodes 0..n-1."""
    n = graph.number_of_nodes()
    if n == 1:
        return DAG(1, ((),), (0,), (0,))
    preds, inputs, outputs = [], [], []
    for v in range(n):
        nb = sorted(graph.neighbors(v))
        if v < nb[0]:
            inputs.append(v)
        if v > nb[-1]:
            outputs.append(v)
        preds.append(tuple(u for u in nb if u < v))
    return DAG(n, tuple(preds), tuple(inputs), tuple(outputs))


def chain(n: int) -> DAG:
    """The path 0 -> 1 -> ... -> n-1."""
    return DAG(n, tuple(() if v == 0 else (v - 1,) for v in range(n)), (0,), (n - 1,))


def stage_list(n: int, ratios: Sequence[float] = THIRDS) -> tuple[int, ...]:
    """The authors' `get_stage_list` (lg.py:88-100): a stage per top node."""
    if n == 3:
        return (0, 1, 2)
    out, stage, threshold = [], 0, ratios[0] * n
    for x in range(n):
        if x >= threshold:
            stage += 1
            threshold += ratios[stage] * n
        out.append(stage)
    return tuple(out)


def _draw(kind: str, n: int, p: float, k: int, seed: int) -> nx.Graph:
    if kind == "er":
        return nx.erdos_renyi_graph(n, p, seed=seed)
    return nx.connected_watts_strogatz_graph(n, k, p, tries=WS_TRIES, seed=seed)


class _Sampler:
    """The authors' `BasicNode._init_graph` with its seed counter."""

    def __init__(self, base_seed: int, scheme: str):
        self.counter, self.scheme, self.seeds = base_seed, scheme, []

    def graph(self, name: str, kind: str, n: int, p: float, k: int = 0) -> DAG:
        if self.scheme == "released":
            self.counter += 1
        tried = []
        for x in range(TOLERANCE):
            seed = 100 * x + self.counter if self.scheme == "released" else x
            tried.append(seed)
            try:
                g = _draw(kind, n, p, k, seed)
            except nx.NetworkXError as e:  # WS: all 200 tries disconnected
                raise _Failed(SampleFailure(name, f"networkx: {e}", tuple(tried))) from None
            if nx.is_connected(g):
                self.seeds.append(seed)
                return to_dag(g)
        raise _Failed(SampleFailure(name, f"{TOLERANCE} draws were all disconnected",
                                    tuple(tried)))


def sample(space: GeneratorSpace, x: Sequence[float], base_seed: int = BASE_SEED,
           seed_scheme: str = "released",
           stage_ratios: Sequence[float] = THIRDS) -> Hierarchy | SampleFailure:
    """The hierarchy a generator vector describes (deterministic given `base_seed`).

    Args:
        space: the generator space (`nhb.space.generators.make`).
        x: the vector of values (validated here).
        base_seed: the seed counter's start (released scheme; 2 reproduces the first model
            of a fresh authors' process); ignored by the legacy scheme.
        seed_scheme: "released" or "legacy".
        stage_ratios: stage ratios of the threshold walk (thirds; (1, 1, 1) = released).

    Returns:
        A `Hierarchy`, or a `SampleFailure` when some graph cannot be drawn.

    Raises:
        ValueError: an invalid vector or seed scheme (naming the valid choices).
    """
    if seed_scheme not in SEED_SCHEMES:
        raise ValueError(f"unknown seed_scheme {seed_scheme!r}; valid: {SEED_SCHEMES}")
    v = space.validate(x)
    s = _Sampler(base_seed, seed_scheme)
    try:
        if space.family == "rnag":
            cells = []
            for i in range(3):
                n, k, p = int(v[3 * i]), int(v[3 * i + 1]), float(v[3 * i + 2])
                cells.append((s.graph(f"stage[{i}]", "ws", n, p, min(n - 1, k)),))
            one = DAG(1, ((),), (0,), (0,))
            return Hierarchy("rnag", chain(3), (0, 1, 2), (one,) * 3, tuple(cells),
                             tuple(s.seeds))
        tn, tk, tp, mn, mp, bn, bk, bp = v.tolist()
        tn, mn, bn = int(tn), int(mn), int(bn)
        top = s.graph("top", "ws", tn, tp, int(min(tn - 1, tk)))
        mids, bottoms = [], []
        for i in range(top.n):
            mid = s.graph(f"mid[{i}]", "er", mn, mp)
            mids.append(mid)
            bottoms.append(tuple(s.graph(f"bottom[{i}][{j}]", "ws", bn, bp,
                                         int(min(bn - 1, bk))) for j in range(mid.n)))
    except _Failed as e:
        return e.failure
    return Hierarchy("hnag", top, stage_list(top.n, stage_ratios), tuple(mids),
                     tuple(bottoms), tuple(s.seeds))


def cell_in_ratio(h: Hierarchy, cell: int,
                  channel_ratios: Sequence[int] = CHANNEL_RATIOS) -> int:
    """Channel ratio entering a top-level cell: its highest-index input's ratio (the stem's,
    `channel_ratios[0]`, for an input cell) (lg.py:74-85)."""
    preds = h.top.preds[cell]
    return channel_ratios[h.stages[preds[-1]]] if preds else channel_ratios[0]


def op_ratios(h: Hierarchy, channel_ratios: Sequence[int] = CHANNEL_RATIOS
              ) -> list[tuple[int, int, int, int]]:
    """(cell, mid node, op, in_ratio) of every bottom op; out ratio = the cell's stage ratio.

    Only the input ops of a cell's input middle nodes see the cell's incoming ratio; every
    other op's input is the cell's own ratio (lg.py:254-259, 299-308, 329-342).
    """
    out = []
    for c, (mid, bots) in enumerate(zip(h.mids, h.bottoms, strict=True)):
        r_in, r = cell_in_ratio(h, c, channel_ratios), channel_ratios[h.stages[c]]
        for j, bot in enumerate(bots):
            mid_in = r_in if not mid.preds[j] else r
            out.extend((c, j, o, mid_in if not bot.preds[o] else r) for o in range(bot.n))
    return out


def channel_multiplier(h: Hierarchy, param_limit: float,
                       channel_ratios: Sequence[int] = CHANNEL_RATIOS) -> int:
    """The authors' base width m (nago.py:55-56): `int(sqrt(limit / sum 9 r_in r_out))`.

    Args:
        h: the hierarchy.
        param_limit: the parameter limit (4e6 for CIFAR-10 in the paper).
        channel_ratios: per-stage channel ratios.

    Returns:
        m (a node of stage s has `int(channel_ratios[s] * m)` channels); at least 1.
    """
    total = sum(9 * r_in * channel_ratios[h.stages[c]]
                for c, _, _, r_in in op_ratios(h, channel_ratios))
    return max(1, int(math.sqrt(param_limit / total)))


def summary(h: Hierarchy | SampleFailure) -> dict:
    """JSON-friendly description (node and edge counts per level, stages, seeds)."""
    if isinstance(h, SampleFailure):
        return {"failed": h.graph, "reason": h.reason}
    return {"family": h.family, "top_nodes": h.top.n, "top_edges": h.top.num_edges,
            "stages": list(h.stages), "mid_nodes": [m.n for m in h.mids],
            "ops": h.num_ops, "seeds": list(h.seeds),
            "mean_bottom_edges": float(np.mean([b.num_edges for c in h.bottoms for b in c]))}
