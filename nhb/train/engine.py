"""The NAS-HPO-Bench-II training protocol as one jittable program.

`make_train(static)` returns a `Trainer` whose `train(key, hparams, ops, data)` runs the whole
protocol (DESIGN §3) as a single `lax.scan` over epochs of a `lax.scan` over SGD steps:

* SGD with Nesterov momentum, weight decay *added to the gradient* (PyTorch's coupled decay,
  applied to every parameter as the reference's `model.parameters()`), built as an optax
  chain under `optax.inject_hyperparams`, so learning rate, momentum and weight decay are
  traced values and `jax.vmap` trains a grid of them in one program;
* cosine annealing stepped once per epoch, `lr_e = lr * (1 + cos(pi * e / T_max)) / 2`;
* cross-entropy; BatchNorm in train mode (batch statistics, masked on the padded last batch)
  for the updates and in eval mode for evaluation;
* per epoch: train accuracy/loss averaged over the epoch's SGD steps (as the reference's
  running meters), valid accuracy/loss with flip/crop augmentation, test without.

Everything that decides shapes (batch size, epochs, data sizes, which edges are convolutions)
is in `TrainStatic`; everything else (learning rate, momentum, weight decay, the cell's
non-conv ops, the PRNG key) is traced. So one compiled program serves every config of one
(batch size, conv-edge pattern) group: see `nhb.train.grid` for the grouping.

A non-finite loss never raises: the member's metrics become NaN and `nonfinite` is set for the
epoch, while other members of a vmapped group are unaffected (they share no values).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from nhb.data.augment import augment_batch, normalize
from nhb.data.batching import epoch_batches, eval_batches, num_batches
from nhb.models.cell_net import CellNet, init_cell_net


@dataclasses.dataclass(frozen=True)
class TrainStatic:
    """Static (shape-deciding) settings of one training program.

    Attributes:
        batch_size: SGD batch size (also the reference's eval loaders' batch size).
        conv_edges: which of the 6 edges are convolutions (the parameter structure).
        n_train, n_valid, n_test: dataset sizes.
        epochs: epochs to train (12 for the benchmark).
        t_max: cosine period in epochs; None means `epochs`.
        channels, cells_per_stage, num_classes: network scale (DESIGN §3 defaults).
        eval_batch_size: batch size for evaluation passes. Eval-mode BatchNorm uses running
            statistics, so results do not depend on it (up to float reassociation); None uses
            `batch_size` like the reference loaders.
        augment_valid: flip/crop the validation batches, as the reference does.
        masked: supernet program: `conv_edges` only covers the cells' conv edges (all six:
            one program for every cell); see `nhb.models.cell_net`.
        conv_impl: convolution implementation of the SGD steps (`nhb.models.layers.conv2d`).
        eval_conv_impl: the same for the evaluation passes (forward only). The two give the
            same numbers up to float reassociation; they differ in speed: on an H100 a
            vmapped grid trains fastest with "patches" but evaluates fastest with "xla"
            (`benchmarks/results/program_sharing_gpu_tiny.json`).
    """

    batch_size: int
    conv_edges: tuple[bool, ...]
    n_train: int
    n_valid: int
    n_test: int
    epochs: int = 12
    t_max: int | None = None
    channels: tuple[int, int, int] = (16, 32, 64)
    cells_per_stage: int = 5
    num_classes: int = 10
    eval_batch_size: int | None = None
    augment_valid: bool = True
    masked: bool = False
    conv_impl: str = "xla"
    eval_conv_impl: str = "xla"


@struct.dataclass
class HParams:
    """Traced optimisation hyperparameters (vmappable).

    Attributes:
        lr: initial learning rate.
        momentum: Nesterov momentum.
        weight_decay: coupled L2 decay added to the gradient.
    """

    lr: jax.Array
    momentum: jax.Array = struct.field(default_factory=lambda: jnp.float32(0.9))
    weight_decay: jax.Array = struct.field(default_factory=lambda: jnp.float32(5e-4))


@struct.dataclass
class TrainData:
    """Device arrays of one dataset split (uint8 NHWC images, int32 labels)."""

    train_x: jax.Array
    train_y: jax.Array
    valid_x: jax.Array
    valid_y: jax.Array
    test_x: jax.Array
    test_y: jax.Array

    @classmethod
    def from_dataset(cls, ds: Any) -> TrainData:
        """From an `nhb.data.Dataset` (numpy) to device arrays."""
        return cls(*(jnp.asarray(a) for a in (
            ds.train_images, ds.train_labels.astype("int32"), ds.valid_images,
            ds.valid_labels.astype("int32"), ds.test_images, ds.test_labels.astype("int32"))))


@struct.dataclass
class TrainState:
    """Everything a run carries between epochs."""

    params: Any
    batch_stats: Any
    opt_state: Any
    key: jax.Array


@struct.dataclass
class EpochMetrics:
    """Per-epoch metrics (leading axis = epoch when stacked); accuracies in %."""

    train_acc: jax.Array
    train_loss: jax.Array
    valid_acc: jax.Array
    valid_loss: jax.Array
    test_acc: jax.Array
    test_loss: jax.Array
    nonfinite: jax.Array


def lr_at_epoch(lr: jax.Array, epoch: jax.Array, t_max: int) -> jax.Array:
    """PyTorch `CosineAnnealingLR` (eta_min 0) value for a 0-based epoch."""
    return lr * 0.5 * (1.0 + jnp.cos(jnp.pi * epoch / t_max))


def make_optimizer(hparams: HParams) -> optax.GradientTransformation:
    """PyTorch `SGD(momentum, nesterov=True, weight_decay)` with injectable hyperparameters.

    Args:
        hparams: initial values; `learning_rate` is reset every epoch by the schedule.

    Returns:
        An optax transformation whose state exposes `hyperparams["learning_rate"]` etc.
    """

    def sgd(learning_rate, momentum, weight_decay):
        return optax.chain(optax.add_decayed_weights(weight_decay),
                           optax.sgd(learning_rate, momentum=momentum, nesterov=True))

    return optax.inject_hyperparams(sgd)(
        learning_rate=hparams.lr, momentum=hparams.momentum, weight_decay=hparams.weight_decay)


def _masked_ce(logits: jax.Array, labels: jax.Array, mask: jax.Array):
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels)
    m = mask.astype(jnp.float32)
    return jnp.sum(ce * m), jnp.sum(correct * m), jnp.sum(m)


@dataclasses.dataclass(frozen=True)
class Trainer:
    """The pure functions of one training program (see `make_train`).

    Attributes:
        static: the static settings.
        net: the Linen network.
        init: `(key, hparams, ops) -> TrainState`.
        train_epoch: `(state, epoch, hparams, ops, data) -> (state, (acc %, loss, nonfinite))`,
            the SGD steps as one `lax.scan`.
        epoch_setup, sgd_step, epoch_finish: the same epoch in pieces, for a host loop over
            jitted steps (`train_epoch` = setup, scan of `sgd_step`, finish). XLA:CPU runs
            the weight-gradient convolutions far slower inside any loop that carries the
            weights (6.4x per epoch, `benchmarks/cpu_step_loop.py`), so the grid runner
            loops over steps on the host there; see `nhb.train.grid`.
        steps: SGD steps per epoch.
        evaluate: `(state, ops, x, y, key, augment) -> (acc %, loss)`.
        valid_key: `(state, epoch) -> key` of that epoch's validation augmentation.
        train: `(key, hparams, ops, data) -> EpochMetrics` stacked over epochs: the whole run.
    """

    static: TrainStatic
    net: CellNet
    init: Callable
    train_epoch: Callable
    epoch_setup: Callable
    sgd_step: Callable
    epoch_finish: Callable
    steps: int
    evaluate: Callable
    valid_key: Callable
    train: Callable


def make_train(static: TrainStatic) -> Trainer:
    """Builds the training program for one (batch size, conv-edge pattern, scale) group.

    Args:
        static: the static settings.

    Returns:
        A `Trainer`; `trainer.train(key, hparams, ops, data)` is jittable and vmappable over
        `key`, `hparams` and `ops` (with `data` shared, `in_axes=None`).
    """
    net = CellNet(conv_edges=tuple(bool(c) for c in static.conv_edges),
                  channels=tuple(static.channels), cells_per_stage=static.cells_per_stage,
                  num_classes=static.num_classes, masked=static.masked,
                  conv_impl=static.conv_impl)
    eval_net = net.clone(conv_impl=static.eval_conv_impl)
    t_max = static.t_max or static.epochs
    bs = static.batch_size
    ebs = static.eval_batch_size or bs
    steps = num_batches(static.n_train, bs)

    def init(key, hparams, ops):
        k_init, k_run = jax.random.split(key)
        # PyTorch-default initialisation from one uniform draw (fast to compile).
        variables = init_cell_net(k_init, net, ops)
        opt_state = make_optimizer(hparams).init(variables["params"])
        return TrainState(params=variables["params"], batch_stats=variables["batch_stats"],
                          opt_state=opt_state, key=k_run)

    def loss_fn(params, batch_stats, x, y, m, ops):
        logits, new_vars = net.apply({"params": params, "batch_stats": batch_stats}, x, ops,
                                     train=True, mask=m, mutable=["batch_stats"])
        loss_sum, correct, count = _masked_ce(logits, y, m)
        return loss_sum / count, (new_vars["batch_stats"], loss_sum, correct)

    def epoch_setup(state, epoch, hparams):
        hyper = {**state.opt_state.hyperparams,
                 "learning_rate": lr_at_epoch(hparams.lr, epoch, t_max)}
        opt_state = state.opt_state._replace(hyperparams=hyper)
        k_perm, k_aug = jax.random.split(jax.random.fold_in(state.key, epoch))
        idx, mask = epoch_batches(k_perm, static.n_train, bs)
        return (state.params, state.batch_stats, opt_state), (k_aug, idx, mask)

    def sgd_step(carry, i, row, m, k_aug, hparams, ops, data):
        params, batch_stats, opt_state = carry
        x = augment_batch(jax.random.fold_in(k_aug, i), data.train_x[row])
        grads, (batch_stats, loss_sum, correct) = jax.grad(loss_fn, has_aux=True)(
            params, batch_stats, x, data.train_y[row], m, ops)
        updates, opt_state = make_optimizer(hparams).update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, batch_stats, opt_state), (loss_sum, correct)

    def epoch_finish(state, carry, loss_sums, corrects):
        params, batch_stats, opt_state = carry
        loss = jnp.sum(loss_sums) / static.n_train
        acc = 100.0 * jnp.sum(corrects) / static.n_train
        new = state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state)
        return new, (acc, loss, ~jnp.all(jnp.isfinite(loss_sums)))

    def train_epoch(state, epoch, hparams, ops, data):
        carry, (k_aug, idx, mask) = epoch_setup(state, epoch, hparams)

        def step(carry, inp):
            i, row, m = inp
            return sgd_step(carry, i, row, m, k_aug, hparams, ops, data)

        carry, (loss_sums, corrects) = jax.lax.scan(step, carry,
                                                    (jnp.arange(steps), idx, mask))
        return epoch_finish(state, carry, loss_sums, corrects)

    def evaluate(state, ops, x_all, y_all, key, augment):
        n = x_all.shape[0]
        idx, mask = eval_batches(n, ebs)
        variables = {"params": state.params, "batch_stats": state.batch_stats}

        def step(carry, inp):
            i, row, m = inp
            raw = x_all[row]
            x = augment_batch(jax.random.fold_in(key, i), raw) if augment else normalize(raw)
            logits = eval_net.apply(variables, x, ops, train=False)
            loss_sum, correct, _ = _masked_ce(logits, y_all[row], m)
            return carry, (loss_sum, correct)

        _, (loss_sums, corrects) = jax.lax.scan(
            step, None, (jnp.arange(idx.shape[0]), idx, mask))
        return 100.0 * jnp.sum(corrects) / n, jnp.sum(loss_sums) / n

    def valid_key(state, epoch):
        return jax.random.fold_in(jax.random.fold_in(state.key, epoch), 1_000_003)

    def epoch_all(state, epoch, hparams, ops, data):
        state, (tr_acc, tr_loss, bad) = train_epoch(state, epoch, hparams, ops, data)
        k_valid = valid_key(state, epoch)
        va_acc, va_loss = evaluate(state, ops, data.valid_x, data.valid_y, k_valid,
                                   static.augment_valid)
        te_acc, te_loss = evaluate(state, ops, data.test_x, data.test_y, k_valid, False)
        return state, EpochMetrics(tr_acc, tr_loss, va_acc, va_loss, te_acc, te_loss, bad)

    def train(key, hparams, ops, data):
        state = init(key, hparams, ops)
        _, metrics = jax.lax.scan(
            lambda s, e: epoch_all(s, e, hparams, ops, data), state, jnp.arange(static.epochs))
        return metrics

    return Trainer(static=static, net=net, init=init, train_epoch=train_epoch,
                   epoch_setup=epoch_setup, sgd_step=sgd_step, epoch_finish=epoch_finish,
                   steps=steps,
                   evaluate=evaluate, valid_key=valid_key, train=train)
