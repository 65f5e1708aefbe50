"""Tests for nhb.models.nap2: Table 1 shapes, padding, input transform, LSTM causality."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb.models.nap2 import (
    AccuracyLSTM,
    FeatureAutoencoder,
    SpreadConvTranspose,
    input_transform,
)


def test_table1_shapes_at_paper_widths():
    model = FeatureAutoencoder()  # paper widths (512, 256), embedding 128, 65 layers
    x = jax.ShapeDtypeStruct((1, 65, 100, 12), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    (recon, emb), inter = jax.eval_shape(
        lambda v, x: model.apply(v, x, False, capture_intermediates=True,
                                 mutable=["intermediates"]), variables, x)
    got = {k: v["__call__"][0].shape for k, v in inter["intermediates"].items()
           if k.startswith(("enc_", "dec_", "out_"))}
    assert got == {
        "enc_conv1": (1, 65, 1, 512),    # Table 1 layer 1: kernel (1, 100), 512 filters
        "enc_conv2": (1, 1, 1, 256),     # layer 2: kernel (65, 1), 256 filters
        "enc_dense": (1, 128),           # layer 3: embedding
        "dec_dense": (1, 256),
        "dec_convt1": (1, 65, 1, 256),   # layer 4: kernel (65, 1), 256 filters
        "dec_convt2": (1, 65, 100, 512),  # layer 5: kernel (1, 100), 512 filters
        "out_conv": (1, 65, 100, 12),
    }
    assert recon.shape == (1, 65, 100, 12) and emb.shape == (1, 128)
    p = variables["params"]
    assert p["enc_conv1"]["kernel"].shape == (1, 100, 12, 512)
    assert p["enc_conv2"]["kernel"].shape == (65, 1, 512, 256)
    assert p["dec_convt1"]["kernel"].shape == (65, 1, 256, 256)
    assert p["dec_convt2"]["kernel"].shape == (1, 100, 256, 512)
    assert len(variables["batch_stats"]) == 6  # BN after every layer but the reconstruction


@pytest.mark.parametrize("shape,kernel", [((2, 1, 1, 5), (7, 1)), ((2, 4, 1, 5), (1, 6)),
                                          ((2, 1, 1, 3), (4, 5))])
def test_spread_conv_transpose_equals_flax(shape, kernel):
    x = jax.random.normal(jax.random.key(1), shape)
    ours, ref = SpreadConvTranspose(4, kernel), nn.ConvTranspose(4, kernel, padding="VALID")
    v = ours.init(jax.random.key(0), x)
    v_ref = ref.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, v_ref)
    v = jax.tree.map(lambda a: a + 0.1, v)  # nonzero bias too
    y = jax.jit(ours.apply)(v, x)
    np.testing.assert_allclose(y, ref.apply(v, x), rtol=1e-5, atol=1e-5)
    assert y.shape == ref.apply(v, x).shape
    with pytest.raises(ValueError, match="spatial size 1"):
        ours.apply(v, jnp.ones((2, 2, 2, shape[3])))


def test_padding_inside_equals_explicit_zero_padding():
    model = FeatureAutoencoder(widths=(8, 6), embedding=5)
    x = jax.random.normal(jax.random.key(2), (3, 30, 100, 12))
    xp = jnp.pad(x, ((0, 0), (0, 35), (0, 0), (0, 0)))
    variables = model.init(jax.random.key(0), xp)
    ev = jax.jit(lambda v, x: model.apply(v, x, False))
    tr = jax.jit(lambda v, x: model.apply(v, x, True, mutable=["batch_stats"]))
    (r1, e1), (r2, e2) = ev(variables, x), ev(variables, xp)
    assert r1.shape == (3, 65, 100, 12) and e1.shape == (3, 5)
    np.testing.assert_allclose(r1, r2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(e1, e2, rtol=1e-6, atol=1e-6)
    ((r1, e1), s1), ((r2, e2), s2) = tr(variables, x), tr(variables, xp)
    np.testing.assert_allclose(r1, r2, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), s1, s2)
    np.testing.assert_allclose(e1, e2, rtol=1e-5, atol=1e-5)
    enc = jax.jit(lambda v, x: model.apply(v, x, False, method=FeatureAutoencoder.encode))
    np.testing.assert_allclose(enc(variables, x), ev(variables, x)[1], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="max_layers"):
        model.apply(variables, jnp.zeros((1, 66, 100, 12)), False)


def test_input_transform_matches_numpy():
    v = np.array([0.0, 1e7, -1e7, -3.5, 2.0, 1e-8, -1e-8, 0.5, -123.25], np.float32)
    got = np.asarray(jax.jit(input_transform)(v))
    want = np.sign(v.astype(np.float64)) * np.log1p(np.abs(v.astype(np.float64)))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)
    assert got[0] == 0.0 and got[1] == pytest.approx(16.118, abs=1e-3) and got[2] == -got[1]
    assert got.dtype == np.float32


def test_lstm_is_causal_and_bounded():
    model = AccuracyLSTM(hidden=8)
    x = jax.random.normal(jax.random.key(3), (3, 7, 5)) * 3
    variables = model.init(jax.random.key(0), x)
    f = jax.jit(model.apply)
    p = np.asarray(f(variables, x))
    assert p.shape == (3, 7) and np.all((p > 0) & (p < 1))
    for t in (0, 3, 5):
        x2 = x.at[:, t + 1:].set(jax.random.normal(jax.random.key(t), (3, 6 - t, 5)) * 5)
        p2 = np.asarray(f(variables, x2))
        np.testing.assert_array_equal(p2[:, :t + 1], p[:, :t + 1])
        assert np.all(np.abs(p2[:, t + 1:] - p[:, t + 1:]) > 0)
