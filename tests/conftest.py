"""Test-session settings.

XLA compilation dominates this suite on CPU, and several test files compile identical
programs (same tiny network, same shapes). A persistent compilation cache lets those share
one compile. Set NHB_TEST_JAX_CACHE to choose its folder ("" disables it).
After each test module JAX's in-memory caches are cleared (see `_release_compiled_programs`).
Tests also compile with XLA's backend optimisation level 1 (measured on the 2-core CPU: about
25% less compile time for the tiny training programs, same run time); numbers checked by the
tests do not depend on it beyond float tolerance. An XLA_FLAGS set by the caller wins.
"""

import os
import pathlib
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=1")

import jax

_cache = os.environ.get(
    "NHB_TEST_JAX_CACHE", str(pathlib.Path(tempfile.gettempdir()) / "nhb-test-jax-cache"))
if _cache:
    jax.config.update("jax_compilation_cache_dir", _cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops JAX's in-memory compiled programs after each test module.

    Every XLA:CPU executable keeps its own memory mappings; a whole-suite process
    accumulated over 65,530 of them (Linux's default `vm.max_map_count`) and crashed with a
    segmentation fault. Programs a later module needs again come from the persistent cache.
    """
    yield
    jax.clear_caches()


@pytest.fixture(scope="session")
def nap2_runs(tmp_path_factory):
    """The quick NAP2 snapshot datasets (16 + 16 configs), built once per session.

    Returns:
        The runs directory holding `nap2_quick/` and `nap2_quick_fmnist/`.
    """
    from nhb.nap2.dataset import build_snapshots

    runs = tmp_path_factory.mktemp("nap2_runs")
    for name in ("nap2_quick", "nap2_quick_fmnist"):
        build_snapshots(name, runs / name, progress=False)
    return runs
