"""A whole DHA run: search, per-epoch ISTA recovery, retrain, test; resumable, logged.

`run_dha(config, output_dir)` runs any variant (`nhb.dha.config.VARIANTS`) on either space
and returns a `DHAResult` holding the ready-to-use model. Per epoch it logs the learned (or
scheduled) lr and weight decay, the policy's entropy and top pairs, the support, train and
validation accuracy; at the end the test accuracy, the derived cell (the official code for
"nhb2", the genotype for "darts") and the wall time per phase go to `summary.json`.

Phases (reference §3-4): the search runs at most `search_epochs`; a one-stage search stops
after the epoch that starts with every node frozen. Then the one-stage variants keep
training the same weights with alpha fixed at its last value on the last support (drop-path
rising to `drop_path_prob`, `_tune` step sizes, optional HPO restart); the two-stage variants
train the derived cell from scratch. With `output_dir`, the state is checkpointed after
every epoch (atomically) and a rerun resumes from the last finished epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from flax import serialization

from nhb._io import atomic_write, atomic_write_text
from nhb.data.cifar10 import load_dataset
from nhb.dha import hpo, ista, policy
from nhb.dha.config import DHAConfig
from nhb.dha.networks import Network, make_network, support_to_active
from nhb.dha.step import DHAState, Phase, init_state, make_evaluate, make_train_epoch
from nhb.space.arch import to_cell_code, to_genotype
from nhb.train.engine import TrainData
from nhb.train.grid import resolve_sgd_loop

SUMMARY_FILE, CHECKPOINT_FILE, PROGRESS_FILE, MODEL_FILE = (
    "summary.json", "checkpoint.msgpack", "progress.json", "model.msgpack")
NO_FREEZE = -1.0  # a distance limit no node reaches (two-stage search: no freezing)


@dataclasses.dataclass
class DHAResult:
    """The outcome of `run_dha`.

    Attributes:
        summary: what `summary.json` holds.
        state: the final `DHAState`.
        network: the supernet description; `module` computes the derived cell only.
        module: the Linen module of the derived network (`active` = the final support).
        alphas: the architecture weights the derived network runs with.
    """

    summary: dict[str, Any]
    state: DHAState
    network: Network
    module: Any
    alphas: jax.Array

    def predict(self, images: Any) -> jax.Array:
        """Logits of uint8 images [N, 32, 32, 3] (eval mode, normalised here)."""
        from nhb.data.augment import normalize

        variables = {"params": self.state.params, "batch_stats": self.state.batch_stats}
        return self.network.apply_eval(self.module, variables, normalize(jnp.asarray(images)),
                                       self.alphas)


def _cell(network: Network, support: Any) -> Any:
    if network.space.name == "nhb2":
        return to_cell_code(support)
    g = to_genotype(support)
    return {"normal": [list(p) for p in g.normal], "normal_concat": list(g.normal_concat),
            "reduce": [list(p) for p in g.reduce], "reduce_concat": list(g.reduce_concat)}


def load_data(config: DHAConfig) -> TrainData:
    """The configured dataset's train / valid / test splits on device (truncated)."""
    ds = load_dataset(config.dataset)
    tr, te = config.max_train, config.max_test
    return TrainData(*(jnp.asarray(a) for a in (
        ds.train_images[:tr], ds.train_labels[:tr].astype("int32"),
        ds.valid_images[:te], ds.valid_labels[:te].astype("int32"),
        ds.test_images[:te], ds.test_labels[:te].astype("int32"))))


def fingerprint(config: DHAConfig) -> str:
    """Identifies a run's settings (a checkpoint resumes only the same settings)."""
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def cosine_lr(config: DHAConfig, epoch: int, t_max: int) -> float:
    """SGD + cosine annealing from w_lr to w_lr_min (PyTorch `CosineAnnealingLR`)."""
    lo, hi = config.w_lr_min, config.w_lr
    return lo + (hi - lo) * 0.5 * (1.0 + math.cos(math.pi * epoch / max(t_max, 1)))


def _set_inner_lr(opt_state: Any, lr: float) -> Any:
    return hpo.with_hparams(opt_state, {"learning_rate": jnp.float32(lr)})


