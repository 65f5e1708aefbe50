"""`run_nago(config, output_dir)`: one NAGO search (BOHB, MOBO or random search) end to end.

* **BOHB** (`hnag_bohb`, `rnag_bohb`): `nhb.search.box_bohb` over the generator's unit cube
  (HpBandSter's KDE, eta 2, the run's budgets); each successive-halving stage is asked as a
  whole and its queries evaluated (in parallel with `executor="ray"`).
* **MOBO** (`hnag_mobo`, `rnag_mobo`): `mobo_init` uniform queries at `mobo_budget`, then
  per iteration one heteroscedastic BNN per objective (validation error as a fraction; memory
  per sample in MB), fit by adaptive SGHMC (`nhb.search.bnn`), and a batch from USeMO with
  hard local penalisation (`nhb.search.mobo.propose_batch`). Failed queries stay in the
  observed set (never proposed again) but not in the BNN's training data.
* **Random search** (`hnag_rs`): `rs_queries` uniform queries at `max_budget`.

Outputs in `output_dir`: `queries.json` (every query, rewritten atomically after each one),
`summary.json` (method, queries, best, pareto, and after BOHB `bnn_table1`), `pareto.png`.
Resuming: every random choice is keyed by the config's seed, so re-running the same config
replays the same decisions; queries already in `queries.json` (same settings fingerprint)
are read back instead of trained again, so an interrupted run continues where it stopped and
never loses a finished query.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from nhb._io import atomic_write_text
from nhb.data import load_dataset
from nhb.nago import report
from nhb.nago.config import NAGOConfig
from nhb.nago.evaluate import evaluate, loss_of
from nhb.search import bnn, box_bohb, mobo
from nhb.space import generators
from nhb.train.engine import TrainData

EXECUTORS = ("local", "ray")


def space_of(config: NAGOConfig) -> generators.GeneratorSpace:
    """The generator space a config searches."""
    if config.family == "rnag":  # RNAG: nhb's ranges for "paper" / "released"
        return generators.make("rnag", config.ranges if config.ranges in ("cpu", "tiny")
                               else None)
    return generators.make("hnag", config.ranges)


@functools.lru_cache(maxsize=2)
def load_data(dataset: str, max_train: int | None, max_valid: int | None
              ) -> tuple[TrainData, int]:
    """Device arrays of the dataset (truncated) and its number of classes."""
    ds = load_dataset(dataset)
    arrays = (ds.train_images[:max_train], ds.train_labels[:max_train],
              ds.valid_images[:max_valid], ds.valid_labels[:max_valid],
              ds.test_images[:max_valid], ds.test_labels[:max_valid])
    data = TrainData(*(jnp.asarray(a if i % 2 == 0 else a.astype(np.int32))
                       for i, a in enumerate(arrays)))
    return data, int(np.max(ds.train_labels)) + 1


def fingerprint(config: NAGOConfig) -> str:
    """Settings that change a query's result (not the search's own settings)."""
    keys = ("ranges", "seed_scheme", "stage_ratios", "dataset", "max_train", "max_valid",
            "param_limit", "batch_size", "learning_rate", "weight_decay", "memory", "seed")
    d = {k: getattr(config, k) for k in keys} | {"family": config.family}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


class QueryLog:
    """Every query of a run, persisted atomically as JSON after each addition."""

    def __init__(self, path: pathlib.Path | None, fp: str):
        self.path, self.fp, self.queries = path, fp, []
        self._index: dict[tuple, dict] = {}
        if path is not None and path.exists():
            saved = json.loads(path.read_text())
            if saved.get("fingerprint") == fp:
                for q in saved["queries"]:
                    self._remember(q)

    @staticmethod
    def key(vector: Sequence[float], budget: float) -> tuple:
        """Lookup key: the vector's float32 values and the budget."""
        return (*np.asarray(vector, np.float32).tolist(), float(budget))

    def _remember(self, q: dict) -> None:
        self.queries.append(q)
        self._index[self.key(q["vector"], q["budget"])] = q

    def get(self, vector: Sequence[float], budget: float) -> dict | None:
        """A finished query of this vector and budget, if any."""
        return self._index.get(self.key(vector, budget))

    def add(self, q: dict) -> None:
        """Records a query and rewrites the file."""
        self._remember(q)
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(
                {"fingerprint": self.fp, "queries": self.queries}, indent=1) + "\n")


