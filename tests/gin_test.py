"""Tests for nhb.models.gin: GIN layers on padded jraph batches."""

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest

from nhb.models import gin
from nhb.space import cells, nhb2


def _graphs(cell_idx) -> jraph.GraphsTuple:
    cell_idx = np.asarray(cell_idx)
    zeros = np.zeros(len(cell_idx), np.int32)
    return nhb2.to_graph(nhb2.make(nhb2.cell_from_index(cell_idx), zeros, zeros))


@pytest.fixture(scope="module")
def model_and_params():
    model = gin.GIN()
    params = jax.jit(model.init)(jax.random.key(0), _graphs(np.arange(16)))
    # Non-zero eps so that the (1 + eps) h self term is exercised.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.3 if "eps" in jax.tree_util.keystr(p) else x, params)
    return model, params, jax.jit(model.apply)


def _permute(graph: jraph.GraphsTuple, key: jax.Array) -> jraph.GraphsTuple:
    """Relabels the 8 node slots of every graph with its own random permutation."""
    g, k, e = graph.n_node.shape[0], nhb2.MAX_NODES, nhb2.MAX_GRAPH_EDGES
    perms = np.stack([np.asarray(jax.random.permutation(kk, k))
                      for kk in jax.random.split(key, g)])  # new slot of old slot i
    new_pos = (perms + np.arange(g)[:, None] * k).reshape(-1)
    nodes = {name: np.zeros_like(np.asarray(v)) for name, v in graph.nodes.items()}
    for name, v in graph.nodes.items():
        nodes[name][new_pos] = np.asarray(v)
    return graph._replace(nodes=jax.tree.map(jnp.asarray, nodes),
                          senders=jnp.asarray(new_pos[np.asarray(graph.senders)]),
                          receivers=jnp.asarray(new_pos[np.asarray(graph.receivers)]),
                          edges=graph.edges, n_edge=jnp.full((g,), e))


def test_readout_is_invariant_to_node_relabelling(model_and_params):
    model, params, apply = model_and_params
    graph = _graphs(np.arange(0, 4096, 256) + 37)
    out = apply(params, graph)
    assert out.shape == (graph.n_node.shape[0], model.features)
    assert float(jnp.abs(out).max()) > 1e-3  # not trivially zero
    for seed in range(3):
        permuted = apply(params, _permute(graph, jax.random.key(seed)))
        np.testing.assert_allclose(permuted, out, rtol=1e-5, atol=1e-4)


def test_padding_nodes_contribute_nothing(model_and_params):
    _, params, apply = model_and_params
    graph = _graphs(np.arange(5, 4096, 256))
    mask = np.asarray(graph.nodes["mask"])
    garbage = np.where(mask[:, None] > 0, graph.nodes["op"], 1e3)
    noisy = graph._replace(nodes={"op": jnp.asarray(garbage), "mask": graph.nodes["mask"]})
    np.testing.assert_array_equal(apply(params, noisy), apply(params, graph))


def test_compact_and_take_graphs_give_the_same_embeddings(model_and_params):
    _, params, apply = model_and_params
    graph = _graphs(np.arange(7, 4096, 256))
    out = apply(params, graph)
    compact = gin.compact_graphs(graph)
    assert compact.nodes["op"].shape[0] == int(np.asarray(graph.nodes["mask"]).sum())
    np.testing.assert_allclose(apply(params, compact), out, rtol=1e-5, atol=1e-4)
    idx = jnp.array([3, 0, 3, 10, 15, 1, 2, 4, 5, 6, 7, 8, 9, 11, 12, 13])
    taken = jax.jit(gin.take_graphs)(graph, idx)
    np.testing.assert_allclose(apply(params, taken), out[np.asarray(idx)], rtol=1e-6)


