"""Tests for nhb.models.layers: PyTorch-faithful BatchNorm, conv, dense, pooling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb.models.layers import (
    CONV_IMPLS,
    ResNetReduction,
    TorchBatchNorm,
    TorchConv,
    TorchDense,
    avg_pool3x3,
    conv2d,
)

EPS = 1e-5
MOM = 0.1


def _torch_bn_train(x: np.ndarray, scale, bias, rmean, rvar):
    """PyTorch BatchNorm2d train step in NumPy (NHWC, float64)."""
    x = x.astype(np.float64)
    n = x.shape[0] * x.shape[1] * x.shape[2]
    mean = x.mean(axis=(0, 1, 2))
    var_b = ((x - mean) ** 2).mean(axis=(0, 1, 2))
    var_u = var_b * n / (n - 1)
    y = (x - mean) / np.sqrt(var_b + EPS) * scale + bias
    return y, (1 - MOM) * rmean + MOM * mean, (1 - MOM) * rvar + MOM * var_u


def _bn_vars(c: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {"scale": rng.uniform(0.5, 1.5, c).astype(np.float32),
              "bias": rng.normal(size=c).astype(np.float32)}
    stats = {"mean": rng.normal(size=c).astype(np.float32),
             "var": rng.uniform(0.5, 2.0, c).astype(np.float32)}
    return {"params": params, "batch_stats": stats}


@jax.jit
def _bn_train(variables, x, mask):
    return TorchBatchNorm().apply(variables, x, True, mask, mutable=["batch_stats"])


@jax.jit
def _bn_train_nomask(variables, x):
    return TorchBatchNorm().apply(variables, x, True, mutable=["batch_stats"])


@jax.jit
def _bn_eval(variables, x):
    return TorchBatchNorm().apply(variables, x, False)


def test_batchnorm_init_defaults():
    x = jnp.ones((2, 3, 3, 4))
    v = TorchBatchNorm().init(jax.random.key(0), x, True)
    np.testing.assert_array_equal(v["params"]["scale"], np.ones(4))
    np.testing.assert_array_equal(v["params"]["bias"], np.zeros(4))
    # Running stats start at 0 / 1 and are not touched by init, even in train mode.
    np.testing.assert_array_equal(v["batch_stats"]["mean"], np.zeros(4))
    np.testing.assert_array_equal(v["batch_stats"]["var"], np.ones(4))


def test_batchnorm_train_and_eval_match_torch_semantics():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(4, 3, 5, 6)) * 2.0 + 0.7).astype(np.float32)
    v = _bn_vars(6)
    y, upd = _bn_train_nomask(v, jnp.asarray(x))
    y_ref, m_ref, v_ref = _torch_bn_train(x, v["params"]["scale"], v["params"]["bias"],
                                          v["batch_stats"]["mean"], v["batch_stats"]["var"])
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], m_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(upd["batch_stats"]["var"], v_ref, rtol=1e-5, atol=1e-6)
    # The unbiased correction is really applied (n = 60 here, so the factor is 60/59).
    var_b = x.astype(np.float64).var(axis=(0, 1, 2))
    biased_update = (1 - MOM) * v["batch_stats"]["var"] + MOM * var_b
    assert np.all(np.abs(np.asarray(upd["batch_stats"]["var"]) - biased_update) > 1e-4)

    # Eval mode normalises with the running statistics.
    v2 = {"params": v["params"], "batch_stats": upd["batch_stats"]}
    y_eval = _bn_eval(v2, jnp.asarray(x))
    s = v2["batch_stats"]
    ref = ((x - np.asarray(s["mean"])) / np.sqrt(np.asarray(s["var"]) + EPS)
           * v["params"]["scale"] + v["params"]["bias"])
    np.testing.assert_allclose(y_eval, ref, rtol=1e-5, atol=1e-5)


def test_batchnorm_mask_equals_valid_rows_only():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 2, 3, 4)).astype(np.float32)
    mask = np.array([True, False, True, True, False])
    v = _bn_vars(4, seed=3)
    y, upd = _bn_train(v, jnp.asarray(x), jnp.asarray(mask))
    y_valid, upd_valid = _bn_train_nomask(v, jnp.asarray(x[mask]))
    np.testing.assert_allclose(np.asarray(y)[mask], y_valid, rtol=1e-5, atol=1e-5)
    for k in ("mean", "var"):
        np.testing.assert_allclose(upd["batch_stats"][k], upd_valid["batch_stats"][k],
                                   rtol=1e-5, atol=1e-6)
    # A float mask gives the same answer; an all-ones mask equals mask=None.
    y_f, _ = _bn_train(v, jnp.asarray(x), jnp.asarray(mask, jnp.float32))
    np.testing.assert_allclose(y_f, y, rtol=1e-6, atol=1e-6)
    y_ones, upd_ones = _bn_train(v, jnp.asarray(x), jnp.ones(5, bool))
    y_none, upd_none = _bn_train_nomask(v, jnp.asarray(x))
    np.testing.assert_allclose(y_ones, y_none, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(upd_ones["batch_stats"]["var"], upd_none["batch_stats"]["var"],
                               rtol=1e-5)


def test_batchnorm_all_masked_keeps_running_stats():
    x = jnp.ones((3, 2, 2, 4))
    v = _bn_vars(4, seed=4)
    y, upd = _bn_train(v, x, jnp.zeros(3, bool))
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(upd["batch_stats"]["mean"], v["batch_stats"]["mean"])
    np.testing.assert_array_equal(upd["batch_stats"]["var"], v["batch_stats"]["var"])


def test_conv_and_dense_torch_init():
    x = jnp.zeros((1, 8, 8, 64))
    conv = TorchConv(64, 3, 1, 1, True)
    p = jax.jit(conv.init)(jax.random.key(0), x)["params"]
    bound = 1.0 / np.sqrt(64 * 9)
    k, b = np.asarray(p["kernel"]), np.asarray(p["bias"])
    assert k.shape == (3, 3, 64, 64) and b.shape == (64,)
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.99 * bound
    np.testing.assert_allclose(k.std(), bound / np.sqrt(3), rtol=0.02)  # uniform's std
    assert abs(k.mean()) < 0.02 * bound
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.7 * bound

    dense = TorchDense(10)
    pd = jax.jit(dense.init)(jax.random.key(1), jnp.zeros((1, 64)))["params"]
    bound_d = 1.0 / np.sqrt(64)
    assert np.abs(np.asarray(pd["kernel"])).max() <= bound_d
    assert np.abs(np.asarray(pd["kernel"])).max() > 0.9 * bound_d
    assert np.abs(np.asarray(pd["bias"])).max() <= bound_d


def _np_conv(x: np.ndarray, k: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Plain NHWC cross-correlation with symmetric zero padding (PyTorch Conv2d)."""
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh = k.shape[0]
    ho = (xp.shape[1] - kh) // stride + 1
    wo = (xp.shape[2] - kh) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, k.shape[-1]))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kh, :]
            out[:, i, j] = np.einsum("bhwc,hwco->bo", patch, k)
    return out


