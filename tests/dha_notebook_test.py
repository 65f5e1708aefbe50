"""Executes experiments/notebooks/dha.ipynb at tiny settings (NHB_DHA_SIZE=tiny) with nbclient
(`notebook_util`); the tiny settings are those of `dha_run_test.TINY`, so the training
program comes from the suite's persistent compilation cache."""

import pathlib

from notebook_util import (
    assert_committed_without_outputs,
    execute,
    images,
    needs_notebook_tools,
    stream_text,
)

NOTEBOOK = pathlib.Path(__file__).parents[1] / "experiments" / "notebooks" / "dha.ipynb"


def test_notebook_is_committed_without_outputs():
    assert_committed_without_outputs(NOTEBOOK)


@needs_notebook_tools
def test_notebook_runs_dha_and_ista_at_tiny_settings(tmp_path, monkeypatch):
    outputs, work = execute(NOTEBOOK, tmp_path, monkeypatch, {"NHB_DHA_SIZE": "tiny"})
    assert len(images(outputs)) == 4  # ops, pairs, trajectories, derived cells
    text = stream_text(outputs)
    assert "DHA: test acc" in text and "One-Stage ISTA: test acc" in text
    assert "top pairs after the run" in text
    assert not list(work.iterdir())
