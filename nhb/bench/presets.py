"""What a NAS-HPO-Bench-II build trains: `Preset`, the named `PRESETS`, the run plan and its
grouping into shards (`nhb.bench.build` trains and stores them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from nhb._vendor import load_npz
from nhb.bench import executors as _executors
from nhb.data.cifar10 import DATASET_NAMES
from nhb.space import nhb2
from nhb.train.grid import Job, check_options, get_scale, plan_groups, resolve_sharing

_CELLS_NPZ = "nashpobench2/nashpobench2_cells_split.npz"


@dataclasses.dataclass(frozen=True)
class Preset:
    """What a build trains, and how (everything here is recorded in the table's meta).

    Attributes:
        name: the preset's name (`Table.meta["protocol"]`).
        dataset: `nhb.data.load_dataset` name ("subset", "cifar10", "cifar10_npz").
        scale: network scale name (`nhb.train.SCALES`).
        epochs: epochs per run (the cosine period).
        cells: official representative codes to train, or None for all 1011 classes.
        lrs: learning rates (values of `nhb2.LRS`).
        batch_sizes: batch sizes (values of `nhb2.BATCH_SIZES`).
        seeds: training seeds.
        max_per_split: keep only the first N images of each split (None: all).
        mode: execution mode ("auto": vmap on accelerators, sequential on CPU).
        cpu_max_group: runs per shard when grouping for CPUs.
        gpu_group_images: members x batch size bound of one vmapped group on accelerators
            (a memory bound). XLA's estimate on an H100 at the tiny scale, batch size 64,
            512 members: 1.6 MB per image in flight for the supernet trained with im2col
            (53.6 GB; `benchmarks/results/program_sharing_gpu_tiny.json`), hence lite's
            32768; the paper scale's 4096 is assumed, not measured.
        eval_batch_size: evaluation batch size (None: each run's batch size).
        sharing: program sharing (`nhb.train.SHARINGS`); "auto" resolves with the grouping
            (`preset_sharing`), so a resumed build keeps it.
        conv_impl: convolution implementation (`nhb.train.grid.resolve_conv_impl`).
        train_eval: train accuracy/loss from the authors' eval-mode pass over the augmented
            training set after each epoch (True, faithful); False records the SGD loop's
            running meters instead and skips that pass (`nhb.train.Protocol`). Recorded in
            the table's meta as `train_metrics`.
        snapshot_every: record NAP2 snapshots every this many SGD steps (0: none). The
            shards then also hold each run's weight/gradient feature maps and snapshot
            validation loss (`nhb.nap2.SnapshotSpec`, `nhb.nap2.load_snapshots`), so a
            table build yields a NAP2 dataset at no extra training.
        snapshot_count: snapshots per run (with `snapshot_every`).
        snapshot_valid_images: validation images of a snapshot's validation loss.
        description: free text (not part of the fingerprint).
    """

    name: str
    dataset: str
    scale: str
    epochs: int
    cells: tuple[str, ...] | None
    lrs: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    max_per_split: int | None = None
    mode: str = "auto"
    cpu_max_group: int = 4
    gpu_group_images: int = 4096
    eval_batch_size: int | None = None
    sharing: str = "auto"
    conv_impl: str = "auto"
    train_eval: bool = True
    snapshot_every: int = 0
    snapshot_count: int = 0
    snapshot_valid_images: int = 256
    description: str = ""

    def __post_init__(self):
        set_ = lambda name, v: object.__setattr__(self, name, v)
        if self.cells is not None:
            set_("cells", tuple(str(c) for c in self.cells))
        set_("lrs", tuple(float(v) for v in self.lrs))
        set_("batch_sizes", tuple(int(v) for v in self.batch_sizes))
        set_("seeds", tuple(int(v) for v in self.seeds))
        get_scale(self.scale)
        if self.dataset not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid choices: "
                             f"{list(DATASET_NAMES)}")
        check_options(self.mode, self.sharing, self.conv_impl)
        if self.epochs < 1 or self.cpu_max_group < 1 or self.gpu_group_images < 1:
            raise ValueError("epochs, cpu_max_group and gpu_group_images must be >= 1")
        for what, values, grid in (("learning rate", self.lrs, nhb2.LRS),
                                   ("batch size", self.batch_sizes, nhb2.BATCH_SIZES)):
            bad = [v for v in values if v not in grid]
            if bad or not values or len(set(values)) != len(values):
                raise ValueError(f"preset {what}s must be distinct values of {grid}; got "
                                 f"{values}")
        if (self.snapshot_every > 0) != (self.snapshot_count > 0) or min(
                self.snapshot_every, self.snapshot_count) < 0 or self.snapshot_valid_images < 1:
            raise ValueError("snapshot_every and snapshot_count must both be 0 (no snapshots) "
                             f"or both >= 1, snapshot_valid_images >= 1; got "
                             f"{self.snapshot_every}, {self.snapshot_count}, "
                             f"{self.snapshot_valid_images}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"preset seeds must be distinct; got {self.seeds}")
        if self.cells is not None:
            reps = set(representative_codes())
            bad = [c for c in self.cells if c not in reps]
            if bad or not self.cells or len(set(self.cells)) != len(self.cells):
                got = bad or self.cells
                raise ValueError(f"preset cells must be distinct official class representatives "
                                 f"(see nhb.space.cells.cell_tables().unique_codes); got {got}")

    def to_dict(self) -> dict:
        """JSON-serialisable fields (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Preset:
        """The inverse of `to_dict`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()
                      if k in fields})

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of every field but the description (and the snapshot
        fields when there are no snapshots, so tables built before they existed match)."""
        d = {k: v for k, v in self.to_dict().items() if k != "description"
             and not (k.startswith("snapshot_") and not self.snapshot_every)}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def cell_codes(self) -> tuple[str, ...]:
        """The trained cells: `cells`, or all 1011 official representatives."""
        return representative_codes() if self.cells is None else self.cells

    def snapshot_spec(self) -> Any:
        """The `nhb.nap2.SnapshotSpec` of this preset, or None without snapshots."""
        if not self.snapshot_every:
            return None
        from nhb.nap2.features import SnapshotSpec  # a leaf module: no import cycle

        return SnapshotSpec(every=self.snapshot_every, count=self.snapshot_count,
                            valid_images=self.snapshot_valid_images)

    @property
    def n_runs(self) -> int:
        """Number of training runs."""
        return len(self.cell_codes()) * len(self.lrs) * len(self.batch_sizes) * len(self.seeds)


def representative_codes() -> tuple[str, ...]:
    """The 1011 official class representatives, in the official (training) order."""
    return tuple(str(c) for c in load_npz(_CELLS_NPZ)["unique_cellcodes"])


def _digits(code: str) -> tuple[int, ...]:
    return tuple(int(d) for d in nhb2.cell_from_string(code))


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("paper", dataset="cifar10", scale="paper", epochs=12, cells=None, lrs=nhb2.LRS,
           batch_sizes=nhb2.BATCH_SIZES, seeds=nhb2.SEEDS, gpu_group_images=4096,
           description="The NAS-HPO-Bench-II protocol: 1011 classes x 48 hps x 3 seeds, "
                       "full network, CIFAR-10 (TFDS), 12 epochs."),
    Preset("lite", dataset="subset", scale="tiny", epochs=12, cells=None, lrs=nhb2.LRS,
           batch_sizes=nhb2.BATCH_SIZES, seeds=(222,), gpu_group_images=32768,
           description="All 1011 classes x 48 hps, seed 222, 12 epochs, on the vendored "
                       "CIFAR-10 slice (2,499/2,586/1,017 images), tiny network. Projected "
                       "3.1 h on one H100 (supernet programs, im2col training; "
                       "benchmarks/results/program_sharing_gpu_tiny.json)."),
    Preset("study", dataset="subset", scale="tiny", epochs=12,
           cells=("0|12|021", "0|11|022", "0|10|132", "0|10|221"), lrs=(0.1, 0.2),
           batch_sizes=(64, 128), seeds=(222,), max_per_split=1000, cpu_max_group=4,
           train_eval=False,
           description="README main job: the 12-epoch protocol on 4 classes (two conv "
                       "patterns, parallel and serial convolutions, two cells each) x lrs "
                       "0.1, 0.2 x batch sizes 64, 128 (one batch-size/lr ratio shared, for "
                       "Figure 3's scaling panel), seed 222, tiny network, the first 1,000 "
                       "images of each split of the vendored CIFAR-10 slice, train metrics "
                       "from the SGD loop's meters (the authors' extra train pass is skipped "
                       "for time): a small real table for the search study, sized for about "
                       "5 minutes on a 2-core CPU."),
    Preset("smoke", dataset="subset", scale="tiny", epochs=3,
           cells=("0|00|000", "0|00|333", "0|00|122", "0|00|222"), lrs=(0.025, 0.1, 0.4),
           batch_sizes=(64,), seeds=(222,), max_per_split=128, cpu_max_group=3,
           description="4 classes (all-conv, the disconnected class, two mixed) x 3 lrs x "
                       "batch size 64, seed 222, 3 epochs, tiny network, 128 images per "
                       "split: a CPU check of the whole pipeline, not a benchmark."),
)}


def get_preset(preset: str | Preset) -> Preset:
    """A preset by name (or passes a `Preset` through); ValueError names the valid choices."""
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid choices: {sorted(PRESETS)}")
    return PRESETS[preset]


def plan(preset: str | Preset) -> list[Job]:
    """Every run of a preset: cells (class order) x lrs x batch sizes x seeds.

    Args:
        preset: a preset or its name.

    Returns:
        The jobs, in that nesting order.
    """
    p = get_preset(preset)
    return [Job(digits, lr, bs, seed) for digits in map(_digits, p.cell_codes())
            for lr in p.lrs for bs in p.batch_sizes for seed in p.seeds]


def preset_sharing(preset: str | Preset, accelerated: bool) -> str:
    """The preset's program sharing for a grouping (`nhb.train.grid.resolve_sharing`).

    Args:
        preset: a preset or its name.
        accelerated: grouping for accelerators.

    Returns:
        "pattern" or "supernet".
    """
    p = get_preset(preset)
    return resolve_sharing(p.sharing, get_scale(p.scale), accelerated)


def plan_shards(preset: str | Preset, accelerated: bool) -> list[tuple[str, list[Job]]]:
    """The groups of a build and their shard names (see the module docstring).

    Args:
        preset: a preset or its name.
        accelerated: group for accelerators (vmapped) rather than CPUs.

    Returns:
        (shard file name, jobs) per group, in training order.
    """
    p = get_preset(preset)
    jobs = plan(p)
    sharing = preset_sharing(p, accelerated)
    groups: list[list[Job]] = []
    for bs in sorted(p.batch_sizes):  # plan_groups orders by batch size first, too
        cap = max(1, p.gpu_group_images // bs) if accelerated else p.cpu_max_group
        groups.extend(plan_groups([j for j in jobs if j.batch_size == bs], max_group=cap,
                                  sharing=sharing))
    out = []
    for i, group in enumerate(groups):
        key = json.dumps([p.fingerprint, [_executors.job_key(j) for j in group]])
        out.append((f"{i:05d}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz", group))
    return out


def apply_overrides(preset: Preset, overrides: Mapping[str, Any]) -> Preset:
    """The preset with some fields replaced (list fields accept comma-separated strings).

    Args:
        preset: the base preset.
        overrides: field -> value; values that are "", None or 0 keep the preset's.

    Returns:
        The changed preset (validated), or `preset` itself when nothing changes.

    Raises:
        ValueError: an unknown field (the message names the valid ones) or a bad value.
    """
    fields = {f.name: f for f in dataclasses.fields(Preset)}
    casts = {"cells": str, "lrs": float, "batch_sizes": int, "seeds": int}
    changes = {}
    for name, value in overrides.items():
        if name not in fields:
            raise ValueError(f"unknown preset field {name!r}; valid choices: {sorted(fields)}")
        if value in ("", None, 0) and not isinstance(value, bool):
            continue
        if name in casts and isinstance(value, str):
            value = tuple(casts[name](v.strip()) for v in value.split(",") if v.strip())
        changes[name] = value
    return dataclasses.replace(preset, **changes) if changes else preset
