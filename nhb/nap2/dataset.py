"""NAP2 snapshot datasets: NAS-HPO-Bench-II runs with their weight/gradient snapshots.

A snapshot dataset is a table build (`nhb.bench.build`) of a `Preset` whose `snapshot_every`
is set: the same resumable, atomic, sharded builder with its executors (local devices or
Ray), whose shards also hold each run's snapshots (`nhb.nap2.features`). `build_snapshots`
builds (or resumes, or just loads) one and `load_snapshots` reads it back as a
`SnapshotDataset` of arrays. Any table build with snapshots is a NAP2 dataset, so an
accelerator build of a NAS-HPO-Bench-II table yields one at no extra training.

`PRESETS` are the samples nhb's NAP2 study trains (assumed sizes, chosen for a 2-core CPU;
the paper trained 1,160 NAS-Bench-101 networks for 36 epochs): NAS-HPO-Bench-II configs =
a seeded sample of official cell classes x learning rates x batch sizes, the 12-epoch
protocol on the first 1,000 images per split, tiny network, a snapshot every 4 SGD steps
(4 per epoch at batch size 64, as the paper's 100 of 391 batches) and 12 snapshots. The
cells come from a few conv patterns (`sample_cells(patterns=...)`) so that a CPU build
compiles few programs (about 25 s each on 2 cores).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from nhb.bench import build as _build
from nhb.bench import executors as _executors
from nhb.bench.presets import Preset, get_preset, plan_shards, representative_codes
from nhb.data.batching import num_batches
from nhb.data.cifar10 import load_dataset
from nhb.nap2.features import MAX_LAYERS, NUM_STATS, ROWS
from nhb.space import nhb2


def sample_cells(n: int, seed: int, exclude: tuple[str, ...] = (),
                 patterns: int | None = None,
                 pattern_seed: int | None = None) -> tuple[str, ...]:
    """`n` official class representatives drawn without replacement (official order).

    Args:
        n: how many.
        seed: numpy seed of the draw.
        exclude: codes not to draw (e.g. another dataset's cells, for disjoint sets).
        patterns: if given, first draw this many conv-edge patterns (which edges are
            convolutions: the parameter structure, hence one compiled program per batch
            size) among those with enough classes, then the cells evenly among them, so a
            CPU build compiles few programs.
        pattern_seed: seed of the pattern draw (None: `seed`), so two samples can share
            patterns (and compiled programs) but not cells.

    Returns:
        The codes, in the official order.
    """
    everything = representative_codes()
    reps = [c for c in everything if c not in set(exclude)]
    rng = np.random.default_rng(seed)
    if patterns is not None:
        def by_pattern(codes):
            out: dict[str, list[str]] = {}
            for c in codes:
                out.setdefault("".join("1" if d == "0" else "0" for d in c if d.isdigit()),
                               []).append(c)
            return out

        per = -(-n // patterns)
        # the patterns depend on (pattern_seed, n, patterns) only, not on `exclude`
        pool = sorted(k for k, v in by_pattern(everything).items() if len(v) >= 2 * per)
        if len(pool) < patterns:
            raise ValueError(f"only {len(pool)} conv patterns have {2 * per} classes")
        p_rng = rng if pattern_seed is None else np.random.default_rng(pattern_seed)
        chosen = [pool[i] for i in p_rng.choice(len(pool), patterns, replace=False)]
        left = by_pattern(reps)
        short = [k for k in chosen if len(left.get(k, [])) < per]
        if short:
            raise ValueError(f"patterns {short} have fewer than {per} classes left")
        picked = [c for k in chosen for c in rng.choice(left[k], per, replace=False).tolist()]
        order = {c: i for i, c in enumerate(everything)}
        return tuple(sorted(picked[:n], key=order.__getitem__))
    if not 1 <= n <= len(reps):
        raise ValueError(f"can draw 1..{len(reps)} cells, asked for {n}")
    idx = np.sort(rng.choice(len(reps), n, replace=False))
    return tuple(reps[i] for i in idx)


# The study's cells, listed so the presets (and their builds) never change with the sampler:
# 40 classes, 5 in each of 8 conv patterns, and 8 others, 2 in each of 4 patterns (drawn with
# an earlier version of `sample_cells`, seeds 0 and 1; the transfer set then cut from 12).
_CIFAR_CELLS = (
    "0|12|201", "0|12|301", "0|13|101", "0|20|201", "0|20|202", "0|21|101", "0|21|201",
    "0|30|201", "0|30|301", "0|30|302", "1|00|101", "1|00|201", "1|00|202", "1|00|301",
    "1|00|302", "1|01|312", "1|02|111", "1|11|100", "1|11|112", "1|11|212", "1|12|300",
    "1|12|311", "1|12|330", "1|13|300", "1|20|011", "1|20|021", "1|20|031", "1|21|130",
    "1|21|230", "1|21|331", "1|22|100", "1|22|110", "1|22|200", "1|30|021", "1|30|031",
    "2|01|321", "2|02|221", "2|02|322", "2|11|121", "2|22|330")
_FMNIST_CELLS = (
    "0|00|100", "0|00|200", "0|10|000", "0|12|132", "0|20|000", "0|22|331", "2|00|011",
    "2|00|021")
_QUICK_CELLS = sample_cells(8, 2, patterns=2)
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("nap2_cifar", dataset="subset", scale="tiny", epochs=12, cells=_CIFAR_CELLS,
           lrs=(0.025, 0.05, 0.1, 0.2), batch_sizes=(64,), seeds=(222,), max_per_split=1000,
           train_eval=False, snapshot_every=4, snapshot_count=12, snapshot_valid_images=256,
           description="NAP2 training set: 40 sampled cell classes (5 in each of 8 conv "
                       "patterns) x lrs 0.025-0.2 x batch size 64 (160 configs), 12 epochs on "
                       "the first 1,000 images per split of the CIFAR-10 slice, tiny network, "
                       "12 snapshots every 4 steps (the first 3 epochs)."),
    Preset("nap2_fmnist", dataset="fashion_mnist", scale="tiny", epochs=12,
           cells=_FMNIST_CELLS,
           lrs=(0.025, 0.05, 0.1, 0.2), batch_sizes=(64,), seeds=(222,), max_per_split=1000,
           train_eval=False, snapshot_every=4, snapshot_count=12, snapshot_valid_images=256,
           description="NAP2 transfer set: 8 other cell classes x the same hps (32 configs) "
                       "on Fashion-MNIST (first 1,000 images per split), same protocol."),
    Preset("nap2_quick", dataset="subset", scale="tiny", epochs=4, cells=_QUICK_CELLS,
           lrs=(0.05, 0.2), batch_sizes=(64,), seeds=(222,), max_per_split=256,
           train_eval=False, snapshot_every=2, snapshot_count=6, snapshot_valid_images=128,
           description="The smallest meaningful NAP2 dataset (16 configs, 4 epochs on 256 "
                       "images per split, 6 snapshots every 2 steps): tests and notebooks."),
    Preset("nap2_quick_fmnist", dataset="fashion_mnist", scale="tiny", epochs=4,
           cells=sample_cells(8, 3, exclude=_QUICK_CELLS, patterns=2, pattern_seed=2),
           lrs=(0.05, 0.2), batch_sizes=(64,), seeds=(222,),
           max_per_split=256, train_eval=False, snapshot_every=2, snapshot_count=6,
           snapshot_valid_images=128,
           description="nap2_quick's transfer set on Fashion-MNIST (16 configs)."),
)}


def get_nap2_preset(preset: str | Preset) -> Preset:
    """A NAP2 preset by name, or any `Preset` with snapshots; errors name the choices."""
    if isinstance(preset, str) and preset in PRESETS:
        return PRESETS[preset]
    if isinstance(preset, str):
        raise ValueError(f"unknown NAP2 preset {preset!r}; valid choices: {sorted(PRESETS)}")
    preset = get_preset(preset)
    if not preset.snapshot_every:
        raise ValueError(f"preset {preset.name!r} records no snapshots; set snapshot_every "
                         "and snapshot_count")
    return preset


@dataclasses.dataclass(frozen=True, eq=False)
class SnapshotDataset:
    """A NAP2 dataset: N runs x K snapshots (numpy arrays; `subset` selects runs).

    Attributes:
        weights, grads: float32 [N, K, L, 100, 12] feature maps; L is the largest layer count
            among the runs (<= 65), zero beyond a run's `n_layers`.
        n_layers: int32 [N] layers of each run's network.
        valid_loss, valid_acc: float32 [N, K] validation loss / accuracy (%) at each snapshot.
        final_valid_acc, final_test_acc: float32 [N] accuracy (%) after the last epoch.
        diverged: bool [N] a loss of the run was not finite.
        codes: [N] official cell codes; `cell_class` int32 [N] their position in the preset.
        learning_rate: float64 [N]; batch_size: int32 [N] values.
        total_steps: int32 [N] SGD steps of the whole run (the end of its learning curve).
        every: SGD steps between snapshots (one resource unit).
        name: the preset's name; dataset: its dataset.
    """

    weights: np.ndarray
    grads: np.ndarray
    n_layers: np.ndarray
    valid_loss: np.ndarray
    valid_acc: np.ndarray
    final_valid_acc: np.ndarray
    final_test_acc: np.ndarray
    diverged: np.ndarray
    codes: tuple[str, ...]
    cell_class: np.ndarray
    learning_rate: np.ndarray
    batch_size: np.ndarray
    total_steps: np.ndarray
    every: int
    name: str
    dataset: str

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def n_snapshots(self) -> int:
        """K."""
        return self.weights.shape[1]

    def subset(self, idx: np.ndarray) -> SnapshotDataset:
        """The runs `idx` (indices or a boolean mask)."""
        idx = np.arange(len(self))[np.asarray(idx)]
        per_run = {f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)
                   if isinstance(getattr(self, f.name), np.ndarray)}
        return dataclasses.replace(self, codes=tuple(self.codes[i] for i in idx), **per_run)

    def features(self) -> tuple[np.ndarray, tuple[int, ...]]:
        """Categorical encodings for model-based baselines (BOHB's KDE).

        Returns:
            (int32 [N, 8]: the 6 op digits, the learning-rate and batch-size indices into
            `nhb2.LRS` / `nhb2.BATCH_SIZES`; cardinalities of the 8 columns).
        """
        digits = np.array([[int(d) for d in nhb2.cell_from_string(c)] for c in self.codes],
                          np.int32).reshape(len(self), -1)
        lr = np.argmin(np.abs(self.learning_rate[:, None] - np.asarray(nhb2.LRS)[None]), 1)
        bs = np.array([nhb2.BATCH_SIZES.index(int(v)) for v in self.batch_size])
        x = np.concatenate([digits, lr[:, None], bs[:, None]], 1).astype(np.int32)
        return x, (4,) * digits.shape[1] + (len(nhb2.LRS), len(nhb2.BATCH_SIZES))


def load_snapshots(build_dir: str | os.PathLike) -> SnapshotDataset:
    """Reads a finished snapshot build back.

    Args:
        build_dir: the build's output directory (`plan.json` and `shards/`).

    Returns:
        The dataset, runs in the plan's order.

    Raises:
        FileNotFoundError: not a build directory, or shards are missing (unfinished build;
            the message says how to resume it).
        ValueError: the build recorded no snapshots.
    """
    out = pathlib.Path(build_dir)
    plan_path = out / _build.PLAN_FILE
    if not plan_path.exists():
        raise FileNotFoundError(f"{out} is not a build directory (no {_build.PLAN_FILE}); "
                                "build one with nhb.nap2.build_snapshots")
    import json

    recorded = json.loads(plan_path.read_text())
    preset = Preset.from_dict(recorded["preset"])
    if not preset.snapshot_every:
        raise ValueError(f"{out} is a build of preset {preset.name!r} without snapshots")
    shards = plan_shards(preset, recorded["grouping"] == "accelerator")
    missing = [n for n, _ in shards if not (out / _build.SHARD_DIR / n).exists()]
    if missing:
        raise FileNotFoundError(f"{out}: {len(missing)} of {len(shards)} shards are missing; "
                                "resume the build with nhb.nap2.build_snapshots(preset, "
                                f"{str(out)!r})")
    rows: list[tuple] = []
    for name, jobs in shards:
        _, arrays = _executors.read_shard(out / _build.SHARD_DIR / name, preset.fingerprint,
                                          jobs, preset.epochs, extras=True)
        for k, job in enumerate(jobs):
            rows.append((job, {n: arrays[n][k] for n in arrays}))
    n_layers = np.array([r["extras/weights"].shape[1] for _, r in rows], np.int32)
    k_snap, width = preset.snapshot_count, int(n_layers.max())
    maps = {t: np.zeros((len(rows), k_snap, width, ROWS, NUM_STATS), np.float32)
            for t in ("weights", "grads")}
    for i, (_, r) in enumerate(rows):
        for t in maps:
            maps[t][i, :, :n_layers[i]] = r[f"extras/{t}"]
    codes = tuple(job.code for job, _ in rows)
    n_train = load_dataset(preset.dataset, max_per_split=preset.max_per_split).sizes["train"]
    cls = {c: i for i, c in enumerate(preset.cell_codes())}
    col = lambda key: np.array([r[key] for _, r in rows])
    assert width <= MAX_LAYERS
    return SnapshotDataset(
        weights=maps["weights"], grads=maps["grads"], n_layers=n_layers,
        valid_loss=col("extras/valid_loss").astype(np.float32),
        valid_acc=col("extras/valid_acc").astype(np.float32),
        final_valid_acc=col("metrics/valid_acc")[:, -1].astype(np.float32),
        final_test_acc=col("metrics/test_acc")[:, -1].astype(np.float32),
        diverged=col("diverged").astype(bool), codes=codes,
        cell_class=np.array([cls[c] for c in codes], np.int32),
        learning_rate=np.array([j.learning_rate for j, _ in rows], np.float64),
        batch_size=np.array([j.batch_size for j, _ in rows], np.int32),
        total_steps=np.array([num_batches(n_train, j.batch_size) * preset.epochs
                              for j, _ in rows], np.int32),
        every=preset.snapshot_every, name=preset.name, dataset=preset.dataset)


def build_snapshots(preset: str | Preset, output_dir: str | os.PathLike,
                    executor: str = "local", progress: bool = True, *,
                    data_dir: str | None = None,
                    compile_cache_dir: str | None = None) -> SnapshotDataset:
    """Builds (or resumes, or just loads) a snapshot dataset with the table builder.

    Args:
        preset: a name of `PRESETS` or a `Preset` with `snapshot_every` set.
        output_dir: the build directory (`nhb.bench.build`'s layout; resumable, atomic).
        executor: "local" or "ray" (`nhb.bench.build.EXECUTORS`).
        progress: show a progress bar.
        data_dir, compile_cache_dir: see `nhb.bench.build.build`.

    Returns:
        The dataset (`load_snapshots`).
    """
    _build.build(get_nap2_preset(preset), output_dir, executor, progress, data_dir=data_dir,
                 compile_cache_dir=compile_cache_dir)
    return load_snapshots(output_dir)
