"""The NAP2 study end to end: snapshot datasets -> predictor (4-fold CV) -> agents -> report.

`run_study(config, output_dir)`:

1. builds or reuses the snapshot datasets (`nhb.nap2.build_snapshots`; resumable) of the
   training preset (CIFAR-10 slice) and the transfer preset (Fashion-MNIST);
2. fits the two autoencoders once on the training dataset's maps (no accuracy is used; nhb's
   choice to save CPU time: the paper does not say whether its autoencoders saw the test
   folds' maps), then per fold (`cv_folds`: all configs of a cell class in one fold) the
   LSTM on the other folds with early stopping on held-out classes, and predicts the fold;
   each fold's `Predictor` is saved (`predictors/fold<F>.nap2`) and reused by a rerun with
   the same configuration;
3. measures the predictor against the validation accuracy and a learning-curve
   extrapolation (Spearman after 1 and 10 snapshots, per fold and mean; MSE per snapshot);
4. runs every agent over its settings grid on each fold's candidates (`run_agents`) and
   summarises the folds (means, 95% intervals, Pareto fronts, equal-resource table);
5. applies the four fold predictors unchanged (their mean) to the transfer dataset and
   repeats 3-4 there;
6. writes `report.json` (atomically) and the figures (`nhb.nap2.plots`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Any

import jax
import numpy as np

from nhb._io import atomic_write, code_version
from nhb.nap2 import evaluation as ev
from nhb.nap2 import predictor as P
from nhb.nap2.dataset import SnapshotDataset, build_snapshots

REPORT_FILE = "report.json"
DEFAULT_GRID = ev.AgentGrid()
CPU_PREDICTOR = P.PredictorConfig(
    ae_widths=(64, 32), ae_epochs=40, ae_patience=8, ae_samples_per_epoch=256,
    ae_valid_samples=256, lstm_epochs=150, lstm_patience=20, lstm_hidden=64)
"""The study's predictor on a 2-core CPU (assumed): the paper's embedding (128) and epochs
caps for the LSTM, but autoencoder widths 64/32 instead of 512/256 and 40 epochs of 256 maps
(at the paper's widths an epoch of 256 maps takes about 100 s on 2 cores)."""


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What the study runs (`experiments/nap2.py` builds one from its ml_collections config).

    Attributes:
        train_preset, transfer_preset: `nhb.nap2.PRESETS` names (transfer None: skip it).
        runs_dir: where the snapshot builds live (`<runs_dir>/<preset>`).
        n_folds: cross-validation folds over cell classes (the paper: 4).
        predictor: the predictor's settings.
        grid: the agents' settings grids.
        spearman_steps: snapshot counts of the rank-correlation report (the issue: 1, 10).
        n_budgets: resource budgets of the equal-resources table (log-spaced over the range
            the agents used).
        seed: the study's seed (folds, fits, Hyperband/BOHB draws).
        executor: the build's executor ("local" or "ray").
    """

    train_preset: str = "nap2_cifar"
    transfer_preset: str | None = "nap2_fmnist"
    runs_dir: str = "runs"
    n_folds: int = 4
    predictor: P.PredictorConfig = CPU_PREDICTOR
    grid: ev.AgentGrid = DEFAULT_GRID
    spearman_steps: tuple[int, ...] = (1, 10)
    n_budgets: int = 6
    seed: int = 0
    executor: str = "local"

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> StudyConfig:
        """The inverse of `to_dict` (lists become tuples; unknown keys are an error).

        Raises:
            ValueError: an unknown field; the message names the valid ones.
        """
        def build(kind, values):
            names = {f.name for f in dataclasses.fields(kind)}
            bad = sorted(set(values) - names)
            if bad:
                raise ValueError(f"unknown {kind.__name__} fields {bad}; valid: {sorted(names)}")
            return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}

        top = build(cls, d)
        if isinstance(top.get("predictor"), dict):
            top["predictor"] = P.PredictorConfig(**build(P.PredictorConfig, top["predictor"]))
        if isinstance(top.get("grid"), dict):
            top["grid"] = ev.AgentGrid(**build(ev.AgentGrid, top["grid"]))
        return cls(**top)

    @classmethod
    def quick(cls, **overrides: Any) -> StudyConfig:
        """The smallest meaningful study (`--quick`, tests, notebook): the `nap2_quick`
        datasets (16 + 16 configs), 2 folds of 8 candidates, final sets of 2 and 4, the quick
        predictor and small agent grids; a few minutes on 2 cores including the builds."""
        base = dict(train_preset="nap2_quick", transfer_preset="nap2_quick_fmnist", n_folds=2,
                    predictor=P.PredictorConfig.quick(ae_embedding=16),
                    grid=ev.AgentGrid(final_sizes=(2, 4), firsts=(1, 2), intervals=(1,),
                                      cuts=(0.25, 0.5), cut_decays=(1.0, 1.5), etas=(2, 3),
                                      min_budgets=(1,), seeds=3))
        return cls(**{**base, **overrides})


def _predictor_path(out: pathlib.Path, fold: int) -> pathlib.Path:
    return out / "predictors" / f"fold{fold}.nap2"


def _cached(path: pathlib.Path, cfg: P.PredictorConfig, fingerprint: str) -> P.Predictor | None:
    if not path.exists():
        return None
    try:
        pred = P.load_predictor(path)
    except (ValueError, FileNotFoundError):
        return None
    ok = pred.config == cfg and pred.meta.get("study_fingerprint") == fingerprint
    return pred if ok else None


def fit_folds(key: jax.Array, ds: SnapshotDataset, folds: np.ndarray, cfg: StudyConfig,
              out: pathlib.Path, progress: bool = True
              ) -> tuple[list[P.Predictor], np.ndarray, np.ndarray]:
    """The per-fold predictors (shared autoencoders, one LSTM per fold), loaded if cached.

    Args:
        key: PRNG key.
        ds: the training dataset.
        folds: int [N] fold of every run.
        cfg: the study's configuration.
        out: output directory (`predictors/` is written there).
        progress: progress bars.

    Returns:
        (one `Predictor` per fold, fold f's never saw fold f's accuracies; the weight and
        gradient embeddings [N, K, E] of `ds` under the shared autoencoders).
    """
    pc = cfg.predictor
    fingerprint = json.dumps([ds.name, len(ds), folds.tolist(), cfg.seed])
    cached = [_cached(_predictor_path(out, f), pc, fingerprint) for f in range(cfg.n_folds)]
    if all(c is not None for c in cached):
        return (cached, *_embeddings(cached[0], ds))
    k_w, k_g, k_l = jax.random.split(key, 3)
    everything = np.ones(len(ds), bool)
    tr, va = P.split_train_valid(ds.cell_class, everything, pc.valid_fraction, cfg.seed)
    ae_w, _ = P.fit_autoencoder(k_w, ds.weights, ds.n_layers, tr, va, pc, progress)
    ae_g, _ = P.fit_autoencoder(k_g, ds.grads, ds.n_layers, tr, va, pc, progress)
    e_w = P.embed(ae_w, ds.weights, ds.n_layers, pc)
    e_g = P.embed(ae_g, ds.grads, ds.n_layers, pc)
    targets = ds.final_valid_acc / 100.0
    predictors = []
    for f in range(cfg.n_folds):
        tr, va = P.split_train_valid(ds.cell_class, folds != f, pc.valid_fraction,
                                     cfg.seed + f)
        lstm, hist = P.fit_lstm(jax.random.fold_in(k_l, f), e_w, e_g, targets, tr, va, pc,
                                progress)
        pred = P.Predictor(ae_w, ae_g, lstm, pc, dict(
            code_version=code_version(), fold=f, dataset=ds.name, n_train=len(tr),
            n_valid=len(va), study_fingerprint=fingerprint, history=dict(lstm=hist)))
        P.save_predictor(_predictor_path(out, f), pred)
        predictors.append(pred)
    return predictors, e_w, e_g


def _embeddings(pred: P.Predictor, ds: SnapshotDataset) -> tuple[np.ndarray, np.ndarray]:
    return (P.embed(pred.ae_weights, ds.weights, ds.n_layers, pred.config),
            P.embed(pred.ae_grads, ds.grads, ds.n_layers, pred.config))


def _budgets(per_fold: list[dict], n: int) -> list[float]:
    res = [p["resources"] for fold in per_fold for agent in fold.values()
           for pts in agent.values() for p in pts]
    lo, hi = max(min(res), 1.0), max(res)
    return [float(round(b)) for b in np.geomspace(lo, hi, n)]


def evaluate_set(key: jax.Array, ds: SnapshotDataset, predicted: np.ndarray,
                 groups: list[np.ndarray], cfg: StudyConfig) -> dict:
    """Predictor quality and agents on candidate sets `groups` (run indices) of `ds`.

    Args:
        key: PRNG key.
        ds: the dataset.
        predicted: float [N, K] predictions for every run (out of fold).
        groups: the candidate sets (the folds; one set for the transfer dataset).
        cfg: the configuration.

    Returns:
        {"predictor": {method: {step: mean rho}, "per_set": [...], "mse": [K],
        "spearman_curve": {method: [K]}}, "agents": ..., "equal_resources": ...}.
    """
    final = ds.final_valid_acc
    x_end = ds.total_steps / ds.every
    feats, cards = ds.features()
    k = ds.n_snapshots
    per_set, curves, runs = [], [], []
    for i, idx in enumerate(groups):
        x_e = float(np.median(x_end[idx]))
        curve = ev.rank_quality(predicted[idx], ds.valid_acc[idx], final[idx],
                                tuple(range(1, k + 1)), x_e)
        curves.append(curve)  # the report's steps beyond K read the last snapshot
        per_set.append({m: {str(s): c[str(min(s, k))] for s in cfg.spearman_steps}
                        for m, c in curve.items()})
        runs.append(ev.run_agents(jax.random.fold_in(key, i), predicted[idx],
                                  ds.valid_loss[idx], final[idx], feats[idx], cards, cfg.grid))
    mean = {m: {s: float(np.nanmean([p[m][s] for p in per_set])) for s in per_set[0][m]}
            for m in per_set[0]}
    curve = {m: [float(np.nanmean([c[m][str(t)] for c in curves])) for t in range(1, k + 1)]
             for m in curves[0]}
    summary = ev.summarise(runs, _budgets(runs, cfg.n_budgets))
    return dict(predictor=dict(mean, per_set=per_set, spearman_curve=curve,
                               mse=ev.mse_curve(predicted, final)), **summary)


def run_study(config: StudyConfig, output_dir: str | os.PathLike, progress: bool = True,
              figures: bool = True) -> dict:
    """Runs the whole study (see the module docstring) and writes `report.json`.

    Args:
        config: what to run.
        output_dir: the output directory (created).
        progress: progress bars.
        figures: also write the figures.

    Returns:
        The report (as written).
    """
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timings: dict[str, float] = {}
    key = jax.random.key(config.seed)
    runs = pathlib.Path(config.runs_dir)
    train = build_snapshots(config.train_preset, runs / config.train_preset, config.executor,
                            progress)
    transfer = None
    if config.transfer_preset:
        transfer = build_snapshots(config.transfer_preset, runs / config.transfer_preset,
                                   config.executor, progress)
    timings["datasets_s"] = time.time() - t0
    folds = P.cv_folds(train.cell_class, config.n_folds, config.seed)
    t1 = time.time()
    predictors, e_w, e_g = fit_folds(jax.random.fold_in(key, 1), train, folds, config, out,
                                     progress)
    timings["predictor_fit_s"] = time.time() - t1
    predicted = np.zeros(train.valid_acc.shape, np.float32)
    for f, pred in enumerate(predictors):
        predicted[folds == f] = pred.predict_embedded(e_w[folds == f], e_g[folds == f])
    t2 = time.time()
    groups = [np.flatnonzero(folds == f) for f in range(config.n_folds)]
    report: dict[str, Any] = dict(
        config=config.to_dict(), code_version=code_version(),
        datasets={d.name: dict(runs=len(d), snapshots=d.n_snapshots, every=d.every,
                               dataset=d.dataset, diverged=int(d.diverged.sum()),
                               final_valid_acc=[float(np.nanmin(d.final_valid_acc)),
                                                float(np.nanmax(d.final_valid_acc))])
                  for d in (train, transfer) if d is not None},
        folds=[len(g) for g in groups])
    report.update(evaluate_set(jax.random.fold_in(key, 2), train, predicted, groups, config))
    if transfer is not None:
        t_w, t_g = _embeddings(predictors[0], transfer)
        t_pred = np.mean([p.predict_embedded(t_w, t_g) for p in predictors], 0)
        report["transfer"] = evaluate_set(jax.random.fold_in(key, 3), transfer, t_pred,
                                          [np.arange(len(transfer))], config)
    timings["evaluation_s"] = time.time() - t2
    report["timings"] = dict(timings, total_s=time.time() - t0)
    if figures:
        from nhb.nap2.plots import write_figures

        report["figures"] = write_figures(report, out)
    data = json.dumps(report, indent=1, allow_nan=True).encode()
    atomic_write(out / REPORT_FILE, lambda f: f.write(data))
    return report
