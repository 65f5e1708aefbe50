"""Executes experiments/notebooks/nap2.ipynb (the quick NAP2 study) top to bottom with nbclient
(`notebook_util`). The kernel inherits `NHB_NAP2_RUNS`, the session's quick snapshot datasets
(the `nap2_runs` fixture, shared with the other NAP2 tests), and `NHB_NAP2_OUT`, a temporary
output directory.
"""

import json
import pathlib

from notebook_util import (
    assert_committed_without_outputs,
    execute,
    images,
    needs_notebook_tools,
    stream_text,
)

NOTEBOOK = pathlib.Path(__file__).parents[1] / "experiments" / "notebooks" / "nap2.ipynb"
AGENTS = ("nap2", "sh", "hyperband", "bohb")
FIGURES = [f"{prefix}{name}.png" for prefix in ("", "transfer_")
           for name in ("gap_vs_resources", "top3_vs_resources", "top5_vs_resources",
                        "predictor")]


def test_notebook_is_committed_without_outputs():
    assert_committed_without_outputs(NOTEBOOK)


@needs_notebook_tools
def test_notebook_runs_the_quick_study(nap2_runs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    outputs, work = execute(NOTEBOOK, tmp_path, monkeypatch,
                            {"NHB_NAP2_RUNS": str(nap2_runs), "NHB_NAP2_OUT": str(out)})
    report = json.loads((out / "report.json").read_text())
    for section in (report, report["transfer"]):
        assert set(AGENTS) <= set(section["agents"])
        assert set(section["predictor"]) >= {"nap2", "valid_acc", "lc_extrapolation"}
    for name in FIGURES:
        assert (out / name).stat().st_size > 5_000, name
    assert len(images(outputs)) >= len(FIGURES) + 2  # the saved figures, feature maps, losses
    text = stream_text(outputs)
    assert "lc_extrapolation" in text and "final set of 2" in text
    assert not list(work.iterdir())  # everything went to the env-var directories
