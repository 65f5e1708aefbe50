"""Tests for NAGO graph sampling against a literal transcription of the authors' construction
(vega_NAGO logical_graph.py: `_init_graph`, `get_graph_info`, `get_stage_list`)."""

import itertools

import jax
import networkx as nx
import numpy as np
import pytest

from nhb.nago import graphs
from nhb.space import generators as g

HNAG = g.make("hnag")


class _Authors:
    """lg.py's BasicNode seeding (class-level counter) and depth-first draw order."""

    def __init__(self, init_seed: int, legacy: bool = False):
        self.init_seed, self.legacy = init_seed, legacy

    def init_graph(self, params):
        if not self.legacy:
            self.init_seed += 1
        for x in range(30):
            seed = x if self.legacy else int(100 * x + self.init_seed)
            if params[0] == "ER":
                graph = nx.random_graphs.erdos_renyi_graph(int(params[1]), params[2], seed)
            else:
                graph = nx.random_graphs.connected_watts_strogatz_graph(
                    int(params[1]), int(params[3]), params[2], tries=200, seed=seed)
            if nx.is_connected(graph):
                return graph
        raise AttributeError("'LogicalOpGraph' object has no attribute 'nodes'")

    def build(self, x):
        tn, tk, tp, mn, mp, bn, bk, bp = x
        top = self.init_graph(("WS", tn, tp, min(tn - 1, tk)))
        levels = [top, []]
        for _ in range(top.number_of_nodes()):
            mid = self.init_graph(("ER", mn, mp))
            bots = [self.init_graph(("WS", bn, bp, min(bn - 1, bk)))
                    for _ in range(mid.number_of_nodes())]
            levels[1].append((mid, bots))
        return levels


def _edges(dag: graphs.DAG) -> set:
    return {(u, v) for v, ps in enumerate(dag.preds) for u in ps}


def _same(dag: graphs.DAG, graph: nx.Graph) -> bool:
    return dag.n == graph.number_of_nodes() and _edges(dag) == {
        (min(e), max(e)) for e in graph.edges()}


@pytest.mark.parametrize("legacy", [False, True])
def test_same_graphs_as_the_authors_code(legacy):
    rng = np.random.default_rng(0)
    sp = g.make("hnag", "released")
    for _ in range(6):
        x = np.asarray(sp.sample(jax.random.key(int(rng.integers(1e6)))))
        x = tuple(int(v) if i in (0, 1, 3, 5, 6) else float(v) for i, v in enumerate(x))
        base = int(rng.integers(0, 50))
        h = graphs.sample(sp, x, base_seed=base, seed_scheme="legacy" if legacy else "released")
        try:
            top, cells = _Authors(base, legacy).build(x)
        except AttributeError:
            assert isinstance(h, graphs.SampleFailure)
            continue
        assert isinstance(h, graphs.Hierarchy)
        assert _same(h.top, top)
        for (mid, bots), hm, hb in zip(cells, h.mids, h.bottoms, strict=True):
            assert _same(hm, mid)
            assert all(_same(a, b) for a, b in zip(hb, bots, strict=True))


def test_released_seeds_count_depth_first_and_legacy_shares_graphs():
    x = (4, 2, 0.5, 2, 1.0, 5, 4, 0.5)  # mid P = 1: the mid graph is an edge, always connected
    h = graphs.sample(HNAG, x)
    # counter 3 for the top graph, then per cell: mid graph, its 2 bottom graphs
    assert h.seeds == tuple(range(3, 3 + 1 + 4 * 3))
    legacy = graphs.sample(HNAG, (6, 4, 0.5, 3, 0.6, 6, 4, 0.7), seed_scheme="legacy")
    assert len(set(legacy.mids)) == 1 and len({b for c in legacy.bottoms for b in c}) == 1
    released = graphs.sample(HNAG, (6, 4, 0.5, 3, 0.6, 6, 4, 0.7))
    assert len({b for c in released.bottoms for b in c}) > 1
    other = graphs.sample(HNAG, (6, 4, 0.5, 3, 0.6, 6, 4, 0.7), base_seed=40)
    assert other != released  # another base seed: another architecture of the generator