def test_strided_conv_uses_symmetric_torch_padding():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    conv = TorchConv(4, 3, stride=2, padding=1, use_bias=True)
    v = conv.init(jax.random.key(0), jnp.asarray(x))
    y = jax.jit(conv.apply)(v, jnp.asarray(x))
    p = v["params"]
    ref = _np_conv(x, np.asarray(p["kernel"]), 2, 1) + np.asarray(p["bias"])
    assert y.shape == (2, 3, 3, 4)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_avg_pool_counts_padding():
    x = jnp.ones((1, 4, 4, 1))
    y = np.asarray(jax.jit(avg_pool3x3)(x))[0, :, :, 0]
    assert y[0, 0] == pytest.approx(4 / 9)
    assert y[0, 1] == pytest.approx(6 / 9)
    assert y[1, 1] == pytest.approx(1.0)


def test_resnet_reduction_matches_hand_computation():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
    block = ResNetReduction(5)
    v = block.init(jax.random.key(2), jnp.asarray(x), False)
    y = jax.jit(lambda v, x: block.apply(v, x, False))(v, jnp.asarray(x))
    assert y.shape == (3, 2, 2, 5)
    p, s = v["params"], v["batch_stats"]

    def relu_conv_bn(h, name, stride):
        c = p[name]["conv"]
        z = _np_conv(np.maximum(h, 0), np.asarray(c["kernel"]), stride, 1) + np.asarray(c["bias"])
        st = s[name]["bn"]
        return (z - np.asarray(st["mean"])) / np.sqrt(np.asarray(st["var"]) + EPS)

    branch = relu_conv_bn(relu_conv_bn(x, "conv_a", 2), "conv_b", 1)
    pooled = x.reshape(3, 2, 2, 2, 2, 2).mean(axis=(2, 4))
    sc = p["shortcut"]
    short = _np_conv(pooled, np.asarray(sc["kernel"]), 1, 0) + np.asarray(sc["bias"])
    np.testing.assert_allclose(y, branch + short, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k,stride,pad", [(3, 1, 1), (3, 2, 1), (1, 1, 0)])
def test_conv_impls_agree_with_numpy_values_and_grads_under_vmap(k, stride, pad):
    rng = np.random.default_rng(k + stride)
    x = rng.normal(size=(3, 2, 6, 6, 4)).astype(np.float32)  # 3 members
    w = rng.normal(size=(3, k, k, 4, 5)).astype(np.float32)
    ref = np.stack([_np_conv(x[g], w[g], stride, pad) for g in range(3)])

    def loss(impl):
        def f(xg, wg):
            y = conv2d(xg, wg, stride, pad, impl)
            return jnp.sum(jnp.sin(y)), y
        return jax.jit(jax.vmap(jax.value_and_grad(f, argnums=(0, 1), has_aux=True)))

    (_, y_ref), g_ref = loss("xla")(x, w)
    np.testing.assert_allclose(y_ref, ref, rtol=1e-4, atol=1e-4)
    for impl in CONV_IMPLS[1:]:
        (_, y), g = loss(impl)(x, w)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
        for a, b in zip(g, g_ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"xla.*patches.*shifts.*elementwise"):
        conv2d(jnp.asarray(x[0]), jnp.asarray(w[0]), stride, pad, "winograd")
