"""A summary of the NAS-HPO-Bench-II space: classes, groups and parameter counts."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nhb._io import atomic_write_text
from nhb.models.cell_net import CellNet, conv_edges_of, param_count
from nhb.space import cells, nhb2


def param_counts(channels: tuple[int, int, int] = (16, 32, 64),
                 cells_per_stage: int = 5) -> dict[str, int]:
    """Parameter count of each official representative (shape-only tracing, no compute).

    Args:
        channels: per-stage channels.
        cells_per_stage: normal cells per stage.

    Returns:
        Official code -> trainable parameter count, in representative order.
    """
    t = cells.cell_tables()
    by_pattern: dict[tuple[bool, ...], int] = {}
    out = {}
    x = jnp.zeros((1, 32, 32, 3), jnp.float32)
    for code in t.unique_codes:
        pattern = conv_edges_of(code)
        if pattern not in by_pattern:
            net = CellNet(conv_edges=pattern, channels=channels, cells_per_stage=cells_per_stage)
            ops = tuple(0 if c else 3 for c in pattern)
            shapes = jax.eval_shape(lambda k, n=net, o=ops: n.init(k, x, o, train=False),
                                    jax.random.key(0))
            by_pattern[pattern] = param_count(shapes)
        out[code] = by_pattern[pattern]
    return out


def space_summary() -> dict[str, Any]:
    """Computes the summary.

    Returns:
        JSON-serialisable dict with `num_cells`, `num_classes`, `num_configs`,
        `num_disconnected`, `class_size_histogram` (size -> number of classes),
        `group_counts` (over the 4096 cells and over the 1011 classes), `representative`
        (4096 official codes: the representative of each cell in code order) and
        `param_counts` (representative code -> parameter count at the default size).
    """
    t = cells.cell_tables()
    sizes, counts = np.unique(t.class_size, return_counts=True)
    rep_codes = [t.unique_codes[c] for c in t.class_id]
    pc = param_counts()
    groups_cells = np.bincount(t.group, minlength=4)[1:]
    groups_classes = np.bincount(t.group[t.representative], minlength=4)[1:]
    values = np.array(list(pc.values()))
    return {
        "num_cells": cells.NUM_CELLS,
        "num_classes": len(t.unique_codes),
        "num_configs": nhb2.NUM_CONFIGS,
        "num_unique_configs": len(t.unique_codes) * nhb2.NUM_HPS,
        "num_disconnected": int(t.disconnected.sum()),
        "class_size_histogram": {int(s): int(c) for s, c in zip(sizes, counts, strict=True)},
        "group_counts": {"cells": {str(g + 1): int(n) for g, n in enumerate(groups_cells)},
                         "classes": {str(g + 1): int(n) for g, n in enumerate(groups_classes)}},
        "param_count_range": [int(values.min()), int(values.max())],
        "representative": rep_codes,
        "param_counts": pc,
    }


def format_summary(info: dict[str, Any]) -> str:
    """Human-readable text of `space_summary()`."""
    hist = info["class_size_histogram"]
    lines = [
        "NAS-HPO-Bench-II search space",
        f"  cells: {info['num_cells']}   equivalence classes: {info['num_classes']}   "
        f"disconnected cells: {info['num_disconnected']} (one class)",
        f"  configs: {info['num_configs']:,} (cells x 8 lrs x 6 batch sizes); "
        f"unique: {info['num_unique_configs']:,}",
        "  class-size histogram (size: classes): "
        + ", ".join(f"{s}: {c}" for s, c in hist.items()),
        "  architecture groups (paper §4.3), cells / classes: "
        + ", ".join(f"group {g}: {info['group_counts']['cells'][g]} / "
                    f"{info['group_counts']['classes'][g]}" for g in ("1", "2", "3")),
        f"  parameters at default size: {info['param_count_range'][0]:,} - "
        f"{info['param_count_range'][1]:,}",
    ]
    return "\n".join(lines)


def write_json(info: dict[str, Any], path: str | os.PathLike) -> None:
    """Writes the summary atomically (temp file + rename)."""
    atomic_write_text(path, json.dumps(info, indent=1))


def plot(info: dict[str, Any], path: str | os.PathLike) -> None:
    """Class-size histogram and parameter-count histogram side by side (PNG)."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    fig = Figure(figsize=(10, 3.5))
    a, b = fig.subplots(1, 2)
    hist = info["class_size_histogram"]
    a.bar([str(s) for s in hist], list(hist.values()))
    a.set_yscale("log")
    a.set_xlabel("class size (cells)")
    a.set_ylabel("classes")
    a.tick_params(axis="x", labelrotation=90, labelsize=6)
    b.hist(np.array(list(info["param_counts"].values())) / 1e6, bins=30)
    b.set_xlabel("parameters (millions)")
    b.set_ylabel("classes")
    fig.suptitle("NAS-HPO-Bench-II: 4096 cells, 1011 classes")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