def _ray_evaluate(config: NAGOConfig, vector: list[float], budget: float) -> dict:
    """One query in a Ray worker (the data are loaded once per worker process)."""
    data, classes = load_data(config.dataset, config.max_train, config.max_valid)
    return evaluate(config, space_of(config), vector, budget, data, classes).to_dict()


class Evaluator:
    """Evaluates batches of queries, from the log when already done, and records them."""

    def __init__(self, config: NAGOConfig, log: QueryLog, executor: str, bar: tqdm.tqdm):
        if executor not in EXECUTORS:
            raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
        self.config, self.log, self.executor, self.bar = config, log, executor, bar
        self.space = space_of(config)
        self.data, self.classes = load_data(config.dataset, config.max_train, config.max_valid)

    def __call__(self, vectors: Any, budget: float) -> list[dict]:
        """Query dicts for values [n, D] at `budget`, in order."""
        vecs = [[float(v) for v in row] for row in np.asarray(vectors, np.float32)]
        out: list[dict | None] = [self.log.get(v, budget) for v in vecs]
        todo = [i for i, q in enumerate(out) if q is None]
        self.bar.update(len(vecs) - len(todo))
        if self.executor == "ray" and len(todo) > 1:
            import ray

            if not ray.is_initialized():
                ray.init(include_dashboard=False)
            remote = ray.remote(num_cpus=1)(_ray_evaluate)
            refs = {remote.remote(self.config, vecs[i], budget): i for i in todo}
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    i = refs.pop(ref)
                    out[i] = ray.get(ref)
                    self._record(out[i])
        else:
            for i in todo:
                out[i] = evaluate(self.config, self.space, vecs[i], budget, self.data,
                                  self.classes).to_dict()
                self._record(out[i])
        return out  # type: ignore[return-value]

    def _record(self, q: dict) -> None:
        self.log.add(q)
        self.bar.update(1)
        self.bar.set_postfix(acc=f"{q['valid_acc']:.1f}", status=q["status"])


def _bohb(config: NAGOConfig, ev: Evaluator, key: jax.Array) -> None:
    space = ev.space
    cfg = box_bohb.BoxBOHBConfig(
        min_budget=config.min_budget, max_budget=config.max_budget, eta=config.eta,
        n_iterations=config.bohb_iterations, num_samples=config.bohb_num_samples,
        random_fraction=config.bohb_random_fraction, canonicalize=space.canonical_unit)
    state = box_bohb.init(key, (0,) * space.dim, cfg)
    i = 0
    while not box_bohb.done(state):
        units, budget, state = box_bohb.ask(jax.random.fold_in(key, i), state)
        i += 1
        queries = ev(space.from_unit(units), budget)
        state = box_bohb.tell(state, [loss_of(q) for q in queries])


def bnn_config(config: NAGOConfig, heteroscedastic: bool = True) -> bnn.BNNConfig:
    """The run's BNN surrogate settings (the paper's 3 x 10 tanh net)."""
    return bnn.BNNConfig(heteroscedastic=heteroscedastic, num_burn_in_steps=config.bnn_burn_in,
                         num_samples=config.bnn_samples, keep_every=config.bnn_keep_every)


