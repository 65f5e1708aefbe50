"""Tests for nhb.models.hnag: NAGO's network against a NumPy reference written from the
reference's rules (`reference/nago.md` §2), parameter counts against the closed form and the
authors' PyTorch model, init distributions, and one engine training run."""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb.models.hnag import HNAGNet, adaptive_avg_pool, make_model, param_count, stage_resolution
from nhb.nago import graphs
from nhb.nago.graphs import DAG, Hierarchy, chain
from nhb.space import generators as G
from nhb.train import HParams, Protocol, TrainData, make_train

ONE = DAG(1, ((),), (0,), (0,))
FORK = DAG(3, ((), (0,), (0,)), (0,), (1, 2))  # two output nodes -> their mean
DIAMOND = DAG(4, ((), (0,), (0,), (1, 2)), (0,), (3,))  # node 3 merges two inputs
MID3 = DAG(3, ((), (), (0, 1)), (0, 1), (2,))  # two input mid nodes, node 2 merges
# Cell 2 merges cell 0 (ratio 1: 1x1 conv to inplanes 2m) and cell 1 (ratio 2: sigmoid).
MERGE_TOP = DAG(3, ((), (), (0, 1)), (0, 1), (2,))
H_MERGE = Hierarchy("hnag", MERGE_TOP, (0, 1, 2), (ONE, MID3, chain(2)),
                    ((FORK,), (ONE, chain(2), DIAMOND), (chain(2), FORK)), ())
# Outputs (1, 3) after a second input node 2: the authors' position lookup takes cells 2, 3.
ID_TOP = DAG(4, ((), (0,), (), (2,)), (0, 2), (1, 3))
H_IDS = Hierarchy("hnag", ID_TOP, (0, 0, 1, 2), (ONE,) * 4, ((ONE,),) * 4, ())
H_MIN = Hierarchy("hnag", chain(3), (0, 1, 2), (ONE,) * 3, ((ONE,),) * 3, ())
RATIOS = (1, 2, 4)


def _n_params(net: HNAGNet, image_size: int) -> int:
    shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["params"]))


# ----------------------------------------------------------------- NumPy reference (eval/train)
def _np_conv(x, kernel, bias, stride=1, pad=1, groups=1):
    k = kernel.shape[0]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = (x.shape[1] + 2 * pad - k) // stride + 1, (x.shape[2] + 2 * pad - k) // stride + 1
    out = 0.0
    for i in range(k):
        for j in range(k):
            tap = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out = out + (tap * kernel[i, j, 0] if groups > 1 else tap @ kernel[i, j])
    return out + bias


