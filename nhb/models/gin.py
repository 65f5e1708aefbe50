"""Graph Isomorphism Network (Xu et al., 2019) on padded `jraph.GraphsTuple` batches.

One GIN layer updates every node as

    h_v' = MLP((1 + eps) * h_v + sum_{u in N(v)} count_uv * h_u)

where `count_uv` is the edge multiplicity (the number of parallel paths in a compressed
NAS-HPO-Bench-II cell graph, `nhb.space.nhb2.to_graph`). Batches are padded to static shapes:
padding nodes (`mask` 0) send nothing, receive nothing and are left at zero; padding edges carry
`count` 0. The graph readout sums (or averages) the final node states over the valid nodes of
each graph, the graphs being the consecutive `n_node` segments.

Not published for the NAS-HPO-Bench-II surrogate, so assumed here (all configurable): 3 layers,
64 units, 2-layer ReLU MLP per layer, learnable eps (GIN-eps), sum readout of the last layer,
messages along both edge directions (the GIN of Xu et al. is defined on undirected graphs; the
node labels input/output still tell the direction apart). No batch norm inside the MLPs (Xu et
al. use it; it complicates the vmapped ensemble and is not needed at this size).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

Array = jax.Array
DIRECTIONS = ("in", "out", "both")
READOUTS = ("sum", "mean")


class MLP(nn.Module):
    """ReLU multilayer perceptron.

    Attributes:
        features: output width of each Dense layer.
        activate_final: apply ReLU after the last layer too.
    """

    features: Sequence[int]
    activate_final: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies the MLP to [..., d] inputs."""
        for i, f in enumerate(self.features):
            x = nn.Dense(f)(x)
            if self.activate_final or i < len(self.features) - 1:
                x = nn.relu(x)
        return x


