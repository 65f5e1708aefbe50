"""Tests for nhb.bench.analysis: the paper's §4 figures on sub-grid tables."""

import json

import numpy as np
import pytest

from nhb import bench
from nhb.bench import analysis
from nhb.space import cells


@pytest.fixture(scope="module")
def sub() -> bench.Table:
    reps = cells.cell_tables().representative
    return bench.random_table(3, rows=reps[[1, 30, 200, 600]], n_seeds=2, n_epochs=3,
                              lr_indices=[1, 3], bs_indices=[0, 2, 4])


def test_numbers_on_a_sub_grid(sub):
    a = analysis.analyse(sub)
    test = sub.metrics["test_acc"][..., -1].mean(-1)  # [rows, 2 lrs, 3 bss]
    np.testing.assert_allclose(a["heatmap"], test.mean(0), rtol=1e-6)
    # ratios bs / lr over lrs (0.00625, 0.025) x bss (16, 64, 256): 640 ... 40960, with
    # 16 / 0.00625 == 64 / 0.025 = 2560 and 64 / 0.00625 == 256 / 0.025 = 10240 shared
    np.testing.assert_allclose(a["ratios"], [640, 2560, 10240, 40960])
    np.testing.assert_array_equal(a["ratio_index"], [[1, 2, 3], [0, 1, 2]])
    np.testing.assert_allclose(a["arch_ratio"][:, 1], (test[:, 0, 0] + test[:, 1, 1]) / 2,
                               rtol=1e-6)
    final = sub.metrics["test_acc"][..., -1]
    np.testing.assert_allclose(np.sort(a["seed_spread"]),
                               np.sort((final.max(-1) - final.min(-1)).ravel()), rtol=1e-6)


def test_write_figures_on_a_one_seed_single_batch_size_table(sub, tmp_path):
    one = bench.fake.sub_grid(bench.random_table(4, rows=[0, 7], n_seeds=1, n_epochs=2),
                              [5], [3])
    out = analysis.write_figures(one, tmp_path, table_desc="tiny")
    assert out["lrs"] == [0.1] and out["batch_sizes"] == [128] and out["epochs"] == 2
    assert out["seed_spread_share_above_1"] is None and np.asarray(out["heatmap"]).shape == (1, 1)
    saved = json.loads((tmp_path / "analysis.json").read_text())
    assert saved["heatmap"] == out["heatmap"]
    for name in ("fig3_hparams.png", "fig4_seed_spread.png", "fig5_groups.png"):
        assert (tmp_path / name).stat().st_size > 5_000
    share = analysis.write_figures(sub, tmp_path / "sub")["seed_spread_share_above_1"]
    final = sub.metrics["test_acc"][..., -1]
    assert share == pytest.approx(float(((final.max(-1) - final.min(-1)) > 1.0).mean()))
