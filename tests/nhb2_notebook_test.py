"""Executes experiments/notebooks/nhb2.ipynb at tiny settings (NHB_NHB2_SIZE=tiny) with nbclient
(a synthetic table: the work directory holds no main-job table).

The kernel and the compilation cache are set up as for the NAP2 notebook
(`nap2_notebook_test`).
"""

import json
import pathlib

import pytest
from nap2_notebook_test import _MISSING, _share_jax_cache, _this_python_kernel

NOTEBOOK = pathlib.Path(__file__).parents[1] / "experiments" / "notebooks" / "nhb2.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


@pytest.mark.skipif(bool(_MISSING), reason=f"executing notebooks needs {', '.join(_MISSING)} "
                                           "(pip install -e '.[test]')")
def test_notebook_queries_searches_and_fits_at_tiny_settings(tmp_path, monkeypatch):
    import nbclient
    import nbformat

    work = tmp_path / "work"
    work.mkdir()
    _this_python_kernel(tmp_path / "jupyter", monkeypatch)
    _share_jax_cache(monkeypatch)
    monkeypatch.setenv("NHB_NHB2_SIZE", "tiny")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(work)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # regret figure, surrogate scatter
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "SYNTHETIC demo table" in text and "queries/s" in text
    assert "best validation R^2 per member" in text
    markdown = [o for o in outputs if "text/markdown" in o.get("data", {})]
    assert markdown and "rs" in markdown[0]["data"]["text/markdown"]
    assert not list(work.iterdir())
