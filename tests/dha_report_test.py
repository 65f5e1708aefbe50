"""nhb.dha.report: the table score of a derived cell (against the table's own arrays) and
the trajectory figure."""

from __future__ import annotations

import numpy as np

from nhb.bench.api import Benchmark
from nhb.bench.fake import random_table
from nhb.dha.report import score_on_table, trajectory_figure
from nhb.space import nhb2


def test_score_on_table_against_the_table_arrays():
    table = random_table(seed=1, lr_indices=[2, 5], bs_indices=[1, 3])
    bench = Benchmark(table)
    code = "0|12|301"
    score = score_on_table(code, bench)
    assert score["present"]
    row = int(bench.row_of_cell[int(nhb2.cell_index(nhb2.cell_from_string(code)))])
    test = np.asarray(table.metrics["test_acc"], np.float64)[..., -1].mean(-1)  # seed mean
    li = [table.lrs.index(nhb2.LRS[i]) for i in (2, 5)]
    bi = [table.batch_sizes.index(nhb2.BATCH_SIZES[i]) for i in (1, 3)]
    expected = {f"lr={nhb2.LRS[a]},bs={nhb2.BATCH_SIZES[b]}": test[row, la, lb]
                for a, la in zip((2, 5), li, strict=True) for b, lb in zip((1, 3), bi, strict=True)}
    assert score["test_acc_12"].keys() == expected.keys()
    for k, v in expected.items():
        np.testing.assert_allclose(score["test_acc_12"][k], v, rtol=1e-5)
    best_rows = test[:, li][:, :, bi].reshape(test.shape[0], -1).max(1)
    np.testing.assert_allclose(score["best_test_acc_12"], best_rows[row], rtol=1e-5)
    np.testing.assert_allclose(score["percentile"],
                               100 * np.mean(best_rows < best_rows[row] - 1e-4), atol=0.2)


def test_absent_cell_and_figure():
    small = random_table(seed=2, rows=[0, 1, 2], lr_indices=[0], bs_indices=[0])
    absent = next(c for c in ("3|33|012", "1|11|111", "0|00|001")
                  if int(Benchmark(small).row_of_cell[int(nhb2.cell_index(
                      nhb2.cell_from_string(c)))]) < 0)
    assert score_on_table(absent, small) == {"cell": absent, "present": False}
    summary = {"history": [{}] * 3, "search_epochs_run": 2, "lr_trajectory": [0.05, 0.06, 0.05],
               "wd_trajectory": [5e-4, 4e-4, 3e-4], "policy_entropy": [5.27, 5.2, 5.1],
               "paper_name": "DHA", "space": "nhb2", "test_acc": 30.0}
    fig = trajectory_figure(summary)
    axes = fig.get_axes()
    assert len(axes) == 3
    np.testing.assert_allclose(axes[0].get_lines()[0].get_ydata(), [0.05, 0.06, 0.05])
