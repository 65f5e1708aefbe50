"""The NAP2 study end to end at the quick size: the binary's report contract, reuse."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from nhb.nap2 import dataset as D
from nhb.nap2 import evaluation as ev
from nhb.nap2 import predictor as P
from nhb.nap2 import study as S

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_report(nap2_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("nap2_study")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "nap2.py"), f"--output_dir={out}",
         "--quick", f"--config.runs_dir={nap2_runs}", "--config.progress=False"],
        capture_output=True, text=True, env=env, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / S.REPORT_FILE).read_text())


def test_report_contract(quick_report):
    out, report = quick_report
    cfg = S.StudyConfig.quick()
    for agent in ev.AGENTS:
        for fs in cfg.grid.final_sizes:
            points = report["agents"][agent][f"final_{fs}"]
            assert points and all({"resources", "top5_precision", "accuracy_gap"} <= set(p)
                                  for p in points)
            assert all(0 <= p["top5_precision"] <= 1 and p["accuracy_gap"] >= 0
                       for p in points)
    for method in ("nap2", "valid_acc", "lc_extrapolation"):
        assert set(report["predictor"][method]) == {"1", "10"}
    assert len(report["predictor"]["mse"]) == D.PRESETS["nap2_quick"].snapshot_count
    assert report["transfer"]["agents"]["nap2"]
    assert report["folds"] == [8, 8]
    for name in report["figures"]:
        assert (out / name).stat().st_size > 1000


def test_report_numbers_recompute_from_the_saved_predictors(quick_report, nap2_runs):
    out, report = quick_report
    cfg = S.StudyConfig.quick()
    ds = D.load_snapshots(nap2_runs / "nap2_quick")
    folds = P.cv_folds(ds.cell_class, cfg.n_folds, cfg.seed)
    for f in range(cfg.n_folds):  # no cell class in two folds
        assert not set(ds.cell_class[folds == f]) & set(ds.cell_class[folds != f])
    rhos = []
    for f in range(cfg.n_folds):
        pred = P.load_predictor(out / "predictors" / f"fold{f}.nap2")
        idx = folds == f
        p = pred.predict(ds.weights[idx], ds.grads[idx], ds.n_layers[idx])
        rhos.append(ev.spearman(p[:, 0], ds.final_valid_acc[idx]))
        per_set = report["predictor"]["per_set"][f]["nap2"]["1"]
        assert per_set == pytest.approx(rhos[-1], abs=1e-5, nan_ok=True)
    assert report["predictor"]["nap2"]["1"] == pytest.approx(np.nanmean(rhos), abs=1e-5)


def test_rerun_reuses_the_fitted_predictors(quick_report, nap2_runs):
    out, report = quick_report
    before = {p: p.stat().st_mtime_ns for p in (out / "predictors").iterdir()}
    again = S.run_study(S.StudyConfig.quick(runs_dir=str(nap2_runs)), out, progress=False,
                        figures=False)
    assert {p: p.stat().st_mtime_ns for p in (out / "predictors").iterdir()} == before
    assert again["predictor"]["nap2"] == report["predictor"]["nap2"]
    assert again["agents"]["hyperband"] == report["agents"]["hyperband"]  # same seeds


def test_config_round_trip_and_errors():
    cfg = S.StudyConfig.quick()
    assert S.StudyConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown StudyConfig fields"):
        S.StudyConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError, match="unknown AgentGrid fields"):
        S.StudyConfig.from_dict({"grid": {"etaa": [2]}})