def test_edge_count_equals_parallel_edges():
    """An edge of count 2 sends twice the message of a count-1 edge: same as two edges."""
    model = gin.GIN(num_layers=2, features=8)
    op = jnp.eye(4)[jnp.array([0, 2, 3, 1])]  # input, conv, pool, output
    counted = jraph.GraphsTuple(  # last edge: padding (count 0)
        nodes={"op": op, "mask": jnp.ones(4)}, edges={"count": jnp.array([2.0, 1, 1, 0])},
        senders=jnp.array([0, 1, 2, 0]), receivers=jnp.array([1, 2, 3, 0]),
        n_node=jnp.array([4]), n_edge=jnp.array([4]), globals=None)
    doubled = counted._replace(edges={"count": jnp.ones(4)}, senders=jnp.array([0, 0, 1, 2]),
                               receivers=jnp.array([1, 1, 2, 3]))
    params = model.init(jax.random.key(1), counted)
    apply = jax.jit(model.apply)
    np.testing.assert_allclose(apply(params, counted), apply(params, doubled), rtol=1e-6)
    single = counted._replace(edges={"count": jnp.array([1.0, 1, 1, 0])})
    assert not np.allclose(apply(params, single), apply(params, counted))


def test_gin_layer_matches_numpy_reference():
    layer = gin.GINLayer(features=5, mlp_depth=2, direction="in")
    rng = np.random.default_rng(0)
    h = rng.standard_normal((4, 3)).astype(np.float32)
    senders, receivers = np.array([0, 0, 1, 2]), np.array([1, 2, 3, 3])
    count = np.array([1.0, 2.0, 1.0, 3.0], np.float32)
    mask = np.array([1.0, 1.0, 1.0, 0.0], np.float32)  # node 3 is padding
    args = tuple(jnp.asarray(a) for a in (h, senders, receivers, count, mask))
    params = layer.init(jax.random.key(2), *args)
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.5 if "eps" in jax.tree_util.keystr(p) else x, params)
    out = jax.jit(layer.apply)(params, *args)
    p = params["params"]
    hm = h * mask[:, None]
    agg = np.zeros_like(hm)
    for s, r, c in zip(senders, receivers, count, strict=True):
        agg[r] += c * hm[s]
    x = (1 + 0.5) * hm + agg
    d0, d1 = p["MLP_0"]["Dense_0"], p["MLP_0"]["Dense_1"]
    x = np.maximum(x @ np.asarray(d0["kernel"]) + np.asarray(d0["bias"]), 0)
    x = np.maximum(x @ np.asarray(d1["kernel"]) + np.asarray(d1["bias"]), 0)
    np.testing.assert_allclose(out, x * mask[:, None], rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(out)[3] == 0)


def test_isomorphic_cells_get_the_same_embedding(model_and_params):
    """Cells of one equivalence class have isomorphic compressed graphs (other slot order)."""
    _, params, apply = model_and_params
    t = cells.cell_tables()
    big = np.argsort(-t.class_size)[:3]
    for c in big:
        members = np.nonzero(t.class_id == c)[0][:16]
        out = np.asarray(apply(params, _graphs(members)))
        np.testing.assert_allclose(out, np.broadcast_to(out[:1], out.shape), rtol=1e-5,
                                   atol=1e-4)


def test_mean_readout_and_bad_options():
    graph = _graphs([10, 20])
    m = gin.GIN(num_layers=1, readout="mean", features=4)
    p = jax.jit(m.init)(jax.random.key(0), graph)
    s = gin.GIN(num_layers=1, readout="sum", features=4)
    n_valid = np.asarray(graph.nodes["mask"]).reshape(2, -1).sum(1)
    np.testing.assert_allclose(jax.jit(m.apply)(p, graph) * n_valid[:, None],
                               jax.jit(s.apply)(p, graph), rtol=1e-5)
    with pytest.raises(ValueError, match="readout"):
        jax.eval_shape(gin.GIN(readout="max").init, jax.random.key(0), graph)
    with pytest.raises(ValueError, match="direction"):
        jax.eval_shape(gin.GIN(direction="up").init, jax.random.key(0), graph)
