"""One training protocol for any Linen classifier with BatchNorm state.

`make_train(model, protocol, hook=None)` returns a `Trainer` of pure functions. Every execution
mode composes the same pieces, so the protocol lives here and nowhere else:

* `trainer.train(key, hparams, inputs, data)`: the whole run as one `lax.scan` over epochs;
* `nhb.train.grid`: the same epoch on accelerators (`train_epoch`, a `lax.scan` over
  `sgd_step`, vmapped over a group) or as a host loop over the jitted `sgd_step` on CPUs
  (`epoch_setup` / `sgd_step` / `epoch_finish`), then the same `eval_phases` and
  `epoch_metrics`, each timed on the host.

The protocol (NAS-HPO-Bench-II's, checked against the authors' PyTorch code; see
`docs/protocol.md`):

* SGD with Nesterov momentum and weight decay *added to the gradient* (PyTorch's coupled
  decay, on every parameter), an optax chain under `optax.inject_hyperparams`, so learning
  rate, momentum and weight decay are traced and `jax.vmap` trains a grid of them at once;
* cosine annealing stepped once per epoch, `lr_e = lr * (1 + cos(pi * e / T_max)) / 2`;
* cross-entropy; BatchNorm in train mode (batch statistics, masked on the padded last
  batch, which is kept) for the SGD steps and in eval mode (running statistics) for every
  evaluation pass;
* after each epoch, eval-mode passes: over the shuffled, flip/crop-augmented training set
  (the authors' train accuracy/loss, untimed; `Protocol.train_eval=False` skips it and
  reports the SGD loop's running meters instead), over the validation set (augmented, as
  the authors' loader) and the test set (not augmented). Every loss is the mean of the
  per-batch mean losses (a partial last batch weighs as much as a full one), every accuracy
  is correct / total in %.

A non-finite loss never raises: the member's `nonfinite` flag is set for the epoch and its
numbers are whatever the arithmetic gives (NaN losses; NaN logits have argmax 0, so the
accuracy is the share of class-0 examples, as in PyTorch). Other members of a vmapped group
share no values with it and are unaffected.

The model is a `Model`: how to initialise the variables and apply the network in train and
eval mode, with optional extra traced `inputs` (NAS-HPO-Bench-II's cell ops, DHA's
architecture weights) that are vmappable like the hyperparameters. A model with `rng_streams`
(NAGO's head dropout) gets a per-step key, a fold of the step's augmentation key, so the
same seed gives the same run. `StepHook` carries a
state through every SGD step inside the jitted step (NAP2's weight/gradient snapshots).
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
from nhb.train.model import HookContext, Model, StepHook

# Evaluation passes after each epoch, in order; `EpochMetrics` fields are `<phase>_acc/loss`.
EVAL_PHASES = ("train", "valid", "test")
# Metric names, defined once: per epoch (`EpochMetrics`), and per run with the phase times
# (`nhb.train.RunResult`, the columns of `nhb.bench.Table`).
EPOCH_METRICS = ("train_acc", "train_loss", "valid_acc", "valid_loss", "test_acc", "test_loss")
TIME_METRICS = ("train_time", "valid_time", "test_time")
RUN_METRICS = EPOCH_METRICS + TIME_METRICS
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4  # the protocol's SGD settings (`HParams` defaults)
TRAIN_METRICS = ("eval", "running")  # where train_acc/train_loss come from (`Protocol`)
_TRAIN_EVAL_SALT, _VALID_SALT, _FORWARD_SALT = 2_000_003, 1_000_003, 3_000_017


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Static (shape-deciding) settings of the training protocol.

    Attributes:
        batch_size: SGD batch size (also the evaluation loaders' batch size by default).
        n_train, n_valid, n_test: dataset sizes.
        epochs: epochs to train (12 for NAS-HPO-Bench-II).
        t_max: cosine period in epochs; None means `epochs`.
        eval_batch_size: batch size of the evaluation passes; None uses `batch_size` like
            the reference loaders (losses are means of batch means, so it matters for them).
        augment_valid: flip/crop the validation batches, as the reference does.
        train_eval: run the authors' eval-mode pass over the augmented training set after
            each epoch for train accuracy/loss; False reports the SGD loop's running meters
            (train-mode outputs during the epoch) and saves that pass.
    """

    batch_size: int
    n_train: int
    n_valid: int
    n_test: int
    epochs: int = 12
    t_max: int | None = None
    eval_batch_size: int | None = None
    augment_valid: bool = True
    train_eval: bool = True

    def __post_init__(self):
        for name in ("batch_size", "n_train", "n_valid", "n_test", "epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Protocol.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def train_metrics(self) -> str:
        """"eval" (the authors' pass) or "running" (the SGD loop's meters)."""
        return TRAIN_METRICS[0] if self.train_eval else TRAIN_METRICS[1]


@struct.dataclass
class HParams:
    """Traced optimisation hyperparameters (vmappable).

    Attributes:
        learning_rate: the initial learning rate (a value, not an index).
        momentum: Nesterov momentum.
        weight_decay: coupled L2 decay added to the gradient.
    """

    learning_rate: jax.Array
    momentum: jax.Array = struct.field(default_factory=lambda: jnp.float32(MOMENTUM))
    weight_decay: jax.Array = struct.field(default_factory=lambda: jnp.float32(WEIGHT_DECAY))


@struct.dataclass
class TrainData:
    """Device arrays of the three splits (uint8 NHWC images, int32 labels)."""

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

    def split(self, phase: str) -> tuple[jax.Array, jax.Array]:
        """(images, labels) of one of `EVAL_PHASES`."""
        return getattr(self, f"{phase}_x"), getattr(self, f"{phase}_y")


@struct.dataclass
class TrainState:
    """Everything a run carries between epochs (`hook` is () without a `StepHook`)."""

    params: Any
    batch_stats: Any
    opt_state: Any
    key: jax.Array
    hook: Any = ()


@struct.dataclass
class StepStats:
    """The SGD loop's running meters of one epoch."""

    acc: jax.Array
    loss: jax.Array
    nonfinite: jax.Array


@struct.dataclass
class EpochMetrics:
    """Per-epoch metrics (leading axis = epoch when stacked); accuracies in %.

    `nonfinite` is True when a training loss of the epoch was not finite (divergence); the
    accuracies are then still numbers (see the module docstring).
    """

    train_acc: jax.Array
    train_loss: jax.Array
    valid_acc: jax.Array
    valid_loss: jax.Array
    test_acc: jax.Array
    test_loss: jax.Array
    nonfinite: jax.Array


def lr_at_epoch(lr: jax.Array, epoch_index: jax.Array, t_max: int) -> jax.Array:
    """PyTorch `CosineAnnealingLR` (eta_min 0) value for a 0-based epoch index."""
    return lr * 0.5 * (1.0 + jnp.cos(jnp.pi * epoch_index / t_max))


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

    return optax.inject_hyperparams(sgd)(learning_rate=hparams.learning_rate,
                                         momentum=hparams.momentum,
                                         weight_decay=hparams.weight_decay)


def batch_loss(logits: jax.Array, labels: jax.Array,
               mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy over the valid examples of a batch, and their number correct."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    m = mask.astype(jnp.float32)
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) * m)
    return jnp.sum(ce * m) / jnp.maximum(jnp.sum(m), 1.0), correct


