"""Tests for nhb.space.nhb2: the joint config pytree and its encodings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb._vendor import load_npz
from nhb.space import cells, nhb2

OFFICIAL = load_npz("nashpobench2/nashpobench2_cells_split.npz")
ALL = np.arange(nhb2.NUM_CONFIGS, dtype=np.int32)


def test_index_round_trip_all_configs():
    cfg = jax.jit(nhb2.from_index)(ALL)
    np.testing.assert_array_equal(jax.jit(nhb2.to_index)(cfg), ALL)
    # Index order = official order: sorted cell codes, ascending lr, ascending batch size.
    cell_of = np.repeat(np.arange(4096), 48)
    np.testing.assert_array_equal(cfg.cell, OFFICIAL["cell_digits_4096"][cell_of])
    np.testing.assert_array_equal(cfg.lr, np.tile(np.repeat(np.arange(8), 6), 4096))
    np.testing.assert_array_equal(cfg.bs, np.tile(np.arange(6), 4096 * 8))
    assert cfg.cell.dtype == jnp.int8 and cfg.lr.dtype == jnp.int32


def test_onehot_round_trip_all_configs():
    cfg = nhb2.from_index(ALL)
    x = jax.jit(nhb2.to_onehot)(cfg)
    assert x.shape == (nhb2.NUM_CONFIGS, 38)
    np.testing.assert_array_equal(x.sum(-1), 8.0)
    back = jax.jit(nhb2.from_onehot)(x)
    np.testing.assert_array_equal(nhb2.to_index(back), ALL)
    # Hand check one config: cell 0|12|333, lr 0.1 (index 5), bs 256 (index 4).
    one = nhb2.to_onehot(nhb2.from_string("0|12|333", 0.1, 256))
    expect = np.zeros(38)
    expect[[0, 4 + 1, 8 + 2, 12 + 3, 16 + 3, 20 + 3, 24 + 5, 32 + 4]] = 1
    np.testing.assert_array_equal(one, expect)


def test_string_and_key_round_trip_all_configs():
    cfg = nhb2.from_index(ALL)
    keys = nhb2.to_keys(cfg)
    assert keys[0] == ("0|00|000", 0.003125, 16) and keys[-1] == ("3|33|333", 0.4, 512)
    np.testing.assert_array_equal(nhb2.to_index(nhb2.from_keys(keys)), ALL)
    codes = nhb2.to_string(nhb2.from_index(ALL[::48]))
    assert codes == list(OFFICIAL["cellcodes_4096"])
    for code, lr, bs in keys[:: 4099]:
        c = nhb2.from_string(code, lr, bs)
        assert nhb2.to_key(c) == (code, lr, bs)


def test_sample_uniform_and_valid():
    cfg = jax.jit(nhb2.sample, static_argnums=1)(jax.random.key(0), 60_000)
    nhb2.validate(cfg)
    for arr, k in ((cfg.cell[:, 0], 4), (cfg.cell[:, 5], 4), (cfg.lr, 8), (cfg.bs, 6)):
        freq = np.bincount(np.asarray(arr), minlength=k) / arr.shape[0]
        np.testing.assert_allclose(freq, 1.0 / k, atol=0.01)
    same = nhb2.sample(jax.random.key(0), 60_000)
    np.testing.assert_array_equal(nhb2.to_index(same), nhb2.to_index(cfg))
    single = nhb2.sample(jax.random.key(3))
    assert single.shape == () and single.cell.shape == (6,)


def test_mutate_changes_exactly_one_element():
    cfg = nhb2.sample(jax.random.key(1), 20_000)
    new = jax.jit(nhb2.mutate)(jax.random.key(2), cfg)
    nhb2.validate(new)
    diff = np.concatenate(
        [np.asarray(new.cell != cfg.cell), np.asarray(new.lr != cfg.lr)[:, None],
         np.asarray(new.bs != cfg.bs)[:, None]], axis=1)
    np.testing.assert_array_equal(diff.sum(1), 1)
    # Which element changes is uniform over the 8; lr values are uniform over the other 7.
    np.testing.assert_allclose(diff.mean(0), 1 / 8, atol=0.01)
    lr_moved = diff[:, 6]
    shift = (np.asarray(new.lr) - np.asarray(cfg.lr))[lr_moved] % 8
    np.testing.assert_allclose(np.bincount(shift, minlength=8)[1:] / lr_moved.sum(), 1 / 7,
                               atol=0.02)
    # vmap over keys of a single config equals the batched call per member.
    one = jax.tree.map(lambda x: x[0], cfg)
    keys = jax.random.split(jax.random.key(5), 4)
    out = jax.vmap(nhb2.mutate, in_axes=(0, None))(keys, one)
    for i in range(4):
        np.testing.assert_array_equal(nhb2.to_index(out)[i],
                                      nhb2.to_index(nhb2.mutate(keys[i], one)))


def test_canonical_representative_and_group_jittable():
    cfg = nhb2.from_index(ALL[::48])
    cls = jax.jit(nhb2.canonical)(cfg)
    np.testing.assert_array_equal(cls, OFFICIAL["cell_to_unique"])
    rep = jax.jit(nhb2.representative)(cfg)
    assert nhb2.to_string(rep) == list(OFFICIAL["unique_cellcodes"][OFFICIAL["cell_to_unique"]])
    np.testing.assert_array_equal(jax.jit(nhb2.is_disconnected)(cfg),
                                  OFFICIAL["cell_is_disconnected"])
    groups = np.asarray(jax.jit(nhb2.group)(cfg))
    # The jittable lookup equals the group computed from each cell's compressed graph.
    for i in range(0, 4096, 7):
        digits = tuple(int(d) for d in OFFICIAL["cell_digits_4096"][i])
        assert groups[i] == cells.architecture_group(cells.compress(digits)), i
    assert int(nhb2.group(nhb2.from_string("0|00|200"))) == 1


def test_to_graph_hand_checked():
    # A conv, B skip, C pool, D zero, E zero, F skip: in->out (x1), in->conv, conv->pool, pool->out
    cfg = nhb2.from_string("0|21|332", 0.1, 64)
    g = jax.jit(nhb2.to_graph)(cfg)
    assert g.n_node.tolist() == [8] and g.n_edge.tolist() == [10]
    np.testing.assert_array_equal(g.nodes["mask"], [1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(g.nodes["op"][:4], np.eye(4))
    np.testing.assert_array_equal(g.nodes["op"][4:], 0)
    edges = {(int(s), int(r)): float(c) for s, r, c in
             zip(g.senders, g.receivers, g.edges["count"], strict=True) if c > 0}
    assert edges == {(0, 1): 1.0, (0, 2): 1.0, (2, 3): 1.0, (3, 1): 1.0}
    np.testing.assert_array_equal(g.globals["lr"], jax.nn.one_hot(jnp.array([5]), 8))
    # All-skip cell: a single input->output edge with multiplicity 4.
    g = nhb2.to_graph(nhb2.from_string("2|22|222"))
    assert float(g.edges["count"].sum()) == 4.0 and float(g.nodes["mask"].sum()) == 2.0


def test_to_graph_batches_offset_senders():
    cfg = nhb2.from_index(jnp.array([0, 48 * 4095, 12345]))
    g = nhb2.to_graph(cfg)
    assert g.nodes["op"].shape == (24, 4) and g.senders.shape == (30,)
    # Each graph's edges stay inside its own 8 node slots.
    owner = np.repeat(np.arange(3), 10)
    np.testing.assert_array_equal(np.asarray(g.senders) // 8, owner)
    np.testing.assert_array_equal(np.asarray(g.receivers) // 8, owner)
    # Equivalent cells give identical graphs.
    a = nhb2.to_graph(nhb2.from_string("3|33|023"))
    b = nhb2.to_graph(nhb2.from_string("0|33|323"))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: nhb2.cell_from_string("0|00|334"), "valid ops: 0 conv3x3, 1 avgpool3x3"),
        (lambda: nhb2.cell_from_string("0|0|0000"), "A|BC|DEF"),
        (lambda: nhb2.validate(nhb2.make([0, 0, 0, 0, 0, 4], 0, 0)), "op index 4.*3 zero"),
        (lambda: nhb2.validate(nhb2.make([0] * 6, 8, 0)), r"lr index 8.*0\.003125"),
        (lambda: nhb2.validate(nhb2.make([0] * 6, 0, -1)), r"bs index -1.*512"),
        (lambda: nhb2.from_string("0|00|000", 0.3, 16), r"learning rate 0\.3.*0\.4"),
        (lambda: nhb2.from_string("0|00|000", 0.1, 100), r"batch size 100.*\[16, 32"),
    ],
)
def test_bad_input_names_valid_choices(call, match):
    with pytest.raises(ValueError, match=match):
        call()