def _posterior(post_err: bnn.BNNPosterior, post_mem: bnn.BNNPosterior, x: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    (m0, v0), (m1, v1) = bnn.predict(post_err, x), bnn.predict(post_mem, x)
    return (jnp.stack([m0, m1], 1).astype(jnp.float32),
            jnp.sqrt(jnp.stack([v0, v1], 1)).astype(jnp.float32))


def objectives(queries: Sequence[dict]) -> np.ndarray:
    """[n, 2] MOBO objectives: validation error (fraction) and memory per sample (MB); NaN
    rows for failed queries."""
    return np.array([[1.0 - q["valid_acc"] / 100.0, q["memory_mb"]] if q["status"] == "ok"
                     else [np.nan, np.nan] for q in queries], np.float32)


def _mobo(config: NAGOConfig, ev: Evaluator, key: jax.Array) -> None:
    space, budget = ev.space, config.mobo_budget
    k_init, k_bo = jax.random.split(key)
    queries = ev(space.sample(k_init, (config.mobo_init,)), budget)
    mcfg = mobo.MOBOConfig(batch_size=config.mobo_batch_size)
    for t in range(1, config.mobo_batches + 1):
        x = np.asarray(space.to_unit(np.array([q["vector"] for q in queries], np.float32)))
        y = objectives(queries)
        ok = np.isfinite(y).all(1)
        if ok.sum() < 2:
            raise RuntimeError(f"MOBO needs >= 2 successful queries to fit its surrogates, "
                               f"got {int(ok.sum())} of {len(queries)}")
        k_t = jax.random.fold_in(k_bo, t)
        posts = [bnn.fit(jax.random.fold_in(k_t, j), bnn_config(config), x[ok], y[ok, j])
                 for j in range(2)]
        post = jax.tree_util.Partial(_posterior, *posts)
        units, _ = mobo.propose_batch(jax.random.fold_in(k_t, 2), post, x, y, t, mcfg)
        queries = queries + ev(space.from_unit(units), budget)


def _rs(config: NAGOConfig, ev: Evaluator, key: jax.Array) -> None:
    ev(ev.space.sample(key, (config.rs_queries,)), config.max_budget)


def planned_queries(config: NAGOConfig) -> int:
    """Evaluations the run makes (for the progress bar)."""
    if config.method.endswith("bohb"):
        return int(box_bohb.BoxBOHBConfig(
            min_budget=config.min_budget, max_budget=config.max_budget, eta=config.eta,
            n_iterations=config.bohb_iterations).budget_counts().sum())
    if config.method.endswith("mobo"):
        return config.mobo_init + config.mobo_batches * config.mobo_batch_size
    return config.rs_queries


SEARCHES: dict[str, Callable] = {"bohb": _bohb, "mobo": _mobo, "rs": _rs}


def run_nago(config: NAGOConfig, output_dir: str | pathlib.Path | None = None,
             progress: bool = True, executor: str = "local") -> dict[str, Any]:
    """Runs one NAGO search and writes its outputs (module docstring).

    Args:
        config: the run's settings.
        output_dir: where to write (None: nothing is written, nothing resumed).
        progress: show a progress bar.
        executor: "local" (this process) or "ray" (a Ray task per query of a batch).

    Returns:
        The summary dict (also `summary.json`).
    """
    out = None if output_dir is None else pathlib.Path(output_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    log = QueryLog(None if out is None else out / "queries.json", fingerprint(config))
    key = jax.random.key(config.seed)
    with tqdm.tqdm(total=planned_queries(config), disable=not progress, unit="query",
                   desc=config.method, dynamic_ncols=True) as bar:
        ev = Evaluator(config, log, executor, bar)
        SEARCHES[config.method.split("_")[1]](config, ev, key)
    queries = log.queries
    summary: dict[str, Any] = {
        "method": config.method, "queries": len(queries),
        "failed": sum(q["status"] == "failed" for q in queries),
        "diverged": sum(q["status"] == "diverged" for q in queries),
        "best": report.best(queries), "pareto": report.pareto(queries),
        "train_time": float(sum(q["train_time"] for q in queries)),
        "compile_time": float(sum(q["compile_time"] for q in queries)),
        "config": config.to_dict()}
    if config.method.endswith("bohb"):
        summary["bnn_table1"] = report.table1(
            jax.random.fold_in(key, 10**6), queries, ev.space, config.max_budget,
            config.table1_splits, bnn_config(config))
    if out is not None:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
        report.plot_fronts({config.method: queries}, out / "pareto.png")
    return summary
