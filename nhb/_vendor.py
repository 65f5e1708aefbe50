"""Locating the vendored data in `third_party/` (installed as `nhb.third_party`)."""

from __future__ import annotations

import functools
import importlib.util
import pathlib

import numpy as np


@functools.cache
def third_party_dir() -> pathlib.Path:
    """The folder holding the vendored data, for editable and wheel installs alike.

    Returns:
        `<repo>/third_party` in a source checkout, else the installed `nhb/third_party`.
    """
    spec = importlib.util.find_spec("nhb.third_party")
    if spec is not None and spec.submodule_search_locations:
        return pathlib.Path(next(iter(spec.submodule_search_locations)))
    candidate = pathlib.Path(__file__).resolve().parent.parent / "third_party"
    if candidate.is_dir():
        return candidate
    raise FileNotFoundError(
            "nhb's vendored data folder 'third_party' was not found; reinstall nhb from a "
            "source checkout with `pip install -e .`.")


@functools.cache
def load_npz(relpath: str) -> dict[str, np.ndarray]:
    """Loads a vendored `.npz` (cached) as a dict of read-only arrays.

    Args:
        relpath: path below `third_party/`, e.g. `"nashpobench2/nashpobench2_cells_split.npz"`.

    Returns:
        Mapping from array name to array.
    """
    path = third_party_dir() / relpath
    if not path.is_file():
        raise FileNotFoundError(f"vendored file {path} is missing; is the checkout complete?")
    with np.load(path, allow_pickle=False) as f:
        out = {k: f[k] for k in f.files}
    for v in out.values():
        v.setflags(write=False)
    return out
