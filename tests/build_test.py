"""Tests for nhb.bench.build: presets, the plan, atomic shards, kill-and-resume, executors, CLI.

Every build here uses `TINY` (2 classes of one conv-edge pattern x 2 lrs x batch size 16,
2 epochs, 16 images per split): one compiled program. JAX's persistent compilation cache
(kept under pytest's cache dir) shares it with the subprocesses and the Ray worker, so only
the first run of this file on a machine pays the compilation.
"""

import dataclasses
import functools
import importlib.util
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache

from nhb import bench, train
from nhb.bench import build, executors
from nhb.models.cell_net import conv_edges_of
from nhb.space import cells

REPO = pathlib.Path(__file__).resolve().parent.parent
CLI = REPO / "experiments" / "nhb2_build.py"
TINY = dataclasses.replace(
    build.PRESETS["smoke"], name="test", epochs=2, cells=("1|11|111", "1|11|222"),
    lrs=(0.05, 0.1), batch_sizes=(16,), max_per_split=16, cpu_max_group=1)
TINY_FLAGS = ["--preset=smoke", "--config.overrides.name=test", "--config.overrides.epochs=2",
              "--config.overrides.cells=1|11|111,1|11|222", "--config.overrides.lrs=0.05,0.1",
              "--config.overrides.batch_sizes=16", "--config.overrides.max_per_split=16",
              "--config.overrides.cpu_max_group=1", "--config.progress=False",
              "--config.study=False"]
TRAINED = [m for m in bench.METRICS if not m.endswith("_time")]
KILL_SCRIPT = """
import json, sys, time
from nhb.bench import build, executors
calls, real = [], executors.run_group
def run_group(*args, **kwargs):  # the second group 'trains' until the test kills us
    calls.append(1)
    if len(calls) > 1:
        time.sleep(600)
    return real(*args, **kwargs)
executors.run_group = run_group
preset = build.Preset.from_dict(json.loads(sys.argv[1]))
build.build(preset, sys.argv[2], progress=False, compile_cache_dir=sys.argv[3])
"""


@pytest.fixture(scope="module")
def cache_dir(request, tmp_path_factory) -> str:
    """A persistent JAX compilation cache for this module (restored afterwards)."""
    cache = getattr(request.config, "cache", None)
    path = (cache.mkdir("nhb_build_jax_cache") if cache is not None
            else tmp_path_factory.mktemp("jax_cache"))
    old = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(path))
    yield str(path)
    jax.config.update("jax_compilation_cache_dir", old)
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def env(cache_dir) -> dict:
    return dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PLATFORMS="cpu")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir) -> tuple[bench.Table, pathlib.Path]:
    """An uninterrupted in-process build of TINY."""
    out = tmp_path_factory.mktemp("reference")
    return build.build(TINY, out, progress=False, compile_cache_dir=cache_dir), out


def assert_same_results(a: bench.Table, b: bench.Table) -> None:
    np.testing.assert_array_equal(a.cells, b.cells)
    assert a.meta["fingerprint"] == b.meta["fingerprint"]
    for m in TRAINED:
        np.testing.assert_array_equal(a.metrics[m], b.metrics[m], err_msg=m)
    np.testing.assert_array_equal(a.diverged, b.diverged)


def shard_files(out: pathlib.Path) -> list[pathlib.Path]:
    return sorted((out / build.SHARD_DIR).glob("[!.]*.npz"))


def temp_files(out: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in out.rglob("*.tmp") if "jax_cache" not in p.parts]


# ----------------------------------------------------------------------------- presets, plan


def test_presets():
    paper, lite, smoke, study = (build.get_preset(n) for n in ("paper", "lite", "smoke", "study"))
    assert study.epochs == 12 and study.n_runs == 16 and not study.train_eval
    assert (paper.dataset, paper.scale, paper.epochs, paper.seeds) == (
        "cifar10", "paper", 12, (222, 555, 888))
    assert paper.n_runs == 1011 * 48 * 3 and len(paper.cell_codes()) == 1011
    assert (lite.dataset, lite.epochs, lite.seeds, lite.n_runs) == ("subset", 12, (222,), 48528)
    assert lite.scale in ("tiny", "small") and smoke.scale == "tiny"
    assert {"0|00|000", "0|00|333"} <= set(smoke.cells)  # all-conv and the disconnected class
    assert smoke.max_per_split and smoke.n_runs <= 32
    with pytest.raises(ValueError, match=r"valid choices.*lite.*paper.*smoke.*study"):
        build.get_preset("huge")
    with pytest.raises(ValueError, match=r"valid choices.*local.*ray"):
        build.build(TINY, "/nonexistent/never", executor="slurm")
    with pytest.raises(ValueError, match="official class representatives"):
        dataclasses.replace(TINY, cells=("1|11|111", "3|33|333"))  # 3|33|333 is no representative
    with pytest.raises(ValueError, match="learning rate"):
        dataclasses.replace(TINY, lrs=(0.3,))
    assert build.Preset.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    assert dataclasses.replace(TINY, description="x").fingerprint == TINY.fingerprint
    assert dataclasses.replace(TINY, epochs=3).fingerprint != TINY.fingerprint


