"""Tests for the Syne Tune blackbox over an nhb table: its answers are `Benchmark.query`'s
(per call, batched, every epoch, every seed mode), the config space round-trips, bad input
names the valid choices, and Syne Tune's own simulator (`UserBlackboxBackend`, ASHA and random
search, two workers) reports the table's values and charges the table's cumulative cost."""

import importlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb import bench
from nhb.space import cells, configspace, nhb2

pytest.importorskip("syne_tune")
from nhb.bench.synetune import (
    ELAPSED_TIME_ATTR,
    FIDELITY,
    METRICS,
    VALID_ERROR,
    NHB2Blackbox,
)

N_EPOCHS = 4
LR_IX, BS_IX = (1, 4, 7), (0, 5)


@pytest.fixture(scope="module")
def table():
    """All 1011 classes (every sampled cell is in the table), 3 lrs x 2 batch sizes."""
    return bench.random_table(3, n_epochs=N_EPOCHS, lr_indices=LR_IX, bs_indices=BS_IX)


@pytest.fixture(scope="module")
def bb(table):
    return NHB2Blackbox(bench.Benchmark(table))


def _expected(bb, cfgs, epoch, seed):
    """The table's values of `cfgs` by the un-jitted raw API, as the blackbox's dict."""
    r = bb.bench.query(cfgs, epoch=epoch, seed=seed)
    out = {m: np.asarray(getattr(r, m)) for m in METRICS if m != VALID_ERROR}
    out[VALID_ERROR] = np.float32(100) - out["valid_acc"]
    return out


def _random_dicts(bb, n, seed):
    rng = np.random.RandomState(seed)
    return [{k: d.sample(random_state=rng) for k, d in bb.configuration_space.items()}
            for _ in range(n)]


def test_spaces_are_the_tables_values(bb):
    space = bb.configuration_space
    assert list(space) == [*configspace.EDGE_NAMES, "lr", "batch_size"]
    assert all(space[e].categories == list(cells.OP_NAMES) for e in configspace.EDGE_NAMES)
    assert space["lr"].categories == [nhb2.LRS[i] for i in LR_IX]
    assert space["batch_size"].categories == [nhb2.BATCH_SIZES[i] for i in BS_IX]
    fid = bb.fidelity_space[FIDELITY]
    assert (fid.lower, fid.upper) == (1, N_EPOCHS) and bb.fidelity_name() == FIDELITY
    np.testing.assert_array_equal(bb.fidelity_values, np.arange(1, N_EPOCHS + 1))
    assert bb.objectives_names == list(METRICS) and ELAPSED_TIME_ATTR in METRICS
    assert bb.num_seeds == 3


def test_config_round_trip(bb):
    dicts = _random_dicts(bb, 40, 0)
    cfgs = bb.encode(dicts)
    assert bb.decode(cfgs) == dicts
    for d, i in zip(dicts[:5], range(5), strict=True):  # the ConfigSpace export agrees
        assert nhb2.to_index(configspace.from_config(d)) == nhb2.to_index(bb.encode(d))
        assert nhb2.to_index(bb.encode(d)) == nhb2.to_index(cfgs)[i]
    assert (cfgs.cell.dtype, cfgs.lr.dtype, cfgs.bs.dtype) == (np.int8, np.int32, np.int32)
    assert bb.encode([]).cell.shape == (0, 6)
    one = bb.encode(dicts[0])
    assert one.shape == () and bb.decode(one) == dicts[0]
    # numpy scalars (as samplers may hand them out) and lrs within float tolerance are accepted
    d = {**dicts[0], "lr": np.float64(nhb2.LRS[4]) * (1 + 1e-9), "batch_size": np.int64(512)}
    assert nhb2.to_index(bb.encode(d)) == nhb2.to_index(bb.encode({**dicts[0], "lr": 0.05,
                                                                   "batch_size": 512}))


def _same(got, want, seed, msg=""):
    """Equal values (to float32 rounding for seed "mean", a reduction XLA may fuse)."""
    if seed == "mean":
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=msg)
    else:
        np.testing.assert_array_equal(got, want, err_msg=msg)


