"""Compiled programs of the grid runner and their cache (an explicit, bounded object).

A `Program` holds one `TrainStatic`'s trainer pieces jitted and vmapped over the members of a
group, compiled ahead of time for one group size so that the grid's phase timings exclude
compilation: `init`, the epoch's SGD loop (`epoch`: the trainer's `train_epoch` scan, or a
host loop over its compiled `sgd_step`), the evaluation passes (`phases`) and
`epoch_metrics`. `ProgramCache` keeps the most recently used programs up to a bound
(`DEFAULT_MAX_PROGRAMS`), evicting the least recently used; `DEFAULT_CACHE` is the one the
grid runner uses unless given another. Compiled executables are tied to the device they were
compiled for, so the device of the data is part of a program's key: one cache serves the
executors' per-device threads.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Callable

import jax
import jax.numpy as jnp

from nhb.train.cellnet import TrainStatic, make_cell_train
from nhb.train.engine import HParams, TrainData, Trainer

SGD_LOOPS = ("auto", "scan", "host")
DEFAULT_MAX_PROGRAMS = 32


@dataclasses.dataclass(frozen=True)
class Program:
    """One group size's compiled phases of a training program.

    Attributes:
        trainer: the trainer the phases come from.
        init: `(keys, hparams, ops) -> TrainState` (vmapped).
        epoch: `(state, epoch_index, hparams, ops, data) -> (state, StepStats)`.
        phases: name -> `(state, epoch_index, ops, data) -> (acc, loss)`, in order.
        epoch_metrics: `trainer.epoch_metrics`.
    """

    trainer: Trainer
    init: Callable
    epoch: Callable
    phases: dict[str, Callable]
    epoch_metrics: Callable


def compile_program(static: TrainStatic, sgd_loop: str, keys: jax.Array, hp: HParams,
                    ops: jax.Array, data: TrainData) -> Program:
    """Compiles the phases of `static` for the members (keys, hp, ops) of one group.

    Args:
        static: the program's static settings.
        sgd_loop: "scan" or "host" (resolved).
        keys, hp, ops: the members' stacked inputs (their shapes matter, not their values).
        data: the device arrays.

    Returns:
        The `Program`.
    """
    if sgd_loop not in SGD_LOOPS[1:]:
        raise ValueError(f"sgd_loop must be resolved to 'scan' or 'host', got {sgd_loop!r}")
    t = make_cell_train(static)
    init = jax.jit(jax.vmap(t.init))
    state = init(keys, hp, ops)
    epoch_index = jnp.int32(0)
    if sgd_loop == "scan":
        run_epoch = jax.jit(jax.vmap(t.train_epoch, in_axes=(0, None, 0, 0, None))).lower(
            state, epoch_index, hp, ops, data).compile()
    else:
        run_epoch = host_loop_epoch(t, state, hp, ops, data)
    phases = {name: jax.jit(jax.vmap(fn, in_axes=(0, None, 0, None))).lower(
        state, epoch_index, ops, data).compile() for name, fn in t.eval_phases.items()}
    return Program(trainer=t, init=init, epoch=run_epoch, phases=phases,
                   epoch_metrics=t.epoch_metrics)


def host_loop_epoch(t: Trainer, state, hp: HParams, ops: jax.Array, data: TrainData,
                    compiler_options: dict | None = None):
    """An epoch as a host loop over one compiled (vmapped) SGD step (XLA `compiler_options`
    for the step, e.g. a low optimisation level where compiling dominates)."""
    # the carry's global step (last entry) is the same for every member: keeping it
    # unbatched keeps a StepHook's `lax.cond` on it a branch rather than a select
    c_axes = (0, 0, 0, 0, None)
    setup = jax.jit(jax.vmap(t.epoch_setup, in_axes=(0, None, 0), out_axes=(c_axes, 0)))
    carry, (k_aug, idx, mask) = setup(state, jnp.int32(0), hp)
    step = jax.jit(jax.vmap(t.sgd_step, in_axes=(c_axes, None, 0, 0, 0, 0, 0, None),
                            out_axes=(c_axes, 0)), compiler_options=compiler_options).lower(
        carry, jnp.int32(0), idx[:, 0], mask[:, 0], k_aug, hp, ops, data).compile()
    sums = jnp.zeros((ops.shape[0], t.steps), jnp.float32)
    finish = jax.jit(jax.vmap(t.epoch_finish, in_axes=(0, c_axes, 0, 0))).lower(
        state, carry, sums, sums).compile()

    def run_epoch(state, epoch_index, hp, ops, data):
        carry, (k_aug, idx, mask) = setup(state, epoch_index, hp)
        losses, corrects = [], []
        for i in range(t.steps):
            carry, (loss, correct) = step(carry, jnp.int32(i), idx[:, i], mask[:, i], k_aug,
                                          hp, ops, data)
            losses.append(loss)
            corrects.append(correct)
        return finish(state, carry, jnp.stack(losses, 1), jnp.stack(corrects, 1))

    return run_epoch


class ProgramCache:
    """Least-recently-used cache of `Program`s keyed by (static, group size, SGD loop, device).

    Args:
        max_programs: how many programs to keep (each holds compiled executables).
    """

    def __init__(self, max_programs: int = DEFAULT_MAX_PROGRAMS):
        if max_programs < 1:
            raise ValueError(f"max_programs must be >= 1, got {max_programs}")
        self.max_programs = max_programs
        self._programs: collections.OrderedDict[tuple, Program] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.compiles = 0  # programs compiled so far (for tests and reports)

    def __len__(self) -> int:
        return len(self._programs)

    def program(self, static: TrainStatic, sgd_loop: str, keys: jax.Array, hp: HParams,
                ops: jax.Array, data: TrainData) -> Program:
        """The cached program for these members' shapes, compiled on first use."""
        key = (static, ops.shape[0], sgd_loop, frozenset(data.train_x.devices()))
        with self._lock:
            if key in self._programs:
                self._programs.move_to_end(key)
                return self._programs[key]
        prog = compile_program(static, sgd_loop, keys, hp, ops, data)
        with self._lock:
            self.compiles += 1
            self._programs[key] = prog
            while len(self._programs) > self.max_programs:
                self._programs.popitem(last=False)
        return prog

    def clear(self) -> None:
        """Drops every program."""
        with self._lock:
            self._programs.clear()


DEFAULT_CACHE = ProgramCache()