def _np_pool(x, size):  # PyTorch adaptive_avg_pool2d: [floor(i*n/o), ceil((i+1)*n/o))
    n = x.shape[1]
    edges = [(i * n // size, -(-(i + 1) * n // size)) for i in range(size)]
    return np.stack([np.stack([x[:, a:b, c:d].mean(axis=(1, 2)) for c, d in edges], 1)
                     for a, b in edges], 1)


def _np_forward(h, v, x, width, image_size, train=False):
    """Logits of the reference network, following reference/nago.md §2 line by line."""
    p_all, s_all = v["params"], v["batch_stats"]
    relu = lambda t: np.maximum(t, 0.0)
    sig = lambda w: 1.0 / (1.0 + np.exp(-w))

    def bn(t, p, s):
        mean, var = (t.mean((0, 1, 2)), t.var((0, 1, 2))) if train else (s["mean"], s["var"])
        return (t - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]

    def conv(t, p, **kw):
        return _np_conv(t, p["kernel"], p["bias"], **kw)

    def graph(dag, t, node):
        out = {}
        for u in range(dag.n):
            out[u] = node(u, [t] if u in dag.inputs else [out[w] for w in dag.preds[u]])
        return np.mean([out[o] for o in dag.outputs], axis=0)

    def merge(p, ts, conv_mask):
        if len(ts) == 1:
            return ts[0]
        return sum(conv(t, p[f"merge_conv{k}"], pad=0) if c else sig(p[f"merge_w{k}"]) * t
                   for k, (t, c) in enumerate(zip(ts, conv_mask, strict=True)))

    def op(p, s, ts):
        t = merge(p, ts, [False] * len(ts))
        return bn(conv(relu(t), p["conv"]), p["bn"], s["bn"])

    if image_size < 40:
        t = relu(bn(conv(x, p_all["stem_conv0"]), p_all["stem_bn0"], s_all["stem_bn0"]))
        stem = bn(conv(t, p_all["stem_conv1"]), p_all["stem_bn1"], s_all["stem_bn1"])
    else:
        def dwsep(t, p):
            c = t.shape[-1]
            return conv(conv(t, p["depthwise"], stride=2, groups=c), p["pointwise"], pad=0)
        t = relu(bn(dwsep(x, p_all["stem_conv0"]), p_all["stem_bn0"], s_all["stem_bn0"]))
        stem = bn(dwsep(t, p_all["stem_conv1"]), p_all["stem_bn1"], s_all["stem_bn1"])
    scale = 2 if image_size < 40 else 0.5
    cells = {}
    for c in range(h.top.n):
        pc, sc, preds = p_all[f"cell{c}"], s_all[f"cell{c}"], h.top.preds[c]
        res = int(image_size * scale / 2 ** (h.stages[c] + 1))
        ins = [_np_pool(cells[q], res) for q in preds] if preds else [_np_pool(stem, res)]
        r_in = RATIOS[h.stages[preds[-1]]] if preds else RATIOS[0]
        t = merge(pc, ins, [RATIOS[h.stages[q]] != r_in for q in preds])
        cells[c] = graph(h.mids[c], t, lambda j, ts, pc=pc, sc=sc, c=c: graph(
            h.bottoms[c][j], merge(pc[f"mid{j}"], ts, [False] * len(ts)),
            lambda o, us, j=j: op(pc[f"mid{j}"][f"op{o}"], sc[f"mid{j}"][f"op{o}"], us)))
    outs = h.top.outputs
    side = min(cells[o].shape[1] for o in outs)
    c_last = cells[outs[-1]].shape[-1]
    ys = []
    for k, o in enumerate(outs):
        t = _np_pool(cells[o], side)
        ys.append(conv(t, p_all[f"out_conv{k}"], pad=0) if t.shape[-1] != c_last else t)
    t = sum(ys) / len(ys)
    t = relu(bn(conv(relu(t), p_all["head_conv"], pad=0), p_all["head_bn"], s_all["head_bn"]))
    return t.mean((1, 2)) @ p_all["fc"]["kernel"] + p_all["fc"]["bias"]


def _perturb(v, seed=0):
    """Random BN statistics/affines and merge weights so that every term matters."""
    rng = np.random.default_rng(seed)

    def walk(tree, path):
        if not isinstance(tree, dict):
            a = np.asarray(tree)
            name = path[-1]
            if name == "var":
                return rng.uniform(0.5, 1.5, a.shape).astype(np.float32)
            if name in ("mean", "scale") or name.startswith("merge_w") or (
                    name == "bias" and path[-2].endswith("bn")):
                return (a + rng.normal(0, 0.3, a.shape)).astype(np.float32)
            return a
        return {k: walk(t, (*path, k)) for k, t in tree.items()}

    return walk(flax.core.unfreeze(v), ())


def _check_forward(h, width, image_size, batch=2, seed=0):
    """Eval- and train-mode logits (dropout off) equal the NumPy reference's."""
    net = HNAGNet(h, width, 10, image_size, dropout_rate=0.0)
    x = np.random.default_rng(seed).normal(size=(batch, image_size, image_size, 3))
    x = x.astype(np.float32)
    v = _perturb(net.init(jax.random.key(seed), jnp.asarray(x)), seed)
    ev, tr = jax.jit(lambda v, x: (net.apply(v, x, train=False), net.apply(
        v, x, train=True, mutable=["batch_stats"])[0]))(v, x)
    np.testing.assert_allclose(ev, _np_forward(h, v, x.astype(np.float64), width, image_size),
                               rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(tr, _np_forward(h, v, x.astype(np.float64), width, image_size,
                                               train=True), rtol=2e-4, atol=2e-4)
    return net, v, x


# ------------------------------------------------------------------------------ forward checks
def test_forward_matches_numpy_reference_with_merges_at_every_level():
    net, v, _ = _check_forward(H_MERGE, 2, 8)
    p = v["params"]
    # The merge into cell 2: cell 0 (ratio 1 != inplanes ratio 2) -> 1x1 conv, cell 1 -> sigmoid.
    assert p["cell2"]["merge_conv0"]["kernel"].shape == (1, 1, 2, 4)
    assert "merge_w0" not in p["cell2"] and np.shape(p["cell2"]["merge_w1"]) == ()
    assert "merge_w0" in p["cell1"]["mid2"] and "merge_w0" in p["cell1"]["mid2"]["op3"]
    assert not any(k.startswith("merge") for k in p["cell0"])  # one input: no weight
    init = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    assert init["params"]["cell2"]["merge_w1"].shape == ()


def test_merge_weights_start_at_one_so_sigmoid_is_0731():
    net = HNAGNet(H_MERGE, 2, 10, 8)
    p = jax.jit(net.init)(jax.random.key(1), jnp.zeros((1, 8, 8, 3)))["params"]
    ws = [p["cell2"]["merge_w1"], p["cell1"]["mid2"]["merge_w0"],
          p["cell1"]["mid2"]["merge_w1"], p["cell1"]["mid2"]["op3"]["merge_w1"]]
    np.testing.assert_array_equal(np.asarray(ws), 1.0)
    assert float(jax.nn.sigmoid(ws[0])) == pytest.approx(0.7311, abs=1e-4)


def test_forward_large_image_stem_and_non_divisible_pooling():
    # 40 px: stem stride 4 -> 10 px; stage sides 10, 5, 2 (5 -> 2 is not a divisor).
    assert [stage_resolution(40, s) for s in range(3)] == [10, 5, 2]
    _check_forward(H_MERGE, 2, 40, batch=2, seed=3)


def test_forward_rnag_hierarchy():
    h = graphs.sample(G.make("rnag"), (4, 2, 0.5, 5, 4, 0.5, 3, 2, 0.9))
    assert h.family == "rnag" and h.top == chain(3)
    _check_forward(h, 2, 8, seed=1)


def test_top_outputs_selected_by_node_id_not_position():
    net, v, x = _check_forward(H_IDS, 2, 8)
    f = jax.jit(lambda v, x: net.apply(v, x, train=False))
    base = f(v, x)
    np.testing.assert_allclose(base, _np_forward(H_IDS, v, x.astype(np.float64), 2, 8),
                               rtol=2e-4, atol=2e-4)
    # Cell 1 is an output cell feeding no other cell: averaging by position (cells 2 and 3)
    # would ignore it, so perturbing it must change the logits.
    w = jax.tree.map(lambda a: a, v)
    w["params"]["cell1"]["mid0"]["op0"]["bn"]["bias"] = (
        np.asarray(v["params"]["cell1"]["mid0"]["op0"]["bn"]["bias"]) + 1.0)
    assert not np.allclose(f(w, x), base, atol=1e-4)
    # One 1x1 output conv: cell 1 (m channels) -> cell 3's 4m; cell 3 passes through.
    assert v["params"]["out_conv0"]["kernel"].shape == (1, 1, 2, 8)
    assert "out_conv1" not in v["params"]


def test_adaptive_avg_pool_matches_pytorch_rule():
    x = np.random.default_rng(0).normal(size=(2, 7, 7, 3)).astype(np.float32)
    for size in (7, 3, 2, 1):
        got = jax.jit(adaptive_avg_pool, static_argnums=1)(x, size)
        np.testing.assert_allclose(got, _np_pool(x, size), rtol=1e-6, atol=1e-6)
    assert [stage_resolution(32, s) for s in range(3)] == [32, 16, 8]
    assert [stage_resolution(224, s) for s in range(3)] == [56, 28, 14]
    with pytest.raises(ValueError, match="no pixels"):
        stage_resolution(3, 2)


# ---------------------------------------------------------------------------- parameter counts
# Measured with the authors' PyTorch model (vega_NAGO logical_graph.py + vega layer.py/ops.py,
# `sum(p.numel())`), released seed scheme, thirds:
# (Table-3 optimum, limit, image size, classes) -> (m, parameters).
AUTHORS = {("bohb", "cifar10", 4e6, 32, 10): (45, 4225669),
           ("mobo", "cifar10", 4e6, 32, 10): (61, 4332294),
           ("bohb", "cifar10", 1e5, 64, 10): (7, 150073),
           ("mobo", "cifar100", 1e5, 32, 100): (9, 265069)}


@pytest.mark.parametrize("key", list(AUTHORS))
def test_param_count_equals_authors_pytorch_model(key):
    alg, dataset, limit, image, classes = key
    h = graphs.sample(G.make("hnag"), G.TABLE3[alg][dataset])
    m = graphs.channel_multiplier(h, limit)
    assert (m, param_count(h, m, classes, image)) == AUTHORS[key]


def _sampled():
    space = G.make("hnag")
    xs = [(3, 2, 0.5, 2, 0.5, 3, 2, 0.5), (5, 4, 0.7, 3, 0.9, 4, 3, 0.3),
          (7, 3, 0.6, 1, 0.5, 3, 2, 0.8), (4, 5, 1.0, 3, 1.0, 3, 5, 0.9)]
    hs = [graphs.sample(space, x) for x in xs]
    hs.append(graphs.sample(space, xs[2], stage_ratios=graphs.RELEASED_STAGE_RATIOS))
    hs.append(graphs.sample(G.make("rnag"), (6, 4, 0.5, 3, 2, 0.1, 5, 2, 1.0)))
    return [h for h in hs if isinstance(h, Hierarchy)]


def test_param_count_closed_form_matches_linen_for_sampled_and_edge_cases():
    hs = [*_sampled(), H_MERGE, H_IDS, H_MIN]
    assert len(hs) == 9
    assert any(len(h.top.outputs) > 1 for h in hs) and any(h.top.n == 3 for h in hs)
    for i, h in enumerate(hs):
        for width, classes, image in ((3, 10, 32), (4, 100, 40)):
            net = HNAGNet(h, width, classes, image)
            assert _n_params(net, image) == param_count(h, width, classes, image), (i, width)


def _base_count(h, m):
    """The authors' count: 9 * c_in * c_out over the bottom-level 3x3 convs of the network."""
    shapes = jax.eval_shape(HNAGNet(h, m, 10, 8).init, jax.random.key(0),
                            jnp.zeros((1, 8, 8, 3)))
    flat = flax.traverse_util.flatten_dict(shapes["params"])
    return sum(math.prod(s.shape[:3]) * s.shape[3] for k, s in flat.items()
               if len(k) >= 4 and k[-3].startswith("op") and k[-1] == "kernel")


def test_channel_multiplier_is_the_largest_width_within_the_limit():
    assert _base_count(H_MERGE, 1) == 891  # by hand: cells 27 + 216 + 648
    for h in (*_sampled()[:2], H_MERGE):
        base1 = _base_count(h, 1)
        assert _base_count(h, 3) == 9 * base1  # channels r * m: the count scales with m^2
        for limit in (3e3, 2e4, 1e5):
            m = graphs.channel_multiplier(h, limit)
            assert m * m * base1 <= limit < (m + 1) ** 2 * base1, (limit, m)


# ---------------------------------------------------------------------------------------- init
def test_init_distributions_follow_pytorch():
    net = HNAGNet(H_MERGE, 16, 10, 8)
    p = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    k3 = np.asarray(p["cell2"]["mid0"]["op0"]["conv"]["kernel"])  # 32 -> 64, 3x3
    assert k3.shape == (3, 3, 32, 64)
    assert k3.std() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.04)  # fan_out, not fan_in
    assert np.abs(k3).max() > 3.5 * k3.std()  # normal, not truncated at 2 std
    k1 = np.asarray(p["cell2"]["merge_conv0"]["kernel"])  # 16 -> 32, 1x1: fan_out 32
    assert k1.std() == pytest.approx(math.sqrt(2 / 32), rel=0.15)
    stem = np.asarray(p["stem_conv0"]["kernel"])  # 3 -> 16: fan_out 16 * 9
    assert stem.std() == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.15)
    for bias, fan_in in ((p["cell2"]["mid0"]["op0"]["conv"]["bias"], 32 * 9),
                         (p["head_conv"]["bias"], 64), (p["fc"]["bias"], 1280)):
        bound = 1 / math.sqrt(fan_in)
        assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.5 * bound
    fc = np.asarray(p["fc"]["kernel"])
    assert fc.std() == pytest.approx(1 / math.sqrt(1280) / math.sqrt(3), rel=0.05)
    np.testing.assert_array_equal(p["head_bn"]["scale"], 1.0)
    np.testing.assert_array_equal(p["head_bn"]["bias"], 0.0)


# ------------------------------------------------------------------------------------ training
def test_engine_training_vmapped_over_learning_rates_and_dropout():
    model = make_model(H_MIN, 2, 10, 8)
    rng = np.random.default_rng(0)
    img = lambda n: jnp.asarray(rng.integers(0, 256, (n, 8, 8, 3), np.uint8))
    lab = lambda n: jnp.asarray(rng.integers(0, 10, n), jnp.int32)
    data = TrainData(img(64), lab(64), img(16), lab(16), img(16), lab(16))
    trainer = make_train(model, Protocol(batch_size=32, n_train=64, n_valid=16, n_test=16,
                                         epochs=1, train_eval=False))
    lrs = jnp.array([0.05, 0.5])
    hp = HParams(learning_rate=lrs, momentum=jnp.full(2, 0.9), weight_decay=jnp.full(2, 5e-4))
    run = jax.jit(jax.vmap(trainer.train, in_axes=(None, 0, None, None)))
    state, metrics = run(jax.random.key(0), hp, (), data)
    for name in ("train_loss", "valid_loss", "test_loss", "train_acc", "test_acc"):
        vals = np.asarray(getattr(metrics, name))
        assert vals.shape == (2, 1) and np.all(np.isfinite(vals)), name
    assert not np.asarray(metrics.nonfinite).any()
    fc = np.asarray(state.params["fc"]["kernel"])
    assert not np.allclose(fc[0], fc[1])  # the two learning rates trained differently

    variables = model.init(jax.random.key(1), ())
    x = jnp.asarray(rng.normal(size=(4, 8, 8, 3)), jnp.float32)
    mask = jnp.ones(4, bool)
    train = jax.jit(lambda k: model.apply_train(variables, x, (), mask, k)[0])
    evaluate = jax.jit(lambda: model.apply_eval(variables, x, ()))
    a, b = train(jax.random.key(2)), train(jax.random.key(3))
    assert not np.allclose(a, b)  # dropout draws from the per-step key
    np.testing.assert_array_equal(a, train(jax.random.key(2)))
    np.testing.assert_array_equal(evaluate(), evaluate())  # no dropout in eval mode
