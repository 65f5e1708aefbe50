"""nhb.dha.run: every variant end to end at tiny size, resume, freezing, bounds, the policy.

All runs share one program size (`TINY`), so the variants reuse one compiled epoch program
(and the notebook and binary tests hit the persistent compilation cache).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from nhb.dha.config import VARIANTS, DHAConfig
from nhb.dha.policy import MAX_ENTROPY
from nhb.dha.run import load_data, load_model, run_dha

TINY = dict(space="nhb2", max_train=64, max_test=64, batch_size=32, nhb2_channels=(4, 4, 4),
            search_epochs=1, retrain_epochs=1, d_lr=200.0, d_lr_tune=200.0)


@pytest.fixture(scope="module")
def data():
    return load_data(DHAConfig.quick(**TINY))


@pytest.fixture(scope="module")
def results(data):
    return {v: run_dha(DHAConfig.quick(variant=v, **TINY), progress=False, data=data).summary
            for v in VARIANTS}


def test_every_variant_runs_two_epochs(results):
    for name, s in results.items():
        v = VARIANTS[name]
        assert s["variant"] == name and len(s["history"]) == 2, name
        assert [h["phase"] for h in s["history"]] == ["search", "retrain"]
        assert 0.0 <= s["test_acc"] <= 100.0 and np.isfinite(s["test_loss"])
        assert all(not h["nonfinite"] for h in s["history"])
        assert isinstance(s["cell"], str) and len(s["cell"]) == 8  # "A|BC|DEF"
        assert set(s["seconds"]) == {"search", "retrain", "eval"}
        ent = s["policy_entropy"]
        if v.da and v.search == "one_stage":  # the policy learns in both phases
            assert ent[0] < MAX_ENTROPY - 1e-4 and ent[1] < ent[0], (name, ent)
        elif v.da:  # two-stage: the policy learns only while training the derived cell
            assert ent[0] == pytest.approx(MAX_ENTROPY, abs=1e-5) and ent[1] < ent[0]
        else:
            assert ent == pytest.approx([MAX_ENTROPY] * 2, abs=1e-5), name
        lr, wd = np.asarray(s["lr_trajectory"]), np.asarray(s["wd_trajectory"])
        c = DHAConfig.quick(variant=name, **TINY)
        if v.hpo:  # learned: moved away from the midpoint, inside the bounds
            lo, up = c.lr_bounds
            assert np.all((lr >= lo) & (lr <= up)) and lr[-1] != pytest.approx(0.5 * (lo + up))
            assert np.all((wd >= c.wd_bounds[0]) & (wd <= c.wd_bounds[1]))
        else:  # SGD: the schedule's value of the last epoch of each phase
            assert lr[-1] == pytest.approx(c.w_lr)  # cosine epoch 0 of the retrain phase
            assert wd == pytest.approx([c.w_weight_decay] * 2)


def test_one_stage_variants_share_the_search_and_differ_by_their_flags(results):
    # Same seed, same init: ISTA one-stage and joint NAS+HPO train the same weights in the
    # same order; only the HPO step differs, so their first-epoch train losses differ.
    a, b = results["ista_one_stage"]["history"][0], results["joint_nas_hpo"]["history"][0]
    assert a["train_loss"] != b["train_loss"]
    # The two-stage searches are one program with the same flags: identical numbers.
    two = [results[v]["history"][0] for v in VARIANTS if VARIANTS[v].search == "two_stage"]
    assert all(h["train_loss"] == two[0]["train_loss"] for h in two)


def test_resume_gives_the_same_numbers(tmp_path, data):
    c = DHAConfig.quick(variant="dha", **dict(TINY, search_epochs=2))
    full = run_dha(c, tmp_path / "full", progress=False, data=data).summary
    assert run_dha(c, tmp_path / "cut", progress=False, data=data, max_epochs=1) is None
    progress = json.loads((tmp_path / "cut" / "progress.json").read_text())
    assert progress["next_epoch"] == 1 and len(progress["history"]) == 1
    resumed = run_dha(c, tmp_path / "cut", progress=False, data=data).summary
    assert resumed["test_acc"] == full["test_acc"]
    assert resumed["lr_trajectory"] == full["lr_trajectory"]
    assert resumed["policy_entropy"] == full["policy_entropy"]
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["cell"] == full["cell"]
    # The saved model is the run's network: same logits as the in-memory result.
    result = run_dha(c, tmp_path / "full", progress=False, data=data)  # finished: resumes
    model = load_model(tmp_path / "full")
    images = np.asarray(data.test_x[:8])
    np.testing.assert_allclose(model.predict(images), result.predict(images), rtol=1e-5,
                               atol=1e-5)
    assert model.summary["cell"] == full["cell"]
    other = DHAConfig.quick(variant="dha", **dict(TINY, seed=1))
    with pytest.raises(ValueError, match="other settings"):
        run_dha(other, tmp_path / "cut", progress=False, data=data)


def test_nodes_freeze_and_the_search_stops(data):
    c = DHAConfig.quick(variant="ista_one_stage", **dict(TINY, search_epochs=5, dist_limit=1e9))
    s = run_dha(c, progress=False, data=data).summary
    # Every node freezes after the first epoch; the next epoch starts all-frozen, still runs,
    # then the search ends (reference `Stop_flag`).
    assert [h["frozen_nodes"] for h in s["history"]] == [3, 3, 3]
    assert s["search_epochs_run"] == 2 and s["stopped_early"]
    assert s["history"][0]["cell"] == s["history"][1]["cell"]  # frozen x: same support


def test_bad_settings_name_the_choices():
    with pytest.raises(ValueError, match="valid choices: dha, sequential_dha"):
        DHAConfig(variant="darts_only")
    with pytest.raises(ValueError, match="compute must be one of"):
        DHAConfig(compute="some")
    with pytest.raises(ValueError, match="unknown DHAConfig fields"):
        DHAConfig.from_dict({"epochs": 3})
