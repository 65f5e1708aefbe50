"""Tests of the experiment binary `experiments/nhb2_train.py` (tiny grid, JSON, flag errors)."""

import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import flags

from nhb.data import load_dataset
from nhb.train import RUN_METRICS, Job, TrainData, get_scale, grid_cli, train_grid

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "nhb2_train.py"
CELLS = ("0|12|333", "0|21|313")  # one conv pattern: both share one compiled program


def _load():
    spec = importlib.util.spec_from_file_location("nhb2_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = _load()


def _prepare(*args: str):
    argv = ["nhb2_train", *args]
    fv = flags.FlagValues()
    train.define_flags(fv, argv)
    fv(argv)
    return grid_cli.prepare(train.config_from_flags(fv))


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("nhb2") / "runs.json"
    payload = train.cli([
        "nhb2_train", f"--cells={','.join(CELLS)}", "--lrs=0.1", "--batch_sizes=32",
        "--seeds=222", "--epochs=2", "--scale=tiny", "--dataset=subset",
        "--max_per_split=64", "--mode=sequential", "--noprogress", f"--output_json={out}"])
    return payload, out


def test_json_contents(result):
    payload, out = result
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(payload))
    assert sorted(p.name for p in out.parent.iterdir()) == ["runs.json"]  # no temp file left
    meta = on_disk["meta"]
    assert meta["scale"] == "tiny" and meta["channels"] == [4, 8, 16]
    assert meta["dataset"] == "subset" and meta["dataset_sizes"] == dict(train=64, valid=64,
                                                                          test=64)
    assert meta["epochs"] == 2 and meta["mode"] == "sequential" and meta["n_runs"] == 2
    assert meta["jax_version"] and meta["device"]["platform"] == jax.default_backend()
    assert meta["wall_time_s"] > 0
    runs = on_disk["runs"]
    assert [r["cell"] for r in runs] == list(CELLS)
    for r in runs:
        assert (r["learning_rate"], r["batch_size"], r["seed"]) == (0.1, 32, 222)
        assert r["mode"] == "sequential" and r["group_size"] == 1
        assert r["diverged"] is False
        assert sorted(r["metrics"]) == sorted(RUN_METRICS)
        for name, values in r["metrics"].items():
            assert len(values) == 2, name
            assert all(isinstance(v, float) and math.isfinite(v) for v in values), name
    # golden: the JSON holds what `train_grid` computes for the same jobs
    data = TrainData.from_dataset(load_dataset("subset", max_per_split=64))
    jobs = [Job(tuple(int(ch) for ch in c if ch != "|"), 0.1, 32, 222) for c in CELLS]
    ref = train_grid(jobs, data, scale=get_scale("tiny"), epochs=2, mode="sequential",
                     progress=False)
    for r, want in zip(runs, ref, strict=True):
        for name in RUN_METRICS:
            if not name.endswith("_time"):
                np.testing.assert_allclose(r["metrics"][name], want.metrics[name], rtol=1e-6,
                                           err_msg=name)
    assert meta["train_metrics"] == "eval" and meta["sgd_loop"] == "auto"


def test_table_printed(result):
    text = grid_cli.format_table(result[0]["runs"], max_rows=1)
    assert "best 1 of 2 runs" in text and "valid%" in text
    assert all(c in grid_cli.format_table(result[0]["runs"], max_rows=40) for c in CELLS)


def test_contract_flags_parse():
    scale, jobs, mode = _prepare("--cells=0|00|000", "--lrs=0.1,0.05", "--batch_sizes=64",
                                 "--seeds=222", "--epochs=3", "--scale=tiny",
                                 "--dataset=subset", "--output_json=/tmp/x.json")
    assert scale.channels == (4, 8, 16) and mode in ("sequential", "vmap")
    assert [(j.code, j.learning_rate, j.batch_size, j.seed) for j in jobs] == [
        ("0|00|000", 0.1, 64, 222), ("0|00|000", 0.05, 64, 222)]


def test_grid_and_overrides():
    scale, jobs, _ = _prepare("--cells=000000,0|12|300,0|00|000", "--lrs=0.1", "--seeds=1,2",
                              "--batch_sizes=16,32", "--channels=2,4,8",
                              "--cells_per_stage=3", "--config.epochs=5")
    assert (scale.channels, scale.cells_per_stage) == ((2, 4, 8), 3)
    assert len(jobs) == 2 * 2 * 2  # the repeated cell (two spellings) counted once
    assert {j.code for j in jobs} == {"0|00|000", "0|12|300"}


def test_all_cells():
    codes = grid_cli.parse_cells("all")
    assert len(codes) == 1011 == len(set(codes))


def test_unlisted_lr_warns(caplog):
    with caplog.at_level("WARNING"):
        assert grid_cli.parse_lrs("0.3,0.1") == [0.3, 0.1]
    assert "0.3 is not one of the benchmark's" in caplog.text
    assert "0.1 is not" not in caplog.text


@pytest.mark.parametrize("flag, message", [
    ("--scale=huge", "valid choices: ['paper', 'small', 'tiny']"),
    ("--dataset=mnist", "valid choices: ['subset', 'cifar10', 'cifar10_npz', 'fashion_mnist']"),
    ("--mode=pmap", "valid choices: ['auto', 'vmap', 'sequential']"),
    ("--sgd_loop=python", "valid choices: ['auto', 'scan', 'host']"),
    ("--cells=0|12|3", "not of the form 'A|BC|DEF'"),
    ("--cells=0|12|304", "op digit 4"),
    ("--lrs=-0.1", "must be positive"),
    ("--lrs=fast", "is not a number"),
    ("--batch_sizes=1.5", "is not an int"),
    ("--epochs=0", "--epochs must be >= 1"),
    ("--channels=4,8", "needs 3 comma-separated ints"),
])
def test_bad_flags(flag, message):
    with pytest.raises(ValueError) as err:
        _prepare(flag)
    assert message in str(err.value)


def test_cli_usage_error():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--scale=huge", "--noprogress"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0
    assert "valid choices: ['paper', 'small', 'tiny']" in proc.stderr
