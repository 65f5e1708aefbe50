"""Tests for `nhb.models.hnag_init`: the one-draw initialiser has `HNAGNet.init`'s tree and
distributions."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb.models.hnag import HNAGNet
from nhb.models.hnag_init import fast_init, fast_model
from nhb.nago import graphs
from nhb.space import generators

H = graphs.sample(generators.make("hnag", "tiny"), (4, 2, 0.5, 2, 1.0, 3, 2, 0.5))


def _shapes(width=6, image_size=32):
    net = HNAGNet(H, width, 10, image_size)
    x = jnp.zeros((1, image_size, image_size, 3))
    return net, jax.eval_shape(lambda k: net.init(k, x, train=False), jax.random.key(0))


def _flat(tree):
    return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_same_tree_and_constants_as_the_modules_init():
    net, shapes = _shapes()
    ours = _flat(jax.jit(lambda k: fast_init(k, shapes))(jax.random.key(1)))
    ref = _flat(net.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)), train=False))
    assert ours.keys() == ref.keys()
    for name, v in ref.items():
        assert ours[name].shape == v.shape and ours[name].dtype == v.dtype, name
        if "merge_w" in name or "scale" in name or "['var']" in name or (
                "bn" in name and "bias" in name) or "['mean']" in name:
            np.testing.assert_array_equal(np.asarray(ours[name]), np.asarray(v), err_msg=name)
    assert any("merge_w" in n for n in ref)


def test_distributions_match_kaiming_fan_out_and_torch_defaults():
    _, shapes = _shapes(width=24)
    v = _flat(fast_init(jax.random.key(3), shapes))
    convs = [n for n in v if n.endswith("['kernel']") and v[n].ndim == 4 and v[n].size > 2000]
    assert convs
    for n in convs:
        kh, kw, _, o = v[n].shape
        want = math.sqrt(2.0 / (kh * kw * o))
        assert float(np.std(np.asarray(v[n]))) == pytest.approx(want, rel=0.1), n
        assert abs(float(np.mean(np.asarray(v[n])))) < 0.2 * want
        bias = np.asarray(v[n.replace("kernel", "bias")])
        bound = 1 / math.sqrt(math.prod(v[n].shape[:-1]))
        assert np.all(np.abs(bias) <= bound)
    fc = np.asarray(v["['params']['fc']['kernel']"])
    bound = 1 / math.sqrt(fc.shape[0])
    assert np.abs(fc).max() <= bound and np.abs(fc).max() > 0.9 * bound  # uniform, not normal
    a = _flat(fast_init(jax.random.key(4), shapes))
    assert not np.array_equal(np.asarray(a[convs[0]]), np.asarray(v[convs[0]]))


def test_fast_model_trains_like_make_model():
    model = fast_model(H, 4, 10, 32)
    variables = model.init(jax.random.key(0), None)
    x = jnp.ones((2, 32, 32, 3))
    logits, stats = model.apply_train(variables, x, None, jnp.ones(2, bool), jax.random.key(1))
    assert logits.shape == (2, 10) and np.isfinite(np.asarray(logits)).all()
    assert jax.tree.structure(stats) == jax.tree.structure(variables["batch_stats"])
    with pytest.raises(ValueError, match="no rule"):
        fast_init(jax.random.key(0), {"params": {"weird": jnp.zeros(3)}})