@pytest.mark.parametrize("seed", [None, 0, 2, "official", "mean"])
def test_answers_are_the_raw_query_api(bb, seed):
    dicts = _random_dicts(bb, 12, 1)
    cfgs = bb.encode(dicts)
    want_seed = "official" if seed is None else seed
    curves = bb.objective_function_batch(dicts, None, seed)  # every epoch: [12, n_epochs]
    curve = bb(dicts[5], seed=seed)  # Syne Tune's [n_epochs, n_metrics] without a fidelity
    assert curve.shape == (N_EPOCHS, len(METRICS))
    for epoch in range(1, N_EPOCHS + 1):
        want = _expected(bb, cfgs, epoch, want_seed)
        got = bb.objective_function_batch(dicts, epoch, seed)
        got_cfgs = bb.objective_function_batch(cfgs, epoch, seed)
        assert set(got) == set(got_cfgs) == set(curves) == set(METRICS)
        for m in METRICS:
            for g in (got[m], got_cfgs[m], curves[m][:, epoch - 1]):
                _same(g, want[m], seed, m)
        _same(curve[epoch - 1], [want[m][5] for m in METRICS], seed)
        for i in (0, 7):  # Syne Tune's per-call path, via Blackbox.__call__
            one = bb(dicts[i], fidelity=epoch, seed=seed)
            assert list(one) == list(METRICS)
            _same([one[m] for m in METRICS], [want[m][i].item() for m in METRICS], seed)
            assert type(one["flops"]) is int and type(one["cost"]) is float
            assert one == bb(dicts[i], fidelity={FIDELITY: epoch}, seed=seed)
    # counts stay integers (an all-conv cell has 2.2e8 FLOPs, beyond float32's 2**24)
    big = {**dicts[5], **dict.fromkeys(configspace.EDGE_NAMES, "conv3x3")}
    flops = int(bb.bench.query(bb.encode(big)).flops)
    assert flops > 2**24 and set(bb(big, seed=seed)[:, -1]) == {flops}
    assert bb(big, fidelity=1, seed=seed)["flops"] == flops
    # a fidelity per config
    epochs = np.arange(12) % N_EPOCHS + 1
    got = bb.objective_function_batch(dicts, epochs, seed)["valid_acc"]
    for i, e in enumerate(epochs):
        _same(got[i], _expected(bb, cfgs, int(e), want_seed)["valid_acc"][i], seed)


def test_cost_is_cumulative_and_seeds_differ(bb, table):
    dicts = _random_dicts(bb, 50, 2)
    out = bb.objective_function_batch(dicts, None, 0)
    assert np.all(np.diff(out[ELAPSED_TIME_ATTR], axis=-1) > 0)
    cfgs = bb.encode(dicts)  # the table's per-epoch times, summed by hand
    rows = np.asarray(table.row_of_cell)[np.asarray(nhb2.cell_index(cfgs.cell))]
    li = np.searchsorted(LR_IX, np.asarray(cfgs.lr))
    bi = np.searchsorted(BS_IX, np.asarray(cfgs.bs))
    per_epoch = (table.metrics["train_time"] + table.metrics["valid_time"])[rows, li, bi, 0]
    np.testing.assert_allclose(out[ELAPSED_TIME_ATTR], np.cumsum(per_epoch, -1), rtol=1e-5)
    test_mode = NHB2Blackbox(bb.bench, seed=0, mode="test").objective_function_batch(dicts)
    per_epoch = per_epoch + table.metrics["test_time"][rows, li, bi, 0]
    np.testing.assert_allclose(test_mode[ELAPSED_TIME_ATTR], np.cumsum(per_epoch, -1), rtol=1e-5)
    assert not np.array_equal(out["valid_acc"], bb.objective_function_batch(dicts, None, 1)[
        "valid_acc"])


def test_bad_input_names_the_valid_choices(bb):
    good = _random_dicts(bb, 1, 3)[0]
    with pytest.raises(ValueError, match=r"edge_C 'conv5x5' is invalid; valid choices: "
                                         r"\['conv3x3', 'avgpool3x3', 'skip', 'zero'\]"):
        bb({**good, "edge_C": "conv5x5"}, fidelity=1)
    with pytest.raises(ValueError, match=r"learning rate 0.003125 .*valid choices: "
                                         r"\[0.00625, 0.05, 0.4\]"):
        bb({**good, "lr": 0.003125}, fidelity=1)
    with pytest.raises(ValueError, match=r"batch size 64 .*valid choices: \[16, 512\]"):
        bb.objective_function_batch([good, {**good, "batch_size": 64}], 1)
    with pytest.raises(ValueError, match="lacks 'lr'"):
        bb.encode({k: v for k, v in good.items() if k != "lr"})
    for epoch in (0, N_EPOCHS + 1, 1.5, [1, 9]):
        with pytest.raises(ValueError, match=rf"epoch .* valid choices: 1..{N_EPOCHS}"):
            bb.objective_function_batch([good, good], epoch)
    for seed in (3, -1, "random", True):
        with pytest.raises(ValueError, match=r"valid choices: 'official', 'mean', None or a "
                                             r"seed index 0..2 \(seeds \(222, 555, 888\)\)"):
            bb(good, fidelity=1, seed=seed)
    with pytest.raises(ValueError, match="valid choices"):
        NHB2Blackbox(bb.bench, mode="train")
    # a Config batch is checked too: an lr the table lacks, an op index out of range
    cfgs = jax.tree.map(jnp.asarray, bb.encode([good, good]))
    with pytest.raises(ValueError, match=r"learning rate 0.003125 \(index 0\) is not in this "
                                         r"table, which holds \[0.00625, 0.05, 0.4\]"):
        bb.objective_function_batch(cfgs.replace(lr=cfgs.lr.at[1].set(0)), 2)
    with pytest.raises(ValueError, match="op index 4 is invalid; valid ops"):
        bb.objective_function_batch(cfgs.replace(cell=cfgs.cell.at[0, 2].set(4)), 2)
    with pytest.raises(ValueError, match=r"bs index -1 is invalid; valid indices 0..5"):
        bb.objective_function_batch(cfgs.replace(bs=cfgs.bs.at[0].set(-1)), None)


