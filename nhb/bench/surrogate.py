"""The NAS-HPO-Bench-II 200-epoch surrogate (paper §3.3): a bagged GIN + MLP regressor.

Base model (`nhb.models.gin.GINRegressor`): GIN(compressed cell graph) ++ MLP(one-hot lr, bs) ->
MLP head. The ensemble bags `num_members` (10) base models on bootstrap samples, trained as ONE
vmapped program (`lax.scan` over epochs and steps); every epoch each member measures the
validation R^2 and keeps the parameters of its best epoch (the paper's early stopping). The
baseline `model="mlp"` is an MLP on `nhb2.to_onehot` features, trained the same way. Cells are
mapped to their class representative first, so a class gets bit-identical predictions.
Unpublished (assumed, configurable in `SurrogateConfig`): sizes, AdamW + cosine decay, epochs,
batch size, target standardisation, point-level bootstrap. CV/metrics: `surrogate_cv`.
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
import optax
from flax import struct, traverse_util

from nhb.bench.table import TableError, atomic_write, code_version
from nhb.models.gin import GIN, MLP, GINRegressor, compact_graphs, take_graphs
from nhb.space import cells as _cells
from nhb.space import nhb2

CELL_DIM = _cells.NUM_EDGES * _cells.NUM_OPS  # cell part of nhb2.to_onehot
MODELS = ("gin", "mlp")


@dataclasses.dataclass(frozen=True)
class SurrogateConfig:
    """Hyperparameters of the surrogate ensemble (hashable; a static jit argument).

    Attributes:
        model: "gin" (GIN over the cell graph + MLP over (lr, bs)) or "mlp" (MLP on one-hot).
        num_members: bagging ensemble size (paper: 10).
        gin_layers: GIN depth (assumed 3).
        gin_features: GIN width (assumed 64).
        gin_mlp_depth: Dense layers per GIN layer MLP.
        gin_direction: GIN message direction ("in", "out", "both").
        gin_readout: "sum" or "mean".
        hp_features: MLP over the one-hot (lr, bs), hidden/output widths.
        head_features: hidden widths of the head MLP (a final Dense(1) is added).
        mlp_features: hidden widths of the "mlp" baseline (a final Dense(1) is added).
        epochs: training epochs (the best one per member is kept).
        batch_size: minibatch size.
        learning_rate: peak AdamW learning rate (cosine decay to 0).
        weight_decay: AdamW weight decay.
        valid_fraction: fraction of the training points (grouped by architecture) held out
            for early stopping in `fit`.
    """

    model: str = "gin"
    num_members: int = 10
    gin_layers: int = 3
    gin_features: int = 64
    gin_mlp_depth: int = 2
    gin_direction: str = "both"
    gin_readout: str = "sum"
    hp_features: tuple[int, ...] = (64,)
    head_features: tuple[int, ...] = (64, 64)
    mlp_features: tuple[int, ...] = (128, 128, 128)
    epochs: int = 100
    batch_size: int = 512
    learning_rate: float = 5e-3
    weight_decay: float = 1e-4
    valid_fraction: float = 0.2

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        for name in ("hp_features", "head_features", "mlp_features"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.num_members < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("num_members, epochs and batch_size must be >= 1")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {self.valid_fraction}")

    def to_dict(self) -> dict:
        """JSON-serialisable dict (tuples become lists); `SurrogateConfig(**d)` inverts it."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


def build_model(config: SurrogateConfig) -> nn.Module:
    """The base model of a config: a `GINRegressor`, or the one-hot `MLP` baseline."""
    c = config
    if c.model == "mlp":
        return MLP((*c.mlp_features, 1))
    return GINRegressor(gin=GIN(num_layers=c.gin_layers, features=c.gin_features,
                                mlp_depth=c.gin_mlp_depth, direction=c.gin_direction,
                                readout=c.gin_readout),
                        global_features=c.hp_features, head_features=c.head_features)


