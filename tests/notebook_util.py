"""Shared by the notebook tests: run a committed notebook top to bottom with nbclient.

The kernel is a `python3` kernelspec written into a temporary `JUPYTER_PATH` that runs this
interpreter (`sys.executable`), so the notebook sees the same environment (nhb, JAX) as the
tests on any machine, whatever kernels the user has installed. The kernel inherits the
environment: the caller's variables (e.g. a notebook's tiny-size switch), the inline
matplotlib backend, and the `JAX_*` variables of the suite's persistent compilation cache.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import sys

import pytest

CELL_TIMEOUT_S = 600


def _missing(*modules: str) -> list[str]:
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


MISSING = _missing("nbclient", "nbformat", "ipykernel")
needs_notebook_tools = pytest.mark.skipif(
    bool(MISSING), reason=f"executing notebooks needs {', '.join(MISSING)} "
                          "(pip install -e '.[test]')")


def assert_committed_without_outputs(path: pathlib.Path) -> None:
    """The notebook is saved clean: a python3 kernelspec, code cells without outputs."""
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def this_python_kernel(root: pathlib.Path, monkeypatch) -> None:
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


def share_jax_cache(monkeypatch) -> None:
    """Hands the suite's persistent compilation cache (conftest) on to the kernel."""
    import jax

    cache = jax.config.jax_compilation_cache_dir
    if cache:
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(cache))
        monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                           str(jax.config.jax_persistent_cache_min_compile_time_secs))
        monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
                           str(jax.config.jax_persistent_cache_min_entry_size_bytes))


def execute(path: pathlib.Path, tmp_path: pathlib.Path, monkeypatch,
            env: dict[str, str] | None = None) -> tuple[list, pathlib.Path]:
    """Runs the notebook in an empty work directory; a failing cell fails the test.

    Args:
        path: the notebook.
        tmp_path: the test's temporary directory.
        monkeypatch: the test's monkeypatch (environment of the kernel).
        env: extra environment variables for the kernel.

    Returns:
        (every code cell's outputs, in order; the work directory).
    """
    import nbclient
    import nbformat

    work = tmp_path / "work"
    work.mkdir()
    this_python_kernel(tmp_path / "jupyter", monkeypatch)
    share_jax_cache(monkeypatch)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(work)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs, work


def images(outputs: list) -> list:
    """The PNG outputs."""
    return [o for o in outputs if "image/png" in o.get("data", {})]


def stream_text(outputs: list) -> str:
    """Everything the cells printed."""
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