def test_plan_and_grouping():
    jobs = build.plan(TINY)
    assert [(j.code, j.learning_rate, j.batch_size, j.seed) for j in jobs] == [
        ("1|11|111", 0.05, 16, 222), ("1|11|111", 0.1, 16, 222),
        ("1|11|222", 0.05, 16, 222), ("1|11|222", 0.1, 16, 222)]
    cpu = build.plan_shards(TINY, accelerated=False)
    assert [g for _, g in cpu] == [[j] for j in jobs]  # cpu_max_group=1, plan order
    assert cpu == build.plan_shards(TINY, accelerated=False)  # deterministic names
    assert len({n for n, _ in cpu}) == 4 and cpu[0][0].startswith("00000-")
    assert [g for _, g in build.plan_shards(TINY, accelerated=True)] == [jobs]  # one vmap group
    other = build.plan_shards(dataclasses.replace(TINY, epochs=3), accelerated=False)
    assert {n for n, _ in other}.isdisjoint(n for n, _ in cpu)  # names depend on the preset

    lite = build.get_preset("lite")
    assert build.preset_sharing(lite, accelerated=True) == "supernet"  # tiny network
    assert build.preset_sharing(lite, accelerated=False) == "pattern"
    assert build.preset_sharing("paper", accelerated=True) == "pattern"
    shards = build.plan_shards(lite, accelerated=True)
    for _, group in shards:  # supernet: one program per batch size, full groups
        assert len({j.batch_size for j in group}) == 1
        assert len(group) <= lite.gpu_group_images // group[0].batch_size
    assert len(shards) == sum(-(-1011 * 8 // (lite.gpu_group_images // bs))
                              for bs in lite.batch_sizes)
    pattern = functools.cache(conv_edges_of)
    for _, group in build.plan_shards(dataclasses.replace(lite, sharing="pattern"), True):
        assert len({(j.batch_size, pattern(j.cell)) for j in group}) == 1
    planned = build.plan(lite)
    flat = [j for _, g in shards for j in g]
    assert len(flat) == len(planned) == len(set(flat)) and set(flat) == set(planned)
    assert {cells.code_of(j.cell) for j in planned} == set(build.representative_codes())


# ----------------------------------------------------------------------------- building


def test_build_outputs(reference):
    table, out = reference
    t = cells.cell_tables()
    codes = [t.codes[i] for i in table.cells]
    assert codes == list(TINY.cells) and table.lrs == TINY.lrs and table.n_epochs == 2
    # golden: the table holds exactly what the grid runner gives for the same jobs
    data = executors.load_data(executors.GroupSettings(
        scale="tiny", epochs=2, mode="auto", eval_batch_size=None, dataset="subset",
        data_dir=None, max_per_split=16))
    for job in build.plan(TINY):
        r, = train.run_group([job], data, scale=train.get_scale("tiny"), epochs=2)
        at = (TINY.cells.index(job.code), TINY.lrs.index(job.learning_rate), 0, 0)
        for m in TRAINED:
            np.testing.assert_allclose(table.metrics[m][at], r.metrics[m], rtol=1e-6,
                                       err_msg=m)
    assert np.isfinite(table.metrics["train_loss"]).all() and not table.diverged.any()
    assert (table.metrics["train_time"] > 0).all() and table.meta["train_metrics"] == "eval"
    meta = table.meta
    assert meta["protocol"] == "test" and meta["preset"] == TINY.to_dict()
    assert (meta["scale"], meta["dataset"], meta["seeds"], meta["n_epochs"]) == (
        "tiny", "subset", [222], 2)
    device = jax.devices()[0].device_kind
    assert meta["device"] == device and meta["runs"] == 4 and meta["groups"] == 4
    assert meta["wall_time_s"] > 0 and meta["runs_per_s"] > 0 and meta["sessions"] == 1
    # cells of one class share the representative's row
    member = next(i for i in range(4096) if t.class_id[i] == t.class_id[table.cells[1]]
                  and i != table.cells[1])
    assert table.row_of_cell[member] == 1
    report = json.loads((out / build.REPORT_FILE).read_text())
    assert report["runs"] == 4 and report["device"] == device and report["runs_per_s"] > 0
    assert json.loads((out / build.PLAN_FILE).read_text())["preset"] == TINY.to_dict()
    assert_same_results(bench.load_table(out / build.TABLE_FILE), table)
    assert len(shard_files(out)) == 4 and not temp_files(out)


def test_finished_dir_does_no_training(reference, monkeypatch, tmp_path):
    table, out = reference

    def fail(*args, **kwargs):
        raise AssertionError("trained or loaded data on a finished directory")

    monkeypatch.setattr(executors, "run_group", fail)
    monkeypatch.setattr(executors, "load_data", fail)
    assert_same_results(build.build(TINY, out, progress=False), table)
    # all shards but no table: assembles without training
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / build.TABLE_FILE).unlink()
    assert_same_results(build.build(TINY, copy, progress=False), table)