@dataclasses.dataclass(frozen=True)
class Trainer:
    """The pure functions of one training program (see `make_train` and the module doc).

    Attributes:
        protocol: the static settings.
        model: the classifier.
        steps: SGD steps per epoch.
        init: `(key, hparams, inputs) -> TrainState`.
        epoch_setup: `(state, epoch_index, hparams) -> (carry, (k_aug, idx, mask))`.
        sgd_step: `(carry, i, row, m, k_aug, hparams, inputs, data) -> (carry, (loss,
            correct))`: one SGD step on batch `row` (loss = the batch's mean loss).
        epoch_finish: `(state, carry, losses [steps], corrects [steps]) -> (state,
            StepStats)`.
        train_epoch: setup, a `lax.scan` of `sgd_step`, finish: `(state, epoch_index, hparams,
            inputs, data) -> (state, StepStats)`.
        eval_phases: phase name -> `(state, epoch_index, inputs, data) -> (acc %, loss)`, the
            evaluation passes in order ("train" only with `protocol.train_eval`).
        epoch_metrics: `(StepStats, {phase: (acc, loss)}) -> EpochMetrics`.
        train: `(key, hparams, inputs, data) -> (final TrainState, EpochMetrics stacked
            over epochs)`: the whole run.
    """

    protocol: Protocol
    model: Model
    steps: int
    init: Callable
    epoch_setup: Callable
    sgd_step: Callable
    epoch_finish: Callable
    train_epoch: Callable
    eval_phases: dict[str, Callable]
    epoch_metrics: Callable
    train: Callable