def _node_parts(graph: jraph.GraphsTuple, feature: str) -> tuple[Array, Array]:
    nodes = graph.nodes
    if isinstance(nodes, dict):
        h = jnp.asarray(nodes[feature], jnp.float32)
        mask = nodes.get("mask")
    else:
        h, mask = jnp.asarray(nodes, jnp.float32), None
    mask = jnp.ones(h.shape[:1], jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    return h, mask


def _edge_count(graph: jraph.GraphsTuple) -> Array:
    edges = graph.edges
    if isinstance(edges, dict) and "count" in edges:
        return jnp.asarray(edges["count"], jnp.float32)
    if edges is not None and not isinstance(edges, dict):
        return jnp.asarray(edges, jnp.float32).reshape(-1)
    return jnp.ones(graph.senders.shape, jnp.float32)


def aggregate(h: Array, senders: Array, receivers: Array, count: Array,
              direction: str = "both") -> Array:
    """Sum of count-weighted neighbour states per node.

    Args:
        h: node states [N, d] (padding rows must already be zero).
        senders: edge sources [E].
        receivers: edge targets [E].
        count: edge multiplicities [E] (0 on padding edges).
        direction: "in" (messages sender -> receiver), "out" (receiver -> sender) or "both".

    Returns:
        [N, d] aggregated messages.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    n = h.shape[0]
    w = count[:, None]
    out = jnp.zeros_like(h)
    if direction in ("in", "both"):
        out = out + jax.ops.segment_sum(w * h[senders], receivers, n)
    if direction in ("out", "both"):
        out = out + jax.ops.segment_sum(w * h[receivers], senders, n)
    return out


class GINLayer(nn.Module):
    """One GIN layer: h' = MLP((1 + eps) h + sum_neighbours count * h), masked.

    Attributes:
        features: MLP width (also the output width).
        mlp_depth: number of Dense layers in the MLP.
        learn_eps: learn eps (GIN-eps, initialised at 0) instead of fixing it to 0 (GIN-0).
        direction: message direction, see `aggregate`.
    """

    features: int = 64
    mlp_depth: int = 2
    learn_eps: bool = True
    direction: str = "both"

    @nn.compact
    def __call__(self, h: Array, senders: Array, receivers: Array, count: Array,
                 mask: Array) -> Array:
        """Updates node states.

        Args:
            h: node states [N, d].
            senders: edge sources [E].
            receivers: edge targets [E].
            count: edge multiplicities [E].
            mask: 1 for valid nodes, 0 for padding [N].

        Returns:
            New node states [N, features], zero on padding nodes.
        """
        h = h * mask[:, None]
        agg = aggregate(h, senders, receivers, count, self.direction)
        eps = self.param("eps", nn.initializers.zeros, ()) if self.learn_eps else 0.0
        out = MLP([self.features] * self.mlp_depth, activate_final=True)((1 + eps) * h + agg)
        return out * mask[:, None]


def graph_ids(n_node: Array, num_nodes: int) -> Array:
    """Graph index of every node slot [num_nodes] from the per-graph node counts `n_node`."""
    return jnp.repeat(jnp.arange(n_node.shape[0]), n_node, total_repeat_length=num_nodes)


class GIN(nn.Module):
    """GIN encoder: graphs -> one embedding per graph.

    Defaults (3 layers, 64 units, sum readout) are assumed; the NAS-HPO-Bench-II paper does not
    publish them.

    Attributes:
        num_layers: number of GIN layers.
        features: width of every layer (and of the embedding).
        mlp_depth: Dense layers per GIN MLP.
        learn_eps: GIN-eps (True) or GIN-0 (False).
        direction: message direction ("in", "out", "both"), see `aggregate`.
        readout: "sum" or "mean" over the valid nodes of each graph.
        node_feature: key of the node-feature array when `graph.nodes` is a dict.
    """

    num_layers: int = 3
    features: int = 64
    mlp_depth: int = 2
    learn_eps: bool = True
    direction: str = "both"
    readout: str = "sum"
    node_feature: str = "op"

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple) -> Array:
        """Embeds a (padded) batch of graphs.

        Args:
            graph: `GraphsTuple` whose nodes are a dict {node_feature: [N, d], "mask": [N]}
                (mask optional) or an [N, d] array; edges a dict {"count": [E]}, an [E] array
                or None (count 1); `n_node` [G] gives the consecutive node segments.

        Returns:
            [G, features] graph embeddings.
        """
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        h, mask = _node_parts(graph, self.node_feature)
        count = _edge_count(graph)
        for _ in range(self.num_layers):
            h = GINLayer(self.features, self.mlp_depth, self.learn_eps, self.direction)(
                h, graph.senders, graph.receivers, count, mask)
        n_graph = graph.n_node.shape[0]
        gid = graph_ids(graph.n_node, h.shape[0])
        pooled = jax.ops.segment_sum(h * mask[:, None], gid, n_graph)
        if self.readout == "mean":
            pooled = pooled / jnp.maximum(jax.ops.segment_sum(mask, gid, n_graph), 1.0)[:, None]
        return pooled


class GINRegressor(nn.Module):
    """GIN graph embedding ++ MLP(global features) -> MLP head -> one scalar per graph.

    The NAS-HPO-Bench-II surrogate's base model (paper §3.3): the graph is the compressed cell,
    the global features the one-hot (lr, batch size).

    Attributes:
        gin: the graph encoder.
        global_features: widths of the MLP over the global features (ReLU after each).
        head_features: hidden widths of the head MLP (a final Dense(1) is added).
    """

    gin: GIN = dataclasses.field(default_factory=GIN)
    global_features: Sequence[int] = (64,)
    head_features: Sequence[int] = (64, 64)

    def setup(self):
        self.global_mlp = MLP(self.global_features, activate_final=True)
        self.head = MLP((*self.head_features, 1))

    def embed(self, graph: jraph.GraphsTuple) -> Array:
        """Graph embeddings [G, gin.features]."""
        return self.gin(graph)

    def predict_head(self, emb: Array, globals_: Array) -> Array:
        """Outputs [B] from graph embeddings [B, F] and global features [B, d]."""
        return self.head(jnp.concatenate([emb, self.global_mlp(globals_)], axis=-1))[..., 0]

    def __call__(self, graph: jraph.GraphsTuple, slot: Array, globals_: Array) -> Array:
        """Outputs [B] for points whose graph is number `slot` [B] of `graph`."""
        return self.predict_head(self.embed(graph)[slot], globals_)


def compact_graphs(graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
    """Drops the padding nodes (mask 0) and edges (count 0) of a concrete padded batch.

    Args:
        graph: graphs as `nhb.space.nhb2.to_graph` (nodes {"op", "mask"}, edges {"count"}).

    Returns:
        The same graphs with exact `n_node` / `n_edge` (fewer node rows for the GIN to process).
    """
    mask = np.asarray(graph.nodes["mask"]) > 0
    count = np.asarray(graph.edges["count"])
    keep_e = count > 0
    new_id = np.cumsum(mask) - 1
    gid = np.repeat(np.arange(len(graph.n_node)), np.asarray(graph.n_node))
    eid = np.repeat(np.arange(len(graph.n_edge)), np.asarray(graph.n_edge))
    n = len(graph.n_node)
    return jraph.GraphsTuple(
        nodes={"op": jnp.asarray(np.asarray(graph.nodes["op"])[mask]),
               "mask": jnp.ones(int(mask.sum()), jnp.float32)},
        edges={"count": jnp.asarray(count[keep_e])},
        senders=jnp.asarray(new_id[np.asarray(graph.senders)[keep_e]], jnp.int32),
        receivers=jnp.asarray(new_id[np.asarray(graph.receivers)[keep_e]], jnp.int32),
        n_node=jnp.asarray(np.bincount(gid[mask], minlength=n), jnp.int32),
        n_edge=jnp.asarray(np.bincount(eid[keep_e], minlength=n), jnp.int32), globals=None)


def take_graphs(graph: jraph.GraphsTuple, idx: Array, k: int = 8, e: int = 10) -> jraph.GraphsTuple:
    """Graphs number `idx` [B] of a uniformly padded batch (every graph `k` node and `e` edge
    slots, as `nhb.space.nhb2.to_graph` with k=8, e=10); jittable."""
    per_graph = lambda x, m: x.reshape(-1, m, *x.shape[1:])[idx].reshape(-1, *x.shape[1:])
    offset = lambda x: x.reshape(-1, e) - (jnp.arange(x.shape[0] // e) * k)[:, None]
    new_offset = (jnp.arange(idx.shape[0]) * k)[:, None]
    return graph._replace(
        nodes=jax.tree.map(lambda x: per_graph(x, k), graph.nodes),
        edges=jax.tree.map(lambda x: per_graph(x, e), graph.edges),
        senders=(offset(graph.senders)[idx] + new_offset).reshape(-1),
        receivers=(offset(graph.receivers)[idx] + new_offset).reshape(-1),
        n_node=graph.n_node[idx], n_edge=graph.n_edge[idx])
