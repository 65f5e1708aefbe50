"""The NAS-HPO-Bench-II 200-epoch surrogate (paper §3.3): a bagged GIN + MLP regressor.

Base model (`nhb.models.gin.GINRegressor`): GIN(compressed cell graph) ++ MLP(one-hot lr, bs) ->
MLP head. The ensemble bags `num_members` (10) base models on bootstrap samples, trained as ONE
vmapped program (`lax.scan` over epochs and steps); every epoch each member measures the
validation R^2 and keeps the parameters of its best epoch (the paper's early stopping). The
baseline `model="mlp"` is an MLP on `nhb2.to_onehot` features, trained the same way. Cells are
mapped to their class representative first, so a class gets bit-identical predictions.
Unpublished (assumed, configurable in `SurrogateConfig`): sizes, AdamW + cosine decay, epochs,
batch size, target standardisation, point-level bootstrap. CV/metrics: `surrogate_cv`;
training: `surrogate_train` (re-exported here).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import io
import json
import os
import pathlib
import struct as _struct
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np
from flax import traverse_util

from nhb.bench.surrogate_train import (  # noqa: F401  (re-exported)
    CELL_DIM,
    MODELS,
    Data,
    SurrogateConfig,
    _apply,
    _example_graph,
    build_model,
    class_graphs,
    fit_indices,
    group_split,
    init_params,
    masked_r2,
    prepare,
    train_ensemble,
)
from nhb.bench.table import TableError, atomic_write, code_version
from nhb.models.gin import compact_graphs
from nhb.space import nhb2

FORMAT_VERSION = 1
MAGIC = b"NHBSURRG"
_KIND = "nhb.bench.surrogate"


class SurrogateError(TableError):
    """A surrogate file is missing, corrupt, truncated, of another version or inconsistent."""


def _write_file(path: str | os.PathLike, header: dict, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    header = dict(header, payload_bytes=len(payload),
                  payload_sha256=hashlib.sha256(payload).hexdigest())
    head = json.dumps(header, indent=1).encode()
    atomic_write(path, lambda f: f.write(MAGIC + _struct.pack("<Q", len(head)) + head + payload))


def _read_file(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise SurrogateError(f"surrogate file {path} does not exist (or is not a file)")
    raw = path.read_bytes()
    if raw[:8] != MAGIC:
        raise SurrogateError(f"{path} is not an nhb surrogate file (no {MAGIC!r} magic)")
    (n,) = _struct.unpack("<Q", raw[8:16]) if len(raw) >= 16 else (len(raw),)
    try:
        header = json.loads(raw[16:16 + n])
        version, size = header["format_version"], int(header["payload_bytes"])
    except (ValueError, KeyError, TypeError) as e:
        raise SurrogateError(f"surrogate file {path} has a corrupt or truncated header ({e})"
                             ) from e
    if version != FORMAT_VERSION or header.get("kind") != _KIND:
        raise SurrogateError(
            f"surrogate file {path} has format_version {version!r} (kind "
            f"{header.get('kind')!r}); this nhb reads version {FORMAT_VERSION}; refit, or load "
            f"it with the nhb that wrote it ({header.get('meta', {}).get('code_version')})")
    payload = raw[16 + n:]
    if len(payload) != size:
        raise SurrogateError(f"surrogate file {path} is truncated or has trailing bytes: payload "
                             f"{len(payload)} bytes, header says {size}")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise SurrogateError(f"surrogate file {path} is corrupt (sha256 mismatch)")
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        return header, {k: z[k] for k in z.files}


class Surrogate:
    """A fitted surrogate ensemble; `predict(cfg)` answers 200-epoch queries.

    Attributes:
        config: the `SurrogateConfig`.
        params: base-model parameters with a leading member axis [M].
        y_mean: float32 [M] per-member target mean (members of combined ensembles may differ).
        y_std: float32 [M] per-member target std.
        info: JSON-serialisable training information.
    """

    def __init__(self, config: SurrogateConfig, params, y_mean, y_std, info: dict | None = None):
        self.config = config
        self.params = jax.tree.map(jnp.asarray, params)
        m = jax.tree.leaves(self.params)[0].shape[0]
        self.y_mean = jnp.broadcast_to(jnp.asarray(y_mean, jnp.float32), (m,))
        self.y_std = jnp.broadcast_to(jnp.asarray(y_std, jnp.float32), (m,))
        self.info = dict(info or {})
        # GIN embeddings of all 1011 classes, computed once: a query is then a gather + head.
        self._model = build_model(config)  # static jit argument, independent of num_members
        self._class_embeddings = (_embed_classes(self._model, self.params, _all_class_graphs())
                                  if config.model == "gin" else None)

    @property
    def num_members(self) -> int:
        """Number of base models."""
        return int(self.y_mean.shape[0])

    def predict(self, cfg: nhb2.Config) -> jax.Array:
        """Predicted accuracy (ensemble mean, target units e.g. %) of configs of any batch shape.

        Args:
            cfg: `nhb2.Config` with batch shape (...) (may be traced).

        Returns:
            float32 array of shape `cfg.shape`.
        """
        shape = cfg.shape
        flat = jax.tree.map(lambda x: jnp.reshape(x, (-1, *jnp.shape(x)[len(shape):])), cfg)
        out = _predict(self._model, self.params, self._class_embeddings, self.y_mean,
                       self.y_std, flat)
        return out.reshape(shape)

    __call__ = predict

    @staticmethod
    def combine(surrogates: Sequence[Surrogate]) -> Surrogate:
        """One ensemble of all members (the paper's final model averages the 5 CV-fold models).

        Args:
            surrogates: surrogates of identical config except `num_members`.

        Returns:
            The concatenated ensemble (mean over all members = mean of the equal-size means).
        """
        configs = {dataclasses.replace(s.config, num_members=1) for s in surrogates}
        if len(configs) != 1:
            raise ValueError("can only combine surrogates of the same architecture config")
        cat = lambda *xs: jnp.concatenate(xs, axis=0)
        params = jax.tree.map(cat, *[s.params for s in surrogates])
        m = sum(s.num_members for s in surrogates)
        return Surrogate(dataclasses.replace(surrogates[0].config, num_members=m), params,
                         cat(*[s.y_mean for s in surrogates]), cat(*[s.y_std for s in surrogates]),
                         dict(combined=[s.info for s in surrogates]))

    def save(self, path: str | os.PathLike) -> None:
        """Writes the surrogate to one file, atomically (format: see `FORMAT_VERSION`)."""
        flat = traverse_util.flatten_dict(jax.device_get(self.params), sep="/")
        arrays = {f"param/{k}": np.asarray(v) for k, v in flat.items()}
        arrays.update(y_mean=np.asarray(self.y_mean), y_std=np.asarray(self.y_std))
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        meta = dict(code_version=code_version(), created=created, info=self.info)
        _write_file(path, dict(format_version=FORMAT_VERSION, kind=_KIND,
                               config=self.config.to_dict(), meta=meta), arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Surrogate:
        """Reads a file written by `save`.

        Args:
            path: the file.

        Returns:
            The surrogate.

        Raises:
            SurrogateError: missing, truncated or corrupt file, another format version, or
                parameters that do not match the stored config.
        """
        header, arrays = _read_file(path)
        try:
            config = SurrogateConfig(**header["config"])
            y_mean, y_std = arrays.pop("y_mean"), arrays.pop("y_std")
        except (KeyError, TypeError, ValueError) as e:
            raise SurrogateError(f"surrogate file {path} is inconsistent ({e!r})") from e
        params = traverse_util.unflatten_dict(
            {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}, sep="/")
        want = jax.eval_shape(functools.partial(init_params, config=config), jax.random.key(0))
        want = {k: (config.num_members, *v.shape)
                for k, v in traverse_util.flatten_dict(want, sep="/").items()}
        got = {k: v.shape for k, v in traverse_util.flatten_dict(params, sep="/").items()}
        if want != got or y_mean.shape != (config.num_members,) != y_std.shape:
            diff = sorted(set(want.items()) ^ set(got.items()))[:3]
            raise SurrogateError(f"surrogate file {path}: parameters do not match its config "
                                 f"(e.g. {diff}); the file is inconsistent or was written by an "
                                 "incompatible nhb")
        return cls(config, params, y_mean, y_std, header.get("meta", {}).get("info"))


@functools.partial(jax.jit, static_argnames=("model",))
def _embed_classes(model: nn.Module, params, graphs: jraph.GraphsTuple) -> jax.Array:
    return jax.vmap(lambda p: model.apply(p, graphs, method="embed"))(params)


@functools.cache
def _all_class_graphs() -> jraph.GraphsTuple:
    return compact_graphs(class_graphs(np.arange(nhb2.NUM_CLASSES)))


@functools.partial(jax.jit, static_argnames=("model",))
def _predict(model: nn.Module, params, class_emb, y_mean, y_std, cfg: nhb2.Config) -> jax.Array:
    cls = nhb2.canonical(cfg)
    hp = jnp.concatenate([jax.nn.one_hot(cfg.lr, nhb2.NUM_LRS),
                          jax.nn.one_hot(cfg.bs, nhb2.NUM_BS)], axis=-1)
    if class_emb is not None:
        one = lambda p, emb: model.apply(p, emb[cls], hp, method="predict_head")
        out = jax.vmap(one)(params, class_emb)
    else:
        x = nhb2.to_onehot(nhb2.representative(cfg))
        out = jax.vmap(lambda p: model.apply(p, x)[..., 0])(params)
    return (out * y_std[:, None] + y_mean[:, None]).mean(axis=0)


def fit(key: jax.Array, cfgs: nhb2.Config, targets, config: SurrogateConfig | None = None,
        *, valid_idx: np.ndarray | None = None) -> Surrogate:
    """Fits a surrogate ensemble on all points, holding out architectures for early stopping.

    Args:
        key: PRNG key.
        cfgs: 1-D batch of configs.
        targets: [P] target values (e.g. mean 200-epoch test accuracy in %), all finite.
        config: surrogate config (default `SurrogateConfig()`).
        valid_idx: point indices held out for early stopping (default: `config.valid_fraction`
            of the points, whole architecture classes, chosen at random).

    Returns:
        The fitted `Surrogate`.
    """
    config = SurrogateConfig() if config is None else config
    y = np.asarray(targets, np.float32).reshape(-1)
    if not np.isfinite(y).all():
        raise ValueError(f"{int((~np.isfinite(y)).sum())} targets are not finite; drop them")
    data = prepare(cfgs)
    if len(y) != len(data.slot):
        raise ValueError(f"{len(y)} targets for {len(data.slot)} configs")
    k_split, k_train = jax.random.split(key)
    if valid_idx is None:
        train_idx, valid_idx = group_split(k_split, data.class_of_point, config.valid_fraction)
    else:
        valid_idx = np.asarray(valid_idx, np.int64)
        train_idx = np.setdiff1d(np.arange(len(y)), valid_idx)
    res = fit_indices(k_train, data, y, train_idx, valid_idx, config)
    info = dict(n_points=len(y), n_train=len(train_idx), n_valid=len(valid_idx),
                n_classes=len(np.asarray(data.classes)),
                best_valid_r2=np.asarray(res["best_r2"]).tolist(),
                best_epoch=np.asarray(res["best_epoch"]).tolist())
    return Surrogate(config, res["params"], res["y_mean"], res["y_std"], info)
