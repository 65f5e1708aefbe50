"""One NAGO query: sample a generator's network, train it for a budget, measure it.

A query is (generator vector, base seed, budget in epochs). The network is the one the
vector's graphs describe (`nhb.nago.graphs.sample`, one architecture per generator during
the search as in the paper, P:129: the base seed is fixed per run); its width comes from the
parameter limit (`graphs.channel_multiplier`); it is trained with nhb's one protocol
(`nhb.train.engine`; on CPUs as a host loop over the compiled SGD step, `nhb.train.grid`'s
"auto" SGD loop) and scored on the validation split after the last epoch. A promoted BOHB
config is trained again from scratch at the larger budget with the same key (HpBandSter's
workers retrain from scratch too).

Failures are records, never crashes: an unsampleable generator (`SampleFailure`) gives
`status="failed"`, a non-finite training loss `status="diverged"`; both have NaN objectives,
which the optimisers treat as the worst loss.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nhb.models.hnag_init import fast_model
from nhb.nago import graphs, memory
from nhb.nago.config import STAGE_RATIOS, NAGOConfig
from nhb.search.runner import CPU_FAST_COMPILE_OPTIONS, cpu_options_supported
from nhb.space.generators import GeneratorSpace
from nhb.train.engine import HParams, Protocol, TrainData, make_train
from nhb.train.grid import resolve_sgd_loop
from nhb.train.programs import host_loop_epoch

STATUSES = ("ok", "failed", "diverged")
MB = 2.0**20


@dataclasses.dataclass(frozen=True)
class Query:
    """The record of one evaluation (every field JSON-friendly).

    Attributes:
        vector: the generator values.
        base_seed: the graph seed counter's start (`graphs.sample`).
        budget: training epochs.
        status: "ok", "failed" (graphs could not be sampled) or "diverged".
        valid_acc: validation accuracy in % after the last epoch (NaN unless ok).
        memory_mb: memory per sample in MiB, of the kind `config.memory` names
            (`memory_per_sample`; NaN if failed).
        params: trainable parameters (0 if failed).
        width: the base channel count m (0 if failed).
        train_time: seconds of SGD (compilation excluded).
        compile_time: seconds spent compiling.
        reason: why it failed (empty if ok).
        graph: `graphs.summary` of the sampled hierarchy.
    """

    vector: list[float]
    base_seed: int
    budget: float
    status: str
    valid_acc: float
    memory_mb: float
    params: int
    width: int
    train_time: float
    compile_time: float
    reason: str
    graph: dict

    @property
    def loss(self) -> float:
        """BOHB's loss (`loss_of`)."""
        return loss_of(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The record as a dict."""
        return dataclasses.asdict(self)


def compile_options(config: NAGOConfig) -> dict[str, Any] | None:
    """XLA options of a query's programs: on CPUs with `config.fast_compile`, the low
    optimisation level (`nhb.search.runner.CPU_FAST_COMPILE_OPTIONS`), since compiling a new
    network for every query costs more than its few epochs of training there."""
    if config.fast_compile and jax.default_backend() == "cpu" and cpu_options_supported():
        return dict(CPU_FAST_COMPILE_OPTIONS)
    return None


def memory_per_sample(kind: str, model: Any, h: graphs.Hierarchy, width: int,
                      num_classes: int, image_size: int, batch_size: int) -> float:
    """Memory per sample in MiB (`nhb.nago.memory`).

    Args:
        kind: "torch" (the bytes PyTorch's autograd saves for the authors' network at batch
            8, per image: reproduces the paper's Table-3 MPS; closed form, instant),
            "activations" (the residuals JAX saves per image; traced) or "peak" (XLA's peak
            memory of the compiled SGD step per image at `batch_size`; another compile).
        model: the network's `Model` ("activations", "peak").
        h, width, num_classes, image_size: the network ("torch").
        batch_size: the SGD batch size ("peak").

    Returns:
        MiB per image.
    """
    if kind == "torch":
        return memory.torch_memory_per_image_mb(h, width, num_classes, image_size)
    shape = (image_size, image_size, 3)
    if kind == "activations":
        return memory.activation_bytes_per_image(model, shape) / MB
    return memory.compiled_memory(model, batch_size, shape).per_image / MB


def loss_of(query: dict[str, Any]) -> float:
    """BOHB's loss of a query record: 100 - validation accuracy (inf unless ok)."""
    return 100.0 - query["valid_acc"] if query["status"] == "ok" else float("inf")


def base_seed_of(config: NAGOConfig) -> int:
    """The run's graph base seed: the authors' fresh-process counter (2) plus the run seed."""
    return graphs.BASE_SEED + config.seed


def train_key(config: NAGOConfig, vector: Sequence[float]) -> jax.Array:
    """The training key of a vector (the same at every budget, so promotions retrain alike)."""
    digest = zlib.crc32(np.asarray(vector, np.float64).tobytes())
    return jax.random.fold_in(jax.random.key(config.seed), digest)


def _failed(vector, base_seed, budget, status, reason, graph=None, t=0.0) -> Query:
    nan = float("nan")
    return Query(list(map(float, vector)), base_seed, float(budget), status, nan, nan, 0, 0,
                 0.0, t, reason, graph or {})


def evaluate(config: NAGOConfig, space: GeneratorSpace, vector: Sequence[float],
             budget: float, data: TrainData, num_classes: int = 10) -> Query:
    """Trains the network of one generator vector for `budget` epochs.

    Args:
        config: run settings (parameter limit, protocol, seeding).
        space: the generator space of `vector`.
        vector: generator values (validated).
        budget: epochs (rounded down, at least 1, as the reference's `int(budget)`).
        data: device arrays (the validation split scores the query).
        num_classes: classifier outputs.

    Returns:
        The `Query` record.
    """
    x = space.validate(vector)
    seed = base_seed_of(config)
    h = graphs.sample(space, x, seed, config.seed_scheme, STAGE_RATIOS[config.stage_ratios])
    if isinstance(h, graphs.SampleFailure):
        return _failed(x, seed, budget, "failed", f"{h.graph}: {h.reason}", graphs.summary(h))
    width = graphs.channel_multiplier(h, config.param_limit)
    image_size = int(data.train_x.shape[1])
    model = fast_model(h, width, num_classes, image_size)
    epochs = max(1, int(budget))
    n_train, n_valid = int(data.train_x.shape[0]), int(data.valid_x.shape[0])
    protocol = Protocol(batch_size=config.batch_size, n_train=n_train, n_valid=n_valid,
                        n_test=int(data.test_x.shape[0]), epochs=epochs, train_eval=False)
    t = make_train(model, protocol)
    hp = HParams(learning_rate=jnp.float32(config.learning_rate),
                 weight_decay=jnp.float32(config.weight_decay))
    hps = jax.tree.map(lambda a: a[None], hp)
    keys = train_key(config, x)[None]
    ops = jnp.zeros((1, 0), jnp.float32)  # the network takes no traced inputs
    t0 = time.perf_counter()
    opts = compile_options(config)
    state = jax.jit(jax.vmap(t.init))(keys, hps, ops)
    e0 = jnp.int32(0)
    if resolve_sgd_loop("auto") == "host":
        run_epoch = host_loop_epoch(t, state, hps, ops, data, compiler_options=opts)
    else:
        run_epoch = jax.jit(jax.vmap(t.train_epoch, in_axes=(0, None, 0, 0, None))).lower(
            state, e0, hps, ops, data).compile()
    valid = jax.jit(jax.vmap(t.eval_phases["valid"], in_axes=(0, None, 0, None)),
                    compiler_options=opts).lower(state, e0, ops, data).compile()
    compile_time = time.perf_counter() - t0
    nonfinite = False
    t1 = time.perf_counter()
    for e in range(epochs):
        state, stats = run_epoch(state, jnp.int32(e), hps, ops, data)
        nonfinite |= bool(np.asarray(stats.nonfinite).any())
    train_time = time.perf_counter() - t1
    acc, loss = valid(state, jnp.int32(epochs - 1), ops, data)
    params = int(sum(np.prod(a.shape[1:]) for a in jax.tree.leaves(state.params)))
    mem_mb = memory_per_sample(config.memory, model, h, width, num_classes, image_size,
                               config.batch_size)
    summary = {**graphs.summary(h), "width": width}
    acc_f = float(np.asarray(acc)[0])
    if nonfinite or not np.isfinite(float(np.asarray(loss)[0])):
        return dataclasses.replace(
            _failed(x, seed, budget, "diverged", "non-finite training or validation loss",
                    summary, compile_time), params=params, width=width, train_time=train_time)
    return Query(list(map(float, x)), seed, float(budget), "ok", acc_f,
                 mem_mb, params, width, train_time,
                 compile_time, "", summary)