def test_ws_edge_count_and_k2_equals_k3():
    for n, k, p in itertools.product((3, 5, 8, 10), (2, 3, 4, 5), (0.1, 0.5, 1.0)):
        k = min(n - 1, k)
        h = graphs.sample(HNAG, (n, k, p, 1, 0.5, 3, 2, 0.5))
        assert h.top.num_edges == n * (k // 2)
        if k in (2, 4) and k + 1 <= n - 1:
            twin = graphs.sample(HNAG, (n, k + 1, p, 1, 0.5, 3, 2, 0.5))
            assert twin.top == h.top


def test_disconnected_draws_are_redrawn_and_exhaustion_is_a_typed_failure():
    # ER(5, 0.3): find the authors' first connected seed by hand
    h = graphs.sample(HNAG, (3, 2, 0.5, 5, 0.3, 3, 2, 0.5))
    mid_seed = h.seeds[1]
    assert mid_seed % 100 == 4  # the counter: top used 3, the first mid graph 4
    for x in range(mid_seed // 100):
        assert not nx.is_connected(nx.erdos_renyi_graph(5, 0.3, seed=100 * x + 4))
    assert nx.is_connected(nx.erdos_renyi_graph(5, 0.3, seed=mid_seed))
    fail = graphs.sample(HNAG, (8, 5, 0.6, 10, 0.1, 3, 2, 0.5))
    assert isinstance(fail, graphs.SampleFailure) and fail.graph.startswith("mid[")
    assert len(fail.seeds) == 30 and "disconnected" in fail.reason
    assert graphs.summary(fail) == {"failed": fail.graph, "reason": fail.reason}


def test_networkx_ws_exhaustion_is_a_failure_not_a_crash(monkeypatch):
    def boom(*args, **kwargs):
        raise nx.NetworkXError("Maximum number of tries exceeded")

    monkeypatch.setattr(nx, "connected_watts_strogatz_graph", boom)
    fail = graphs.sample(HNAG, (5, 2, 0.5, 1, 0.5, 3, 2, 0.5))
    assert fail == graphs.SampleFailure("top", "networkx: Maximum number of tries exceeded",
                                        (3,))


def test_dags_are_valid_for_many_vectors():
    xs = np.asarray(HNAG.sample(jax.random.key(3), (40,)))
    n_ok = 0
    for x in xs:
        h = graphs.sample(HNAG, x)
        if isinstance(h, graphs.SampleFailure):
            continue
        n_ok += 1
        for dag in (h.top, *h.mids, *(b for c in h.bottoms for b in c)):
            succ = [set() for _ in range(dag.n)]
            for v, ps in enumerate(dag.preds):
                assert list(ps) == sorted(set(ps)) and all(u < v for u in ps)
                for u in ps:
                    succ[u].add(v)
            assert dag.inputs == tuple(v for v in range(dag.n) if not dag.preds[v])
            want_out = tuple(v for v in range(dag.n) if not succ[v])
            assert dag.outputs == want_out and 0 in dag.inputs
        assert len(h.stages) == h.top.n and len(h.mids) == h.top.n
        assert [len(b) for b in h.bottoms] == [m.n for m in h.mids]
    assert n_ok >= 20


def test_one_node_graph():
    h = graphs.sample(HNAG, (3, 2, 0.5, 1, 0.1, 3, 2, 0.5))
    assert h.mids == (graphs.DAG(1, ((),), (0,), (0,)),) * 3
    assert h.stages == (0, 1, 2)


@pytest.mark.parametrize("n,want", [
    (3, (0, 1, 2)), (4, (0, 0, 1, 2)), (5, (0, 0, 1, 1, 2)), (6, (0, 0, 1, 1, 2, 2)),
    (7, (0, 0, 0, 1, 1, 2, 2)), (8, (0, 0, 0, 1, 1, 1, 2, 2)), (9, (0, 0, 0, 1, 1, 1, 2, 2, 2)),
    (10, (0, 0, 0, 0, 1, 1, 1, 2, 2, 2))])
def test_stage_walk(n, want):
    assert graphs.stage_list(n) == want
    released = graphs.stage_list(n, graphs.RELEASED_STAGE_RATIOS)
    assert released == ((0, 1, 2) if n == 3 else (0,) * n)


def test_rnag_is_three_ws_stages_in_sequence():
    h = graphs.sample(g.make("rnag"), (10, 4, 0.5, 12, 6, 0.3, 8, 2, 0.9))
    assert h.family == "rnag" and h.top == graphs.chain(3) and h.stages == (0, 1, 2)
    assert [b[0].n for b in h.bottoms] == [10, 12, 8]
    assert [b[0].num_edges for b in h.bottoms] == [20, 36, 8]
    ref = nx.connected_watts_strogatz_graph(12, 6, 0.3, tries=200, seed=h.seeds[1])
    assert _same(h.bottoms[1][0], ref) and h.seeds[1] % 100 == 4


def test_channel_multiplier_is_the_reference_formula():
    x = (4, 2, 0.5, 2, 1.0, 3, 2, 1.0)  # stages 0,0,1,2; mid = edge 0-1; bottom = triangle
    h = graphs.sample(HNAG, x)
    assert h.stages == (0, 0, 1, 2)
    assert h.bottoms[0][0].preds == ((), (0,), (0, 1))  # one input op per bottom graph
    ops = graphs.op_ratios(h)
    assert len(ops) == 4 * 2 * 3
    base = 0
    for c in range(4):
        r = (1, 1, 2, 4)[c]
        preds = h.top.preds[c]
        r_in = (1, 1, 2, 4)[preds[-1]] if preds else 1
        # mid node 0 (input): its input op sees r_in; mid node 1 and other ops see r
        base += 9 * r * (r_in + r + r) + 9 * r * (r + r + r)
    assert sum(9 * ri * (1, 1, 2, 4)[c] for c, _, _, ri in ops) == base
    for limit in (1e5, 4e6):
        m = graphs.channel_multiplier(h, limit)
        assert base * m**2 <= limit < base * (m + 1) ** 2
