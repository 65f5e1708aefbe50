"""Tests for nhb.bench.objectives, the multi-objective query fields and the Pareto figure."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from nhb import bench
from nhb.bench import analysis, objectives
from nhb.bench.api import Benchmark
from nhb.models.cell_net import conv_edges_of, reference_param_count
from nhb.search.selection import pareto_front
from nhb.space import cells, nhb2

ALL_CONV_PARAMS = 1_531_850  # README / docs/protocol.md
ALL_CONV_FLOPS = 220_119_680


def test_closed_form_values_and_cell_formats():
    assert objectives.cell_params("0|00|000") == ALL_CONV_PARAMS
    assert objectives.cell_flops((0,) * 6) == ALL_CONV_FLOPS
    assert objectives.cell_params(4095) == objectives.cell_params("1|21|123") == 73_610
    assert objectives.cell_flops(np.int64(4095)) == 7_783_040
    p, f = objectives.objective_tables()
    assert p is objectives.PARAMS and f is objectives.FLOPS  # cached
    assert p.shape == f.shape == (4096,) and not p.flags.writeable
    codes = cells.cell_tables().codes
    assert [reference_param_count(c) for c in codes] == p.tolist()
    for i in (0, 17, 1234, 4095):
        assert objectives.cell_params(i) == objectives.cell_params(codes[i]) == p[i]
        assert objectives.cell_flops(i) == objectives.cell_flops(list(cells.digits_of_index(i)))
        assert objectives.cell_flops(i) == f[i]
    with pytest.raises(ValueError, match="out of range"):
        objectives.cell_params(4096)
    with pytest.raises(ValueError, match="valid edge ops"):
        objectives.cell_flops("0|00|004")


def test_counts_equal_the_model_for_all_1011_classes():
    """The closed form equals CellNet's own variables and jaxpr MACs for every class
    representative; cells of one conv pattern share one program (traced ops), so one trace
    per pattern covers all of them."""
    t = cells.cell_tables()
    by_pattern: dict[tuple[bool, ...], list[int]] = {}
    for rep in t.representative:
        by_pattern.setdefault(conv_edges_of(t.digits[rep]), []).append(int(rep))
    assert len(by_pattern) == 64 and sum(map(len, by_pattern.values())) == 1011
    for pattern, reps in by_pattern.items():
        n_params, n_macs = objectives.model_counts(pattern)
        assert (objectives.PARAMS[reps] == n_params).all(), pattern
        assert (objectives.FLOPS[reps] == n_macs).all(), pattern
    # Concrete ops through apply: the all-conv cell, and the disconnected class's
    # representative, whose 3 conv edges do not reach the output (CellNet still holds and
    # computes them).
    dead = int(t.representative[t.class_id[t.codes.index("0|00|333")]])
    assert t.codes[dead] == "0|00|333" and (t.node_labels[dead] == 2).sum() == 0
    assert objectives.PARAMS[dead] == objectives.cell_params("0|00|000") - 3 * 243_040
    for i in (0, dead):
        got = objectives.model_counts(conv_edges_of(t.codes[i]), t.codes[i], via_apply=True)
        assert got == (objectives.PARAMS[i], objectives.FLOPS[i])
    assert objectives.model_counts((True,) * 6) == (ALL_CONV_PARAMS, ALL_CONV_FLOPS)
    reps = t.representative
    assert objectives.PARAMS[reps].min() == 73_610 and objectives.FLOPS[reps].min() == 7_783_040


def test_other_scale_and_jaxpr_macs_match_xla():
    tiny = dict(channels=(4, 8, 16), cells_per_stage=1)
    assert objectives.model_counts((True,) * 6, **tiny) == (
        objectives.cell_params(0, **tiny), objectives.cell_flops(0, **tiny))

    def f(x, k, w):  # unpadded conv (XLA skips padding taps) and a matmul
        y = jax.lax.conv_general_dilated(x, k, (2, 2), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y.reshape(y.shape[0], -1) @ w

    args = (jnp.zeros((2, 9, 9, 3)), jnp.zeros((3, 3, 3, 8)), jnp.zeros((4 * 4 * 8, 10)))
    macs = objectives.jaxpr_macs(jax.make_jaxpr(f)(*args))
    assert macs == 2 * 16 * 8 * 27 + 2 * 128 * 10
    assert 2 * macs == jax.jit(f).lower(*args).cost_analysis()["flops"]
    loop = jax.make_jaxpr(lambda x: jax.lax.fori_loop(0, 3, lambda i, v: v @ v, x))
    with pytest.raises(ValueError, match="cannot count"):
        objectives.jaxpr_macs(loop(jnp.eye(3)))


@pytest.fixture(scope="module")
def table() -> bench.Table:
    reps = cells.cell_tables().representative
    return bench.random_table(5, rows=reps[::37][:28], n_seeds=2, n_epochs=4)


def test_query_returns_objectives(table):
    b = Benchmark(table)
    rng = np.random.default_rng(0)
    stored = np.nonzero(table.row_of_cell >= 0)[0]
    cell = np.concatenate([rng.choice(stored, 40), [0, 4095]])  # 0 / 4095 may be absent
    cfg = nhb2.make(nhb2.cell_from_index(cell), rng.integers(0, 8, 42), rng.integers(0, 6, 42))
    res = jax.jit(lambda bb, c: bb.query(c, 3, seed="mean", mode="test"))(b, cfg)
    assert res.params.dtype == res.flops.dtype == jnp.int32 and res.params.shape == (42,)
    np.testing.assert_array_equal(res.params, objectives.PARAMS[cell])
    np.testing.assert_array_equal(res.flops, objectives.FLOPS[cell])
    concrete = b.query(jax.tree.map(lambda a: a[:40], cfg))
    np.testing.assert_array_equal(concrete.flops, objectives.FLOPS[cell[:40]])
    a200 = jax.jit(lambda bb, c: bb.query(c, 200))(b, jax.tree.map(lambda a: a[:5], cfg))
    np.testing.assert_array_equal(a200.params, objectives.PARAMS[cell[:5]])
    two_d = jax.tree.map(lambda a: a[:40].reshape(4, 10, *a.shape[1:]), cfg)
    assert b.query(two_d).flops.shape == (4, 10)
    # A table built at another scale reports that scale's counts.
    tiny = Benchmark(dataclasses.replace(table, meta=dict(table.meta, scale="tiny")))
    res = tiny.query(jax.tree.map(lambda a: a[:40], cfg))
    want = objectives.objective_tables((4, 8, 16), 1).params[cell[:40]]
    np.testing.assert_array_equal(res.params, want)


def test_plot_pareto(table, tmp_path):
    front = analysis.plot_pareto(table, tmp_path / "fig" / "pareto.png")
    with Image.open(tmp_path / "fig" / "pareto.png") as png:
        assert png.format == "PNG" and len(png.convert("L").getcolors(1 << 16)) > 10
    p = analysis.pareto_points(table)
    acc = table.metrics["valid_acc"][..., 0, -1].reshape(-1)  # official seed 222, epoch 4
    np.testing.assert_allclose(p["acc"], acc)
    assert p["size"].shape == acc.shape and p["front"].sum() == len(front) >= 1
    np.testing.assert_array_equal(p["front"], pareto_front(p["size"], p["acc"]))
    sizes = [f["size"] for f in front]
    assert sizes == sorted(sizes) and all(np.diff([f["acc"] for f in front]) > 0)
    best = np.nanargmax(acc)
    assert front[-1]["acc"] == pytest.approx(acc[best])
    # The benchmark gives the same points (its lr / bs axes are already sorted here).
    front_b = analysis.plot_pareto(Benchmark(table), tmp_path / "b.png", objective="flops")
    pb = analysis.pareto_points(Benchmark(table), objective="flops")
    np.testing.assert_array_equal(pb["front"], p["front"])  # FLOPs are monotone in params
    assert [f["code"] for f in front_b] == [f["code"] for f in front]
    assert {(f["code"], f["lr"], f["batch_size"]) for f in front} == {
        (str(p["codes"][i]), float(p["lrs"][i]), int(p["bss"][i]))
        for i in np.nonzero(p["front"])[0]}
    with pytest.raises(ValueError, match="valid choices"):
        analysis.pareto_points(table, objective="latency")
