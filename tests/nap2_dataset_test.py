"""NAP2 snapshot datasets: built by the table builder, read back exactly, resumable."""

import json

import numpy as np
import pytest

from nhb.bench import build as nhb_build
from nhb.bench import executors
from nhb.bench.presets import Preset, plan_shards
from nhb.bench.table import load_table
from nhb.models.cell_net import conv_edges_of
from nhb.nap2 import dataset as D
from nhb.nap2.features import SnapshotSpec
from nhb.space import nhb2


def test_quick_dataset_matches_its_table_and_network(nap2_runs):
    ds = D.load_snapshots(nap2_runs / "nap2_quick")
    preset = D.PRESETS["nap2_quick"]
    assert len(ds) == preset.n_runs == 16
    k = preset.snapshot_count
    assert ds.weights.shape[:2] == (16, k) and ds.weights.shape[2:] == (ds.n_layers.max(), 100,
                                                                         12)
    table = load_table(nap2_runs / "nap2_quick")
    for i, code in enumerate(ds.codes):
        cell = nhb2.cell_from_string(code)
        # layers: stem + conv edges per cell (1 cell per stage) + 2 x 3 reduction convs +
        # the classifier (the tiny scale)
        assert ds.n_layers[i] == 1 + 3 * sum(conv_edges_of(cell)) + 6 + 1
        assert not ds.weights[i, :, ds.n_layers[i]:].any()  # zero beyond the real layers
        assert ds.weights[i, :, :ds.n_layers[i], 0].any(axis=-1).all()  # row 0 filled
        hp = list(table.lrs).index(float(ds.learning_rate[i]))
        row = list(table.cells).index(int(nhb2.cell_index(np.array(cell))))
        assert ds.final_valid_acc[i] == pytest.approx(table.metrics["valid_acc"][row, hp, 0, 0,
                                                                               -1])
    assert np.isfinite(ds.valid_loss).all() and (ds.valid_loss > 0).all()
    assert (ds.total_steps == 4 * 4).all()  # 256 images / 64 = 4 steps x 4 epochs
    x, cards = ds.features()
    assert x.shape == (16, 8) and (x < np.array(cards)).all()
    sub = ds.subset(np.array([3, 1]))
    assert sub.codes == (ds.codes[3], ds.codes[1])
    np.testing.assert_array_equal(sub.grads, ds.grads[[3, 1]])


def test_load_rejects_unfinished_and_foreign_builds(nap2_runs, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a build directory"):
        D.load_snapshots(tmp_path)
    partial = tmp_path / "partial"
    (partial / "shards").mkdir(parents=True)
    src = nap2_runs / "nap2_quick"
    (partial / "plan.json").write_text((src / "plan.json").read_text())
    first = sorted((src / "shards").glob("*.npz"))[0]
    (partial / "shards" / first.name).write_bytes(first.read_bytes())
    with pytest.raises(FileNotFoundError, match="shards are missing; resume"):
        D.load_snapshots(partial)
    plan = json.loads((src / "plan.json").read_text())
    plan["preset"].update(snapshot_every=0, snapshot_count=0)
    (partial / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(ValueError, match="without snapshots"):
        D.load_snapshots(partial)


def test_rebuild_trains_nothing_and_returns_the_same_arrays(nap2_runs):
    before = D.load_snapshots(nap2_runs / "nap2_quick")
    again = D.build_snapshots("nap2_quick", nap2_runs / "nap2_quick", progress=False)
    np.testing.assert_array_equal(before.weights, again.weights)


def test_shards_hold_snapshots_and_the_table_ignores_them(nap2_runs):
    preset = D.PRESETS["nap2_quick"]
    name, jobs = plan_shards(preset, False)[0]
    path = nap2_runs / "nap2_quick" / nhb_build.SHARD_DIR / name
    _, lean = executors.read_shard(path, preset.fingerprint, jobs, preset.epochs)
    _, full = executors.read_shard(path, preset.fingerprint, jobs, preset.epochs, extras=True)
    assert not any(k.startswith("extras/") for k in lean)
    assert full["extras/weights"].shape[:2] == (len(jobs), preset.snapshot_count)
    assert full["extras/taken"].all()


def test_presets_validate_snapshots_and_keep_old_fingerprints():
    base = dict(dataset="subset", scale="tiny", epochs=2, cells=("0|00|000",), lrs=(0.1,),
                batch_sizes=(64,), seeds=(1,))
    with pytest.raises(ValueError, match="snapshot_every and snapshot_count"):
        Preset("x", snapshot_every=2, **base)
    plain = Preset("x", **base)
    assert plain.snapshot_spec() is None
    assert "snapshot_every" not in json.dumps(plain.fingerprint)
    snap = Preset("x", snapshot_every=2, snapshot_count=3, **base)
    assert snap.fingerprint != plain.fingerprint
    assert snap.snapshot_spec() == SnapshotSpec(every=2, count=3, valid_images=256)
    with pytest.raises(ValueError, match="unknown NAP2 preset"):
        D.get_nap2_preset("nope")
    with pytest.raises(ValueError, match="records no snapshots"):
        D.get_nap2_preset(plain)


def test_sample_cells_patterns_and_exclusion():
    a = D.sample_cells(10, 0, patterns=2)
    patterns = {tuple(conv_edges_of(nhb2.cell_from_string(c))) for c in a}
    assert len(a) == 10 and len(set(a)) == 10 and len(patterns) == 2
    b = D.sample_cells(10, 1, exclude=a, patterns=2, pattern_seed=0)  # same n: same pool
    assert not set(a) & set(b)
    assert {tuple(conv_edges_of(nhb2.cell_from_string(c))) for c in b} == patterns
    assert D.sample_cells(5, 3) == D.sample_cells(5, 3)


def test_ray_executor_records_the_same_snapshots(tmp_path):
    ray = pytest.importorskip("ray")
    preset = Preset("nap2_ray", dataset="subset", scale="tiny", epochs=2, cells=("0|12|201",),
                    lrs=(0.05, 0.2), batch_sizes=(64,), seeds=(222,), max_per_split=64,
                    train_eval=False, snapshot_every=1, snapshot_count=1,
                    snapshot_valid_images=32)
    local = D.build_snapshots(preset, tmp_path / "local", progress=False)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"JAX_PLATFORMS": "cpu"}})
    try:
        remote = D.build_snapshots(preset, tmp_path / "ray", executor="ray", progress=False)
    finally:
        ray.shutdown()
    np.testing.assert_allclose(remote.weights, local.weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(remote.valid_loss, local.valid_loss, rtol=1e-5)
    assert remote.weights[:, 0, :, 0].any()
