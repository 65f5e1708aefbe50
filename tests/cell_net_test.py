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
    check_ops,
    conv_edges_of,
    fast_torch_init,
    init_cell_net,
    make_cell_net,
    param_count,
    reference_param_count,
)
from nhb.space.cells import cell_digits

TINY = {"channels": (4, 8, 16), "cells_per_stage": 1}
VALID_MSG = "0 conv3x3, 1 avgpool3x3, 2 skip, 3 zero"
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


# ------------------------------------------------------------ NumPy reference forward pass
# An independent float64 forward of the NAS-HPO-Bench-II network written from docs/protocol.md §3
# (the authors' PyTorch modules): no JAX, explicit padding, convolution as a sum over the
# k x k taps of shifted windows. `mutant` switches on one deliberate deviation so the tests
# can show that the comparison catches it.

BN_EPS, BN_MOMENTUM = 1e-5, 0.1
MUTANTS = ("pool_excludes_padding", "no_shortcut", "tf_same_padding", "biased_running_var",
           "mask_ignored")


def _np_conv2d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, stride: int,
               pad: tuple[int, int]) -> np.ndarray:
    """torch.nn.Conv2d in NHWC / HWIO: zero padding (before, after) on both spatial axes."""
    k = kernel.shape[0]
    xp = np.pad(x, ((0, 0), pad, pad, (0, 0)))
    ho = (xp.shape[1] - k) // stride + 1
    wo = (xp.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, kernel.shape[-1]))
    for i in range(k):
        for j in range(k):
            window = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out += np.einsum("bhwc,co->bhwo", window, kernel[i, j])
    return out if bias is None else out + bias