def start_retrain(key: jax.Array, config: DHAConfig, network: Network,
                  state: DHAState) -> DHAState:
    """The state the retrain phase starts from (reference §4, `search_darts.py:229-240`).

    One-stage: the same weights, alpha = Eq. 7 at the last codes on the last support
    (`alphas_detach`), `_tune` step sizes, optional (lr, wd) restart. Two-stage: the derived
    cell from scratch (fresh weights, policy and hyperparameters) with alpha = 1 on the
    support.
    """
    v = config.variant_spec
    if v.search == "two_stage":
        fresh = init_state(key, config, network)
        state = fresh.replace(ista=state.ista,
                              alphas=state.ista.support.astype(jnp.float32))
    else:
        state = state.replace(alphas=ista.alphas(state.ista))
        if v.hpo and config.restart_hpo:
            state = state.replace(hparams=hpo.midpoints(config.hparam_bounds))
    return state.replace(tau_opt=_set_inner_lr(state.tau_opt, config.d_lr_tune),
                         h_opt=_set_inner_lr(state.h_opt, config.h_lr_tune))


def phase_of(config: DHAConfig, name: str) -> tuple[Phase, bool, bool]:
    """(traced flags, bilevel program, HPO program) of the "search" or "retrain" phase."""
    v = config.variant_spec
    if name == "search":
        if v.search == "one_stage":
            return (Phase.make(da=v.da, train_codes=True, magnitude=config.magnitude), False,
                    v.hpo)
        return Phase.make(da=False, magnitude=config.magnitude), True, False
    return Phase.make(da=v.da, retrain=True, magnitude=config.magnitude_tune), False, v.hpo


# Settings that change the compiled epoch / evaluation programs; everything else (variant,
# phase, step sizes, schedules, epochs, seed) enters as traced values or host logic, so all
# variants and both phases of one size share one compiled program.
PROGRAM_FIELDS = ("space", "darts_channels", "darts_layers", "nhb2_channels",
                  "nhb2_cells_per_stage", "auxiliary", "aux_weight", "batch_size", "val_ratio",
                  "proj_dims", "alpha_lr", "alpha_weight_decay", "grad_clip", "w_momentum",
                  "cutout_size", "temperature", "d_momentum", "lr_bounds", "wd_bounds",
                  "h_momentum")
_PROGRAMS: dict[tuple, Any] = {}


def programs(config: DHAConfig, n_train: int, active: tuple | None, bilevel: bool = False,
             hpo_step: bool = False) -> tuple[Any, Any]:
    """The jitted (train_epoch, evaluate) of a size and kind, shared by variants (cached)."""
    key = (tuple(getattr(config, f) for f in PROGRAM_FIELDS), n_train, active, bilevel,
           hpo_step)
    if key not in _PROGRAMS:
        network = make_network(config)
        epoch = make_train_epoch(config, network, n_train, active, bilevel, hpo_step)
        if resolve_sgd_loop("auto") == "scan":
            epoch = jax.jit(epoch)
        _PROGRAMS[key] = (epoch, jax.jit(make_evaluate(config, network, active)))
    return _PROGRAMS[key]


def _save(out: pathlib.Path, state: DHAState, progress: dict[str, Any]) -> None:
    blob = serialization.to_bytes(jax.device_get(state))
    atomic_write(out / CHECKPOINT_FILE, lambda f: f.write(blob))
    atomic_write_text(out / PROGRESS_FILE, json.dumps(progress, indent=1))


def _resume(out: pathlib.Path | None, template: DHAState, fp: str
            ) -> tuple[DHAState, dict[str, Any]] | None:
    if out is None or not (out / PROGRESS_FILE).exists():
        return None
    progress = json.loads((out / PROGRESS_FILE).read_text())
    if progress.get("fingerprint") != fp:
        raise ValueError(f"{out} holds a run with other settings (fingerprint "
                         f"{progress.get('fingerprint')} != {fp}); use another output_dir")
    state = serialization.from_bytes(template, (out / CHECKPOINT_FILE).read_bytes())
    return jax.tree.map(jnp.asarray, state), progress


def _epoch_log(network: Network, phase: str, epoch: int, state: DHAState, stats: Any,
               valid: tuple[Any, Any], seconds: float) -> dict[str, Any]:
    return {
        "phase": phase, "epoch": epoch,
        "lr": float(state.hparams["learning_rate"]),
        "wd": float(state.hparams["weight_decay"]),
        "policy_entropy": float(policy.entropy(state.tau)),
        "top_pairs": policy.top_pairs(state.tau, 5),
        "cell": _cell(network, state.ista.support),
        "frozen_nodes": int(np.sum(np.asarray(state.ista.frozen))),
        "train_loss": float(stats.loss), "train_acc": float(stats.acc),
        "hyper_loss": float(stats.hyper_loss), "nonfinite": bool(stats.nonfinite),
        "valid_acc": float(valid[0]), "valid_loss": float(valid[1]), "seconds": seconds,
    }


