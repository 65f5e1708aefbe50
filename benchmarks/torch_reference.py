"""PyTorch implementation of the NAS-HPO-Bench-II network and SGD protocol, for timing.

The same network as `nhb.models.CellNet` (docs/protocol.md §3): stem Conv3x3(bias)-BN; three
stages of normal cells (edge ops 0 ReLU-Conv3x3(no bias)-BN, 1 AvgPool3x3 stride 1 pad 1
counting the padding, 2 skip, 3 zero); residual reduction blocks between stages; head
BN-ReLU-GAP-Linear.
Training: SGD Nesterov momentum 0.9, weight decay 5e-4, cosine annealing stepped per epoch,
cross-entropy, random flip + 4-pixel-pad crop on the batch. PyTorch defaults everywhere else
(initialisation, BatchNorm momentum 0.1 / eps 1e-5), as the authors' training code.

Only the cell's present ops are built (a zero edge costs nothing, as in the reference), so the
network is specialised to one cell. Importing this module needs torch; callers check first.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

EDGE_TO_FROM = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
MEAN = np.array([125.3, 123.0, 113.9], np.float32) / 255.0
STD = np.array([63.0, 62.1, 66.7], np.float32) / 255.0


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv3x3 -> BN (NB201's `ReLUConvBN`)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, bias: bool = False) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=bias),
                         nn.BatchNorm2d(c_out))


class Cell(nn.Module):
    """A normal cell: node j = sum over i < j of op_{j<-i}(node i); node 3 is the output."""

    def __init__(self, channels: int, ops: Sequence[int]) -> None:
        super().__init__()
        self.ops = tuple(int(o) for o in ops)
        self.edges = nn.ModuleList()
        for op in self.ops:
            if op == 0:
                self.edges.append(ReLUConvBN(channels, channels))
            elif op == 1:
                self.edges.append(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True))
            else:
                self.edges.append(nn.Identity())  # skip; zero edges are never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluates the DAG."""
        nodes = [x]
        for j in range(1, 4):
            total = None
            for e, (to, frm) in enumerate(EDGE_TO_FROM):
                if to != j or self.ops[e] == 3:
                    continue
                y = self.edges[e](nodes[frm])
                total = y if total is None else total + y
            nodes.append(torch.zeros_like(x) if total is None else total)
        return nodes[3]


class Reduction(nn.Module):
    """Residual reduction: ReLU-Conv/2(bias)-BN -> ReLU-Conv(bias)-BN, + AvgPool2 -> Conv1x1."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, stride=2, bias=True)
        self.conv_b = ReLUConvBN(c_out, c_out, bias=True)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the block."""
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class CellNet(nn.Module):
    """Stem, 3 stages of `cells_per_stage` cells, 2 reductions, head (NCHW input)."""

    def __init__(self, ops: Sequence[int], channels: Sequence[int] = (16, 32, 64),
                 cells_per_stage: int = 5, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 3, 1, 1, bias=True),
                                   nn.BatchNorm2d(channels[0])]
        for s, c in enumerate(channels):
            if s > 0:
                layers.append(Reduction(channels[s - 1], c))
            layers.extend(Cell(c, ops) for _ in range(cells_per_stage))
        layers += [nn.BatchNorm2d(channels[-1]), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                   nn.Flatten(), nn.Linear(channels[-1], num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.net(x)


def augment(x: torch.Tensor, gen: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random horizontal flip + zero-pad random crop of a normalised NCHW batch."""
    b, c, h, w = x.shape
    dev = x.device
    flip = torch.rand(b, generator=gen, device=dev) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    xp = nn.functional.pad(x, (padding,) * 4)
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=dev)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=dev)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return xp[bi, ci, rows, cols]


def time_training(ops: Sequence[int], images: np.ndarray, labels: np.ndarray, *,
                  batch_size: int, steps: int, repeats: int, lr: float = 0.1,
                  channels: Sequence[int] = (16, 32, 64), cells_per_stage: int = 5,
                  epochs: int = 12, device: str = "cpu", seed: int = 0,
                  warmup_steps: int = 3) -> dict:
    """Times `repeats` epochs of `steps` SGD steps of one config (after warm-up steps).

    Each timed epoch covers the SGD loop only: batch gather, flip/crop, forward, backward,
    optimizer step (the scheduler steps between epochs, outside the timer).

    Args:
        ops: the cell's 6 op digits.
        images: uint8 [n, 32, 32, 3] with n >= steps * batch_size.
        labels: int [n].
        batch_size: SGD batch size.
        steps: SGD steps per timed epoch.
        repeats: timed epochs.
        lr: initial learning rate.
        channels: per-stage channels.
        cells_per_stage: normal cells per stage.
        epochs: cosine period.
        device: "cpu" or "cuda".
        seed: torch seed.
        warmup_steps: untimed steps first.

    Returns:
        Dict with `epoch_times_s`, `images_per_s` (best epoch), `images_per_s_median`,
        `threads`, `device`, `torch_version`.
    """
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    model = CellNet(ops, channels, cells_per_stage).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    x_all = torch.from_numpy(((images.astype(np.float32) / 255.0 - MEAN) / STD)
                             .transpose(0, 3, 1, 2).copy()).to(device)
    y_all = torch.from_numpy(np.asarray(labels, np.int64)).to(device)
    loss_fn = nn.CrossEntropyLoss()
    n = steps * batch_size

    def sgd_steps(k: int) -> None:
        perm = torch.randperm(x_all.shape[0], generator=gen, device=device)[:n]
        for i in range(k):
            idx = perm[(i * batch_size) % n:(i * batch_size) % n + batch_size]
            x = augment(x_all[idx], gen)
            loss = loss_fn(model(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    sgd_steps(warmup_steps)
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sgd_steps(steps)
        sync()
        times.append(time.perf_counter() - t0)
        sched.step()
    return dict(epoch_times_s=times, images_per_s=n / min(times),
                images_per_s_median=n / float(np.median(times)),
                threads=torch.get_num_threads(), device=device,
                torch_version=torch.__version__)