def test_a_cell_class_the_table_lacks():
    reps = cells.cell_tables().representative
    small = NHB2Blackbox(bench.random_table(1, rows=reps[:30], n_epochs=2, lr_indices=[0],
                                            bs_indices=[0]))
    cfg = nhb2.make(nhb2.cell_from_index(int(reps[500])), 0, 0)
    d = small.decode(cfg)
    with pytest.raises(ValueError, match=r"is not in this table: its class has no row \(\d+ "
                                         r"of 4096 cells, 30 classes"):
        small(d, fidelity=1)
    inside = small.decode(nhb2.make(nhb2.cell_from_index(int(reps[3])), 0, 0))
    assert np.isfinite(small(inside, fidelity=2)["valid_acc"])


@pytest.mark.parametrize("scheduler,backend_seed", [("ASHA", None), ("RandomSearch", 2)])
def test_syne_tune_simulator_reports_the_tables_values(bb, scheduler, backend_seed,
                                                       tmp_path, monkeypatch):
    monkeypatch.setenv("SYNETUNE_FOLDER", str(tmp_path))
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback
    from syne_tune.blackbox_repository import UserBlackboxBackend
    from syne_tune.optimizer import baselines

    backend = UserBlackboxBackend(blackbox=bb, elapsed_time_attr=ELAPSED_TIME_ATTR,
                                  seed=backend_seed)
    if scheduler == "ASHA":
        sched = baselines.ASHA(bb.configuration_space, metric=VALID_ERROR, time_attr=FIDELITY,
                               max_t=N_EPOCHS, random_seed=0)
    else:
        sched = baselines.RandomSearch(bb.configuration_space, metrics=[VALID_ERROR],
                                       random_seed=0)
    callback = SimulatorCallback()
    # Syne Tune 0.16's random searcher ignores `random_seed`: it samples from NumPy's global RNG
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(0)  # noqa: NPY002
    tuner = Tuner(trial_backend=backend, scheduler=sched, n_workers=2, sleep_time=0,
                  stop_criterion=StoppingCriterion(max_wallclock_time=600), callbacks=[callback],
                  tuner_name=f"nhb-{scheduler}", save_tuner=False, print_update_interval=1e9,
                  results_update_interval=1e9)
    try:
        tuner.run()
    finally:
        np.random.set_state(state)  # noqa: NPY002
    df = callback.dataframe()
    assert df.trial_id.nunique() >= 6 and len(df) >= 20  # 12 / 29 (ASHA), 10 / 37 (random)
    dicts = [{k: row[f"config_{k}"] for k in bb.configuration_space} for _, row in df.iterrows()]
    cfgs = bb.encode(dicts)
    epochs = df[FIDELITY].to_numpy()
    assert set(epochs) <= set(range(1, N_EPOCHS + 1))
    seed = "official" if backend_seed is None else backend_seed
    for m in METRICS:  # every reported result is the table's value at its epoch
        want = [_expected(bb, jax.tree.map(lambda a, i=i: a[i], cfgs), int(e), seed)[m]
                for i, e in enumerate(epochs)]
        np.testing.assert_array_equal(df[m].to_numpy(), np.asarray(want, np.float64),
                                      err_msg=m)
    # simulated time advances by the table's cost between a trial's epochs (cumulative cost)
    for _, g in df.groupby("trial_id"):
        g = g.sort_values(FIDELITY)
        np.testing.assert_allclose(np.diff(g["st_tuner_time"]), np.diff(g[ELAPSED_TIME_ATTR]),
                                   atol=1e-3)
    assert df["st_tuner_time"].max() <= 600 + df[ELAPSED_TIME_ATTR].max()
    if scheduler == "ASHA":  # some trials stopped early, some ran to the end
        last = df.groupby("trial_id")[FIDELITY].max()
        assert (last < N_EPOCHS).any() and (last == N_EPOCHS).any()


def test_nhb_imports_without_syne_tune(monkeypatch):
    code = ("import sys, nhb, nhb.bench, nhb.bench.evosax_problem; "
            "assert 'syne_tune' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    monkeypatch.setitem(sys.modules, "syne_tune.blackbox_repository.blackbox", None)
    monkeypatch.delitem(sys.modules, "nhb.bench.synetune")
    with pytest.raises(ImportError, match=r'pip install "nhb\[synetune\]"'):
        importlib.import_module("nhb.bench.synetune")
