"""nhb.nago.memory.torch_saved_bytes: PyTorch's saved-for-backward bytes in closed form.

No torch here (CI has none): the expected numbers are hand counts, or bytes measured with
`torch.autograd.graph.saved_tensors_hooks` on `benchmarks/hnag_torch.build_torch` + cross-entropy
(torch 2.13, CPU, unique tensors by storage data_ptr + shape, parameters included; re-measure
with `benchmarks/hnag_memory.py`).
"""

import pytest

from nhb.nago import graphs, memory
from nhb.nago.graphs import DAG, Hierarchy, chain
from nhb.space import generators

ONE = DAG(1, ((),), (0,), (0,))
TRI = DAG(3, ((), (0,), (0, 1)), (0,), (2,))  # op 2 merges ops 0 and 1
FORK = DAG(3, ((), (0,), (0,)), (0,), (1, 2))  # two output nodes


def _minimal(cell0: DAG = ONE) -> Hierarchy:
    """Three one-op cells in a chain (stages 0, 1, 2); cell 0's bottom graph is `cell0`."""
    return Hierarchy("hnag", chain(3), (0, 1, 2), (ONE,) * 3, ((cell0,), (ONE,), (ONE,)), ())


def _branchy() -> Hierarchy:
    """Two input cells (stages 0 and 1), a cell merging both (1x1 conv + sigmoid), two output
    cells of different widths (pooled, 1x1 output conv), multi-node middle/bottom graphs."""
    top = DAG(4, ((), (), (0, 1), (1,)), (0, 1), (2, 3))
    return Hierarchy("hnag", top, (0, 1, 1, 2), (ONE, chain(2), FORK, ONE),
                     ((TRI,), (ONE, TRI), (FORK, ONE, TRI), (chain(2),)), ())


def test_hand_count_of_the_minimal_network():
    # batch 2, m = 2, 8 px: cells at 8/4/2 px with 2/4/8 channels; 4-byte floats
    act = lambda c, s: 2 * c * s * s * 4
    bn = lambda c: 5 * c * 4  # weight, running mean/var, batch mean, inverse std
    stem = (act(3, 8) + 2 * 3 * 9 * 4 + act(2, 8) + bn(2)  # image, conv0 w, bn0 input
            + act(2, 8) + 2 * 2 * 9 * 4 + act(2, 8) + bn(2))  # relu out, conv1 w, bn1 input
    cell0 = act(2, 8) + 2 * 2 * 9 * 4 + act(2, 8) + bn(2)  # relu out, conv w, bn input
    cell1 = act(2, 8) + act(2, 4) + 4 * 2 * 9 * 4 + act(4, 4) + bn(4)  # + pool input
    cell2 = act(4, 4) + act(4, 2) + 8 * 4 * 9 * 4 + act(8, 2) + bn(8)
    head = (act(8, 2) + 1280 * 8 * 4 + act(1280, 2) + bn(1280) + act(1280, 2)  # relu-conv-bn-relu
            + 2 * 1280 * 4 + 2 * 1280 * 4 + 1280 * 10 * 4  # dropout mask, Linear input, weight
            + 2 * 10 * 4 + 2 * 8 + 4)  # cross-entropy: log-softmax, int64 targets, scalar
    total = stem + cell0 + cell1 + cell2 + head
    assert total == 232164  # torch
    assert memory.torch_saved_bytes(_minimal(), 2, 10, 8, 2) == total


def test_merge_saves_each_input_once_and_a_sigmoid_scalar():
    # two more ops (relu out, conv w, bn input + stats each) and op 2's merge of ops 0, 1
    ops = 2 * (1024 + 144 + 1024 + 40)
    merge = 1024 + 1024 + 2 * 4
    assert memory.torch_saved_bytes(_minimal(TRI), 2, 10, 8, 2) == 232164 + ops + merge
    assert 232164 + ops + merge == 238684  # torch


