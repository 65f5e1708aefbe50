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

# One-shot supernets taking architecture weights as inputs (DHA / ISTA-NAS, issue #13).
from nhb.models.darts import (  # noqa: E402
    DartsNetwork,
    DartsSupernet,
    affine_update_mask,
    darts_param_count,
)
from nhb.models.nhb2_supernet import (  # noqa: E402
    NHB2Supernet,
    one_hot_alphas,
    to_cell_net_params,
)

__all__ += ["DartsNetwork", "DartsSupernet", "NHB2Supernet", "affine_update_mask",
            "darts_param_count", "one_hot_alphas", "to_cell_net_params"]

