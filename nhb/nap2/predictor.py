"""The NAP2 performance predictor (paper §3.2-3.3, §4.1): two autoencoders + an LSTM.

Stage 1 trains one `FeatureAutoencoder` on weight maps and one on gradient maps, each on random
(run, snapshot) maps of the training runs (MSE on `input_transform`-ed maps over the real
layers only; padded layers are zeroed at the input and left out of the loss), Adam, early
stopping on maps of held-out runs. Stage 2 trains `AccuracyLSTM` on the sequence of
concat(weight embedding, gradient embedding) per snapshot with an L1 loss on the predictions
after 1..10 snapshots and after all K (the paper's 11 sequences per architecture; the LSTM is
causal, so one pass per run gives every prefix), Adam, early stopping on held-out runs.
CV folds keep every group (cell class) in one fold. Numbers the paper omits are assumptions,
listed in `PredictorConfig`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import os
import pathlib
import struct
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from flax import serialization, traverse_util

from nhb._io import atomic_write, code_version
from nhb.models.nap2 import (
    FEATURES,
    MAX_LAYERS,
    ROWS,
    AccuracyLSTM,
    FeatureAutoencoder,
    masked_mse,
    prepare_maps,
)
from nhb.nap2.folds import cv_folds, split_train_valid

Array = jax.Array
__all__ = ["Predictor", "PredictorConfig", "cv_folds", "embed", "fit_autoencoder", "fit_lstm",
           "fit_predictor", "load_predictor", "save_predictor", "split_train_valid"]
FORMAT_VERSION = 1
MAGIC = b"NHBNAP2P"
_KIND = "nhb.nap2.predictor"


@dataclasses.dataclass(frozen=True)
class PredictorConfig:
    """Training settings.

    From the paper: ae_epochs (300, a maximum with early stopping), ae_widths (512, 256),
    ae_embedding (128), max_layers (65), lstm_epochs (150, a maximum), prefix_lengths (1..10;
    the full sequence K is always added: 11 sequences per run).
    nhb assumptions (the paper gives no number): ae_patience 20 and lstm_patience 20 epochs;
    ae_batch_size 32 maps; ae_learning_rate and lstm_learning_rate 1e-3 (Adam); an autoencoder
    epoch = ae_samples_per_epoch 2048 random (run, snapshot) maps; ae_valid_samples 1024 (cap
    on the early-stopping maps, a fixed random subset); ae_bn_momentum 0.99 (Keras default);
    lstm_hidden 128; lstm_batch_size 32 runs; valid_fraction 0.2 of the training runs (whole
    groups) held out for early stopping; embed_batch_size 64 maps per inference call; seed for
    folds and splits (fitting takes an explicit key).
    """

    ae_epochs: int = 300
    ae_patience: int = 20
    ae_batch_size: int = 32
    ae_learning_rate: float = 1e-3
    ae_samples_per_epoch: int = 2048
    ae_valid_samples: int = 1024
    ae_widths: tuple[int, int] = (512, 256)
    ae_embedding: int = 128
    ae_bn_momentum: float = 0.99
    max_layers: int = MAX_LAYERS
    lstm_epochs: int = 150
    lstm_patience: int = 20
    lstm_learning_rate: float = 1e-3
    lstm_hidden: int = 128
    lstm_batch_size: int = 32
    prefix_lengths: tuple[int, ...] = tuple(range(1, 11))
    valid_fraction: float = 0.2
    embed_batch_size: int = 64
    seed: int = 0

    def __post_init__(self):
        for name in ("ae_widths", "prefix_lengths"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if len(self.ae_widths) != 2:
            raise ValueError(f"ae_widths must have 2 entries, got {self.ae_widths}")
        ints = [f.name for f in dataclasses.fields(self) if f.type == "int" and f.name != "seed"]
        bad = [n for n in ints if getattr(self, n) < 1] + [
            "prefix_lengths" for v in self.prefix_lengths if v < 1][:1]
        if bad or not 0 < self.valid_fraction < 1:
            raise ValueError(f"PredictorConfig: {bad or 'valid_fraction'} out of range: {self}")

    @classmethod
    def quick(cls, **overrides: Any) -> PredictorConfig:
        """Tiny widths and few epochs for tests and notebooks (not for results)."""
        base = dict(ae_epochs=8, ae_patience=3, ae_batch_size=16, ae_samples_per_epoch=64,
                    ae_valid_samples=64, ae_widths=(16, 8), ae_embedding=8,
                    ae_bn_momentum=0.9, lstm_epochs=30,
                    lstm_patience=10, lstm_hidden=16, lstm_batch_size=16,
                    lstm_learning_rate=3e-3, embed_batch_size=32)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


# ----------------------------------------------------------------------------- folds
def _autoencoder(cfg: PredictorConfig) -> FeatureAutoencoder:
    return FeatureAutoencoder(max_layers=cfg.max_layers, widths=cfg.ae_widths,
                              embedding=cfg.ae_embedding, bn_momentum=cfg.ae_bn_momentum)


def autoencoder_loss(variables: dict, maps: Array, n_layers: Array, cfg: PredictorConfig,
                     train: bool = False) -> tuple[Array, dict]:
    """MSE of the reconstruction of `input_transform(maps)` over the real layers.

    Args:
        variables: {"params", "batch_stats"}; maps: raw [B, L, rows, features];
        n_layers: int [B]; cfg: the config; train: batch-statistics BN (and their update).

    Returns:
        (scalar loss, batch_stats after the call).
    """
    x = prepare_maps(maps, n_layers, cfg.max_layers)
    if train:
        (recon, _), new = _autoencoder(cfg).apply(variables, x, True, mutable=["batch_stats"])
        stats = new["batch_stats"]
    else:
        recon, _ = _autoencoder(cfg).apply(variables, x, False)
        stats = variables["batch_stats"]
    sse, n = masked_mse(recon, x, n_layers)
    return sse / jnp.maximum(n, 1.0), stats


@functools.lru_cache(maxsize=16)
def _ae_fns(cfg: PredictorConfig):
    tx = optax.adam(cfg.ae_learning_rate)

    @jax.jit
    def step(variables, opt_state, maps, n_layers):
        def loss_fn(params):
            return autoencoder_loss({"params": params, "batch_stats": variables["batch_stats"]},
                                    maps, n_layers, cfg, train=True)
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        updates, opt_state = tx.update(grads, opt_state, variables["params"])
        return {"params": optax.apply_updates(variables["params"], updates),
                "batch_stats": stats}, opt_state, loss

    @jax.jit
    def sse(variables, maps, n_layers):
        x = prepare_maps(maps, n_layers, cfg.max_layers)
        return masked_mse(_autoencoder(cfg).apply(variables, x, False)[0], x, n_layers)

    @jax.jit
    def encode(variables, maps, n_layers):
        x = prepare_maps(maps, n_layers, cfg.max_layers)
        return _autoencoder(cfg).apply(variables, x, False, method=FeatureAutoencoder.encode)

    return tx, step, sse, encode


def _batches(maps, n_layers, pairs: np.ndarray, batch: int):
    """Yields (count, maps [batch, ...], n_layers [batch]); the last batch is padded with
    empty maps (n_layers 0) so every call has one shape."""
    for s in range(0, len(pairs), batch):
        p = pairs[s:s + batch]
        x = np.asarray(maps[p[:, 0], p[:, 1]], np.float32)
        nl = np.asarray(n_layers)[p[:, 0]].astype(np.int32)
        if len(p) < batch:
            x = np.concatenate([x, np.zeros((batch - len(p), *x.shape[1:]), np.float32)])
            nl = np.concatenate([nl, np.zeros(batch - len(p), np.int32)])
        yield len(p), x, nl


def _all_pairs(idx: np.ndarray, n_snapshots: int) -> np.ndarray:
    idx = np.asarray(idx, np.int64)
    return np.stack([np.repeat(idx, n_snapshots), np.tile(np.arange(n_snapshots), len(idx))], 1)


def _eval_pairs(variables, maps, n_layers, pairs: np.ndarray, cfg: PredictorConfig) -> float:
    sse = _ae_fns(cfg)[2]
    tot = np.zeros(2)
    for _, x, nl in _batches(maps, n_layers, pairs, cfg.embed_batch_size):
        tot += np.asarray(sse(variables, x, nl), np.float64)
    return float(tot[0] / max(tot[1], 1.0))


def evaluate_autoencoder(variables: dict, maps, n_layers, idx: np.ndarray,
                         cfg: PredictorConfig) -> float:
    """Eval-mode MSE over the real layers of every snapshot of runs `idx` (maps [N, K, L, ...])."""
    return _eval_pairs(variables, maps, n_layers, _all_pairs(idx, maps.shape[1]), cfg)


def _fit_loop(key: Array, state: tuple, train_epoch, valid_loss, epochs: int, patience: int,
              progress: bool, **info) -> tuple[Any, dict]:
    """Epoch loop with early stopping; keeps state[0] (the model) of the best valid epoch.

    train_epoch(key, state) -> (state, mean train loss); valid_loss(state[0]) -> float.
    """
    t0, best = time.time(), state[0]
    hist = dict(train_loss=[], valid_loss=[], initial_valid_loss=valid_loss(best),
                best_epoch=-1, best_valid_loss=float("inf"), **info)
    for epoch in (bar := tqdm.trange(epochs, disable=not progress, unit="epoch")):
        key, k = jax.random.split(key)
        state, loss = train_epoch(k, state)
        hist["train_loss"].append(float(loss))
        hist["valid_loss"].append(valid_loss(state[0]))
        if hist["valid_loss"][-1] < hist["best_valid_loss"]:
            best, hist["best_epoch"], hist["best_valid_loss"] = state[0], epoch, hist[
                "valid_loss"][-1]
        bar.set_postfix(train=hist["train_loss"][-1], valid=hist["valid_loss"][-1])
        if epoch - hist["best_epoch"] >= patience:
            break
    hist.update(epochs=len(hist["valid_loss"]), seconds=time.time() - t0)
    return best, hist


def fit_autoencoder(key: Array, maps, n_layers, train_idx: np.ndarray, valid_idx: np.ndarray,
                    cfg: PredictorConfig, progress: bool = False) -> tuple[dict, dict]:
    """Trains one autoencoder with early stopping; returns the best-epoch variables.

    Args:
        key: PRNG key (init, sampling, valid subset).
        maps: float [N, K, L, rows, features] (numpy or memmap; read batch by batch).
        n_layers: int [N] real layers per run.
        train_idx, valid_idx: run indices for training and early stopping.
        cfg: settings; progress: tqdm bar over epochs.

    Returns:
        (variables {"params", "batch_stats"}, history: train_loss/valid_loss per epoch,
        initial_valid_loss, best_epoch (index into valid_loss), best_valid_loss, epochs, seconds).
    """
    if len(train_idx) == 0 or len(valid_idx) == 0:
        raise ValueError("fit_autoencoder needs non-empty train_idx and valid_idx")
    tx, step, _, _ = _ae_fns(cfg)
    k_init, k_valid, key = jax.random.split(key, 3)
    x0 = jnp.zeros((1, cfg.max_layers, *maps.shape[3:]), jnp.float32)
    variables = _autoencoder(cfg).init(k_init, x0, False)
    valid = _all_pairs(valid_idx, maps.shape[1])
    if len(valid) > cfg.ae_valid_samples:
        sel = jax.random.choice(k_valid, len(valid), (cfg.ae_valid_samples,), replace=False)
        valid = valid[np.sort(np.asarray(sel))]
    train_idx, b = np.asarray(train_idx), cfg.ae_batch_size
    n = -(-cfg.ae_samples_per_epoch // b) * b

    def train_epoch(k, state):
        kr, ks = jax.random.split(k)
        pairs = np.stack([train_idx[np.asarray(jax.random.randint(kr, (n,), 0, len(train_idx)))],
                          np.asarray(jax.random.randint(ks, (n,), 0, maps.shape[1]))], 1)
        losses = []
        for _, x, nl in _batches(maps, n_layers, pairs, b):
            *state, loss = step(*state, x, nl)
            losses.append(loss)
        return tuple(state), np.mean(jax.device_get(losses))

    return _fit_loop(key, (variables, tx.init(variables["params"])), train_epoch,
                     lambda v: _eval_pairs(v, maps, n_layers, valid, cfg), cfg.ae_epochs,
                     cfg.ae_patience, progress, n_valid_maps=len(valid))


def embed(variables: dict, maps, n_layers, cfg: PredictorConfig, batch_size: int | None = None,
          idx: np.ndarray | None = None, progress: bool = False) -> np.ndarray:
    """Eval-mode embeddings of every snapshot.

    Args:
        variables: autoencoder variables; maps: [N, K, L, rows, features]; n_layers: int [N];
        cfg: settings; batch_size: maps per call (default cfg.embed_batch_size);
        idx: only these runs (default all); progress: tqdm bar.

    Returns:
        float32 [len(idx) or N, K, cfg.ae_embedding].
    """
    idx = np.arange(maps.shape[0]) if idx is None else np.asarray(idx)
    pairs, encode = _all_pairs(idx, maps.shape[1]), _ae_fns(cfg)[3]
    b, out = batch_size or cfg.embed_batch_size, []
    for c, x, nl in tqdm.tqdm(_batches(maps, n_layers, pairs, b), disable=not progress,
                              total=-(-len(pairs) // b), unit="batch"):
        out.append(np.asarray(encode(variables, x, nl))[:c])
    return np.concatenate(out).reshape(len(idx), maps.shape[1], cfg.ae_embedding)


# ----------------------------------------------------------------------------- LSTM
def prefix_positions(n_snapshots: int, prefix_lengths) -> np.ndarray:
    """Sorted distinct positions length-1 for every prefix length (clipped to K) and for K."""
    lengths = np.minimum(np.asarray(prefix_lengths, np.int64), n_snapshots)
    return np.unique(np.append(lengths, n_snapshots)) - 1


def prefix_l1(preds: Array, targets: Array, positions: Array,
              weights: Array | None = None) -> Array:
    """Weighted mean over runs of the mean over `positions` of |preds[:, p] - target|.

    Args:
        preds: [B, K]; targets: [B]; positions: int [P]; weights: [B] (default ones).
    """
    err = jnp.mean(jnp.abs(preds[:, positions] - targets[:, None]), axis=1)
    w = jnp.ones_like(err) if weights is None else weights
    return jnp.sum(w * err) / jnp.maximum(jnp.sum(w), 1e-12)


@functools.lru_cache(maxsize=16)
def _lstm_fns(hidden: int, learning_rate: float):
    model, tx = AccuracyLSTM(hidden), optax.adam(learning_rate)

    def loss(params, x, y, w, pos):
        return prefix_l1(model.apply(params, x), y, pos, w)

    @jax.jit
    def step(params, opt_state, x, y, w, pos):
        value, grads = jax.value_and_grad(loss)(params, x, y, w, pos)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return model, tx, step, jax.jit(loss), jax.jit(model.apply)


def fit_lstm(key: Array, emb_w: np.ndarray, emb_g: np.ndarray, targets: np.ndarray,
             train_idx: np.ndarray, valid_idx: np.ndarray, cfg: PredictorConfig,
             progress: bool = False) -> tuple[dict, dict]:
    """Trains the LSTM on prefix L1 losses with early stopping on held-out runs.

    Args:
        key: PRNG key (init, shuffling).
        emb_w, emb_g: float [N, K, E] weight / gradient embeddings; targets: [N] in [0, 1].
        train_idx, valid_idx: run indices; cfg: settings; progress: tqdm bar over epochs.

    Returns:
        (best-epoch variables, history like `fit_autoencoder`'s plus `positions`).
    """
    if len(train_idx) == 0 or len(valid_idx) == 0:
        raise ValueError("fit_lstm needs non-empty train_idx and valid_idx")
    model, tx, step, loss, _ = _lstm_fns(cfg.lstm_hidden, cfg.lstm_learning_rate)
    x = jnp.concatenate([jnp.asarray(emb_w, jnp.float32), jnp.asarray(emb_g, jnp.float32)], -1)
    y = jnp.asarray(targets, jnp.float32)
    pos = jnp.asarray(prefix_positions(x.shape[1], cfg.prefix_lengths))
    k_init, key = jax.random.split(key)
    params = model.init(k_init, x[:1, :1])
    vx, vy = x[np.asarray(valid_idx)], y[np.asarray(valid_idx)]
    train_idx, b = np.asarray(train_idx), cfg.lstm_batch_size
    n = -(-len(train_idx) // b) * b
    w = (np.arange(n) < len(train_idx)).astype(np.float32)  # 0 = padding of the last batch

    def train_epoch(k, state):
        idx = np.resize(train_idx[np.asarray(jax.random.permutation(k, len(train_idx)))], n)
        losses = []
        for s in range(0, n, b):
            *state, value = step(*state, x[idx[s:s + b]], y[idx[s:s + b]], w[s:s + b], pos)
            losses.append(value)
        sizes = w.reshape(-1, b).sum(1)
        return tuple(state), np.average(jax.device_get(losses), weights=sizes)

    return _fit_loop(key, (params, tx.init(params)), train_epoch,
                     lambda p: float(loss(p, vx, vy, jnp.ones_like(vy), pos)), cfg.lstm_epochs,
                     cfg.lstm_patience, progress, positions=np.asarray(pos).tolist())


# ----------------------------------------------------------------------------- predictor
@dataclasses.dataclass
class Predictor:
    """A fitted NAP2 predictor.

    Attributes:
        ae_weights, ae_grads: autoencoder variables for weight / gradient maps.
        lstm: `AccuracyLSTM` variables.
        config: the `PredictorConfig` it was trained with.
        meta: JSON-ready information (code version, sizes, training histories).
    """

    ae_weights: dict
    ae_grads: dict
    lstm: dict
    config: PredictorConfig
    meta: dict = dataclasses.field(default_factory=dict)

    def predict(self, weights, grads, n_layers, progress: bool = False) -> np.ndarray:
        """Predicted final accuracy after 1..K snapshots.

        Args:
            weights, grads: float [N, K, L, rows, features] feature maps; n_layers: int [N].
            progress: tqdm bars for the embedding passes.

        Returns:
            float32 [N, K]; column k uses snapshots 0..k only.
        """
        return self.predict_embedded(
            embed(self.ae_weights, weights, n_layers, self.config, progress=progress),
            embed(self.ae_grads, grads, n_layers, self.config, progress=progress))

    def predict_embedded(self, emb_w: np.ndarray, emb_g: np.ndarray) -> np.ndarray:
        """`predict` from the runs' embeddings (`embed` with this predictor's autoencoders).

        Args:
            emb_w, emb_g: float [N, K, E] weight / gradient embeddings.

        Returns:
            float32 [N, K].
        """
        x = np.concatenate([np.asarray(emb_w), np.asarray(emb_g)], -1)
        apply = _lstm_fns(self.config.lstm_hidden, self.config.lstm_learning_rate)[4]
        out = [np.asarray(apply(self.lstm, x[s:s + 1024])) for s in range(0, len(x), 1024)]
        return np.concatenate(out).astype(np.float32)


def fit_predictor(key: Array, weights, grads, n_layers, targets, train_idx: np.ndarray,
                  valid_idx: np.ndarray, cfg: PredictorConfig,
                  progress: bool = False) -> Predictor:
    """Fits both autoencoders, embeds the train/valid runs and fits the LSTM.

    Args:
        key: PRNG key.
        weights, grads: float [N, K, L, rows, features]; n_layers: int [N]; targets: [N].
        train_idx, valid_idx: run indices (valid = early stopping of all three models).
        cfg: settings; progress: tqdm bars.

    Returns:
        The `Predictor`; `meta["history"]` holds the three training histories.
    """
    t0 = time.time()
    k_w, k_g, k_l = jax.random.split(key, 3)
    ae_w, h_w = fit_autoencoder(k_w, weights, n_layers, train_idx, valid_idx, cfg, progress)
    ae_g, h_g = fit_autoencoder(k_g, grads, n_layers, train_idx, valid_idx, cfg, progress)
    rows = np.union1d(train_idx, valid_idx)
    e_w = embed(ae_w, weights, n_layers, cfg, idx=rows, progress=progress)
    e_g = embed(ae_g, grads, n_layers, cfg, idx=rows, progress=progress)
    lstm, h_l = fit_lstm(k_l, e_w, e_g, np.asarray(targets)[rows], np.searchsorted(rows, train_idx),
                         np.searchsorted(rows, valid_idx), cfg, progress)
    meta = dict(code_version=code_version(), n_train=len(train_idx), n_valid=len(valid_idx),
                n_snapshots=int(weights.shape[1]), seconds=time.time() - t0,
                created=datetime.datetime.now(datetime.timezone.utc).isoformat("T", "seconds"),
                history=dict(ae_weights=h_w, ae_grads=h_g, lstm=h_l))
    return Predictor(ae_w, ae_g, lstm, cfg, meta)


# ----------------------------------------------------------------------------- file format
# MAGIC (8 bytes), uint64 little-endian header length H, JSON header (H bytes: kind,
# format_version, config, meta, payload size and sha256), then the flax msgpack payload
# {"ae_weights", "ae_grads", "lstm"} of numpy arrays.
def save_predictor(path: str | os.PathLike, predictor: Predictor) -> pathlib.Path:
    """Writes the predictor to one file, atomically; returns the path."""
    state = jax.device_get(dict(ae_weights=predictor.ae_weights, ae_grads=predictor.ae_grads,
                                lstm=predictor.lstm))
    payload = serialization.msgpack_serialize(state)
    header = json.dumps(dict(kind=_KIND, format_version=FORMAT_VERSION,
                             config=predictor.config.to_dict(), meta=predictor.meta,
                             payload_bytes=len(payload),
                             payload_sha256=hashlib.sha256(payload).hexdigest())).encode()
    return atomic_write(path, lambda f: f.write(
        MAGIC + struct.pack("<Q", len(header)) + header + payload))


def _shapes(tree) -> dict:
    return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


def load_predictor(path: str | os.PathLike) -> Predictor:
    """Reads a file written by `save_predictor`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a predictor file, another format version, corrupt or inconsistent.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NAP2 predictor file {path} does not exist (or is not a file)")
    raw = path.read_bytes()
    if raw[:8] != MAGIC or len(raw) < 16:
        raise ValueError(f"{path} is not an nhb NAP2 predictor file (no {MAGIC!r} magic)")
    (n,) = struct.unpack("<Q", raw[8:16])
    try:
        header = json.loads(raw[16:16 + n])
        version, kind = header["format_version"], header["kind"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"NAP2 predictor file {path} has a corrupt header ({e})") from e
    if kind != _KIND or version != FORMAT_VERSION:
        raise ValueError(f"NAP2 predictor file {path} has kind {kind!r} format_version "
                         f"{version!r}; this nhb reads {_KIND!r} version {FORMAT_VERSION} "
                         f"(written by nhb {header.get('meta', {}).get('code_version')})")
    payload = raw[16 + n:]
    if (len(payload) != header.get("payload_bytes")
            or hashlib.sha256(payload).hexdigest() != header.get("payload_sha256")):
        raise ValueError(f"NAP2 predictor file {path} is truncated or corrupt (payload size or "
                         "sha256 mismatch)")
    try:
        cfg = PredictorConfig(**header["config"])
        state = serialization.msgpack_restore(payload)
        parts = [state[k] for k in ("ae_weights", "ae_grads", "lstm")]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"NAP2 predictor file {path} is inconsistent ({e!r})") from e
    x0 = jnp.zeros((1, cfg.max_layers, ROWS, FEATURES))
    want_ae = _shapes(jax.eval_shape(lambda: _autoencoder(cfg).init(jax.random.key(0), x0)))
    want_lstm = _shapes(jax.eval_shape(lambda: AccuracyLSTM(cfg.lstm_hidden).init(
        jax.random.key(0), jnp.zeros((1, 1, 2 * cfg.ae_embedding)))))
    if [_shapes(p) for p in parts] != [want_ae, want_ae, want_lstm]:
        raise ValueError(f"NAP2 predictor file {path}: parameters do not match its config")
    parts = jax.tree.map(jnp.asarray, parts)
    return Predictor(*parts, cfg, header.get("meta", {}))
