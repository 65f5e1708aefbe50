"""Tests for nhb.search.pipeline: build -> search -> analysis on a real (tiny) build."""

import dataclasses
import json

import numpy as np
import pytest

from nhb import bench
from nhb.bench import build
from nhb.search import PAPER_METHODS, pipeline

TINY = dataclasses.replace(
    build.PRESETS["study"], name="pipeline-test", epochs=2, cells=("1|11|111", "1|11|222"),
    lrs=(0.05, 0.1), batch_sizes=(16,), max_per_split=16, cpu_max_group=2)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    result = pipeline.build_and_study(TINY, out, progress=False, runs=20, log=None)
    return out, result


def test_outputs_and_numbers(study):
    out, result = study
    for name in ("table.nhb", "build_report.json", "study.json", "search/summary.json",
                 "search/table3.md", "search/fig6_regret.png", "analysis/fig3_hparams.png",
                 "analysis/analysis.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "study.json").read_text()) == json.loads(json.dumps(
        result, default=float))
    table = bench.load_table(out)
    assert result["table"] == json.loads(json.dumps(table.summary()))
    search = result["search"]
    assert sorted(search["methods"]) == sorted(PAPER_METHODS)
    assert search["space_distinct"] == 4 and not search["full_space"]
    # every selected config's score is one of the table's final test accuracies, and the
    # oracle is the table's best final valid accuracy
    finals = set(np.round(table.metrics["test_acc"][..., 0, -1].ravel(), 3).tolist())
    best_valid = float(np.max(table.metrics["valid_acc"][..., 0, -1]))
    for name, m in search["methods"].items():
        assert m["oracle_valid"] == pytest.approx(best_valid, rel=1e-6), name
        assert (out / "search" / "trajectories" / f"{name}.json").is_file(), name
    mean_rs = search["methods"]["rs"]["test_acc_12"]["mean"]
    assert min(finals) - 1e-3 <= mean_rs <= max(finals) + 1e-3
    # Figure 3's heatmap: mean final test accuracy over the architectures, per (lr, bs)
    np.testing.assert_allclose(result["analysis"]["heatmap"],
                               table.metrics["test_acc"][..., 0, -1].mean(0), rtol=1e-5)
    assert result["analysis"]["lrs"] == [0.05, 0.1]


def test_rerun_trains_nothing_and_gives_the_same_numbers(study, monkeypatch):
    out, result = study
    from nhb.bench import executors
    monkeypatch.setattr(executors, "run_group", lambda *a, **k: pytest.fail("trained"))
    again = pipeline.build_and_study(TINY, out, progress=False, runs=20, log=None)
    assert again["search"]["methods"]["re"]["test_acc_12"] == result["search"]["methods"][
        "re"]["test_acc_12"]
