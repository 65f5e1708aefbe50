"""One training protocol for any Linen classifier, and the NAS-HPO-Bench-II grid runner.

`make_train(model, protocol, hook) -> Trainer` (`engine`); `linen_model` / `Model` /
`StepHook` (`model`); NAS-HPO-Bench-II's cell network as a client: `TrainStatic`,
`make_cell_train` (`cellnet`); grouping, execution modes and timing: `train_grid`,
`run_group` (`grid`) over a bounded `ProgramCache` (`programs`).
"""

from nhb.train.cellnet import TrainStatic, cell_model, make_cell_train
from nhb.train.engine import (
    EPOCH_METRICS,
    EVAL_PHASES,
    MOMENTUM,
    RUN_METRICS,
    TIME_METRICS,
    TRAIN_METRICS,
    WEIGHT_DECAY,
    EpochMetrics,
    HParams,
    Protocol,
    StepStats,
    TrainData,
    Trainer,
    TrainState,
    batch_loss,
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
from nhb.train.model import Model, StepHook, linen_model
from nhb.train.programs import DEFAULT_CACHE, SGD_LOOPS, Program, ProgramCache

__all__ = [
    "DEFAULT_CACHE", "EPOCH_METRICS", "EVAL_PHASES", "EXECUTION_MODES", "MOMENTUM",
    "RUN_METRICS", "SCALES", "SGD_LOOPS", "SHARINGS", "TIME_METRICS", "TRAIN_METRICS",
    "WEIGHT_DECAY", "EpochMetrics", "HParams", "Job", "Model", "Program", "ProgramCache",
    "Protocol", "RunResult", "Scale", "StepHook", "StepStats", "TrainData", "TrainState",
    "TrainStatic", "Trainer", "batch_loss", "cell_model", "get_scale", "linen_model",
    "lr_at_epoch", "make_cell_train", "make_optimizer", "make_train", "plan_groups",
    "program_edges", "resolve_sharing", "run_group", "train_grid",
]
