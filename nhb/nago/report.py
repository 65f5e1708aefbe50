"""What a NAGO run reports: best generator, error/memory Pareto front, Table 1, plots.

* `best`: the query with the highest validation accuracy among those at the largest budget
  that has a successful query (BOHB's incumbent rule: a larger budget beats a smaller one).
* `pareto`: per generator vector its evaluation at the largest budget, then the points no
  other point beats in both validation error (%) and memory per sample (MiB)
  (`nhb.search.selection.pareto_front`).
* `bnn_table1`: the paper's Table 1 protocol on the collected queries: heteroscedastic vs
  homoscedastic BNN (`nhb.search.bnn.table1`), median test NLL and RMSE over random splits.
  Inputs are the generator's unit vector plus budget / max budget (queries of a BOHB run mix
  budgets; ASSUMPTION, the paper does not say how it used them), targets the validation
  error as a fraction.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nhb.search import bnn
from nhb.search.selection import pareto_front
from nhb.space.generators import GeneratorSpace


def _ok(queries: Sequence[dict]) -> list[dict]:
    return [q for q in queries if q["status"] == "ok"]


def best(queries: Sequence[dict]) -> dict[str, Any] | None:
    """The incumbent (see the module docstring), or None without a successful query."""
    ok = _ok(queries)
    if not ok:
        return None
    top = max(q["budget"] for q in ok)
    q = max((q for q in ok if q["budget"] == top), key=lambda q: q["valid_acc"])
    return {"vector": q["vector"], "valid_acc": q["valid_acc"], "budget": q["budget"],
            "memory_mb": q["memory_mb"], "params": q["params"]}


def final_queries(queries: Sequence[dict]) -> list[dict]:
    """Per vector, its successful query at the largest budget (first occurrence order)."""
    last: dict[tuple, dict] = {}
    for q in _ok(queries):
        k = tuple(q["vector"])
        if k not in last or q["budget"] >= last[k]["budget"]:
            last[k] = q
    return list(last.values())


def pareto(queries: Sequence[dict]) -> list[tuple[float, float, list[float]]]:
    """(validation error %, memory per sample MB, vector) of the front, by memory."""
    final = final_queries(queries)
    if not final:
        return []
    err = np.array([100.0 - q["valid_acc"] for q in final])
    mem = np.array([q["memory_mb"] for q in final])
    on = pareto_front(mem, err, higher_is_better=False)
    pts = [(float(err[i]), float(mem[i]), final[i]["vector"]) for i in np.flatnonzero(on)]
    return sorted(pts, key=lambda p: (p[1], p[0]))


def table1(key: jax.Array, queries: Sequence[dict], space: GeneratorSpace, max_budget: float,
           n_splits: int, config: bnn.BNNConfig) -> dict[str, dict[str, float]] | None:
    """Het vs hom BNN on the successful queries (module docstring); None below 5 points."""
    ok = _ok(queries)
    if len(ok) < 5:
        return None
    u = np.asarray(space.to_unit(np.array([q["vector"] for q in ok], np.float32)))
    b = np.array([[q["budget"] / max_budget] for q in ok], np.float32)
    y = 1.0 - np.array([q["valid_acc"] for q in ok], np.float32) / 100.0
    res = bnn.table1(key, jnp.asarray(np.concatenate([u, b], 1)), jnp.asarray(y),
                     n_splits=n_splits, config=config)
    return {m: {"nll": float(res[m]["nll"]), "rmse": float(res[m]["rmse"]),
                "nll_splits": [float(v) for v in res[m]["nll_splits"]],
                "rmse_splits": [float(v) for v in res[m]["rmse_splits"]]}
            for m in ("het", "hom")}


def plot_fronts(runs: dict[str, Sequence[dict]], path: str | pathlib.Path) -> pathlib.Path:
    """Validation error vs memory per sample of every successful query, fronts as steps.

    Args:
        runs: label (e.g. "hnag_mobo") -> its queries.
        path: PNG to write.

    Returns:
        The path.
    """
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for i, (label, queries) in enumerate(runs.items()):
        color = f"C{i}"
        final = final_queries(queries)
        ax.scatter([q["memory_mb"] for q in final], [100 - q["valid_acc"] for q in final],
                   s=14, alpha=0.5, color=color)
        front = pareto(queries)
        if front:
            ax.step([p[1] for p in front], [p[0] for p in front], where="post", color=color,
                    label=f"{label} ({len(final)} generators)")
    ax.set_xlabel("memory per sample (MiB)")
    ax.set_ylabel("validation error (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=120)
    return path


def compare_runs(run_dirs: Sequence[str | pathlib.Path], path: str | pathlib.Path
                 ) -> pathlib.Path:
    """`plot_fronts` of finished runs (their `queries.json`), labelled by method.

    Args:
        run_dirs: output directories of `run_nago`.
        path: PNG to write (its folder is created).

    Returns:
        The path.

    Raises:
        FileNotFoundError: a directory without `queries.json` / `summary.json`.
    """
    import json

    runs = {}
    for d in map(pathlib.Path, run_dirs):
        if not (d / "summary.json").exists():
            raise FileNotFoundError(f"{d} holds no finished NAGO run (no summary.json)")
        method = json.loads((d / "summary.json").read_text())["method"]
        label = method if method not in runs else f"{method} ({d.name})"
        runs[label] = json.loads((d / "queries.json").read_text())["queries"]
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return plot_fronts(runs, path)
