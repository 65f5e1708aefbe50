"""nhb.models: Linen modules (the NAS-HPO-Bench-II cell network and its layers, the GIN).

The cell encoding (op ids, edge order, code parsing) lives in `nhb.space.cells`.
"""

from nhb.models.cell_net import (
    Cell,
    CellNet,
    check_ops,
    conv_edges_of,
    init_cell_net,
    make_cell_net,
    param_count,
    reference_param_count,
)
from nhb.models.layers import (
    ReLUConvBN,
    ResNetReduction,
    TorchBatchNorm,
    TorchConv,
    TorchDense,
    avg_pool3x3,
    fast_torch_init,
    torch_bias_init,
    torch_kernel_init,
)

__all__ = [
    "Cell",
    "CellNet",
    "ReLUConvBN",
    "ResNetReduction",
    "TorchBatchNorm",
    "TorchConv",
    "TorchDense",
    "avg_pool3x3",
    "check_ops",
    "conv_edges_of",
    "fast_torch_init",
    "init_cell_net",
    "make_cell_net",
    "param_count",
    "reference_param_count",
    "torch_bias_init",
    "torch_kernel_init",
]

# GIN on padded jraph batches (issue #6).
from nhb.models.gin import (
    GIN,
    GINLayer,
    GINRegressor,
    compact_graphs,
    take_graphs,
)

__all__ += ["GIN", "GINLayer", "GINRegressor", "compact_graphs", "take_graphs"]