def run_dha(config: DHAConfig, output_dir: str | os.PathLike | None = None,
            progress: bool = True, data: TrainData | None = None,
            max_epochs: int | None = None) -> DHAResult | None:
    """Runs one variant end to end (see the module docstring).

    Args:
        config: the settings.
        output_dir: where `summary.json`, the checkpoint, the model and the figure go; None
            keeps everything in memory (no resume).
        progress: tqdm bar over epochs.
        data: the splits (default `load_data(config)`).
        max_epochs: stop after this many epochs in this call (checkpointed; rerun to go on).

    Returns:
        The `DHAResult`, or None when `max_epochs` stopped the run before its end.
    """
    out = None if output_dir is None else pathlib.Path(output_dir)
    data = load_data(config) if data is None else data
    n_train = int(data.train_x.shape[0])
    network = make_network(config)
    key = jax.random.PRNGKey(config.seed)
    k_init, k_retrain = jax.random.split(key)
    fp = fingerprint(config)
    state = init_state(k_init, config, network)
    prog: dict[str, Any] = {"fingerprint": fp, "phase": "search", "next_epoch": 0,
                            "stop": False, "history": [],
                            "seconds": {"search": 0.0, "retrain": 0.0, "eval": 0.0}}
    resumed = _resume(out, state, fp)
    if resumed is not None:
        state, prog = resumed
    total = config.search_epochs + config.retrain_epochs
    bar = tqdm.tqdm(total=total, initial=len(prog["history"]), disable=not progress,
                    unit="epoch", desc=config.variant)
    v = config.variant_spec
    dist = config.dist_limit if v.search == "one_stage" else NO_FREEZE

    def evaluate(active, alphas, split):
        t = time.perf_counter()
        acc, loss = programs(config, n_train, active)[1](state, alphas, *data.split(split))
        prog["seconds"]["eval"] += time.perf_counter() - t
        return float(acc), float(loss)

    def active_ops():
        if not config.computes_support_only:
            return None
        return support_to_active(state.ista.support)

    left = math.inf if max_epochs is None else max_epochs  # epochs left in this call

    if prog["phase"] == "search":
        phase, bilevel, phase_hpo = phase_of(config, "search")
        for epoch in range(prog["next_epoch"], config.search_epochs):
            if prog["stop"]:  # resumed after the stopping epoch was saved
                break
            if left <= 0:
                bar.close()
                return None
            left -= 1
            stop = bool(ista.all_frozen(state.ista)) and v.search == "one_stage"
            if not phase_hpo:  # SGD: constant (one-stage) or cosine (two-stage) lr
                lr = (config.w_lr if v.search == "one_stage"
                      else cosine_lr(config, epoch, config.search_epochs))
                state = state.replace(hparams={"learning_rate": jnp.float32(lr),
                                               "weight_decay": jnp.float32(
                                                   config.w_weight_decay)})
            t = time.perf_counter()
            active = active_ops()  # the support is fixed within an epoch
            epoch_fn = programs(config, n_train, active, bilevel, phase_hpo)[0]
            state, stats = epoch_fn(state, phase, epoch, jnp.float32(0.0), data)
            codes, _ = ista.end_of_epoch(state.ista, epoch, dist, network.accept)
            state = state.replace(ista=codes)
            jax.block_until_ready(state.params)
            prog["seconds"]["search"] += time.perf_counter() - t
            valid = evaluate(active_ops(), ista.alphas(state.ista), "valid")
            prog["history"].append(_epoch_log(network, "search", epoch, state, stats, valid,
                                              time.perf_counter() - t))
            prog["next_epoch"] = epoch + 1
            bar.update(1)
            bar.set_postfix(valid=f"{valid[0]:.1f}", frozen=prog["history"][-1]["frozen_nodes"])
            prog["stop"] = stop
            if out is not None:
                _save(out, state, prog)
            if stop:
                break
        state = start_retrain(k_retrain, config, network, state)
        prog.update(phase="retrain", next_epoch=0)
        if out is not None:
            _save(out, state, prog)

    active = active_ops()
    phase, _, phase_hpo = phase_of(config, "retrain")
    epoch_fn = programs(config, n_train, active, False, phase_hpo)[0]
    for epoch in range(prog["next_epoch"], config.retrain_epochs):
        if left <= 0:
            bar.close()
            return None
        left -= 1
        if not v.hpo:
            lr = cosine_lr(config, epoch, config.retrain_epochs)
            state = state.replace(hparams={**state.hparams, "learning_rate": jnp.float32(lr)})
        drop = config.drop_path_prob * epoch / max(config.retrain_epochs, 1)
        t = time.perf_counter()
        state, stats = epoch_fn(state, phase, epoch, jnp.float32(drop), data)
        jax.block_until_ready(state.params)
        prog["seconds"]["retrain"] += time.perf_counter() - t
        valid = evaluate(active, state.alphas, "valid")
        prog["history"].append(_epoch_log(network, "retrain", epoch, state, stats, valid,
                                          time.perf_counter() - t))
        prog["next_epoch"] = epoch + 1
        bar.update(1)
        bar.set_postfix(valid=f"{valid[0]:.1f}")
        if out is not None:
            _save(out, state, prog)
    bar.close()

    test_acc, test_loss = evaluate(active, state.alphas, "test")
    hist = prog["history"]
    summary = {
        "variant": config.variant, "paper_name": v.paper_name, "space": config.space,
        "test_acc": test_acc, "test_loss": test_loss,
        "lr_trajectory": [h["lr"] for h in hist], "wd_trajectory": [h["wd"] for h in hist],
        "policy_entropy": [h["policy_entropy"] for h in hist],
        "cell": _cell(network, state.ista.support), "seconds": prog["seconds"],
        "search_epochs_run": sum(h["phase"] == "search" for h in hist),
        "stopped_early": prog["stop"], "history": hist, "config": config.to_dict(),
    }
    module = network.module(active)
    if out is not None:
        model = {"params": state.params, "batch_stats": state.batch_stats,
                 "alphas": state.alphas, "support": state.ista.support}
        blob = serialization.to_bytes(jax.device_get(model))
        atomic_write(out / MODEL_FILE, lambda f: f.write(blob))
        atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=1))
    return DHAResult(summary=summary, state=state, network=network, module=module,
                     alphas=state.alphas)


