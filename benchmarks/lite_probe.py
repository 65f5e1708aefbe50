r"""A time-boxed probe of the `lite` build on a GPU: the real builder, one batch size.

Builds the `lite` preset restricted to batch size 64 (1011 classes x 8 learning rates,
16 shards of 512 runs on an accelerator) with `nhb.bench.build.build` until `--seconds`
pass, then reads every finished shard's header (wall time, group size, per-phase times) and
writes them as JSON. The build resumes, so the directory can be finished later.

    python benchmarks/lite_probe.py --output_dir=/tmp/probe --seconds=330 \
        --output_json=benchmarks/results/lite_probe_gpu.json
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import pathlib
from collections.abc import Sequence

import numpy as np
from absl import app, flags
from provenance import write_result

from nhb.bench import build

flags.DEFINE_string("output_dir", "/tmp/nhb-lite-probe", "Build directory.")
flags.DEFINE_integer("seconds", 330, "Stop the build after this many seconds.")
flags.DEFINE_string("output_json", "", "Where to write the shard summary ('' = print only).")
FLAGS = flags.FLAGS


def probe_preset() -> build.Preset:
    """`lite` at batch size 64 only."""
    return dataclasses.replace(build.get_preset("lite"), name="lite-bs64-probe",
                               batch_sizes=(64,),
                               description="lite restricted to batch size 64 (a GPU probe)")


def _build(out: str) -> None:
    build.build(probe_preset(), out, progress=False)


def summarize(out: str | pathlib.Path) -> list[dict]:
    """Header fields and phase-time sums of every finished shard in `out`."""
    rows = []
    for f in sorted(pathlib.Path(out, "shards").glob("*.npz")):
        with np.load(f) as z:
            h = json.loads(str(z["header"]))
            row = {k: h.get(k) for k in ("name", "device", "wall_s", "group_size", "mode",
                                         "session_start", "finished")}
            row["runs"] = len(h["jobs"])
            row["final_test_acc_mean"] = float(np.nanmean(z["metrics/test_acc"][:, -1]))
            row["phase_s_sum"] = {m: float(z[f"metrics/{m}"].sum())
                                  for m in ("train_time", "valid_time", "test_time")}
        rows.append(row)
    return rows


def main(argv: Sequence[str]) -> None:
    """Runs the build for at most `--seconds`, then summarises the shards."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    proc = multiprocessing.get_context("spawn").Process(target=_build, args=(FLAGS.output_dir,))
    proc.start()
    proc.join(FLAGS.seconds)
    if proc.is_alive():
        proc.kill()  # shards are atomic: finished ones survive
        proc.join()
    rows = summarize(FLAGS.output_dir)
    plan_file = pathlib.Path(FLAGS.output_dir, "plan.json")
    plan = json.loads(plan_file.read_text()) if plan_file.exists() else {}
    payload = dict(meta=dict(script="benchmarks/lite_probe.py", preset=plan.get("preset"),
                             grouping=plan.get("grouping"),
                             shards_planned=len(plan.get("shards", [])),
                             device=rows[0]["device"] if rows else None), shards=rows)
    text = json.dumps(payload, indent=1)
    print(text)
    if FLAGS.output_json:
        write_result(FLAGS.output_json, payload)


if __name__ == "__main__":
    app.run(main)
