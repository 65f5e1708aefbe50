r"""The unified training engine against an earlier commit's, side by side on this machine.

Each side runs in its own Python process with `PYTHONPATH` set to a checkout of its commit
(the baseline in a temporary `git worktree`), alternating baseline and current `--repeats`
times so that drift in the machine's load hits both:

* SGD throughput: `train_grid` (sequential mode, pattern programs, tiny scale, the embedded
  slice) over `--jobs` configs for `--epochs` epochs; images/s of the SGD loop from the
  runner's own per-epoch `train_time` (compilation excluded, the first epoch dropped), and of
  the validation + test passes from `valid_time` / `test_time`;
* smoke build: wall time of `experiments/nhb2_build.py` building the `smoke` preset into a
  fresh directory with the persistent compilation cache off (compilation included). The
  current side runs it twice: as the baseline did (`train_eval=False`: train metrics from
  the SGD loop's meters) and faithful (the authors' extra eval-mode pass over the training
  set, the new default), so the cost of that pass is reported separately.

    python benchmarks/engine_regression.py --baseline=0181ecd [--repeats=3]

Prints the medians and ratios and writes `benchmarks/results/engine_regression_cpu.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from provenance import write_result

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULT = REPO / "benchmarks" / "results" / "engine_regression_cpu.json"

# Runs inside each side's process; uses only API both commits share (positional Job fields).
_THROUGHPUT = r"""
import json, sys
import numpy as np
import nhb
from nhb.data import load_dataset
from nhb.train import Job, TrainData, get_scale, train_grid
n_jobs, epochs = int(sys.argv[1]), int(sys.argv[2])
data = TrainData.from_dataset(load_dataset("subset"))
cells = [(0, 1, 2, 0, 2, 1), (0, 2, 1, 0, 1, 2), (0, 3, 1, 0, 2, 2), (0, 1, 1, 0, 3, 2)]
jobs = [Job(cells[k % len(cells)], (0.1, 0.05)[k % 2], 64, 222) for k in range(n_jobs)]
res = train_grid(jobs, data, scale=get_scale("tiny"), epochs=epochs, mode="sequential",
                 sharing="pattern", progress=False)
n_tr, n_ev = data.train_x.shape[0], data.valid_x.shape[0] + data.test_x.shape[0]
train_s = sum(float(np.sum(r.metrics["train_time"][1:])) for r in res)
eval_s = sum(float(np.sum(r.metrics["valid_time"][1:] + r.metrics["test_time"][1:]))
             for r in res)
print(json.dumps(dict(train_img_s=n_jobs * (epochs - 1) * n_tr / train_s,
                      eval_img_s=n_jobs * (epochs - 1) * n_ev / eval_s, nhb=nhb.__file__)))
"""


def _run(tree: pathlib.Path, args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(tree), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode:
        raise RuntimeError(f"{args} in {tree} failed:\n{proc.stderr[-3000:]}")
    return proc


def throughput(tree: pathlib.Path, n_jobs: int, epochs: int) -> dict:
    """Images/s of the SGD loop and of the evaluation passes in `tree`'s code."""
    out = json.loads(_run(tree, ["-c", _THROUGHPUT, str(n_jobs), str(epochs)]).stdout
                     .strip().splitlines()[-1])
    if not pathlib.Path(out.pop("nhb")).is_relative_to(tree):
        raise RuntimeError(f"the process for {tree} imported another nhb")
    return out


def smoke_build(tree: pathlib.Path, extra: list[str]) -> float:
    """Wall seconds of a fresh smoke build with `tree`'s CLI (compilation included)."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        _run(tree, ["experiments/nhb2_build.py", "--preset=smoke", f"--output_dir={out}",
                    "--config.compile_cache_dir=none", "--config.progress=False", *extra])
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default="0181ecd", help="git revision to compare with")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    base_sha = subprocess.run(["git", "rev-parse", a.baseline], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        base = pathlib.Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), base_sha], cwd=REPO,
                       check=True, capture_output=True)
        try:
            rows: dict[str, list] = {k: [] for k in (
                "base_tp", "cur_tp", "base_smoke", "cur_smoke_running", "cur_smoke_eval")}
            for r in range(a.repeats):
                rows["base_tp"].append(throughput(base, a.jobs, a.epochs))
                rows["cur_tp"].append(throughput(REPO, a.jobs, a.epochs))
                rows["base_smoke"].append(smoke_build(base, []))
                rows["cur_smoke_running"].append(smoke_build(REPO, [
                    "--config.study=False", "--config.overrides.train_eval=False"]))
                rows["cur_smoke_eval"].append(smoke_build(REPO, ["--config.study=False"]))
                print(f"repeat {r + 1}/{a.repeats}: " + json.dumps(
                    {k: v[-1] for k, v in rows.items()}), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO,
                           capture_output=True)
    med = lambda xs: statistics.median(xs)
    summary = dict(
        train_img_s=dict(baseline=med([t["train_img_s"] for t in rows["base_tp"]]),
                         current=med([t["train_img_s"] for t in rows["cur_tp"]])),
        eval_img_s=dict(baseline=med([t["eval_img_s"] for t in rows["base_tp"]]),
                        current=med([t["eval_img_s"] for t in rows["cur_tp"]])),
        smoke_build_s=dict(baseline=med(rows["base_smoke"]),
                           current_running_meters=med(rows["cur_smoke_running"]),
                           current_faithful_train_pass=med(rows["cur_smoke_eval"])))
    ratios = dict(
        train_img_s=summary["train_img_s"]["current"] / summary["train_img_s"]["baseline"],
        eval_img_s=summary["eval_img_s"]["current"] / summary["eval_img_s"]["baseline"],
        smoke_build_s=summary["smoke_build_s"]["current_running_meters"]
        / summary["smoke_build_s"]["baseline"],
        smoke_build_faithful_s=summary["smoke_build_s"]["current_faithful_train_pass"]
        / summary["smoke_build_s"]["baseline"])
    print(f"{'':28s} {'baseline':>10s} {'current':>10s} {'ratio':>7s}")
    for k in ("train_img_s", "eval_img_s"):
        print(f"{k:28s} {summary[k]['baseline']:10.1f} {summary[k]['current']:10.1f} "
              f"{ratios[k]:7.3f}")
    s = summary["smoke_build_s"]
    print(f"{'smoke build s (same work)':28s} {s['baseline']:10.1f} "
          f"{s['current_running_meters']:10.1f} {ratios['smoke_build_s']:7.3f}")
    print(f"{'smoke build s (train pass)':28s} {s['baseline']:10.1f} "
          f"{s['current_faithful_train_pass']:10.1f} {ratios['smoke_build_faithful_s']:7.3f}")
    write_result(RESULT, dict(name="engine_regression", baseline=base_sha, repeats=a.repeats,
                              jobs=a.jobs, epochs=a.epochs, rows=rows, median=summary,
                              ratio_current_over_baseline=ratios))
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
