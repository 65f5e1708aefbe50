"""Tests for nhb.train.grid: grouping, execution modes and time attribution."""

import jax
import numpy as np
import pytest

from nhb.data import load_dataset
from nhb.train import Job, ProgramCache, TrainData, TrainStatic, grid, make_cell_train

N = 32
SCALE = grid.Scale("test", (4, 8, 16), 1)


def test_plan_groups_by_batch_size_and_conv_pattern():
    jobs = [Job((0, 1, 2, 0, 3, 3), 0.1, 64, 222), Job((0, 2, 2, 0, 1, 1), 0.05, 64, 555),
            Job((0, 1, 2, 0, 3, 3), 0.1, 32, 222), Job((3, 3, 3, 3, 3, 3), 0.1, 64, 222),
            Job((0, 3, 1, 0, 2, 2), 0.4, 64, 888)]
    groups = grid.plan_groups(jobs)
    as_sets = [{jobs.index(j) for j in g} for g in groups]
    assert sorted(map(sorted, as_sets)) == [[0, 1, 4], [2], [3]]
    chunks = grid.plan_groups(jobs, max_group=2)
    assert sorted(len(g) for g in chunks) == [1, 1, 1, 2]
    assert sum(len(g) for g in chunks) == len(jobs)


def test_plan_groups_supernet_by_batch_size_only():
    jobs = [Job((0, 1, 2, 0, 3, 3), 0.1, 64, 222), Job((3, 3, 3, 3, 3, 3), 0.1, 64, 222),
            Job((0, 1, 2, 0, 3, 3), 0.1, 32, 222)]
    groups = grid.plan_groups(jobs, sharing="supernet")
    assert [[jobs.index(j) for j in g] for g in groups] == [[2], [0, 1]]
    assert grid.program_edges((3,) * 6, "supernet") == (True,) * 6
    assert grid.program_edges((0, 1, 2, 0, 3, 3), "pattern") == (True, False, False, True,
                                                                  False, False)
    with pytest.raises(ValueError, match="must share one program"):
        grid.run_group(jobs[:2], None, scale=SCALE, epochs=1)


def test_bad_names_list_choices():
    with pytest.raises(ValueError, match="'paper', 'small', 'tiny'"):
        grid.get_scale("huge")
    with pytest.raises(ValueError, match=r"auto.*vmap.*sequential"):
        grid.resolve_mode("parallel")
    cpu = jax.default_backend() == "cpu"
    assert grid.resolve_mode("auto", 64) == ("sequential" if cpu else "vmap")
    assert grid.resolve_mode("auto", 512) == "sequential"
    assert grid.resolve_sgd_loop("auto") == ("host" if cpu else "scan")
    with pytest.raises(ValueError, match=r"auto.*pattern.*supernet"):
        grid.resolve_sharing("per_cell")
    assert grid.resolve_sharing("auto", SCALE) == ("pattern" if cpu else "supernet")
    assert grid.resolve_sharing("auto", grid.get_scale("paper")) == "pattern"
    with pytest.raises(ValueError, match=r"auto.*scan.*host"):
        grid.resolve_sgd_loop("python")
    assert grid.resolve_conv_impl("auto", "vmap") == ("patches", "xla")
    assert grid.resolve_conv_impl("auto", "sequential") == ("xla", "xla")
    assert grid.resolve_conv_impl("shifts", "vmap") == ("shifts", "shifts")
    with pytest.raises(ValueError, match=r"auto.*xla.*patches"):
        grid.resolve_conv_impl("cudnn", "vmap")


@pytest.fixture(scope="module")
def data():
    return TrainData.from_dataset(load_dataset("subset", max_per_split=N))


JOBS = [Job((0, 1, 2, 0, 3, 1), 0.1, 16, 222), Job((0, 2, 3, 0, 1, 1), 0.05, 16, 555)]


