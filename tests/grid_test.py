"""Tests for nhb.train.grid: grouping, execution modes and time attribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb.data import load_dataset
from nhb.train import HParams, Job, TrainData, TrainStatic, grid, make_train

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
    assert grid.resolve_mode("auto") == "sequential"  # CPU backend in tests
    with pytest.raises(ValueError, match=r"auto.*pattern.*supernet"):
        grid.resolve_sharing("per_cell")
    assert grid.resolve_sharing("auto", SCALE) == "pattern"  # CPU backend in tests
    assert grid.resolve_conv_impl("auto", "vmap") == ("patches", "xla")
    assert grid.resolve_conv_impl("auto", "sequential") == ("xla", "xla")
    assert grid.resolve_conv_impl("shifts", "vmap") == ("shifts", "shifts")
    with pytest.raises(ValueError, match=r"auto.*xla.*patches"):
        grid.resolve_conv_impl("cudnn", "vmap")


@pytest.mark.parametrize("mode", ["sequential", "vmap"])
def test_timed_grid_equals_single_program(mode):
    data = TrainData.from_dataset(load_dataset("subset", max_per_split=N))
    jobs = [Job((0, 1, 2, 0, 3, 1), 0.1, 16, 222), Job((0, 2, 3, 0, 1, 1), 0.05, 16, 555)]
    results = grid.run_group(jobs, data, scale=SCALE, epochs=2, mode=mode)
    static = TrainStatic(batch_size=16, conv_edges=(True, False, False, True, False, False),
                         n_train=N, n_valid=N, n_test=N, epochs=2, channels=SCALE.channels,
                         cells_per_stage=1)
    train = jax.jit(jax.vmap(make_train(static).train, in_axes=(0, 0, 0, None)))
    ref = train(jnp.stack([jax.random.key(j.seed) for j in jobs]),
                HParams(lr=jnp.array([j.lr for j in jobs], jnp.float32),
                        momentum=jnp.full((2,), 0.9), weight_decay=jnp.full((2,), 5e-4)),
                jnp.asarray([j.cell for j in jobs]), data)
    for i, r in enumerate(results):
        assert r.job == jobs[i] and r.mode == mode and not r.diverged
        assert r.group_size == (2 if mode == "vmap" else 1)
        for name in ("train_loss", "valid_loss", "test_loss"):
            np.testing.assert_allclose(r.metrics[name], np.asarray(getattr(ref, name)[i]),
                                       rtol=1e-4)
        for name in ("train_time", "valid_time", "test_time"):
            assert r.metrics[name].shape == (2,) and np.all(r.metrics[name] > 0)
    if mode == "vmap":  # the group's phase time is split equally among its members
        np.testing.assert_allclose(results[0].metrics["train_time"],
                                   results[1].metrics["train_time"])


def test_supernet_group_equals_pattern_programs():
    """One vmapped supernet program over cells of 3 conv patterns = their own programs."""
    data = TrainData.from_dataset(load_dataset("subset", max_per_split=N))
    jobs = [Job((0, 1, 2, 0, 3, 1), 0.1, 16, 222), Job((1, 2, 3, 0, 0, 2), 0.05, 16, 555),
            Job((3, 3, 3, 3, 3, 3), 0.4, 16, 222)]
    sup = grid.run_group(jobs, data, scale=SCALE, epochs=2, mode="vmap", sharing="supernet")
    for job, r in zip(jobs, sup, strict=True):
        ref, = grid.run_group([job], data, scale=SCALE, epochs=2, mode="sequential")
        assert r.job == job and r.group_size == 3
        for name in ("train_loss", "valid_loss", "test_loss", "train_acc", "test_acc"):
            np.testing.assert_allclose(r.metrics[name], ref.metrics[name], rtol=1e-4,
                                       atol=0.5 if name.endswith("acc") else 1e-5)
    assert not np.allclose(sup[0].metrics["train_loss"], sup[1].metrics["train_loss"])