def _np_avg_pool3x3(x: np.ndarray, count_include_pad: bool = True) -> np.ndarray:
    """nn.AvgPool2d(3, 1, 1): the window sum over 9 (or over the in-image taps if not)."""
    h, w = x.shape[1:3]
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    total = sum(xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
    if count_include_pad:
        return total / 9.0
    ones = np.pad(np.ones((1, h, w, 1)), ((0, 0), (1, 1), (1, 1), (0, 0)))
    return total / sum(ones[:, i:i + h, j:j + w] for i in range(3) for j in range(3))


def _to_float64(tree):
    """A nested dict of arrays as float64 NumPy copies."""
    if isinstance(tree, dict):
        return {k: _to_float64(v) for k, v in tree.items()}
    return np.array(tree, np.float64)


class NumpyCellNet:
    """The network on given variables, in float64 NumPy.

    Train mode normalises with the batch statistics of the examples in `mask` and records
    PyTorch's running-statistic update (unbiased variance, momentum 0.1) in `new_stats`
    (a flat {path: {"mean", "var"}} of the BatchNorms that ran).
    """

    def __init__(self, variables, train: bool, mask: np.ndarray | None = None,
                 mutant: str | None = None):
        assert mutant in (None, *MUTANTS), mutant
        self.params = _to_float64(variables["params"])
        self.stats = _to_float64(variables["batch_stats"])
        self.train, self.mask, self.mutant = train, mask, mutant
        self.new_stats: dict[tuple[str, ...], dict[str, np.ndarray]] = {}

    def _get(self, tree, path: tuple[str, ...]):
        for k in path:
            tree = tree[k]
        return tree

    def bn(self, x: np.ndarray, path: tuple[str, ...]) -> np.ndarray:
        p, s = self._get(self.params, path), self._get(self.stats, path)
        if self.train:
            ignore = self.mask is None or self.mutant == "mask_ignored"
            valid = x if ignore else x[self.mask]
            n = valid.shape[0] * valid.shape[1] * valid.shape[2]
            mean, var = valid.mean(axis=(0, 1, 2)), valid.var(axis=(0, 1, 2))
            unbiased = var if self.mutant == "biased_running_var" else var * n / (n - 1)
            self.new_stats[path] = {
                "mean": (1 - BN_MOMENTUM) * s["mean"] + BN_MOMENTUM * mean,
                "var": (1 - BN_MOMENTUM) * s["var"] + BN_MOMENTUM * unbiased}
        else:
            mean, var = s["mean"], s["var"]
        return (x - mean) / np.sqrt(var + BN_EPS) * p["scale"] + p["bias"]

    def relu_conv_bn(self, x: np.ndarray, path: tuple[str, ...], stride: int) -> np.ndarray:
        conv = self._get(self.params, path)["conv"]
        pad = (0, 1) if stride == 2 and self.mutant == "tf_same_padding" else (1, 1)
        y = _np_conv2d(np.maximum(x, 0.0), conv["kernel"], conv.get("bias"), stride, pad)
        return self.bn(y, (*path, "bn"))

    def cell(self, x: np.ndarray, digits: tuple[int, ...], name: str) -> np.ndarray:
        nodes = [x]
        for j in range(1, 4):
            total = np.zeros_like(x)
            for e, (to, frm) in enumerate(EDGES):
                if to != j:
                    continue
                h, d = nodes[frm], digits[e]
                if d == 0:
                    total = total + self.relu_conv_bn(h, (name, f"edge{e}"), 1)
                elif d == 1:
                    total = total + _np_avg_pool3x3(
                        h, count_include_pad=self.mutant != "pool_excludes_padding")
                elif d == 2:
                    total = total + h
            nodes.append(total)
        return nodes[3]

    def reduction(self, x: np.ndarray, name: str) -> np.ndarray:
        branch = self.relu_conv_bn(x, (name, "conv_a"), 2)
        branch = self.relu_conv_bn(branch, (name, "conv_b"), 1)
        if self.mutant == "no_shortcut":
            return branch
        b, h, w, c = x.shape
        pooled = x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
        sc = self.params[name]["shortcut"]
        return branch + _np_conv2d(pooled, sc["kernel"], sc["bias"], 1, (0, 0))

    def __call__(self, x: np.ndarray, cell: str, cells_per_stage: int) -> np.ndarray:
        """Logits [B, classes] of images `x` [B, H, W, 3] for the cell code `cell`."""
        digits = tuple(int(ch) for ch in cell.replace("|", ""))
        p = self.params
        h = np.asarray(x, np.float64)
        h = self.bn(_np_conv2d(h, p["stem_conv"]["kernel"], p["stem_conv"]["bias"], 1, (1, 1)),
                    ("stem_bn",))
        for s in range(3):
            if s > 0:
                h = self.reduction(h, f"reduction{s}")
            for k in range(cells_per_stage):
                h = self.cell(h, digits, f"stage{s}_cell{k}")
        h = np.maximum(self.bn(h, ("head_bn",)), 0.0).mean(axis=(1, 2))
        return h @ p["classifier"]["kernel"] + p["classifier"]["bias"]


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


def _randomise_bn(variables, seed: int):
    """Random BatchNorm affine parameters and running statistics (init: 1, 0 and 0, 1)."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        keys = [p.key for p in path]
        if keys[0] == "batch_stats":
            value = (rng.normal(0.0, 0.5, leaf.shape) if keys[-1] == "mean"
                     else rng.uniform(0.5, 2.0, leaf.shape))
        elif keys[-2].endswith("bn"):
            value = (rng.uniform(0.5, 1.5, leaf.shape) if keys[-1] == "scale"
                     else rng.normal(0.0, 0.3, leaf.shape))
        else:
            return leaf
        return jnp.asarray(value, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, variables)


def _bn_stats_by_path(batch_stats) -> dict[tuple[str, ...], dict[str, np.ndarray]]:
    """{path of a BatchNorm: {"mean", "var"}} of a batch_stats tree."""
    out: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(batch_stats)[0]:
        keys = tuple(p.key for p in path)
        out.setdefault(keys[:-1], {})[keys[-1]] = np.asarray(leaf)
    return out


def _relative_error(got, want) -> float:
    """max |got - want| over max |want|."""
    want = np.asarray(want, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


GOLDEN_TOL = 1e-4  # float32 network against the float64 reference, relative to max |ref|
# Golden runs use full float32 convolutions and matmuls on every backend (GPUs would
# otherwise be allowed TF32), so the tolerance does not depend on the backend.
FULL_PRECISION = "highest"


def _assert_matches_reference(got, want, what: str) -> None:
    err = _relative_error(got, want)
    assert err < GOLDEN_TOL, f"{what}: relative error {err:.2e} against the NumPy reference"


def _assert_stats_match_reference(updated, reference: NumpyCellNet, exact: bool) -> None:
    """Every BatchNorm the reference ran has its running statistics updated as PyTorch does.

    `exact`: the network has no unused BatchNorms, so every one must have run.
    """
    got = _bn_stats_by_path(updated)
    assert reference.new_stats, "the reference ran no BatchNorm in train mode"
    if exact:
        assert set(got) == set(reference.new_stats)
    for path, want in reference.new_stats.items():
        for k in ("mean", "var"):
            np.testing.assert_allclose(got[path][k], want[k], rtol=GOLDEN_TOL, atol=1e-6,
                                       err_msg=f"{'/'.join(path)} running {k}")


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
        net = make_cell_net(rep)
        shapes = jax.eval_shape(lambda k, n=net, r=rep: init_cell_net(k, n, r, fast=False),
                                jax.random.key(0))
        counts[pattern] = param_count(shapes)
    for c in cells:
        c = str(c)
        net = make_cell_net(c)
        assert net == CellNet(conv_edges=conv_edges_of(c))
        assert counts[net.conv_edges] == reference_param_count(c), c
    assert counts[(True,) * 6] == 1_531_850
    assert counts[(False,) * 6] == reference_param_count("3|33|333")


def test_param_count_tiny_and_traced_ops():
    for cell in ("0|12|310", "1|33|002"):
        net = make_cell_net(cell, num_classes=7, **TINY)
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
    net = make_cell_net(DEFAULT_CELL)
    return net, _jit_init(net, cell_digits(DEFAULT_CELL))(jax.random.key(0))


def test_forward_default_scale_matches_numpy_reference(default_vars):
    # Paper-size network (16/32/64 channels, 5 cells per stage), train mode with a padded
    # example excluded from the BatchNorm statistics.
    net, v = default_vars
    v = _randomise_bn(v, seed=3)
    x = np.asarray(_images(3))
    mask = np.array([True, True, False])
    ops = cell_digits(DEFAULT_CELL)
    with jax.default_matmul_precision(FULL_PRECISION):
        logits, upd = jax.jit(lambda v, x, m: net.apply(
            v, x, ops, train=True, mask=m, mutable=["batch_stats"]))(v, x, mask)
    ref = NumpyCellNet(v, train=True, mask=mask)
    _assert_matches_reference(logits, ref(x, DEFAULT_CELL, 5), "train logits")
    _assert_stats_match_reference(upd["batch_stats"], ref, exact=True)


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
    net = make_cell_net(ALL_CONV, **TINY)
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
    net = make_cell_net(ALL_CONV, **TINY)
    return net, _jit_init(net, ALL_CONV)(jax.random.key(1))


@pytest.fixture(scope="module")
def tiny_vars(tiny_all_conv):
    net = make_cell_net(PATTERN_CELLS[0], **TINY)
    v = _subset(tiny_all_conv[1], net.conv_edges)
    shapes = jax.eval_shape(lambda k: init_cell_net(k, net, PATTERN_CELLS[0]), jax.random.key(0))
    assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(shapes)
    return net, v


# Golden values: the jitted Linen network against the NumPy reference on fixed random weights
# (PyTorch-default init, random BatchNorm parameters and running statistics), in eval mode
# and in train mode with a padded example masked out of the batch statistics.
GOLDEN_CASES = {  # id: (cell, run as the masked all-conv supernet with traced ops)
    "all_conv": ("0|00|000", False),
    "mixed": ("0|12|310", False),  # conv A, F; pool B, E; skip C; zero D
    "supernet_pool_skip_conv": ("1|21|302", True),  # 6 conv edges present, only E is conv
    "disconnected": ("3|33|333", False),
    "dangling_convs": ("0|00|333", False),  # convs whose output never reaches node 3
}
GOLDEN_MASK = np.array([True, False, True, True])


@pytest.fixture(scope="module")
def golden(tiny_all_conv):
    """case id -> (variables, images, eval logits, train logits, updated batch_stats)."""
    net_all, v_all = tiny_all_conv
    v_all = _randomise_bn(v_all, seed=11)
    x = np.asarray(_images(len(GOLDEN_MASK), seed=12))
    cache = {}

    def run(case: str):
        if case not in cache:
            with jax.default_matmul_precision(FULL_PRECISION):
                cache[case] = compute(case)
        return cache[case]

    def compute(case: str):
        code, masked = GOLDEN_CASES[case]
        if masked:  # one program for every cell: ops traced
            net, v, ops = net_all.clone(masked=True), v_all, jnp.asarray(cell_digits(code))
            ev = jax.jit(lambda v, x, o: net.apply(v, x, o, False))(v, x, ops)
            tr, upd = jax.jit(lambda v, x, o, m: net.apply(
                v, x, o, train=True, mask=m, mutable=["batch_stats"]))(
                v, x, ops, GOLDEN_MASK)
        else:  # the exact-pattern network, ops concrete
            net = make_cell_net(code, **TINY)
            v, ops = _subset(v_all, net.conv_edges), cell_digits(code)
            ev = jax.jit(lambda v, x: net.apply(v, x, ops, False))(v, x)
            tr, upd = jax.jit(lambda v, x, m: net.apply(
                v, x, ops, train=True, mask=m, mutable=["batch_stats"]))(v, x, GOLDEN_MASK)
        return v, x, np.asarray(ev), np.asarray(tr), upd["batch_stats"]

    return run


@pytest.mark.parametrize("case", list(GOLDEN_CASES))
def test_logits_and_running_stats_match_numpy_reference(golden, case):
    code, masked = GOLDEN_CASES[case]
    v, x, eval_logits, train_logits, updated = golden(case)
    _assert_matches_reference(eval_logits, NumpyCellNet(v, train=False)(x, code, 1),
                              "eval logits")
    ref = NumpyCellNet(v, train=True, mask=GOLDEN_MASK)
    _assert_matches_reference(train_logits, ref(x, code, 1), "train logits")
    _assert_stats_match_reference(updated, ref, exact=not masked)
    if masked:
        # The supernet's unused conv edges are still updated (their discarded convs run in
        # train mode); only the used edge E (edge4) of each cell is in the reference.
        assert {p[-2] for p in ref.new_stats if p[0].startswith("stage")} == {"edge4"}


@pytest.mark.parametrize("mutant", MUTANTS)
def test_numpy_reference_comparison_catches_mutants(golden, mutant):
    # The golden assertions fail against a reference with one deliberate deviation (pool not
    # counting the padding, no reduction shortcut, TF "SAME" padding (0, 1) for the stride-2
    # conv, biased running variance, padded examples in the statistics), each by a margin of
    # at least 5x the tolerance: the golden tests would catch that bug in the Linen model.
    code, _ = GOLDEN_CASES["mixed"]  # has pool edges, so the padding count matters
    v, x, eval_logits, _, updated = golden("mixed")
    if mutant in ("biased_running_var", "mask_ignored"):  # train-mode running statistics
        ref = NumpyCellNet(v, train=True, mask=GOLDEN_MASK, mutant=mutant)
        ref(x, code, 1)
        with pytest.raises(AssertionError):
            _assert_stats_match_reference(updated, ref, exact=True)
        got = _bn_stats_by_path(updated)
        err = max(_relative_error(got[p][k], s[k]) for p, s in ref.new_stats.items()
                  for k in ("mean", "var"))
    else:
        want = NumpyCellNet(v, train=False, mutant=mutant)(x, code, 1)
        with pytest.raises(AssertionError):
            _assert_matches_reference(eval_logits, want, "eval logits")
        err = _relative_error(eval_logits, want)
    assert err > 5 * GOLDEN_TOL, (mutant, err)


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
        net = make_cell_net(code, **TINY)
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
        net = make_cell_net(code, **TINY)
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
        make_cell_net("0|04|000")
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
    net = make_cell_net("0|12|300", **TINY)
    x = jnp.zeros((1, 32, 32, 3))
    for bad in ((0, 1, 2, 3, 0, 4), (0, 1, 2, 0, 0, 0), (0, 1, 2, 3, 0)):
        with pytest.raises(ValueError, match=VALID_MSG):
            jax.eval_shape(lambda k, b=bad: net.init(k, x, b, train=False), jax.random.key(0))
    with pytest.raises(ValueError, match=VALID_MSG):
        jax.eval_shape(lambda k, o: net.init(k, x, o, train=False), jax.random.key(0),
                       jnp.zeros((5,), jnp.int32))
