"""nhb.nap2: NAP2 (weights and gradients analysis) on NAS-HPO-Bench-II configs.

* `features`: the 12 statistics per layer, the [65, 100, 12] feature maps and `SnapshotSpec`,
  the training hook that records them every S steps inside the jitted step;
* `dataset`: snapshot datasets built by the table builder (`build_snapshots`,
  `load_snapshots`, `PRESETS`);
* `predictor`: the two conv autoencoders + LSTM (`fit_predictor`, `Predictor`, save/load),
  `folds`: cross-validation over cell classes;
* `evaluation`: the predictor against validation accuracy and learning-curve extrapolation,
  and the agents (`nhb.search.selection`) over grids of their settings;
* `study`: the whole study (`run_study`, `StudyConfig`), `plots`: its figures.

The study: `python experiments/nap2.py --output_dir=runs/nap2` (`--quick` for minutes).
"""

from nhb.nap2.dataset import (
    PRESETS,
    SnapshotDataset,
    build_snapshots,
    load_snapshots,
    sample_cells,
)
from nhb.nap2.features import STATS, SnapshotSpec, feature_maps, layer_map, statistics
from nhb.nap2.folds import cv_folds, split_train_valid
from nhb.nap2.predictor import (
    Predictor,
    PredictorConfig,
    fit_predictor,
    load_predictor,
    save_predictor,
)
from nhb.nap2.study import StudyConfig, run_study

__all__ = [
    "PRESETS",
    "STATS",
    "Predictor",
    "PredictorConfig",
    "SnapshotDataset",
    "SnapshotSpec",
    "StudyConfig",
    "build_snapshots",
    "cv_folds",
    "feature_maps",
    "fit_predictor",
    "layer_map",
    "load_predictor",
    "load_snapshots",
    "run_study",
    "sample_cells",
    "save_predictor",
    "split_train_valid",
    "statistics",
]
