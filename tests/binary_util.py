"""Shared by the binary tests: run `experiments/<name>` in a subprocess on the CPU, with the
suite's persistent compilation cache (conftest)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax

ROOT = pathlib.Path(__file__).parents[1]


def run_binary(name: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Runs `python experiments/<name> ARGS` and returns the finished process (not checked)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return subprocess.run([sys.executable, str(ROOT / "experiments" / name), *args],
                          capture_output=True, text=True, env=env, timeout=timeout, check=False)
