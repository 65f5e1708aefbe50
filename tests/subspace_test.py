"""Tests for nhb.bench.subspace: the search space a (sub-grid) table covers."""

import dataclasses

import jax
import numpy as np
import pytest

from nhb.bench import fake
from nhb.bench.subspace import SearchSpace
from nhb.space import cells, nhb2


def test_full_space_sizes_and_identity():
    full = SearchSpace.full()
    assert full.is_full and full.all_cells and full.full_hps
    assert full.n_configs == 196608 and full.n_classes == 1011 and full.n_distinct == 1011 * 48
    assert SearchSpace.make(np.arange(4096)) == full and hash(SearchSpace.make(
        np.ones(4096, bool))) == hash(full)
    two = SearchSpace.from_table(fake.random_table(0, n_seeds=1, n_epochs=2))
    assert two.is_full and two.n_epochs == 2 and two == dataclasses.replace(full, n_epochs=2)
    assert two != full and full.n_epochs == 12 and "2 epochs" in two.describe()


def test_sub_grid_table_space():
    reps = cells.cell_tables().representative
    t = fake.random_table(1, rows=reps[[0, 5, 500]], n_seeds=1, n_epochs=2, lr_indices=[6, 2],
                          bs_indices=[5])
    sp = SearchSpace.from_table(t)
    members = np.flatnonzero(np.isin(cells.cell_tables().class_id,
                                     cells.cell_tables().class_id[reps[[0, 5, 500]]]))
    np.testing.assert_array_equal(sp.cells, members)
    assert sp.lrs == (2, 6) and sp.bss == (5,) and not sp.is_full and not sp.all_cells
    assert sp.n_classes == 3 and sp.n_distinct == 3 * 2 * 1
    assert sp.n_configs == len(members) * 2
    np.testing.assert_array_equal(sp.lr_slot, [-1, -1, 0, -1, -1, -1, 1, -1])
    np.testing.assert_array_equal(sp.bs_slot, [-1, -1, -1, -1, -1, 0])
    absent = int(np.setdiff1d(np.arange(4096), members)[0])
    cfg = nhb2.make(nhb2.cell_from_index([members[0], members[-1], members[0], members[0],
                                          absent]), [2, 6, 3, 2, 2], [5, 5, 5, 4, 5])
    np.testing.assert_array_equal(jax.jit(sp.contains)(cfg), [True, True, False, False, False])
    assert "3 classes" in sp.describe() and "[0.0125, 0.2]" in sp.describe()


def test_invalid_spaces_and_table_values():
    with pytest.raises(ValueError, match="increasing distinct"):
        SearchSpace(b"\x01" * 4096, (3, 3), (0,))
    with pytest.raises(ValueError, match="no cell"):
        SearchSpace(b"\x00" * 4096, (0,), (0,))
    t = fake.random_table(0, rows=[0], n_seeds=1, n_epochs=1)
    bad = dataclasses.replace(t, lrs=(0.3, *t.lrs[1:]))
    with pytest.raises(ValueError, match=r"learning rate 0\.3 is not a NAS-HPO-Bench-II value"):
        SearchSpace.from_table(bad)