@struct.dataclass
class Data:
    """Featurised points (`prepare`).

    Attributes:
        slot: int32 [P] index of each point's class in `classes`.
        onehot: float32 [P, 38] `nhb2.to_onehot` of the point with its representative cell.
        classes: int32 [U] the distinct class ids (0..1010) present.
        graphs: the U class graphs padded as `nhb2.to_graph` (`class_graphs(classes)`).
        compact: the same graphs without padding nodes/edges (`compact_graphs`).
    """

    slot: jax.Array
    onehot: jax.Array
    classes: jax.Array
    graphs: jraph.GraphsTuple
    compact: jraph.GraphsTuple

    @property
    def class_of_point(self) -> np.ndarray:
        """int32 [P] class id of every point (the architecture grouping)."""
        return np.asarray(self.classes)[np.asarray(self.slot)]


def prepare(cfgs: nhb2.Config) -> Data:
    """Featurises a 1-D batch of configs (validated, cells mapped to class representatives)."""
    cfgs = nhb2.validate(jax.tree.map(np.asarray, cfgs))
    if len(cfgs.shape) != 1:
        raise ValueError(f"expected a 1-D batch of configs, got batch shape {cfgs.shape}")
    classes, slot = np.unique(np.asarray(nhb2.canonical(cfgs), np.int32), return_inverse=True)
    graphs = class_graphs(classes)
    return Data(slot=jnp.asarray(slot, jnp.int32), onehot=nhb2.to_onehot(nhb2.representative(cfgs)),
                classes=jnp.asarray(classes, jnp.int32), graphs=graphs,
                compact=compact_graphs(graphs))


def class_graphs(classes) -> jraph.GraphsTuple:
    """Padded graphs (`nhb2.to_graph`, no globals) of the representatives of class ids [U].

    Concrete (NumPy) use only: under `jit` its 4096-row tables become slow-to-compile constants.
    """
    rep = np.asarray(_cells.cell_tables().representative)[np.asarray(classes)]
    zeros = np.zeros(rep.shape, np.int32)
    return nhb2.to_graph(nhb2.make(nhb2.cell_from_index(rep), zeros, zeros))._replace(globals=None)


def _apply(model: nn.Module, params, data: Data, idx: jax.Array, per_point: bool) -> jax.Array:
    """Standardised predictions [B] of one member for the points `idx`."""
    if not isinstance(model, GINRegressor):
        return model.apply(params, data.onehot[idx])[..., 0]
    hp = data.onehot[idx, CELL_DIM:]
    if per_point:  # embed one graph per point: cheaper when the data has many classes
        emb = model.apply(params, take_graphs(data.graphs, data.slot[idx], nhb2.MAX_NODES,
                                             nhb2.MAX_GRAPH_EDGES), method="embed")
    else:  # embed every class once, then gather (a one-hot matmul: no scatter in the backward)
        emb = model.apply(params, data.compact, method="embed")
        emb = jax.nn.one_hot(data.slot[idx], emb.shape[0], dtype=emb.dtype) @ emb
    return model.apply(params, emb, hp, method="predict_head")


@functools.cache
def _example_graph() -> jraph.GraphsTuple:
    return class_graphs(np.zeros(1, np.int32))


def init_params(key: jax.Array, config: SurrogateConfig):
    """Parameters of one base model: Flax's defaults (kernels lecun-normal, biases and GIN eps
    zero) drawn with ONE random call, which compiles much faster than per-layer initialisers."""
    model = build_model(config)
    if isinstance(model, GINRegressor):
        args = (_example_graph(), jnp.zeros((1,), jnp.int32),
                jnp.zeros((1, nhb2.ONEHOT_DIM - CELL_DIM)))
    else:
        args = (jnp.zeros((1, nhb2.ONEHOT_DIM)),)
    shapes = traverse_util.flatten_dict(jax.eval_shape(model.init, jax.random.key(0), *args))
    kernels = [k for k, v in shapes.items() if k[-1] == "kernel"]
    sizes = [int(np.prod(shapes[k].shape)) for k in kernels]
    z = jax.random.truncated_normal(key, -2.0, 2.0, (sum(sizes),)) / 0.87962566103423978
    out, offset = {}, 0
    for k, n in zip(kernels, sizes, strict=True):
        shape = shapes[k].shape
        out[k] = z[offset:offset + n].reshape(shape) / np.sqrt(np.prod(shape[:-1]))
        offset += n
    out.update({k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items() if k not in out})
    return traverse_util.unflatten_dict(out)


