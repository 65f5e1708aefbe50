"""The NAP2 study's figures (the paper's Figures 2, 3, 6 and 8 for nhb's data), from a report.

`write_figures(report, out)` writes, for the training dataset and (if present) the transfer
dataset: accuracy gap vs resources per final-set size, top-3 / top-5 precision vs resources,
each agent's settings as points and its Pareto front as a line; the predictor's MSE vs
snapshots seen; Spearman correlation vs snapshots seen for NAP2 and both baselines.
"""

from __future__ import annotations

import pathlib

import numpy as np

from nhb.nap2.evaluation import AGENTS
from nhb.search.selection import pareto_front

COLORS = dict(nap2="tab:green", sh="tab:blue", hyperband="tab:orange", bohb="tab:purple")
LABELS = dict(nap2="NAP2", sh="Successive halving", hyperband="Hyperband", bohb="BOHB",
              valid_acc="validation accuracy", lc_extrapolation="learning-curve extrapolation")


def _front(ax, points: list[dict], metric: str, agent: str) -> None:
    res = np.array([p["resources"] for p in points])
    on = pareto_front(res, np.array([p[metric] for p in points]),
                      higher_is_better=metric != "accuracy_gap")
    pts = sorted((p for p, o in zip(points, on, strict=True) if o),
                 key=lambda p: p["resources"])
    ax.scatter([p["resources"] for p in points], [p[metric] for p in points], s=10,
               alpha=0.35, color=COLORS[agent])
    ax.plot([p["resources"] for p in pts], [p[metric] for p in pts], "-o", ms=3,
            color=COLORS[agent], label=LABELS[agent])


def _agent_figure(section: dict, metric: str, ylabel: str, title: str,
                  path: pathlib.Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    names = sorted(section["agents"][AGENTS[0]], key=lambda s: int(s.split("_")[1]))
    fig = Figure(figsize=(5 * len(names), 3.8))
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for agent in AGENTS:
            _front(ax, section["agents"][agent][name], metric, agent)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("resources (snapshot intervals of one network)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}, final set of {name.split('_')[1]}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _curves(section: dict, title: str, path: pathlib.Path) -> None:
    from matplotlib.figure import Figure

    pred = section["predictor"]
    fig = Figure(figsize=(10, 3.8))
    a, b = fig.subplots(1, 2)
    steps = range(1, len(pred["mse"]) + 1)
    a.plot(steps, pred["mse"], "-o", color=COLORS["nap2"])
    a.set_xlabel("snapshots seen")
    a.set_ylabel("MSE of predicted final accuracy (0..1)")
    a.set_title(f"{title}: NAP2 prediction error")
    for m, color in (("nap2", COLORS["nap2"]), ("valid_acc", "tab:gray"),
                     ("lc_extrapolation", "tab:red")):
        b.plot(steps, pred["spearman_curve"][m], "-o", ms=3, color=color,
               label=LABELS.get(m, m))
    b.set_xlabel("snapshots seen")
    b.set_ylabel("Spearman rho with final valid accuracy")
    b.set_title(f"{title}: ranking quality")
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_figures(report: dict, out: str | pathlib.Path) -> list[str]:
    """Writes the figures of `report` (from `run_study`) as PNGs into `out`.

    Args:
        report: the study's report.
        out: the directory.

    Returns:
        The written file names.
    """
    out = pathlib.Path(out)
    written = []
    sections = [("", "CIFAR-10 slice", report)]
    if "transfer" in report:
        sections.append(("transfer_", "Fashion-MNIST (transfer)", report["transfer"]))
    for prefix, title, section in sections:
        for metric, ylabel, name in (
                ("accuracy_gap", "accuracy gap to the best (%)", "gap"),
                ("top3_precision", "top-3 precision", "top3"),
                ("top5_precision", "top-5 precision", "top5")):
            path = out / f"{prefix}{name}_vs_resources.png"
            _agent_figure(section, metric, ylabel, title, path)
            written.append(path.name)
        path = out / f"{prefix}predictor.png"
        _curves(section, title, path)
        written.append(path.name)
    return written
