"""Tests for the ConfigSpace export of the NAS-HPO-Bench-II joint space."""

import jax
import numpy as np
import pytest

from nhb.space import configspace, nhb2

cs = pytest.importorskip("ConfigSpace")


def test_space_layout_and_round_trip_of_every_sampled_config():
    space = configspace.nhb2_configspace(seed=0)
    assert len(list(space.values())) == 8
    edge = space["edge_C"]
    assert isinstance(edge, cs.CategoricalHyperparameter)
    assert tuple(edge.choices) == ("conv3x3", "avgpool3x3", "skip", "zero")
    assert tuple(space["lr"].sequence) == nhb2.LRS
    assert tuple(space["batch_size"].sequence) == nhb2.BATCH_SIZES
    cfgs = nhb2.sample(jax.random.key(0), 50)
    for i in range(50):
        cfg = jax.tree.map(lambda a, i=i: a[i], cfgs)
        back = configspace.from_config(configspace.to_config(space, cfg))
        assert nhb2.to_index(back) == nhb2.to_index(cfg)
    for c in space.sample_configuration(30):
        d = dict(c)
        cfg = configspace.from_config(c)
        assert nhb2.LRS[int(cfg.lr)] == d["lr"] and nhb2.BATCH_SIZES[int(cfg.bs)] == d["batch_size"]
        assert configspace.to_config(space, cfg) == c


def test_sub_space_and_bad_values():
    space = configspace.nhb2_configspace(lrs=(0.1, 0.025), batch_sizes=(256,))
    assert tuple(space["lr"].sequence) == (0.025, 0.1)
    assert {dict(c)["batch_size"] for c in space.sample_configuration(20)} == {256}
    with pytest.raises(ValueError, match="valid choices"):
        configspace.nhb2_configspace(lrs=(0.3,))
    with pytest.raises(ValueError, match="valid choices"):
        configspace.from_config({**{e: "skip" for e in configspace.EDGE_NAMES}, "lr": 0.1,
                                 "batch_size": 100})
    cfg = configspace.from_config({"edge_A": "conv3x3", "edge_B": "zero", "edge_C": "skip",
                                   "edge_D": "avgpool3x3", "edge_E": "zero", "edge_F": "conv3x3",
                                   "lr": 0.4, "batch_size": 16})
    np.testing.assert_array_equal(np.asarray(cfg.cell), [0, 3, 2, 1, 3, 0])
    assert int(cfg.lr) == 7 and int(cfg.bs) == 0