def masked_r2(y: jax.Array, p: jax.Array, mask: jax.Array) -> jax.Array:
    """R^2 of predictions `p` for targets `y` over the entries where `mask` is 1."""
    n = jnp.maximum(mask.sum(), 1.0)
    mean = (y * mask).sum() / n
    ss_tot = (mask * (y - mean) ** 2).sum()
    return 1.0 - (mask * (y - p) ** 2).sum() / jnp.maximum(ss_tot, 1e-12)


@functools.partial(jax.jit, static_argnames=("config", "per_point"))
def train_ensemble(key: jax.Array, data: Data, y: jax.Array, train_idx: jax.Array,
                   n_train: jax.Array, val_idx: jax.Array, n_val: jax.Array, *,
                   config: SurrogateConfig, per_point: bool = False) -> dict:
    """Trains the bagging ensemble as one vmapped program.

    Index arrays are padded to static sizes (so that all CV folds share one compilation): only
    the first `n_train` entries of `train_idx` and `n_val` of `val_idx` are used.

    Args:
        key: PRNG key (split into one key per member: init, bootstrap, shuffling).
        data: featurised points (`prepare`).
        y: float32 [P] targets (raw, e.g. accuracy in %).
        train_idx: int32 [T] training point indices (padded; T a multiple of batch_size).
        n_train: number of valid entries of `train_idx` (> 0).
        val_idx: int32 [V] early-stopping point indices (padded).
        n_val: number of valid entries of `val_idx`; 0 disables early stopping (keep last).
        config: the surrogate config (static).
        per_point: embed one graph per minibatch point instead of every class per step.

    Returns:
        Dict: params (leading member axis M), y_mean, y_std (scalars), best_r2 [M],
        best_epoch [M], val_r2 [M, epochs], loss [M, epochs], pred [M, P] (raw units, best
        params).
    """
    model = build_model(config)
    t, b = train_idx.shape[0], config.batch_size
    if t % b:
        raise ValueError(f"padded train size {t} is not a multiple of batch_size {b}")
    steps = t // b
    tmask = (jnp.arange(t) < n_train).astype(jnp.float32)
    vmask = (jnp.arange(val_idx.shape[0]) < n_val).astype(jnp.float32)
    y_train = y[train_idx]
    y_mean = (y_train * tmask).sum() / n_train
    y_std = jnp.sqrt((tmask * (y_train - y_mean) ** 2).sum() / n_train)
    y_std = jnp.where(y_std > 0, y_std, 1.0)
    ys = (y - y_mean) / y_std
    all_idx = jnp.arange(y.shape[0])
    opt = optax.adamw(optax.cosine_decay_schedule(config.learning_rate, config.epochs * steps),
                      weight_decay=config.weight_decay)

    def member(k: jax.Array):
        k_init, k_boot, k_epochs = jax.random.split(k, 3)
        params = init_params(k_init, config)
        boot = train_idx[jax.random.randint(k_boot, (t,), 0, n_train)]

        def loss_fn(p, idx, w):
            err = _apply(model, p, data, idx, per_point) - ys[idx]
            return (w * err**2).sum() / jnp.maximum(w.sum(), 1.0)

        def step(carry, batch):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p, boot[batch], tmask[batch])
            upd, s = opt.update(g, s, p)
            return (optax.apply_updates(p, upd), s), loss

        def epoch(carry, xs):
            p, s, best_p, best_r2, best_ep = carry
            k_ep, ep = xs
            perm = jax.random.permutation(k_ep, t).reshape(steps, b)
            (p, s), losses = jax.lax.scan(step, (p, s), perm)
            r2 = masked_r2(ys[val_idx], _apply(model, p, data, val_idx, False), vmask)
            better = jnp.where(n_val > 0, r2 > best_r2, True)
            best_p = jax.tree.map(lambda new, old: jnp.where(better, new, old), p, best_p)
            carry = (p, s, best_p, jnp.where(better, r2, best_r2), jnp.where(better, ep, best_ep))
            return carry, (losses.mean(), r2)

        carry = (params, opt.init(params), params, jnp.float32(-jnp.inf), jnp.int32(-1))
        xs = (jax.random.split(k_epochs, config.epochs), jnp.arange(config.epochs))
        (_, _, best_p, best_r2, best_ep), (losses, r2s) = jax.lax.scan(epoch, carry, xs)
        pred = _apply(model, best_p, data, all_idx, False) * y_std + y_mean
        return best_p, best_r2, best_ep, r2s, losses, pred

    params, best_r2, best_ep, r2s, losses, pred = jax.vmap(member)(
        jax.random.split(key, config.num_members))
    return dict(params=params, y_mean=y_mean, y_std=y_std, best_r2=best_r2, best_epoch=best_ep,
                val_r2=r2s, loss=losses, pred=pred)