@dataclasses.dataclass
class DerivedModel:
    """A trained DHA network loaded from `model.msgpack` (see `load_model`).

    Attributes:
        module: the Linen module (computing the derived cell's ops).
        variables: {"params", "batch_stats"}.
        alphas: the architecture weights it runs with.
        summary: the run's `summary.json`.
    """

    module: Any
    variables: dict[str, Any]
    alphas: jax.Array
    summary: dict[str, Any]

    def predict(self, images: Any) -> jax.Array:
        """Logits of uint8 images [N, 32, 32, 3] (eval mode, normalised here)."""
        from nhb.data.augment import normalize

        logits, _ = self.module.apply(self.variables, normalize(jnp.asarray(images)),
                                      self.alphas, train=False)
        return logits


def load_model(output_dir: str | os.PathLike) -> DerivedModel:
    """The network a finished `run_dha` saved in `output_dir` (`model.msgpack`).

    Raises:
        FileNotFoundError: the run has not finished (no model / summary yet).
    """
    out = pathlib.Path(output_dir)
    for name in (SUMMARY_FILE, MODEL_FILE):
        if not (out / name).exists():
            raise FileNotFoundError(f"{out / name} is missing: the run in {out} has not "
                                    "finished (rerun it to resume)")
    summary = json.loads((out / SUMMARY_FILE).read_text())
    config = DHAConfig.from_dict(summary["config"])
    network = make_network(config)
    variables = network.init(jax.random.PRNGKey(0))
    template = {"params": variables["params"], "batch_stats": variables["batch_stats"],
                "alphas": jnp.zeros(network.space.alpha_shape, jnp.float32),
                "support": jnp.zeros(network.space.alpha_shape, bool)}
    saved = serialization.from_bytes(template, (out / MODEL_FILE).read_bytes())
    active = support_to_active(saved["support"]) if config.computes_support_only else None
    return DerivedModel(module=network.module(active),
                        variables={"params": saved["params"],
                                   "batch_stats": saved["batch_stats"]},
                        alphas=jnp.asarray(saved["alphas"]), summary=summary)

