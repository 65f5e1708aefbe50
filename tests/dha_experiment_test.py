"""experiments/dha.py: the command-line contract (summary.json keys, resume, bad flags)."""

from __future__ import annotations

import json

from binary_util import run_binary

TINY_FLAGS = ["--config.max_train=64", "--config.max_test=64", "--config.batch_size=32",
              "--config.nhb2_channels=(4,4,4)", "--config.search_epochs=1",
              "--config.retrain_epochs=1", "--config.progress=False"]


def _run(*args: str):
    return run_binary("dha.py", *args)


def test_binary_writes_the_summary_contract(tmp_path):
    out = tmp_path / "dha"
    proc = _run("--variant=dha", "--space=nhb2", f"--output_dir={out}", "--table=random",
                *TINY_FLAGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    for key in ("variant", "test_acc", "lr_trajectory", "wd_trajectory", "policy_entropy",
                "cell", "seconds"):
        assert key in s, key
    assert s["variant"] == "dha" and len(s["lr_trajectory"]) == 2
    assert len(s["cell"].split("|")) == 3 and s["figures"] == ["trajectories.png"]
    assert (out / "trajectories.png").stat().st_size > 10_000
    assert set(s["seconds"]) == {"search", "retrain", "eval"}
    score = s["table_score"]  # the synthetic demo table stores every cell class
    assert score["cell"] == s["cell"] and score["present"] and len(score["test_acc_12"]) == 48
    assert score["best_test_acc_12"] == max(score["test_acc_12"].values())
    # Rerunning the finished run resumes it: nothing is trained again, same numbers.
    again = _run("--variant=dha", "--space=nhb2", f"--output_dir={out}", *TINY_FLAGS)
    assert again.returncode == 0, again.stderr[-3000:]
    s2 = json.loads((out / "summary.json").read_text())
    assert s2["test_acc"] == s["test_acc"] and s2["history"] == s["history"]


def test_binary_rejects_bad_input(tmp_path):
    proc = _run("--variant=nas_only", f"--output_dir={tmp_path}")
    assert proc.returncode != 0
    assert "ista_two_stage" in proc.stderr  # the error lists the valid choices
    proc = _run("--space=darts", "--table=random", f"--output_dir={tmp_path}")
    assert proc.returncode == 1 and "use it with --space=nhb2" in proc.stderr
