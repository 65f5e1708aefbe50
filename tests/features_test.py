"""NAP2 meta-features: statistics vs NumPy/SciPy, map layout, the snapshot hook in training."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from nhb.nap2 import features as F
from nhb.train import HParams, Protocol, TrainData, make_train
from nhb.train.model import linen_model


def _ref_stats(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    with np.errstate(all="ignore"):
        return np.stack([x.max(-1), x.min(-1), x.mean(-1), x.var(-1), x.std(-1),
                         np.median(x, -1), np.quantile(x, 0.25, -1), np.quantile(x, 0.75, -1),
                         scipy.stats.skew(x, -1), scipy.stats.kurtosis(x, -1, fisher=False),
                         np.abs(x).sum(-1), np.sqrt((x**2).sum(-1))], -1)


def test_stats_table_has_twelve_named_statistics():
    assert F.NUM_STATS == 12 and len(set(F.STATS)) == 12


@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_statistics_equal_numpy_scipy(n):
    x = np.random.default_rng(n).standard_t(3, size=(6, n)).astype(np.float32) * 0.05
    got = np.asarray(jax.jit(F.statistics)(jnp.asarray(x)))
    ref = _ref_stats(x)
    finite = np.isfinite(ref)
    np.testing.assert_allclose(got[finite], ref[finite], rtol=2e-4, atol=1e-5)


def test_constant_layer_and_nonfinite_values_are_cleaned():
    const = jnp.full((3, 3, 2, 4), 0.5)
    m = np.asarray(F.layer_map(const, jnp.arange(99, dtype=jnp.int32) % 18, 18))
    # variance/std 0; skewness and kurtosis are 0/0 = NaN -> 0
    np.testing.assert_allclose(m[0], [0.5, 0.5, 0.5, 0, 0, 0.5, 0.5, 0.5, 0, 0, 36, np.sqrt(18)],
                               atol=1e-6)
    x = jnp.array([[1.0, jnp.nan, 2.0], [jnp.inf, 1.0, 0.0], [-jnp.inf, 1.0, 0.0]])
    s = np.asarray(F.clean(F.statistics(x)))
    assert np.isfinite(s).all()
    assert s[0, 0] == 0.0  # NaN max -> 0
    assert s[1, 0] == F.INF_VALUE and s[2, 1] == -F.INF_VALUE
    assert np.abs(s).max() <= F.INF_VALUE


def test_layer_groups_follow_the_paper():
    conv = jnp.arange(4 * 4 * 3 * 128, dtype=jnp.float32).reshape(4, 4, 3, 128)
    g = F.layer_groups(conv)
    assert g.shape == (48, 128)  # the paper's 3 x 4 x 4 = 48 positions
    np.testing.assert_array_equal(g[5], conv[0, 1, 2])  # position (kh=0, kw=1, in=2)
    dense = jnp.arange(20.0).reshape(4, 5)  # [in, out]
    np.testing.assert_array_equal(F.layer_groups(dense)[3], dense[:, 3])  # neuron 3's inputs
    with pytest.raises(ValueError, match=r"2-D .* or 4-D"):
        F.layer_groups(jnp.zeros(3))


def test_map_layout_sampling_and_padding():
    k = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3, 16, 8)), jnp.float32)
    idx, n = F.sample_groups(jax.random.key(3), 144)
    assert n == 99 and len(set(np.asarray(idx).tolist())) == 99  # without replacement
    idx2, _ = F.sample_groups(jax.random.key(3), 144)
    np.testing.assert_array_equal(idx, idx2)  # fixed key, same rows
    m = np.asarray(jax.jit(F.layer_map, static_argnums=2)(k, idx, n))
    assert m.shape == (100, 12)
    np.testing.assert_allclose(m[0], _ref_stats(np.asarray(k).reshape(-1)), rtol=1e-4,
                               atol=1e-6)
    groups = np.asarray(k).reshape(-1, 8)
    np.testing.assert_allclose(m[1:], _ref_stats(groups[np.asarray(idx)]), rtol=1e-4,
                               atol=1e-6)
    small = jnp.ones((5, 3)) * jnp.arange(3.0)  # dense: 3 neurons -> rows 1..3, zeros after
    idx, n = F.sample_groups(jax.random.key(0), 3)
    assert n == 3
    m = np.asarray(F.layer_map(small, idx, n))
    np.testing.assert_allclose(m[1:4, 2], [0, 1, 2])  # neuron means, in order
    assert not m[4:].any()


def test_kernel_paths_call_order_and_truncation():
    params = {"b": {"kernel": jnp.zeros((3, 3, 1, 2)), "bias": jnp.zeros(2)},
              "a": {"kernel": jnp.zeros((2, 2))}, "bn": {"scale": jnp.zeros(2)}}
    assert F.kernel_paths(params) == [("a", "kernel"), ("b", "kernel")]
    assert F.kernel_paths(params, [("b",), ("bn",), ("a",)]) == [("b", "kernel"),
                                                                  ("a", "kernel")]
    assert F.kernel_paths(params, [("b",), ("a",)], max_layers=1) == [("b", "kernel")]
    many = {f"l{i:03d}": {"kernel": jnp.zeros((2, 2))} for i in range(70)}
    assert len(F.kernel_paths(many)) == F.MAX_LAYERS


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, train, mask=None):
        h = nn.relu(nn.Conv(4, (3, 3), strides=(4, 4), name="z_conv")(x))
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        return nn.Dense(10, name="a_dense")(jnp.mean(h, axis=(1, 2)))


def _data(n):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3)), jnp.uint8)
    y = jnp.asarray(rng.integers(0, 10, n), jnp.int32)
    return TrainData(x, y, x, y, x, y)


def test_snapshot_hook_records_every_s_steps_in_network_order_and_in_vmapped_groups():
    n, bs, epochs = 48, 16, 3  # 3 steps per epoch, 9 steps
    spec = F.SnapshotSpec(every=2, count=4, valid_images=32)
    model = linen_model(_Net(), takes_inputs=False)
    protocol = Protocol(batch_size=bs, n_train=n, n_valid=n, n_test=n, epochs=epochs)
    t = make_train(model, protocol, spec(model))
    plain = make_train(model, protocol)
    data = _data(n)
    hp = HParams(learning_rate=jnp.float32(0.1))
    state, metrics = jax.jit(t.train)(jax.random.key(0), hp, None, data)
    _, m_plain = jax.jit(plain.train)(jax.random.key(0), hp, None, data)
    np.testing.assert_array_equal(metrics.test_loss, m_plain.test_loss)  # no side effects
    rec = F.recorded(state.hook)
    assert set(rec) == set(F.RECORDED)
    assert rec["weights"].shape == (4, 2, 100, 12) and bool(rec["taken"].all())
    assert spec.steps_needed() == 9

    # snapshot k is taken after k*every updates: replay the run and compare
    def spy_init(params, inputs):
        return {"w": jnp.zeros((4, *params["z_conv"]["kernel"].shape)),
                "g": jnp.zeros((4, *params["z_conv"]["kernel"].shape))}

    def spy_update(h, step, params, grads, ctx):
        k = step // 2 - 1
        ok = (step % 2 == 0) & (k >= 0) & (k < 4)
        kk = jnp.clip(k, 0, 3)
        return {"w": jnp.where(ok, h["w"].at[kk].set(params["z_conv"]["kernel"]), h["w"]),
                "g": jnp.where(ok, h["g"].at[kk].set(grads["z_conv"]["kernel"]), h["g"])}

    from nhb.train.model import StepHook
    spy = make_train(model, protocol, StepHook(spy_init, spy_update))
    s_spy, _ = jax.jit(spy.train)(jax.random.key(0), hp, None, data)
    # the conv kernel [3, 3, 3, 4] has 27 positions
    idx, nv = F.sample_groups(jax.random.fold_in(jax.random.key(spec.seed), 0), 27)
    for k in range(4):
        # layer 0 is the conv (called first) although "a_dense" sorts first by name
        np.testing.assert_allclose(rec["weights"][k, 0], F.layer_map(
            s_spy.hook["w"][k], idx, nv), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rec["grads"][k, 0], F.layer_map(
            s_spy.hook["g"][k], idx, nv), rtol=1e-5, atol=1e-6)
    assert 0.0 < float(rec["valid_loss"][0]) < 10.0

    # a vmapped group records the same snapshots as one-by-one runs
    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
    hps = HParams(learning_rate=jnp.array([0.1, 0.05]), momentum=jnp.full(2, 0.9),
                  weight_decay=jnp.full(2, 5e-4))
    g_state, _ = jax.jit(jax.vmap(t.train, in_axes=(0, 0, None, None)))(keys, hps, None, data)
    for i in range(2):
        one, _ = jax.jit(t.train)(keys[i], jax.tree.map(lambda a, i=i: a[i], hps), None, data)
        for name in ("weights", "grads", "valid_loss"):
            np.testing.assert_allclose(g_state.hook[name][i], one.hook[name], rtol=2e-4,
                                       atol=1e-5)
    assert not np.allclose(g_state.hook["weights"][0], g_state.hook["weights"][1])


def test_snapshot_spec_validates_and_is_hashable():
    with pytest.raises(ValueError, match="every must be >= 1"):
        F.SnapshotSpec(every=0, count=3)
    with pytest.raises(ValueError, match="valid_images must be >= 0"):
        F.SnapshotSpec(every=1, count=3, valid_images=-1)
    assert hash(F.SnapshotSpec(2, 3)) == hash(F.SnapshotSpec(2, 3))