@pytest.mark.parametrize("image_size, batch, width, expected", [
    (8, 2, 2, 262608), (32, 8, 3, 8364312),
    (48, 2, 4, 617844),  # the stride-4 dw-separable stem
    (4, 2, 2, 178192),  # cells at 4/2/1 px: pooling to 1x1 is a mean (saves nothing)
])
def test_branchy_hierarchy_matches_torch(image_size, batch, width, expected):
    assert memory.torch_saved_bytes(_branchy(), width, 10, image_size, batch) == expected


@pytest.mark.parametrize("family, vector, width, classes, image_size, batch, expected", [
    ("hnag", (3, 2, .5, 1, .5, 3, 2, .5), 2, 10, 32, 8, 6766736),
    ("hnag", (3, 2, .5, 1, .5, 3, 2, .5), 2, 10, 64, 3, 962632),
    ("hnag", (5, 4, .5, 2, .6, 4, 2, .3), 8, 10, 32, 8, 25668512),
    ("hnag", (5, 4, .5, 2, .6, 4, 2, .3), 3, 10, 4, 2, 278232),
    ("hnag", (7, 4, .7, 3, .5, 4, 4, .6), 4, 100, 16, 4, 4156492),
    ("rnag", (5, 2, .5, 4, 2, .5, 3, 2, .5), 4, 10, 32, 8, 8845900),
])
def test_sampled_hierarchies_match_torch(family, vector, width, classes, image_size, batch,
                                         expected):
    h = graphs.sample(generators.make(family), vector)
    assert memory.torch_saved_bytes(h, width, classes, image_size, batch) == expected


# Table 3's CIFAR optima (thirds, 4M limit, 32 px): m, torch bytes at batch 8, the
# reference's MiB per image, the paper's MPS (MB)
OPTIMA = {("bohb", "cifar10"): (45, 139869168, 16.7, 17),
          ("bohb", "cifar100"): (49, 122173664, 14.6, 14),
          ("mobo", "cifar10"): (61, 93114900, 11.1, 13),
          ("mobo", "cifar100"): (62, 95639112, 11.4, 13)}


@pytest.mark.parametrize("method, data", list(OPTIMA))
def test_table3_optima(method, data):
    width, torch_bytes, reference_mib, paper_mb = OPTIMA[method, data]
    h = graphs.sample(generators.make("hnag"), generators.TABLE3[method][data])
    assert graphs.channel_multiplier(h, 4e6) == width
    classes = 100 if data == "cifar100" else 10
    assert memory.torch_saved_bytes(h, width, classes) == torch_bytes
    mib = memory.torch_memory_per_image_mb(h, width, classes)
    assert mib == torch_bytes / 8 / 2 ** 20
    assert mib == pytest.approx(reference_mib, abs=0.1)
    assert mib == pytest.approx(paper_mb, abs=2.0)


def test_affine_in_batch_size():
    h = _branchy()
    b1, b2, b5 = (memory.torch_saved_bytes(h, 3, 10, 16, b) for b in (1, 2, 5))
    assert b5 - b2 == 3 * (b2 - b1) > 0
    per_image = memory.torch_memory_per_image_mb(h, 3, 10, 16, batch_size=4)
    assert per_image == memory.torch_saved_bytes(h, 3, 10, 16, 4) / 4 / 2 ** 20


def test_channel_ratios_and_head_features():
    h = _minimal()
    base = memory.torch_saved_bytes(h, 2, 10, 8, 2)
    # head with 64 features instead of 1280: conv w, bn input + stats, relu out, dropout
    # mask, Linear input and weight shrink
    small = memory.torch_saved_bytes(h, 2, 10, 8, 2, head_features=64)
    f = lambda n: n * 8 * 4 + 2 * n * 16 + n * 20 + 2 * n * 16 + 2 * n * 8 + n * 40
    assert base - small == f(1280) - f(64)
    assert memory.torch_saved_bytes(h, 2, 10, 8, 2, channel_ratios=(1, 3, 5)) > base