def make_train(model: Model, protocol: Protocol, hook: StepHook | None = None) -> Trainer:
    """Builds the training program of one model and protocol.

    Args:
        model: the classifier (`linen_model` wraps a Linen module).
        protocol: the static settings.
        hook: optional per-step state (see `StepHook`).

    Returns:
        A `Trainer`; `trainer.train(key, hparams, inputs, data)` is jittable and vmappable
        over `key`, `hparams` and `inputs` (with `data` shared, `in_axes=None`).
    """
    p = protocol
    t_max = p.t_max or p.epochs
    ebs = p.eval_batch_size or p.batch_size
    steps = num_batches(p.n_train, p.batch_size)

    def init(key, hparams, inputs):
        k_init, k_run = jax.random.split(key)
        variables = model.init(k_init, inputs)
        opt_state = make_optimizer(hparams).init(variables["params"])
        return TrainState(params=variables["params"], batch_stats=variables["batch_stats"],
                          opt_state=opt_state, key=k_run,
                          hook=() if hook is None else hook.init(variables["params"], inputs))

    def loss_fn(params, batch_stats, x, y, m, inputs, key):
        extra = (key,) if model.rng_streams else ()
        logits, new_stats = model.apply_train({"params": params, "batch_stats": batch_stats},
                                              x, inputs, m, *extra)
        loss, correct = batch_loss(logits, y, m)
        return loss, (new_stats, correct)

    def epoch_setup(state, epoch_index, hparams):
        hyper = {**state.opt_state.hyperparams,
                 "learning_rate": lr_at_epoch(hparams.learning_rate, epoch_index, t_max)}
        opt_state = state.opt_state._replace(hyperparams=hyper)
        k_perm, k_aug = jax.random.split(jax.random.fold_in(state.key, epoch_index))
        idx, mask = epoch_batches(k_perm, p.n_train, p.batch_size)
        carry = (state.params, state.batch_stats, opt_state, state.hook,
                 jnp.asarray(epoch_index, jnp.int32) * steps)
        return carry, (k_aug, idx, mask)

    def sgd_step(carry, i, row, m, k_aug, hparams, inputs, data):
        params, batch_stats, opt_state, hook_state, step0 = carry
        k_step = jax.random.fold_in(k_aug, i)
        x = augment_batch(k_step, data.train_x[row])
        (loss, (batch_stats, correct)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, x, data.train_y[row], m, inputs,
            jax.random.fold_in(k_step, _FORWARD_SALT))
        if hook is not None:
            ctx = HookContext(batch_stats=carry[1], inputs=inputs, data=data)
            hook_state = hook.update(hook_state, step0 + i, params, grads, ctx)
        updates, opt_state = make_optimizer(hparams).update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state, hook_state,
                step0), (loss, correct)

    def epoch_finish(state, carry, losses, corrects):
        params, batch_stats, opt_state, hook_state, _ = carry
        new = state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state,
                            hook=hook_state)
        stats = StepStats(acc=100.0 * jnp.sum(corrects) / p.n_train, loss=jnp.mean(losses),
                          nonfinite=~jnp.all(jnp.isfinite(losses)))
        return new, stats

    def train_epoch(state, epoch_index, hparams, inputs, data):
        carry, (k_aug, idx, mask) = epoch_setup(state, epoch_index, hparams)

        def step(carry, inp):
            i, row, m = inp
            return sgd_step(carry, i, row, m, k_aug, hparams, inputs, data)

        carry, (losses, corrects) = jax.lax.scan(step, carry, (jnp.arange(steps), idx, mask))
        return epoch_finish(state, carry, losses, corrects)

    def evaluate(state, inputs, x_all, y_all, key, augment, shuffle):
        """(acc %, mean of batch mean losses) of an eval-mode pass over (x_all, y_all)."""
        n = x_all.shape[0]
        if shuffle:
            k_perm, key = jax.random.split(key)
            idx, mask = epoch_batches(k_perm, n, ebs)
        else:
            idx, mask = eval_batches(n, ebs)
        variables = {"params": state.params, "batch_stats": state.batch_stats}

        def step(carry, inp):
            i, row, m = inp
            raw = x_all[row]
            x = augment_batch(jax.random.fold_in(key, i), raw) if augment else normalize(raw)
            return carry, batch_loss(model.apply_eval(variables, x, inputs), y_all[row], m)

        _, (losses, corrects) = jax.lax.scan(step, None, (jnp.arange(idx.shape[0]), idx, mask))
        return 100.0 * jnp.sum(corrects) / n, jnp.mean(losses)

    def phase_key(state, epoch_index, salt):
        return jax.random.fold_in(jax.random.fold_in(state.key, epoch_index), salt)

    def train_pass(state, epoch_index, inputs, data):
        return evaluate(state, inputs, *data.split("train"),
                        phase_key(state, epoch_index, _TRAIN_EVAL_SALT), True, True)

    def valid_pass(state, epoch_index, inputs, data):
        return evaluate(state, inputs, *data.split("valid"),
                        phase_key(state, epoch_index, _VALID_SALT), p.augment_valid, False)

    def test_pass(state, epoch_index, inputs, data):
        return evaluate(state, inputs, *data.split("test"), state.key, False, False)

    phases = {"train": train_pass} if p.train_eval else {}
    phases.update(valid=valid_pass, test=test_pass)

    def epoch_metrics(stats, results):
        tr_acc, tr_loss = results.get("train", (stats.acc, stats.loss))
        return EpochMetrics(train_acc=tr_acc, train_loss=tr_loss,
                            valid_acc=results["valid"][0], valid_loss=results["valid"][1],
                            test_acc=results["test"][0], test_loss=results["test"][1],
                            nonfinite=stats.nonfinite)

    def epoch_all(state, epoch_index, hparams, inputs, data):
        state, stats = train_epoch(state, epoch_index, hparams, inputs, data)
        results = {name: fn(state, epoch_index, inputs, data) for name, fn in phases.items()}
        return state, epoch_metrics(stats, results)

    def train(key, hparams, inputs, data):
        state = init(key, hparams, inputs)
        return jax.lax.scan(lambda s, e: epoch_all(s, e, hparams, inputs, data), state,
                            jnp.arange(p.epochs))

    return Trainer(protocol=p, model=model, steps=steps, init=init, epoch_setup=epoch_setup,
                   sgd_step=sgd_step, epoch_finish=epoch_finish,
                   train_epoch=train_epoch, eval_phases=phases, epoch_metrics=epoch_metrics,
                   train=train)
