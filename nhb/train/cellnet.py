"""NAS-HPO-Bench-II's cell network as a client of the training protocol.

`make_cell_train(static)` is `nhb.train.make_train` with the `CellNet` of one program: the
cell's op digits are the model's traced `inputs`, so one compiled program serves every cell
with the same conv pattern (or every cell, with the masked supernet); see `nhb.train.grid`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nhb.models.cell_net import CellNet, init_cell_net
from nhb.train.engine import Protocol, Trainer, make_train
from nhb.train.model import Model, StepHook, linen_model


@dataclasses.dataclass(frozen=True)
class TrainStatic:
    """Static settings of one NAS-HPO-Bench-II training program (protocol + network).

    Attributes:
        batch_size, n_train, n_valid, n_test, epochs, t_max, eval_batch_size, augment_valid,
            train_eval: the `nhb.train.Protocol` fields.
        conv_edges: which of the 6 edges are convolutions (the parameter structure).
        channels, cells_per_stage, num_classes: network scale (the paper's by default).
        masked: supernet program: `conv_edges` only covers the cells' conv edges (all six:
            one program for every cell); see `nhb.models.cell_net`.
        conv_impl: convolution implementation of the SGD steps (`nhb.models.layers.conv2d`).
        eval_conv_impl: the same for the evaluation passes (forward only). The two give the
            same numbers up to float reassociation; they differ in speed: on an H100 a
            vmapped grid trains fastest with "patches" but evaluates fastest with "xla"
            (`benchmarks/results/program_sharing_gpu_tiny.json`).
        hook: None, or a hashable factory `Model -> StepHook` (e.g. NAP2's
            `nhb.nap2.SnapshotSpec`) whose hook every SGD step of the program runs.
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
    train_eval: bool = True
    masked: bool = False
    conv_impl: str = "xla"
    eval_conv_impl: str = "xla"
    hook: Any = None

    @property
    def protocol(self) -> Protocol:
        """The protocol part."""
        names = [f.name for f in dataclasses.fields(Protocol)]
        return Protocol(**{n: getattr(self, n) for n in names})

    def network(self) -> CellNet:
        """The Linen network of the SGD steps."""
        return CellNet(conv_edges=tuple(bool(c) for c in self.conv_edges),
                       channels=tuple(self.channels), cells_per_stage=self.cells_per_stage,
                       num_classes=self.num_classes, masked=self.masked,
                       conv_impl=self.conv_impl)


def cell_model(static: TrainStatic) -> Model:
    """The `Model` of a program: `inputs` = the cell's 6 op digits (traced int array).

    Initialisation is `init_cell_net` (PyTorch's default distributions from one draw, the
    same values for a parameter whatever the conv pattern).
    """
    net = static.network()
    return linen_model(net, eval_module=net.clone(conv_impl=static.eval_conv_impl),
                       init=lambda key, ops: init_cell_net(key, net, ops))


def make_cell_train(static: TrainStatic, hook: StepHook | None = None) -> Trainer:
    """The training program of one (batch size, conv pattern, scale) group.

    Args:
        static: the static settings.
        hook: optional per-step state (`nhb.train.StepHook`); None uses `static.hook`.

    Returns:
        A `Trainer`; `trainer.train(key, hparams, ops, data)` with `ops` int [6].
    """
    model = cell_model(static)
    if hook is None and static.hook is not None:
        hook = static.hook(model)
    return make_train(model, static.protocol, hook)
