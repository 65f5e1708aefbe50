"""Executes experiments/notebooks/nago.ipynb at tiny settings (NHB_NAGO_SIZE=tiny) with
nbclient (`notebook_util`)."""

import pathlib

from notebook_util import (
    assert_committed_without_outputs,
    execute,
    images,
    needs_notebook_tools,
    stream_text,
)

NOTEBOOK = pathlib.Path(__file__).parents[1] / "experiments" / "notebooks" / "nago.ipynb"


def test_notebook_is_committed_without_outputs():
    assert_committed_without_outputs(NOTEBOOK)


@needs_notebook_tools
def test_notebook_samples_trains_fits_and_proposes_at_tiny_settings(tmp_path, monkeypatch):
    outputs, work = execute(NOTEBOOK, tmp_path, monkeypatch, {"NHB_NAGO_SIZE": "tiny"})
    assert len(images(outputs)) == 3  # graphs, BNN fits, MOBO batch
    text = stream_text(outputs)
    assert "SampleFailure(graph='mid[" in text and "ok: valid acc" in text
    assert text.count("[") >= 8  # the batch's 8 generator vectors are printed
    assert not list(work.iterdir())
