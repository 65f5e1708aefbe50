"""Executes experiments/notebooks/nhb2.ipynb at tiny settings (NHB_NHB2_SIZE=tiny) with
nbclient (`notebook_util`), on the synthetic table: the work directory holds no main-job
table."""

import pathlib

from notebook_util import (
    assert_committed_without_outputs,
    execute,
    images,
    needs_notebook_tools,
    stream_text,
)

NOTEBOOK = pathlib.Path(__file__).parents[1] / "experiments" / "notebooks" / "nhb2.ipynb"


def test_notebook_is_committed_without_outputs():
    assert_committed_without_outputs(NOTEBOOK)


@needs_notebook_tools
def test_notebook_queries_searches_and_fits_at_tiny_settings(tmp_path, monkeypatch):
    outputs, work = execute(NOTEBOOK, tmp_path, monkeypatch, {"NHB_NHB2_SIZE": "tiny"})
    # regret, regret with 1/4/16 workers, hypervolume, the table's front, surrogate scatter
    assert len(images(outputs)) == 5
    text = stream_text(outputs)
    assert "SYNTHETIC demo table" in text and "queries/s" in text
    assert "best validation R^2 per member" in text
    assert "mo_re: final hypervolume" in text and "front has" in text
    markdown = [o for o in outputs if "text/markdown" in o.get("data", {})]
    assert markdown and "rs" in markdown[0]["data"]["text/markdown"]
    assert not list(work.iterdir())