@pytest.fixture(scope="module")
def reference(data):
    """The whole-run scan (`Trainer.train`) of JOBS, vmapped."""
    static = TrainStatic(batch_size=16, conv_edges=(True, False, False, True, False, False),
                         n_train=N, n_valid=N, n_test=N, epochs=2, channels=SCALE.channels,
                         cells_per_stage=1)
    train = jax.jit(jax.vmap(make_cell_train(static).train, in_axes=(0, 0, 0, None)))
    return train(*grid.member_inputs(JOBS), data)[1]


@pytest.mark.parametrize("mode,sgd_loop", [("sequential", "host"), ("sequential", "scan"),
                                           ("vmap", "host"), ("vmap", "scan")])
def test_timed_grid_equals_whole_run_scan(data, reference, mode, sgd_loop):
    """Every execution path (the accelerators' scanned epoch included) gives the numbers of
    `Trainer.train`, and compiles one program per group size."""
    cache = ProgramCache()
    results = grid.run_group(JOBS, data, scale=SCALE, epochs=2, mode=mode, sgd_loop=sgd_loop,
                             cache=cache)
    assert cache.compiles == 1
    for i, r in enumerate(results):
        assert r.job == JOBS[i] and r.mode == mode and not r.diverged
        assert r.group_size == (2 if mode == "vmap" else 1)
        for name in ("train_loss", "valid_loss", "test_loss"):
            np.testing.assert_allclose(r.metrics[name], np.asarray(getattr(reference, name)[i]),
                                       rtol=1e-4)
        for name in ("train_acc", "valid_acc", "test_acc"):
            np.testing.assert_allclose(r.metrics[name], np.asarray(getattr(reference, name)[i]),
                                       atol=100.0 / N + 1e-4)
        for name in ("train_time", "valid_time", "test_time"):
            assert r.metrics[name].shape == (2,) and np.all(r.metrics[name] > 0)
    if mode == "vmap":  # the group's phase time is split equally among its members
        np.testing.assert_array_equal(results[0].metrics["train_time"],
                                      results[1].metrics["train_time"])


def test_one_program_per_batch_size_and_pattern(data):
    """Two patterns x one batch size, run twice: 2 compiled programs (counted), and the
    cache's bound evicts the least recently used."""
    jobs = [*JOBS, Job((1, 0, 2, 3, 0, 1), 0.1, 16, 222), Job((2, 0, 1, 3, 0, 3), 0.2, 16, 222)]
    cache = ProgramCache()
    for _ in range(2):
        grid.train_grid(jobs, data, scale=SCALE, epochs=1, mode="sequential", progress=False,
                        sharing="pattern", cache=cache)
    assert cache.compiles == 2 and len(cache) == 2
    small = ProgramCache(max_programs=1)
    grid.train_grid(jobs, data, scale=SCALE, epochs=1, mode="sequential", progress=False,
                    sharing="pattern", cache=small)
    assert len(small) == 1 and small.compiles == 2
    with pytest.raises(ValueError, match="max_programs"):
        ProgramCache(0)


def test_supernet_group_equals_pattern_programs(data):
    """One vmapped supernet program over cells of 3 conv patterns = their own programs."""
    jobs = [Job((0, 1, 2, 0, 3, 1), 0.1, 16, 222), Job((1, 2, 3, 0, 0, 2), 0.05, 16, 555),
            Job((3, 3, 3, 3, 3, 3), 0.4, 16, 222)]
    sup = grid.run_group(jobs, data, scale=SCALE, epochs=2, mode="vmap", sharing="supernet")
    for job, r in zip(jobs, sup, strict=True):
        ref, = grid.run_group([job], data, scale=SCALE, epochs=2, mode="sequential",
                              sharing="pattern")
        assert r.job == job and r.group_size == 3
        for name in ("train_loss", "valid_loss", "test_loss", "train_acc", "test_acc"):
            np.testing.assert_allclose(r.metrics[name], ref.metrics[name], rtol=1e-4,
                                       atol=0.5 if name.endswith("acc") else 1e-5)
    assert not np.allclose(sup[0].metrics["train_loss"], sup[1].metrics["train_loss"])
