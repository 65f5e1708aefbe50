"""Tests for the NAGO generator spaces: ranges, the ConfigSpace-0.4 unit encoding, sampling,
mutation, validation and the ConfigSpace export."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb.space import generators as g


def test_ranges_of_both_hnag_sets_and_rnag():
    paper, released = g.make("hnag", "paper"), g.make("hnag", "released")
    assert paper.names == g.HNAG_NAMES and paper.dim == 8
    assert paper.describe() == ("top_n int [3, 10], top_k int [2, 5], top_p float [0.1, 1], "
                                "mid_n int [1, 10], mid_p float [0.1, 1], bottom_n int [3, 10], "
                                "bottom_k int [2, 5], bottom_p float [0.1, 1]")
    assert "mid_n int [3, 10], mid_p float [0.2, 1]" in released.describe()
    rnag = g.make("rnag")
    assert rnag.names == g.RNAG_NAMES and rnag.dim == 9
    rnag.validate(g.RNAG_D)
    for optimum in (*g.TABLE3["bohb"].values(), *g.TABLE3["mobo"].values()):
        paper.validate(optimum)  # Table 3 lies inside the paper's (inferred) ranges
    with pytest.raises(ValueError, match="mid_n=1"):
        released.validate(g.TABLE3["bohb"]["cifar10"])


def test_bad_names_and_vectors_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"valid: \('hnag', 'rnag'\)"):
        g.make("nago")
    with pytest.raises(ValueError, match=r"valid: \('paper', 'released', 'cpu', 'tiny'\)"):
        g.make("hnag", "nhb")
    sp = g.make("hnag")
    with pytest.raises(ValueError, match=r"top_n=11.*valid ranges \(paper\): top_n int \[3, 10\]"):
        sp.validate((11, 2, .5, 1, .5, 3, 2, .5))
    with pytest.raises(ValueError, match=r"top_k=2.5"):
        sp.validate((3, 2.5, .5, 1, .5, 3, 2, .5))
    with pytest.raises(ValueError, match="expected 8 values, got 3"):
        sp.validate((3, 2, .5))
    with pytest.raises(ValueError, match="mid_p=nan"):
        sp.validate((3, 2, .5, 1, np.nan, 3, 2, .5))


def test_unit_encoding_is_configspace_04s():
    sp = g.make("hnag")
    x = np.array(g.TABLE3["bohb"]["cifar10"], np.float32)
    u = np.asarray(jax.jit(sp.to_unit)(x))
    # ConfigSpace 0.4 (HpBandSter's): an int on [lo - 0.49999, hi + 0.49999], floats linear
    assert u[0] == pytest.approx((8 - 2.50001) / 7.99998, abs=1e-6)  # top_n in [3, 10]
    assert u[3] == pytest.approx((1 - 0.50001) / 9.99998, abs=1e-6)  # mid_n in [1, 10]
    assert u[2] == pytest.approx((0.6 - 0.1) / 0.9, abs=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(sp.from_unit)(u)), x, atol=1e-6)
    # the unit ends map to the range ends, every value owns an equal share of [0, 1]
    np.testing.assert_array_equal(np.asarray(sp.from_unit(jnp.zeros(8))), sp.low)
    np.testing.assert_allclose(np.asarray(sp.from_unit(jnp.ones(8))), sp.high, rtol=1e-6)
    cut = (np.arange(1, 8) / 8.0)  # top_n: 8 values, boundaries at k/8
    vals = np.asarray(jax.vmap(sp.from_unit)(jnp.outer(cut + 1e-4, jnp.ones(8))))[:, 0]
    np.testing.assert_array_equal(vals, np.arange(4, 11))
    cu = np.asarray(jax.jit(sp.canonical_unit)(jnp.full(8, 0.3)))
    np.testing.assert_allclose(cu, np.asarray(sp.to_unit(sp.from_unit(jnp.full(8, 0.3)))))


def test_sample_is_uniform_over_each_range():
    sp = g.make("hnag")
    draw = jax.jit(lambda k: sp.sample(k, (4000,)))
    x = np.asarray(draw(jax.random.key(0)))
    assert x.shape == (4000, 8)
    for v in x[:50]:
        sp.validate(v)
    counts = collections.Counter(x[:, 1].astype(int))  # top_k: 4 values
    assert sorted(counts) == [2, 3, 4, 5]
    assert all(abs(c / 4000 - 0.25) < 0.03 for c in counts.values())
    assert np.mean(x[:, 2]) == pytest.approx(0.55, abs=0.02)  # top_p ~ U[0.1, 1]
    np.testing.assert_array_equal(x, np.asarray(draw(jax.random.key(0))))
    assert not np.array_equal(x, np.asarray(draw(jax.random.key(1))))


def test_mutate_changes_exactly_one_value_within_range():
    sp = g.make("rnag")
    mutate = jax.jit(sp.mutate)
    x = jnp.asarray(g.RNAG_D, jnp.float32)
    changed = collections.Counter()
    for i in range(300):
        y = np.asarray(mutate(jax.random.key(i), x))
        sp.validate(y)
        diff = np.flatnonzero(y != np.asarray(x))
        assert diff.size == 1  # an integer always moves, a float almost surely
        changed[int(diff[0])] += 1
    assert sorted(changed) == list(range(9))


def test_configspace_export_round_trips_values():
    cs = pytest.importorskip("ConfigSpace")
    sp = g.make("hnag", "released")
    space = sp.to_configspace(seed=1)
    hp = space["mid_p"]
    assert isinstance(hp, cs.UniformFloatHyperparameter) and (hp.lower, hp.upper) == (0.2, 1.0)
    assert isinstance(space["top_n"], cs.UniformIntegerHyperparameter)
    for cfg in space.sample_configuration(20):
        d = dict(cfg)
        v = np.array([d[n] for n in sp.names], np.float64)
        assert sp.as_dict(v) == pytest.approx(d)
