"""nhb.dha on the DARTS space: a one-stage search yields a genotype; the parameter limit
rejects new supports (the search keeps its initial one)."""

from __future__ import annotations

import jax
import numpy as np

from nhb.dha.config import DHAConfig
from nhb.dha.networks import make_network
from nhb.dha.policy import MAX_ENTROPY
from nhb.dha.run import load_data, run_dha
from nhb.dha.step import init_state
from nhb.models.darts import darts_param_count
from nhb.space.arch import DARTS_OPS, to_genotype

TINY_DARTS = dict(space="darts", max_train=32, max_test=32, batch_size=16, darts_channels=2,
                  darts_layers=3, search_epochs=1, retrain_epochs=0, d_lr=200.0)


def test_darts_search_gives_a_genotype_and_the_param_limit_rejects():
    config = DHAConfig.quick(variant="joint_nas_da", **TINY_DARTS)
    assert config.computes_support_only  # "auto" on DARTS: only the support's ops
    data = load_data(config)
    s = run_dha(config, progress=False, data=data).summary
    cell = s["cell"]
    for kind in ("normal", "reduce"):
        gene = cell[kind]
        assert len(gene) == 8 and cell[f"{kind}_concat"] == [2, 3, 4, 5]
        for node in range(4):  # two distinct inputs per node, each < node + 2
            (op_a, in_a), (op_b, in_b) = gene[2 * node: 2 * node + 2]
            assert op_a in DARTS_OPS and op_b in DARTS_OPS
            assert in_a != in_b and max(in_a, in_b) < node + 2
    assert np.isfinite(s["test_loss"]) and len(s["lr_trajectory"]) == 1
    assert s["policy_entropy"][0] < MAX_ENTROPY  # the DA policy learned during the search

    # A limit no genotype meets: every recovered support is rejected, the initial one stays.
    initial = init_state(jax.random.split(jax.random.PRNGKey(config.seed))[0], config,
                         make_network(config)).ista.support
    g = to_genotype(np.asarray(initial))
    assert darts_param_count(g, style="dha") > 0
    strict = DHAConfig.quick(variant="joint_nas_da", **dict(TINY_DARTS, param_limit_mb=1e-6))
    s2 = run_dha(strict, progress=False, data=data).summary
    expected = {"normal": [list(p) for p in g.normal], "reduce": [list(p) for p in g.reduce]}
    assert {k: s2["cell"][k] for k in ("normal", "reduce")} == expected
