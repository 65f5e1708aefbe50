"""Training engine: `make_train(static) -> Trainer` and the grid runner."""

from nhb.train.engine import (
    EpochMetrics,
    HParams,
    TrainData,
    Trainer,
    TrainState,
    TrainStatic,
    lr_at_epoch,
    make_optimizer,
    make_train,
)
from nhb.train.grid import (
    EXECUTION_MODES,
    SCALES,
    SHARINGS,
    Job,
    RunResult,
    Scale,
    get_scale,
    plan_groups,
    program_edges,
    resolve_sharing,
    run_group,
    train_grid,
)

__all__ = [
    "EXECUTION_MODES", "SCALES", "SHARINGS", "EpochMetrics", "HParams", "Job", "RunResult", "Scale",
    "TrainData", "TrainState", "TrainStatic", "Trainer", "get_scale", "lr_at_epoch",
    "make_optimizer", "make_train", "plan_groups", "program_edges", "resolve_sharing",
    "run_group", "train_grid",
]
