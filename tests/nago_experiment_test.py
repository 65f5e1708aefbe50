"""experiments/nago.py: the command-line contract (summary.json keys, resume, --compare, Ray,
bad flags)."""

from __future__ import annotations

import json

import pytest
from binary_util import run_binary

TINY_FLAGS = ["--quick", "--config.max_train=64", "--config.max_valid=32",
              "--config.progress=False"]


def _run(*args: str):
    return run_binary("nago.py", *args)


def test_bohb_binary_writes_the_summary_contract_and_resumes(tmp_path):
    out = tmp_path / "bohb"
    proc = _run("--method=hnag_bohb", f"--output_dir={out}", *TINY_FLAGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == "hnag_bohb" and s["queries"] == 5
    assert set(s["best"]) >= {"vector", "valid_acc"} and len(s["best"]["vector"]) == 8
    assert s["pareto"] and all(len(p) == 3 and len(p[2]) == 8 for p in s["pareto"])
    for model in ("het", "hom"):
        assert set(s["bnn_table1"][model]) >= {"nll", "rmse"}
    queries = json.loads((out / "queries.json").read_text())["queries"]
    assert len(queries) == 5
    for key in ("vector", "base_seed", "budget", "valid_acc", "memory_mb", "params",
                "train_time", "status"):
        assert key in queries[0], key
    assert (out / "pareto.png").stat().st_size > 1000
    again = _run("--method=hnag_bohb", f"--output_dir={out}", *TINY_FLAGS)
    assert again.returncode == 0, again.stderr[-3000:]
    s2 = json.loads((out / "summary.json").read_text())
    assert s2["best"] == s["best"] and s2["train_time"] == s["train_time"]  # nothing retrained
    cmp = _run(f"--compare={out},{out}", f"--output_dir={tmp_path / 'cmp'}")
    assert cmp.returncode == 0, cmp.stderr[-3000:]
    assert (tmp_path / "cmp" / "fronts.png").stat().st_size > 1000


def test_ray_executor_trains_a_batch_in_worker_processes(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "rs"
    proc = _run("--method=hnag_rs", "--executor=ray", f"--output_dir={out}",
                "--config.rs_queries=2", *TINY_FLAGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["queries"] == 2 and s["method"] == "hnag_rs"
    queries = json.loads((out / "queries.json").read_text())["queries"]
    assert {q["budget"] for q in queries} == {2.0}


def test_binary_rejects_bad_input(tmp_path):
    proc = _run("--method=nago_bohb", f"--output_dir={tmp_path}")
    assert proc.returncode != 0 and "hnag_mobo" in proc.stderr  # lists the valid choices
    proc = _run("--config.stage_ratios=halves", f"--output_dir={tmp_path}")
    assert proc.returncode == 1 and "valid: thirds, released" in proc.stderr
    proc = _run(f"--compare={tmp_path / 'none'}", f"--output_dir={tmp_path}")
    assert proc.returncode == 1 and "no finished NAGO run" in proc.stderr
