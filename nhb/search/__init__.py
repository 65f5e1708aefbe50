"""nhb.search: search strategies as pure init/ask/tell pytrees and a simulated-time runner.

`make(name)` builds a strategy with the paper's reference settings (docs/protocol.md §6):

| name      | strategy                                                                    |
|-----------|-----------------------------------------------------------------------------|
| rs        | random search                                                               |
| re        | regularized evolution (population 10, sample size 3)                        |
| reinforce | REINFORCE (Adam 0.01, EMA baseline 0.9)                                     |
| sh        | successive halving (eta 3, 1/4/12 epochs), until the time budget            |
| hyperband | Hyperband (eta 3, 1/4/12 epochs), until the time budget                     |
| bohb      | BOHB, 40 iterations as the reference (`bohb_mode="budget"`: until the budget) |
| rs_re     | random search on (lr, bs) of a random cell for 5,000 s, then RE over cells  |
| bohb_re   | BOHB (4 iterations) on (lr, bs) of a random cell, then RE over cells        |
| mo_rs     | random search, scored by hypervolume (objective-agnostic: the same queries) |
| mo_re     | multi-objective RE (population 20, sample 5, Pareto-rank tournament)        |

`run`/`run_many` simulate searches (see `nhb.search.runner`; `n_workers` asynchronous workers),
`score` gives Table 3's numbers and the regret, `hypervolume` the multi-objective scores
(validation error, parameters, FLOPs, training time); `rng` is the cheap-to-compile
randomness the strategies use; `synthetic` builds tables with a known optimum for testing
strategies.

Every strategy searches the space of the table it runs on (`Benchmark.space`, a
`nhb.bench.SearchSpace`): on a sub-grid table (some classes, lrs, batch sizes) it samples and
mutates only configs the table holds (`sampling`); on the full space it is the reference
strategy, bit for bit. `study.run_study` runs a whole comparison and writes its outputs.
"""

from __future__ import annotations

from nhb.bench.subspace import SearchSpace
from nhb.search import hypervolume, rng, sampling, synthetic
from nhb.search.base import Scores, Strategy, Trajectory, score
from nhb.search.bohb import BOHB, BOHBParams
from nhb.search.evolution import RegularizedEvolution
from nhb.search.hyperband import Hyperband, SuccessiveHalving, schedule
from nhb.search.mo_evolution import MORandomSearch, MORegularizedEvolution
from nhb.search.random_search import RandomSearch
from nhb.search.reinforce import Reinforce, ReinforceParams
from nhb.search.runner import compiler_options, run, run_many
from nhb.search.sequential import Sequential

METHODS = ("rs", "re", "reinforce", "sh", "hyperband", "bohb", "rs_re", "bohb_re", "mo_rs",
           "mo_re")
MO_METHODS = ("mo_rs", "mo_re")
PAPER_METHODS = ("rs", "re", "reinforce", "bohb", "bohb_re", "rs_re")
BOHB_MODES = ("faithful", "budget")


def make(name: str, bohb_mode: str = "faithful", space: SearchSpace | None = None) -> Strategy:
    """A strategy with the reference settings.

    Args:
        name: one of `METHODS`.
        bohb_mode: "faithful" (BOHB stops after the reference's 40 iterations, its HPO phase
            in bohb_re after 4, whatever the clock) or "budget" (stop at the time budgets).
        space: the space to search (None: the runner uses the benchmark's table space).

    Returns:
        The strategy.
    """
    if bohb_mode not in BOHB_MODES:
        raise ValueError(f"bohb_mode {bohb_mode!r} is invalid; valid choices: {list(BOHB_MODES)}")
    faithful = bohb_mode == "faithful"
    table = {
        "rs": RandomSearch,
        "re": RegularizedEvolution,
        "reinforce": Reinforce,
        "sh": SuccessiveHalving,
        "hyperband": Hyperband,
        "bohb": lambda: BOHB(n_iterations=40 if faithful else None),
        "rs_re": lambda: Sequential(hpo="rs"),
        "bohb_re": lambda: Sequential(hpo="bohb", hpo_iterations=4 if faithful else None),
        "mo_rs": MORandomSearch,
        "mo_re": MORegularizedEvolution,
    }
    if name not in table:
        raise ValueError(f"unknown method {name!r}; valid choices: {list(METHODS)}")
    strategy = table[name]()
    return strategy if space is None else strategy.on(space)


__all__ = [
    "BOHB",
    "BOHB_MODES",
    "METHODS",
    "MO_METHODS",
    "PAPER_METHODS",
    "BOHBParams",
    "Hyperband",
    "MORandomSearch",
    "MORegularizedEvolution",
    "RandomSearch",
    "RegularizedEvolution",
    "Reinforce",
    "ReinforceParams",
    "Scores",
    "SearchSpace",
    "Sequential",
    "Strategy",
    "SuccessiveHalving",
    "Trajectory",
    "compiler_options",
    "hypervolume",
    "make",
    "rng",
    "run",
    "run_many",
    "sampling",
    "schedule",
    "score",
    "synthetic",
]