def test_preset_mismatch_and_lock(reference):
    _, out = reference
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(build.PresetMismatchError, match=r"differing fields.*'epochs': \(2, 3\)"):
        build.build(dataclasses.replace(TINY, epochs=3), out, progress=False)
    with pytest.raises(ValueError, match=r"preset 'test'.*not of the requested 'smoke'"):
        build.build("smoke", out, progress=False)
    assert sorted(p.name for p in out.rglob("*")) == before
    with executors.DirLock(out), pytest.raises(RuntimeError, match="another build is running"):
        build.build(TINY, out, progress=False)


def test_damaged_shards_are_retrained(reference, tmp_path):
    table, out = reference
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / build.TABLE_FILE).unlink()
    first, second, third = shard_files(copy)[:3]
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])  # truncated
    data = bytearray(second.read_bytes())
    data[len(data) // 3] ^= 0xFF  # one flipped byte (zip CRC)
    second.write_bytes(bytes(data))
    shutil.copy(shard_files(copy)[3], third)  # a valid shard under the wrong name
    with pytest.warns(RuntimeWarning, match="damaged") as caught:
        rebuilt = build.build(TINY, copy, progress=False)
    assert len([w for w in caught if "is damaged" in str(w.message)]) == 3, "\n".join(
        str(w.message)[-150:] for w in caught)
    assert_same_results(rebuilt, table)
    assert rebuilt.meta["sessions"] == 2
    fourth = shard_files(copy)[3]
    assert fourth.read_bytes() == (out / build.SHARD_DIR / fourth.name).read_bytes()
    groups = dict(build.plan_shards(TINY, accelerated=False))
    for path in shard_files(copy):  # all valid again
        executors.read_shard(path, TINY.fingerprint, groups[path.name], TINY.epochs)


def test_kill_and_resume_through_the_cli(reference, tmp_path, env, cache_dir):
    """SIGKILL a build after its first shard; the CLI resumes it to the same table."""
    table, _ = reference
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, json.dumps(TINY.to_dict()),
                             str(out), cache_dir], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / build.SHARD_DIR).is_dir() or not shard_files(out):
        assert proc.poll() is None, f"the build died early: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "no shard within 300 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert len(shard_files(out)) == 1 and not (out / build.TABLE_FILE).exists()
    stale = out / build.SHARD_DIR / ".00001-0123456789ab.npz.x1y2z3.tmp"
    stale.write_bytes(b"PK\x03\x04 half a shard")  # as if killed in the middle of a write

    cmd = [sys.executable, str(CLI), f"--output_dir={out}", "--preset=smoke",
           f"--config.compile_cache_dir={cache_dir}", *TINY_FLAGS]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "best by valid" in run.stdout and "final test accuracy" in run.stdout
    assert not temp_files(out) and len(shard_files(out)) == 4
    resumed = bench.load_table(out / build.TABLE_FILE)
    assert_same_results(resumed, table)
    assert resumed.meta["sessions"] == 2


def _cli_main(argv: list[str]) -> int:
    """Runs the CLI in this process, with its own flags (`cli` parses into fresh FlagValues)."""
    if "nhb2_build_cli" not in sys.modules:
        spec = importlib.util.spec_from_file_location("nhb2_build_cli", CLI)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["nhb2_build_cli"] = module
    return sys.modules["nhb2_build_cli"].cli([str(CLI), *argv])


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # ml_collections
def test_cli_finished_dir_and_export(reference, tmp_path, monkeypatch, capsys):
    table, out = reference
    monkeypatch.setattr(executors, "run_group", lambda *a, **k: pytest.fail("trained"))
    assert _cli_main([f"--output_dir={out}", *TINY_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert "already built" in printed and "best by test" in printed
    assert _cli_main([f"--output_dir={out}", "--preset=lite"]) == 1  # preset mismatch
    # export: needs 12 epochs, so a 2-epoch build is refused ...
    assert _cli_main([f"--export_official={tmp_path / 'x'}", f"--table={out}"]) == 1
    # ... and a 12-epoch table is written (without the 200-epoch file)
    twelve = tmp_path / "twelve"
    bench.save_table(bench.random_table(0, rows=table.cells, n_seeds=1, avg_acc_200=False),
                     twelve / build.TABLE_FILE)
    assert _cli_main([f"--export_official={tmp_path / 'official'}", f"--table={twelve}"]) == 0
    assert "avgaccs200.pkl" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "official").iterdir()) == [
        "bench12.pkl", "cellinfo.pkl"]


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # ray.init starts its processes
def test_ray_executor_matches_local(reference, tmp_path, cache_dir):
    ray = pytest.importorskip("ray")
    table, _ = reference
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"JAX_PLATFORMS": "cpu"}})
    try:
        result = build.build(TINY, tmp_path / "ray", executor="ray", progress=False,
                             compile_cache_dir=cache_dir)
    finally:
        ray.shutdown()
    assert_same_results(result, table)
    assert result.meta["executors"] == ["ray"] and result.meta["device"] == "cpu"