def fit_indices(key: jax.Array, data: Data, y: np.ndarray, train_idx: np.ndarray,
                val_idx: np.ndarray, config: SurrogateConfig, *, train_size: int | None = None,
                val_size: int | None = None) -> dict:
    """Runs `train_ensemble` on index sets, padding them (to shared sizes if given).

    Args:
        key: PRNG key.
        data: featurised points.
        y: targets [P].
        train_idx: training point indices.
        val_idx: early-stopping point indices (may be empty).
        config: surrogate config.
        train_size: pad train indices to this size (rounded up to a batch multiple).
        val_size: pad validation indices to this size.

    Returns:
        The dict of `train_ensemble`.
    """
    if len(train_idx) == 0:
        raise ValueError("no training points")
    b = config.batch_size
    t = -(-max(train_size or 0, len(train_idx)) // b) * b
    pad = lambda i, n: jnp.asarray(np.concatenate([i, np.zeros(n - len(i))]), jnp.int32)
    per_point = data.compact.nodes["op"].shape[0] > b * nhb2.MAX_NODES
    return train_ensemble(key, data, jnp.asarray(y, jnp.float32), pad(train_idx, t),
                          jnp.int32(len(train_idx)),
                          pad(val_idx, max(val_size or 0, len(val_idx), 1)),
                          jnp.int32(len(val_idx)), config=config, per_point=per_point)


def group_split(key: jax.Array, groups: np.ndarray, fraction: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Splits point indices into (rest, held) by whole groups, `held` ~ `fraction` of points.

    Args:
        key: PRNG key (group order).
        groups: [P] group label (architecture class) of every point.
        fraction: target fraction of points in `held` (whole groups; 0 gives an empty held set).

    Returns:
        Sorted index arrays (rest, held); no group appears in both.
    """
    groups = np.asarray(groups)
    uniq, counts = np.unique(groups, return_counts=True)
    if fraction <= 0 or len(uniq) < 2:
        return np.arange(len(groups)), np.zeros(0, np.int64)
    order = np.asarray(jax.random.permutation(key, len(uniq)))
    cum = np.cumsum(counts[order])
    k = int(np.clip(np.argmin(np.abs(cum - fraction * len(groups))) + 1, 1, len(uniq) - 1))
    held = np.isin(groups, uniq[order[:k]])
    return np.nonzero(~held)[0], np.nonzero(held)[0]


# ----------------------------------------------------------------------------- file format
# MAGIC (8 bytes), uint64 little-endian header length H, JSON header (H bytes), then an .npz
# payload (no pickles) of "param/<path>", "y_mean", "y_std"; the header holds the format
# version, kind, config, meta (code version, date, training info), payload size and sha256.
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
