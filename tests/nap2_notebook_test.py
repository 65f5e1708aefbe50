"""Executes experiments/notebooks/nap2.ipynb (the quick NAP2 study) top to bottom with nbclient.

The kernel is a `python3` kernelspec written into a temporary `JUPYTER_PATH` that runs this
interpreter (`sys.executable`), so the notebook sees the same environment (nhb, JAX) as the
tests on any machine, whatever kernels the user has installed. The kernel inherits the
environment: `NHB_NAP2_RUNS` points it at the session's quick snapshot datasets (the
`nap2_runs` fixture, shared with the other NAP2 tests), `NHB_NAP2_OUT` at a temporary output
directory, and the `JAX_*` variables at the suite's persistent compilation cache.
"""

import importlib
import json
import pathlib
import sys

import pytest

NOTEBOOK = pathlib.Path(__file__).parents[1] / "experiments" / "notebooks" / "nap2.ipynb"
CELL_TIMEOUT_S = 600
AGENTS = ("nap2", "sh", "hyperband", "bohb")
FIGURES = [f"{prefix}{name}.png" for prefix in ("", "transfer_")
           for name in ("gap_vs_resources", "top3_vs_resources", "top5_vs_resources",
                        "predictor")]


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def _this_python_kernel(root: pathlib.Path, monkeypatch) -> None:
    """A `python3` kernelspec running `sys.executable`, found before any other."""
    from jupyter_client import kernelspec

    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps(dict(
        argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        display_name=f"Python 3 ({sys.executable})", language="python")))
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(root / "ipython"))
    resolved = kernelspec.KernelSpecManager().get_kernel_spec("python3")
    assert resolved.argv[0] == sys.executable, resolved.resource_dir


def _share_jax_cache(monkeypatch) -> None:
    """Hands the suite's persistent compilation cache (conftest) on to the kernel."""
    import jax

    cache = jax.config.jax_compilation_cache_dir
    if cache:
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(cache))
        monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                           str(jax.config.jax_persistent_cache_min_compile_time_secs))
        monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
                           str(jax.config.jax_persistent_cache_min_entry_size_bytes))


def _missing(*modules: str) -> list[str]:
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


_MISSING = _missing("nbclient", "nbformat", "ipykernel")


@pytest.mark.skipif(bool(_MISSING), reason=f"executing notebooks needs {', '.join(_MISSING)} "
                                           "(pip install -e '.[test]')")
def test_notebook_runs_the_quick_study(nap2_runs, tmp_path, monkeypatch):
    import nbclient
    import nbformat

    out = tmp_path / "out"
    work = tmp_path / "work"
    work.mkdir()
    _this_python_kernel(tmp_path / "jupyter", monkeypatch)
    _share_jax_cache(monkeypatch)
    monkeypatch.setenv("NHB_NAP2_RUNS", str(nap2_runs))
    monkeypatch.setenv("NHB_NAP2_OUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(work)}}).execute()

    report = json.loads((out / "report.json").read_text())
    for section in (report, report["transfer"]):
        assert set(AGENTS) <= set(section["agents"])
        assert set(section["predictor"]) >= {"nap2", "valid_acc", "lc_extrapolation"}
    for name in FIGURES:
        assert (out / name).stat().st_size > 5_000, name
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= len(FIGURES) + 2  # the saved figures, feature maps, loss curves
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "lc_extrapolation" in text and "final set of 2" in text
    assert not list(work.iterdir())  # everything went to the env-var directories
