"""Tests for nhb.models.cell_net: the NAS-HPO-Bench-II network."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb._vendor import load_npz
from nhb.models import (
    Cell,
    CellNet,
    ReLUConvBN,
    avg_pool3x3,
    cell_digits,
    cell_net,
    check_ops,
    conv_edges_of,
    fast_torch_init,
    init_cell_net,
    param_count,
    reference_param_count,
)

TINY = {"channels": (4, 8, 16), "cells_per_stage": 1}
VALID_MSG = "0 conv3x3, 1 avgpool3x3, 2 skip, 3 zero"
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


def _images(n: int, seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (n, 32, 32, 3))


@functools.cache
def _jit_init(net: CellNet, ops: tuple[int, ...]):
    return jax.jit(lambda k: init_cell_net(k, net, ops))


@functools.cache
def _train_fn(net: CellNet):
    """Jitted train-mode apply taking ops and mask as arguments (traced)."""
    return jax.jit(lambda v, x, ops, mask: net.apply(
        v, x, ops, train=True, mask=mask, mutable=["batch_stats"]))


def _train_fn_concrete(net: CellNet, ops: tuple[int, ...]):
    """Jitted train-mode apply with ops baked in as Python ints."""
    return jax.jit(lambda v, x: net.apply(v, x, ops, train=True, mutable=["batch_stats"]))


def _init_cell(key, cell: Cell, x, code: str):
    """Cheap-to-compile PyTorch-default variables for a single cell."""
    shapes = jax.eval_shape(lambda k: cell.init(k, x, cell_digits(code), False), key)
    return jax.jit(fast_torch_init)(key, shapes)


def _assert_trees_close(a, b, tol: float = 1e-5) -> None:
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


# ----------------------------------------------------------------------- parameter counts


def test_reference_count_all_conv_literal():
    assert reference_param_count("0|00|000") == 1_531_850
    cell_convs = sum(5 * 6 * (9 * c * c + 2 * c) for c in (16, 32, 64))
    assert reference_param_count((3,) * 6) == 1_531_850 - cell_convs
    assert reference_param_count("0|12|333") == 1_531_850 - cell_convs // 6 * 5


def test_param_counts_all_1011_cells_default_size():
    cells = load_npz("nashpobench2/nashpobench2_cells_split.npz")["unique_cellcodes"]
    assert len(cells) == 1011
    # The parameter structure depends only on the module, i.e. on the conv pattern, so trace
    # one representative cell per pattern (64 patterns) and check every cell maps onto it.
    reps: dict[tuple[bool, ...], str] = {}
    for c in cells:
        reps.setdefault(conv_edges_of(str(c)), str(c))
    assert len(reps) == 64
    counts = {}
    for pattern, rep in reps.items():
        net = cell_net(rep)
        shapes = jax.eval_shape(lambda k, n=net, r=rep: init_cell_net(k, n, r, fast=False),
                                jax.random.key(0))
        counts[pattern] = param_count(shapes)
    for c in cells:
        c = str(c)
        net = cell_net(c)
        assert net == CellNet(conv_edges=conv_edges_of(c))
        assert counts[net.conv_edges] == reference_param_count(c), c
    assert counts[(True,) * 6] == 1_531_850
    assert counts[(False,) * 6] == reference_param_count("3|33|333")


def test_param_count_tiny_and_traced_ops():
    for cell in ("0|12|310", "1|33|002"):
        net = cell_net(cell, num_classes=7, **TINY)
        shapes = jax.eval_shape(lambda k, n=net, c=cell: init_cell_net(k, n, c),
                                jax.random.key(0))
        expected = reference_param_count(cell, num_classes=7, **TINY)
        assert param_count(shapes) == param_count(shapes["params"]) == expected
        traced = jax.eval_shape(lambda k, ops, n=net: init_cell_net(k, n, ops),
                                jax.random.key(0), jnp.asarray(cell_digits(cell)))
        assert jax.tree_util.tree_structure(traced) == jax.tree_util.tree_structure(shapes)


# ------------------------------------------------------------------ default-scale forward

DEFAULT_CELL = "1|02|332"  # one conv edge per cell, plus pool, skip and zero edges


@pytest.fixture(scope="module")
def default_vars():
    net = cell_net(DEFAULT_CELL)
    return net, _jit_init(net, cell_digits(DEFAULT_CELL))(jax.random.key(0))


def test_forward_default_scale(default_vars):
    net, v = default_vars
    logits, upd = _train_fn_concrete(net, cell_digits(DEFAULT_CELL))(v, _images(2))
    assert logits.shape == (2, 10)
    assert np.all(np.isfinite(logits)) and np.std(np.asarray(logits)) > 0
    assert not np.allclose(logits[0], logits[1])
    assert not np.allclose(upd["batch_stats"]["stem_bn"]["mean"], 0.0)
    assert jax.tree_util.tree_structure(upd["batch_stats"]) == jax.tree_util.tree_structure(
        v["batch_stats"])


def _parent(tree, keys):
    for k in keys[:-1]:
        tree = tree[k]
    return tree


def _check_torch_init(variables, big: int = 4096) -> int:
    """Asserts PyTorch-default statistics on every leaf; returns the number of kernels."""
    params = variables["params"]
    n_kernels = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [p.key for p in path]
        arr = np.asarray(leaf)
        if keys[-1] == "kernel":
            bound = 1.0 / np.sqrt(np.prod(arr.shape[:-1]))
            assert np.abs(arr).max() <= bound, keys
            if arr.size >= big:  # large enough that the max gets close to the bound
                assert np.abs(arr).max() > 0.99 * bound, keys
                np.testing.assert_allclose(arr.std(), bound / np.sqrt(3), rtol=0.03)
                assert abs(arr.mean()) < 0.03 * bound, keys
            n_kernels += 1
        elif keys[-1] == "bias" and "kernel" in _parent(params, keys):
            parent = _parent(params, keys)
            bound = 1.0 / np.sqrt(np.prod(parent["kernel"].shape[:-1]))
            assert np.abs(arr).max() <= bound, keys
            assert np.abs(arr).max() > 0.3 * bound, keys
        elif keys[-1] == "scale":
            np.testing.assert_array_equal(arr, 1.0)
        else:
            assert keys[-1] == "bias", keys
            np.testing.assert_array_equal(arr, 0.0)
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables["batch_stats"])[0]:
        np.testing.assert_array_equal(leaf, 0.0 if path[-1].key == "mean" else 1.0)
    return n_kernels


def test_init_statistics_default_scale(default_vars):
    _, v = default_vars
    # stem + 15 one-conv cells + 2 x 3 reduction convs + classifier
    assert _check_torch_init(v) == 1 + 15 + 6 + 1
    assert "bias" not in v["params"]["stage0_cell0"]["edge1"]["conv"]
    assert v["params"]["stage2_cell4"]["edge1"]["conv"]["kernel"].shape == (3, 3, 64, 64)


def test_fast_init_matches_module_initialisers():
    # The single-draw initialiser and the modules' own initialisers (net.init) agree in
    # structure, dtypes and distribution; checked on an all-conv cell plus the full tiny net.
    cell = Cell(32, (True,) * 6)
    x = jnp.zeros((1, 4, 4, 32))
    slow = jax.jit(lambda k: cell.init(k, x, ALL_CONV, False))(jax.random.key(0))
    assert _check_torch_init(slow) == 6
    net = cell_net(ALL_CONV, **TINY)
    slow_shapes = jax.eval_shape(lambda k: init_cell_net(k, net, ALL_CONV, fast=False),
                                 jax.random.key(0))
    fast_shapes = jax.eval_shape(lambda k: init_cell_net(k, net, ALL_CONV), jax.random.key(0))
    assert jax.tree_util.tree_structure(slow_shapes) == jax.tree_util.tree_structure(fast_shapes)
    assert jax.tree_util.tree_leaves(slow_shapes) == jax.tree_util.tree_leaves(fast_shapes)


# ---------------------------------------------------------------- tiny-scale behaviour

ALL_CONV = (0,) * 6
PATTERN_CELLS = ("0|12|310", "0|21|130", "0|33|330")  # conv on A and F; pool/skip/zero


def _subset(variables, flags: tuple[bool, ...]):
    """Variables of the all-conv network restricted to the conv edges in `flags`."""
    def cell_vars(tree):
        return {k: sub for k, sub in tree.items() if flags[int(k.removeprefix("edge"))]}

    return {col: {k: cell_vars(sub) if k.startswith("stage") else sub
                  for k, sub in tree.items() if not k.startswith("stage") or cell_vars(sub)}
            for col, tree in variables.items()}


@pytest.fixture(scope="module")
def tiny_all_conv():
    """Jitted init of the tiny all-conv network; other patterns take subsets of it."""
    net = cell_net(ALL_CONV, **TINY)
    return net, _jit_init(net, ALL_CONV)(jax.random.key(1))


@pytest.fixture(scope="module")
def tiny_vars(tiny_all_conv):
    net = cell_net(PATTERN_CELLS[0], **TINY)
    v = _subset(tiny_all_conv[1], net.conv_edges)
    shapes = jax.eval_shape(lambda k: init_cell_net(k, net, PATTERN_CELLS[0]), jax.random.key(0))
    assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(shapes)
    return net, v


def test_forward_tiny_shapes(tiny_vars):
    net, v = tiny_vars
    logits = jax.jit(lambda v, x: net.apply(v, x, cell_digits(PATTERN_CELLS[0]), False))(
        v, _images(3))
    assert logits.shape == (3, 10) and np.all(np.isfinite(logits))
    assert v["params"]["stage2_cell0"]["edge5"]["conv"]["kernel"].shape == (3, 3, 16, 16)
    assert v["params"]["reduction2"]["shortcut"]["kernel"].shape == (1, 1, 8, 16)


def test_init_deterministic_and_ops_independent(tiny_all_conv):
    net, v = tiny_all_conv
    assert _check_torch_init(v, big=2304) == 1 + 18 + 6 + 1
    init = _jit_init(net, ALL_CONV)
    _assert_trees_close(v, init(jax.random.key(1)), 0.0)
    other = init(jax.random.key(2))
    k1 = v["params"]["stem_conv"]["kernel"]
    assert not np.allclose(k1, other["params"]["stem_conv"]["kernel"])
    # Fast init with traced ops traces to the same variable shapes.
    traced = jax.eval_shape(lambda k, o: init_cell_net(k, net, o), jax.random.key(1),
                            jnp.asarray(ALL_CONV))
    assert jax.tree_util.tree_leaves(traced) == jax.tree_util.tree_leaves(
        jax.eval_shape(lambda: v))
    # Module names (hence net.init's per-parameter RNG streams) do not depend on the ops.
    slow = jax.eval_shape(lambda k: init_cell_net(k, net, ALL_CONV, fast=False),
                          jax.random.key(1))
    slow_traced = jax.eval_shape(lambda k, o: init_cell_net(k, net, o, fast=False),
                                 jax.random.key(1), jnp.asarray(ALL_CONV))
    assert jax.tree_util.tree_structure(slow) == jax.tree_util.tree_structure(slow_traced)


def test_pattern_init_is_the_all_conv_init_pruned(tiny_all_conv):
    net_all, v_all = tiny_all_conv
    for code in (*PATTERN_CELLS, "3|33|333", "0|33|330"):
        net = cell_net(code, **TINY)
        _assert_trees_close(_jit_init(net, cell_digits(code))(jax.random.key(1)),
                            _subset(v_all, net.conv_edges), 0.0)
    masked = net_all.clone(masked=True)
    _assert_trees_close(_jit_init(masked, (3,) * 6)(jax.random.key(1)), v_all, 0.0)


def test_masked_supernet_equals_exact_pattern_network(tiny_all_conv):
    net_all, v_all = tiny_all_conv
    masked = net_all.clone(masked=True)
    x = _images(3, seed=7)
    ones = jnp.ones(3, bool)
    codes = ("0|12|300", "1|23|012", "3|33|333")
    ops = jnp.asarray([cell_digits(c) for c in codes], jnp.int32)
    # One supernet program, vmapped over cells of different conv patterns.
    batched = jax.jit(jax.vmap(lambda o: masked.apply(
        v_all, x, o, train=True, mask=ones, mutable=["batch_stats"])))(ops)
    for i, code in enumerate(codes):
        net = cell_net(code, **TINY)
        v = _subset(v_all, net.conv_edges)
        logits, upd = _train_fn(net)(v, x, ops[i], ones)
        np.testing.assert_allclose(batched[0][i], logits, rtol=1e-5, atol=1e-5)
        # The running stats the exact network has are updated identically.
        got = _subset(jax.tree_util.tree_map(lambda a, i=i: a[i], batched[1]),
                      net.conv_edges)
        _assert_trees_close(got, upd)
        # Concrete ops skip the unused convs and give the same logits.
        concrete = jax.jit(lambda v, x, c=code: masked.apply(v, x, cell_digits(c), False))
        traced = jax.jit(lambda v, x, o: masked.apply(v, x, o, False))
        np.testing.assert_allclose(concrete(v_all, x), traced(v_all, x, ops[i]),
                                   rtol=1e-5, atol=1e-5)
    # Unused conv edges get exactly zero gradient.
    def loss(p):
        logits, _ = masked.apply({"params": p, "batch_stats": v_all["batch_stats"]}, x,
                                 ops[0], train=True, mutable=["batch_stats"])
        return jnp.sum(logits ** 2)
    g = jax.jit(jax.grad(loss))(v_all["params"])
    assert not np.any(g["stage0_cell0"]["edge1"]["conv"]["kernel"])
    assert np.any(g["stage0_cell0"]["edge0"]["conv"]["kernel"])
    with pytest.raises(ValueError, match="needs conv_edges"):
        check_ops("0|00|000", conv_edges_of("0|12|300"), masked=True)
    assert check_ops("1|23|312", (True,) * 6, masked=True) == (1, 2, 3, 3, 1, 2)


def test_traced_ops_equal_concrete_ops_and_vmap(tiny_vars):
    net, v = tiny_vars
    x = _images(2, seed=5)
    ones = jnp.ones(2, bool)
    traced = _train_fn(net)
    ops0 = cell_digits(PATTERN_CELLS[0])
    ref = _train_fn_concrete(net, ops0)(v, x)
    _assert_trees_close(traced(v, x, jnp.asarray(ops0), ones), ref)
    results = [traced(v, x, jnp.asarray(cell_digits(c)), ones) for c in PATTERN_CELLS]
    assert not np.allclose(results[0][0], results[1][0])
    # vmap over cells of the same conv pattern: one compiled program.
    ops3 = jnp.asarray([cell_digits(c) for c in PATTERN_CELLS], jnp.int32)
    batched = jax.jit(jax.vmap(lambda o: net.apply(
        v, x, o, train=True, mutable=["batch_stats"])))(ops3)
    for i in range(3):
        _assert_trees_close(jax.tree_util.tree_map(lambda a, i=i: a[i], batched), results[i])


def test_cell_traced_ops_equal_concrete_ops():
    # The same check, cheaply, on a single cell for several cells of one pattern.
    codes = ("0|12|310", "0|33|330", "0|22|110")
    cell = Cell(4, conv_edges_of(codes[0]))
    x = jax.random.normal(jax.random.key(8), (2, 5, 5, 4))
    v = _init_cell(jax.random.key(9), cell, x, codes[0])
    ops = jnp.asarray([cell_digits(c) for c in codes])
    f = jax.jit(jax.vmap(lambda o: cell.apply(v, x, o, True, mutable=["batch_stats"])))
    batched = f(ops)
    for i, c in enumerate(codes):
        ref = jax.jit(lambda v, x, c=c: cell.apply(
            v, x, cell_digits(c), True, mutable=["batch_stats"]))(v, x)
        _assert_trees_close(jax.tree_util.tree_map(lambda a, i=i: a[i], batched), ref)


def _np_cell(x: np.ndarray, digits: tuple[int, ...]) -> np.ndarray:
    """NumPy reference for conv-free cells."""
    def pool(h):
        hp = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return sum(hp[:, i:i + h.shape[1], j:j + h.shape[2]] for i in range(3)
                   for j in range(3)) / 9.0

    nodes = [x]
    for j in range(1, 4):
        acc = np.zeros_like(x)
        for e, (to, frm) in enumerate(EDGES):
            if to == j and digits[e] != 3:
                acc = acc + (pool(nodes[frm]) if digits[e] == 1 else nodes[frm])
        nodes.append(acc)
    return nodes[3]


def test_cell_dag_wiring_without_convs():
    cells = ("1|32|312", "2|13|123", "1|22|112", "3|33|333", "2|21|331", "1|31|233")
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype(np.float32)
    cell = Cell(3, (False,) * 6)
    traced = jax.jit(jax.vmap(lambda o: cell.apply({}, jnp.asarray(x), o, False)))(
        jnp.asarray([cell_digits(c) for c in cells]))
    for i, c in enumerate(cells):
        ref = _np_cell(x, cell_digits(c))
        got = jax.jit(lambda x, c=c: cell.apply({}, x, cell_digits(c), False))(x)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(traced[i], ref, rtol=1e-5, atol=1e-5)


def test_cell_dag_wiring_with_convs():
    code = "0|10|022"  # n1 = c0(x); n2 = pool(x) + c2(n1); n3 = c3(x) + n1 + n2
    flags = conv_edges_of(code)
    x = jax.random.normal(jax.random.key(3), (2, 5, 5, 4))
    cell = Cell(4, flags)
    v = _init_cell(jax.random.key(4), cell, x, code)
    conc = jax.jit(lambda v, x: cell.apply(v, x, cell_digits(code), False))(v, x)
    trac = jax.jit(lambda v, x, o: cell.apply(v, x, o, False))(v, x, jnp.asarray(
        cell_digits(code)))

    @jax.jit
    def by_hand(v, x):
        def edge(e, h):
            ve = {"params": v["params"][f"edge{e}"],
                  "batch_stats": v["batch_stats"][f"edge{e}"]}
            return ReLUConvBN(4).apply(ve, h, False)

        n1 = edge(0, x)
        n2 = avg_pool3x3(x) + edge(2, n1)
        return edge(3, x) + n1 + n2

    ref = by_hand(v, x)
    assert sorted(v["params"]) == ["edge0", "edge2", "edge3"]
    np.testing.assert_allclose(conc, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(trac, ref, rtol=1e-5, atol=1e-5)


def test_conv_on_zero_node_is_computed_faithfully():
    # n1 = n2 = 0; n3 = ReLU-Conv-BN(0): in train mode BN outputs beta, and the
    # running var moves towards the (zero) batch variance.
    code = "3|33|330"
    cell = Cell(4, conv_edges_of(code))
    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 4))
    v = _init_cell(jax.random.key(1), cell, x, code)
    v["params"]["edge5"]["bn"]["bias"] = jnp.full((4,), 0.5)
    for ops in (cell_digits(code), jnp.asarray(cell_digits(code))):
        y, upd = jax.jit(lambda v, x, o=ops: cell.apply(
            v, x, o, True, mutable=["batch_stats"]))(v, x)
        np.testing.assert_allclose(y, 0.5, atol=1e-6)
        np.testing.assert_allclose(upd["batch_stats"]["edge5"]["bn"]["var"], 0.9, rtol=1e-6)
        np.testing.assert_allclose(upd["batch_stats"]["edge5"]["bn"]["mean"], 0.0, atol=1e-7)


@pytest.mark.parametrize("code", ["3|33|333", "0|00|333"])
def test_disconnected_cells_run(tiny_all_conv, code):
    net = cell_net(code, **TINY)
    v = _subset(tiny_all_conv[1], net.conv_edges)
    logits, upd = _train_fn_concrete(net, cell_digits(code))(v, _images(2))
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))
    if code == "0|00|333":
        # Unreachable convs still run and update their BN statistics.
        assert not np.allclose(upd["batch_stats"]["stage0_cell0"]["edge2"]["bn"]["mean"], 0)


def test_mask_is_forwarded_to_batchnorm(tiny_vars):
    net, v = tiny_vars
    x = _images(3, seed=7)
    f = _train_fn(net)
    ops = jnp.asarray(cell_digits(PATTERN_CELLS[0]))
    masked, upd_m = f(v, x, ops, jnp.asarray([True, False, True]))
    valid, upd_v = f(v, x[jnp.asarray([0, 2])], ops, jnp.ones(2, bool))
    np.testing.assert_allclose(masked[jnp.asarray([0, 2])], valid, rtol=1e-4, atol=1e-4)
    _assert_trees_close(upd_m, upd_v, 1e-4)


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_with_valid_choices():
    with pytest.raises(ValueError, match=VALID_MSG):
        cell_net("0|04|000")
    with pytest.raises(ValueError, match=VALID_MSG):
        cell_digits((0, 1, 2))
    with pytest.raises(ValueError, match=VALID_MSG):
        reference_param_count("0|00|00x")
    with pytest.raises(ValueError, match=VALID_MSG):
        CellNet(conv_edges=(True,) * 5)
    with pytest.raises(ValueError, match=r"xla.*patches.*shifts.*elementwise"):
        CellNet(conv_edges=(True,) * 6, conv_impl="cudnn")
    with pytest.raises(ValueError, match=VALID_MSG):
        check_ops((0, 1, 2, 3, 0, 0), conv_edges_of("0|00|000"))
    check_ops(np.array([0, 1, 2, 3, 0, 0]), conv_edges_of("0|12|300"))
    net = cell_net("0|12|300", **TINY)
    x = jnp.zeros((1, 32, 32, 3))
    for bad in ((0, 1, 2, 3, 0, 4), (0, 1, 2, 0, 0, 0), (0, 1, 2, 3, 0)):
        with pytest.raises(ValueError, match=VALID_MSG):
            jax.eval_shape(lambda k, b=bad: net.init(k, x, b, train=False), jax.random.key(0))
    with pytest.raises(ValueError, match=VALID_MSG):
        jax.eval_shape(lambda k, o: net.init(k, x, o, train=False), jax.random.key(0),
                       jnp.zeros((5,), jnp.int32))
