"""Tests for nhb.space.cells: compression, the 1011 classes, groups."""

import numpy as np
import pytest

from nhb._vendor import load_npz
from nhb.space import cells

OFFICIAL = load_npz("nashpobench2/nashpobench2_cells_split.npz")


def _compress(code: str) -> cells.CompressedCell:
    return cells.compress(tuple(int(c) for c in code.replace("|", "")))


def test_partition_matches_official_release():
    t = cells.cell_tables()
    assert len(np.unique(t.class_id)) == 1011
    np.testing.assert_array_equal(t.class_id, OFFICIAL["cell_to_unique"])
    np.testing.assert_array_equal(t.class_size, OFFICIAL["unique_class_size"])
    np.testing.assert_array_equal(t.disconnected, OFFICIAL["cell_is_disconnected"])
    assert t.disconnected.sum() == 169
    assert t.class_size.max() == 248 and (t.class_size == 1).sum() == 715
    # Each official representative is in its own class and maps to itself.
    np.testing.assert_array_equal(t.class_id[t.representative], np.arange(1011))
    assert t.unique_codes == tuple(OFFICIAL["unique_cellcodes"])
    assert t.codes == tuple(OFFICIAL["cellcodes_4096"])
    np.testing.assert_array_equal(t.digits, OFFICIAL["cell_digits_4096"])


def test_all_disconnected_cells_share_one_class_with_representative_0_00_333():
    t = cells.cell_tables()
    ids = np.unique(t.class_id[t.disconnected])
    assert ids.size == 1 and t.unique_codes[ids[0]] == "0|00|333"


@pytest.mark.parametrize(
    "a,b,same",
    [
        ("0|00|000", "0|00|000", True),
        ("3|33|023", "0|33|323", True),  # one conv on the path, placed on D or on A (+skip E)
        ("0|30|332", "3|33|033", False),  # conv->conv chain vs a single conv
        ("0|30|033", "3|33|033", True),  # convs A, C dangle (F is zero): pruned
        ("1|33|333", "3|33|333", True),  # dangling pool is pruned: both disconnected
        ("3|33|200", "2|33|320", True),  # one input->output skip path, direct or via node 1
        ("2|33|220", "3|33|200", False),  # two parallel skip paths vs one
    ],
)
def test_pairs(a, b, same):
    ga, gb = _compress(a), _compress(b)
    assert (cells.graph_hash(ga) == cells.graph_hash(gb)) == same
    t = cells.cell_tables()
    ia, ib = t.codes.index(a), t.codes.index(b)
    assert (t.class_id[ia] == t.class_id[ib]) == same


def test_hand_checked_compression():
    # A conv(1<-0), B skip(2<-0), C pool(2<-1), D zero, E zero, F skip(3<-2).
    g = _compress("0|21|332")
    assert g.connected
    assert g.labels == (0, 1, 2, 3)  # input, output, conv (A), pool (C)
    expect = np.zeros((4, 4), int)
    expect[0, 1] = 1  # via B then F
    expect[0, 2] = 1  # in -> conv A
    expect[2, 3] = 1  # conv A -> pool C
    expect[3, 1] = 1  # pool C -> F(skip) -> out
    np.testing.assert_array_equal(g.adjacency, expect)
    # All-skip: four parallel input->output paths (D, A-E, B-F, A-C-F).
    g = _compress("2|22|222")
    assert g.labels == (0, 1) and g.adjacency[0, 1] == 4
    # Multiplicity matters: 2 parallel skip paths around a conv differ from one.
    assert cells.graph_hash(_compress("2|32|032")) != cells.graph_hash(_compress("3|33|032"))


def test_groups():
    assert cells.architecture_group(_compress("0|00|200")) == 1  # direct skip edge
    assert cells.architecture_group(_compress("0|00|000")) == 2  # convs, no pooling path
    assert cells.architecture_group(_compress("1|11|111")) == 3  # only pooling paths
    # One pooling path plus a conv path: group 2; two pooling paths plus conv: group 3.
    assert cells.num_pooling_paths(_compress("3|33|103")) == 1
    assert cells.architecture_group(_compress("0|33|103")) == 2
    assert cells.num_pooling_paths(_compress("1|03|112")) == 2
    assert cells.architecture_group(_compress("1|03|112")) == 3
    assert cells.architecture_group(_compress("3|33|333")) == 3  # disconnected
    t = cells.cell_tables()
    assert set(np.unique(t.group)) == {1, 2, 3}
    # Group is a class property: every member of a class shares its representative's group.
    np.testing.assert_array_equal(t.group, t.group[t.representative][t.class_id])
