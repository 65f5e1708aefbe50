"""PyTorch re-statement of the authors' NAGO network, built from an nhb `Hierarchy`.

A reference for parity and timing of `nhb.models.hnag` (`benchmarks/hnag_throughput.py`). It
follows the module structure of the authors' `layer.py` / `ops.py` (rubinxin/vega_NAGO;
`reference/nago.md` §2), for `conv_type="normal"`, SUM merges and conv3x3 ops only (the
released configuration):

* `MasterNetwork` (top graph): stem, one `CellGraph` per top node, output merge, head.
* `CellGraph` (a top node): every input is `adaptive_avg_pool2d`-ed to the cell's resolution
  `int(image_size * s / 2 ** (stage + 1))` (s = 2 below 40 px, else 0.5), merged, then its
  middle graph runs; output = mean of the middle graph's output nodes.
* `OpGraph` (a middle node): merges its inputs, runs its bottom graph; output = mean of the
  bottom graph's output nodes (a one-node graph returns its node).
* `OpNode` (a bottom node): merges its inputs, then ReLU -> Conv3x3(bias) -> BN.
* Merge (only for > 1 inputs): per input `sigmoid(w) * x` (w init 1, `BoundedScalarMultiply`)
  if its channel ratio equals the node's in-ratio (the highest-index input's ratio), else a
  1x1 conv with bias (no weight); then a plain sum. A single input is used as is.
* Top-level output: the output cells' features, pooled to the smallest resolution, 1x1
  conv (bias) to the last output cell's channels where different, summed, divided by their
  count. **The authors pick the output cells by position in their results dict** (input
  nodes are inserted first), not by node id (layer.py:137): a bug that averages the wrong
  cells whenever a non-zero input node precedes an output node. Here they are picked BY
  NODE ID (`output_by="id"`, nhb's behaviour); `output_by="position"` restates the bug.
* Stem below 40 px: Conv3x3(bias)-BN-ReLU-Conv3x3(bias)-BN, stride 1; from 40 px:
  dw-separable conv s2 (3 -> C0 // 2, both convs with bias)-BN-[ReLU-dw-sep conv s2-BN].
* Head: ReLU-Conv1x1(1280, bias)-BN-ReLU-GAP-Dropout(0.2)-Linear.
* Init: every Conv2d weight `kaiming_normal_(fan_out, relu)`; conv biases and the Linear
  keep PyTorch's defaults; BN weight 1, bias 0, PyTorch BN defaults (momentum 0.1, eps 1e-5).

`forward` returns the logits only (the authors return `(logits, aux_logits)`, aux None here).
Importing this module needs torch (and `benchmarks/` on `sys.path` for
`torch_reference`); callers check first.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.functional import adaptive_avg_pool2d
from torch_reference import MEAN, STD, augment

from nhb.nago.graphs import CHANNEL_RATIOS, DAG, Hierarchy

HEAD_FEATURES = 1280
HEAD_DROPOUT = 0.2
OUTPUT_BY = ("id", "position")


class BoundedScalarMultiply(nn.Module):
    """`sigmoid(w) * x` with a scalar w initialised to 1 (ops.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scales `x`."""
        return torch.sigmoid(self.mean) * x


class PassThrough(nn.Module):
    """Identity (ops.py)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns `x`."""
        return x


class DepthwiseSeparableConv(nn.Module):
    """Depthwise kxk conv (bias, groups = nin) then pointwise 1x1 conv (bias) (ops.py)."""

    def __init__(self, nin: int, nout: int, stride: int, kernel_size: int = 3) -> None:
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.depthwise = nn.Conv2d(nin, nin, kernel_size, stride, pad, groups=nin)
        self.pointwise = nn.Conv2d(nin, nout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies both convs."""
        return self.pointwise(self.depthwise(x))


class TripletUnit(nn.Module):
    """ReLU -> dw-separable conv -> BN (ops.py `Triplet_unit`, no dropout)."""

    def __init__(self, nin: int, nout: int, stride: int = 1) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv = DepthwiseSeparableConv(nin, nout, stride)
        self.bn = nn.BatchNorm2d(nout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the unit."""
        return self.bn(self.conv(self.relu(x)))


def _mergers(incoming: Sequence[int], in_ratio: int, m: int) -> nn.ModuleList | None:
    """The authors' `prepare_merger_edges` for SUM: None for <= 1 input."""
    if len(incoming) <= 1:
        return None
    return nn.ModuleList(BoundedScalarMultiply() if r == in_ratio
                         else nn.Conv2d(r * m, in_ratio * m, 1) for r in incoming)


def _merge(merger: nn.ModuleList | None, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The authors' `merge_inputs` for SUM (a plain Python `sum` over the merged inputs)."""
    if len(inputs) == 1:
        return inputs[0]
    assert merger is not None
    return sum(op(x) for op, x in zip(merger, inputs, strict=True))


def _run_graph(dag: DAG, ops: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """The authors' `_process_graph` + `CellGraph._parse_outputs` (outputs by id)."""
    results: dict[int, torch.Tensor] = {}
    for v in dag.inputs:  # all input nodes receive the same input
        results[v] = ops[v](x)
    for v in range(dag.n):
        if v not in dag.inputs:
            results[v] = ops[v](*[results[u] for u in dag.preds[v]])
    if dag.n == 1:
        return results[0]
    out = results[dag.outputs[0]]
    for v in dag.outputs[1:]:
        out = out + results[v]
    return out / len(dag.outputs)


class OpNode(nn.Module):
    """A bottom-level node: merge inputs, then ReLU -> Conv3x3(bias) -> BN."""

    def __init__(self, incoming: Sequence[int], in_ratio: int, out_ratio: int, m: int) -> None:
        super().__init__()
        self.merger = _mergers(incoming, in_ratio, m)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_ratio * m, out_ratio * m, 3, 1, 1)
        self.bn = nn.BatchNorm2d(out_ratio * m)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Applies the node."""
        return self.bn(self.conv(self.relu(_merge(self.merger, inputs))))


class OpGraph(nn.Module):
    """A middle-level node: merge inputs, run its bottom graph."""

    def __init__(self, bottom: DAG, incoming: Sequence[int], in_ratio: int, out_ratio: int,
                 m: int) -> None:
        super().__init__()
        self.dag = bottom
        self.merger = _mergers(incoming, in_ratio, m)
        # bottom input ops see the middle node's in-ratio, the others the cell's ratio
        self.node_ops = nn.ModuleList(
            OpNode([out_ratio] * len(bottom.preds[v]), out_ratio if bottom.preds[v]
                   else in_ratio, out_ratio, m) for v in range(bottom.n))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Applies the middle node."""
        return _run_graph(self.dag, self.node_ops, _merge(self.merger, inputs))


class CellGraph(nn.Module):
    """A top-level cell: pool every input to the cell's resolution, merge, run the middle
    graph."""

    def __init__(self, mid: DAG, bottoms: Sequence[DAG], incoming: Sequence[int],
                 in_ratio: int, out_ratio: int, stage: int, m: int, image_size: float) -> None:
        super().__init__()
        self.dag = mid
        self.out_ratio = out_ratio
        self.image_size = int(image_size / 2 ** (stage + 1))
        self.merger = _mergers(incoming, in_ratio, m)
        self.node_ops = nn.ModuleList(
            OpGraph(bottoms[j], [out_ratio] * len(mid.preds[j]),
                    out_ratio if mid.preds[j] else in_ratio, out_ratio, m)
            for j in range(mid.n))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Applies the cell."""
        size = self.image_size
        xs = [adaptive_avg_pool2d(x, (size, size)) if x.shape[2] != size else x
              for x in inputs]
        return _run_graph(self.dag, self.node_ops, _merge(self.merger, xs))


class MasterNetwork(nn.Module):
    """The whole network (NCHW input, logits output)."""

    def __init__(self, h: Hierarchy, m: int, num_classes: int = 10, image_size: int = 32,
                 channel_ratios: Sequence[int] = CHANNEL_RATIOS, output_by: str = "id") -> None:
        super().__init__()
        if output_by not in OUTPUT_BY:
            raise ValueError(f"unknown output_by {output_by!r}; valid: {OUTPUT_BY}")
        self.h, self.output_by = h, output_by
        top, ratios = h.top, [channel_ratios[s] for s in h.stages]
        c0 = int(channel_ratios[0] * m)
        self.large_images = image_size >= 40
        if not self.large_images:
            self.first_conv = nn.Sequential(
                nn.Conv2d(3, c0, 3, padding=1), nn.BatchNorm2d(c0), nn.ReLU(),
                nn.Conv2d(c0, c0, 3, padding=1), nn.BatchNorm2d(c0))
            stage_mult = 2.0
        else:
            self.first_conv = nn.Sequential(
                DepthwiseSeparableConv(3, c0 // 2, 2), nn.BatchNorm2d(c0 // 2),
                TripletUnit(c0 // 2, c0, stride=2))
            stage_mult = 0.5
        cells = []
        for c in range(top.n):
            preds = top.preds[c]
            in_ratio = ratios[preds[-1]] if preds else channel_ratios[0]
            cells.append(CellGraph(h.mids[c], h.bottoms[c], [ratios[u] for u in preds],
                                   in_ratio, ratios[c], h.stages[c], m,
                                   image_size * stage_mult))
        self.node_ops = nn.ModuleList(cells)
        c_last = ratios[top.outputs[-1]] * m
        self.out_mergers = nn.ModuleList(
            PassThrough() if ratios[o] * m == c_last or len(top.outputs) == 1
            else nn.Conv2d(ratios[o] * m, c_last, 1) for o in top.outputs)
        self.conv_out = nn.Sequential(nn.ReLU(), nn.Conv2d(c_last, HEAD_FEATURES, 1),
                                      nn.BatchNorm2d(HEAD_FEATURES), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(HEAD_DROPOUT)
        self.fc = nn.Linear(HEAD_FEATURES, num_classes)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(mod, nn.BatchNorm2d):
                nn.init.constant_(mod.weight, 1)
                nn.init.constant_(mod.bias, 0)

    def _outputs(self, results: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        if self.output_by == "id":
            return [results[o] for o in self.h.top.outputs]
        # the authors' layer.py:137: dict POSITION (input nodes were inserted first)
        return [results[k] for i, k in enumerate(results) if i in self.h.top.outputs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes] of an NCHW batch."""
        x = self.first_conv(x)
        top = self.h.top
        results: dict[int, torch.Tensor] = {}
        for v in top.inputs:
            results[v] = self.node_ops[v](x)
        for v in range(top.n):
            if v not in top.inputs:
                results[v] = self.node_ops[v](*[results[u] for u in top.preds[v]])
        outs = self._outputs(results)
        size = min(o.shape[-1] for o in outs)
        outs = [adaptive_avg_pool2d(o, (size, size)) if o.shape[2] != size else o
                for o in outs]
        y = self.out_mergers[0](outs[0])
        for op, o in zip(self.out_mergers[1:], outs[1:], strict=True):
            y = y + op(o)
        y = self.conv_out(y / len(outs))
        y = self.dropout(self.avgpool(y))
        return self.fc(torch.flatten(y, 1))


def build_torch(h: Hierarchy, width: int, num_classes: int = 10, image_size: int = 32,
                output_by: str = "id", seed: int | None = None) -> MasterNetwork:
    """The authors' network for `h` at base width `width` (= `channel_multiplier`'s m).

    Args:
        h: the sampled hierarchy.
        width: m; a stage-s node has `CHANNEL_RATIOS[s] * m` channels.
        num_classes: classifier outputs.
        image_size: input side (< 40: CIFAR stem, else the stride-4 stem).
        output_by: "id" (nhb, fixed) or "position" (the authors' bug).
        seed: `torch.manual_seed` before construction (None: leave the RNG alone).

    Returns:
        The `MasterNetwork` (train mode, float32, CPU).
    """
    if seed is not None:
        torch.manual_seed(seed)
    return MasterNetwork(h, int(width), num_classes, image_size, output_by=output_by)


def param_count(model: nn.Module) -> int:
    """Number of trainable parameters (BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------
# Weight transfer from nhb's Linen variables.

def conv_kernel_to_torch(k: Any) -> torch.Tensor:
    """HWIO (Flax) -> OIHW (PyTorch)."""
    return torch.from_numpy(np.array(np.asarray(k, np.float32).transpose(3, 2, 0, 1),
                                     order="C"))


def dense_kernel_to_torch(k: Any) -> torch.Tensor:
    """[in, out] (Flax) -> [out, in] (PyTorch)."""
    return torch.from_numpy(np.array(np.asarray(k, np.float32).T, order="C"))


def _flat(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, (*prefix, str(k))))
        else:
            out[(*prefix, str(k))] = v
    return out


def torch_targets(model: MasterNetwork) -> dict[str, Callable[[Any], None]]:
    """Setters for every torch parameter / BN buffer, keyed by the module path (dots)."""
    targets: dict[str, Callable[[Any], None]] = {}

    def setter(t: torch.Tensor, convert: Callable[[Any], torch.Tensor]
               ) -> Callable[[Any], None]:
        def put(v: Any) -> None:
            new = convert(v)
            if tuple(new.shape) != tuple(t.shape):
                raise ValueError(f"shape {tuple(new.shape)} != torch {tuple(t.shape)}")
            with torch.no_grad():
                t.copy_(new)
        return put

    def plain(v: Any) -> torch.Tensor:
        return torch.from_numpy(np.array(v, np.float32).reshape(-1))

    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            targets[f"{name}.weight"] = setter(mod.weight, conv_kernel_to_torch)
            if mod.bias is not None:
                targets[f"{name}.bias"] = setter(mod.bias, plain)
        elif isinstance(mod, nn.Linear):
            targets[f"{name}.weight"] = setter(mod.weight, dense_kernel_to_torch)
            targets[f"{name}.bias"] = setter(mod.bias, plain)
        elif isinstance(mod, nn.BatchNorm2d):
            for attr in ("weight", "bias", "running_mean", "running_var"):
                targets[f"{name}.{attr}"] = setter(getattr(mod, attr), plain)
        elif isinstance(mod, BoundedScalarMultiply):
            targets[f"{name}.mean"] = setter(mod.mean, plain)
    return targets


_LEAF = {"params": {"kernel": "weight", "bias": "bias", "scale": "weight"},
         "batch_stats": {"mean": "running_mean", "var": "running_var"}}
_STEM = {False: {"stem_conv0": "first_conv.0", "stem_bn0": "first_conv.1",
                 "stem_conv1": "first_conv.3", "stem_bn1": "first_conv.4"},
         True: {"stem_conv0": "first_conv.0", "stem_bn0": "first_conv.1",
                "stem_conv1": "first_conv.2.conv", "stem_bn1": "first_conv.2.bn"}}
_FIXED = {"head_conv": "conv_out.1", "head_bn": "conv_out.2", "fc": "fc", "conv": "conv",
          "bn": "bn", "depthwise": "depthwise", "pointwise": "pointwise"}
_INDEXED = ((r"cell(\d+)", "node_ops.{}"), (r"mid(\d+)", "node_ops.{}"),
            (r"op(\d+)", "node_ops.{}"), (r"merge_conv(\d+)", "merger.{}"),
            (r"out_conv(\d+)", "out_mergers.{}"))


def torch_name(path: Sequence[str], large_images: bool = False) -> str:
    """The torch parameter / buffer name of a Linen variable path.

    Args:
        path: e.g. ("params", "cell3", "mid0", "op2", "conv", "kernel").
        large_images: the stride-4 stem (image_size >= 40).

    Returns:
        e.g. "node_ops.3.node_ops.0.node_ops.2.conv.weight".

    Raises:
        KeyError: a path this re-statement has no counterpart for.
    """
    collection, *mods, leaf = path
    parts = []
    for k, mod in enumerate(mods):
        if k == 0 and mod in _STEM[large_images]:
            parts.append(_STEM[large_images][mod])
            continue
        if mod in _FIXED:
            parts.append(_FIXED[mod])
            continue
        for pattern, fmt in _INDEXED:
            hit = re.fullmatch(pattern, mod)
            if hit:
                parts.append(fmt.format(hit.group(1)))
                break
        else:
            raise KeyError(f"no torch counterpart for module {mod!r} in {tuple(path)}")
    hit = re.fullmatch(r"merge_w(\d+)", leaf)
    if collection == "params" and hit:
        return ".".join([*parts, f"merger.{hit.group(1)}", "mean"])
    return ".".join([*parts, _LEAF[collection][leaf]])


def copy_from_linen(model: MasterNetwork, variables: Mapping[str, Any]) -> list[str]:
    """Copies nhb `HNAGNet` variables ({"params", "batch_stats"}) into `model`, in place.

    Conv kernels go HWIO -> OIHW, the Linear's [in, out] -> [out, in], scalar merge
    weights () -> (1,), BN scale/bias/mean/var -> weight/bias/running_mean/running_var.

    Args:
        model: the torch network (built for the same hierarchy, width, classes, size).
        variables: Linen variables of `HNAGNet`.

    Returns:
        The torch names that were filled (all of them).

    Raises:
        ValueError: a shape mismatch, a Linen variable without a torch counterpart, or a
            torch parameter / buffer left unfilled.
    """
    targets = torch_targets(model)
    done = []
    for path, value in _flat({k: variables[k] for k in ("params", "batch_stats")
                              if k in variables}).items():
        try:
            name = torch_name(path, model.large_images)
        except KeyError as e:
            raise ValueError(str(e)) from None
        if name not in targets:
            raise ValueError(f"{'/'.join(path)} -> {name}: no such torch parameter")
        try:
            targets[name](value)
        except ValueError as e:
            raise ValueError(f"{'/'.join(path)} -> {name}: {e}") from None
        done.append(name)
    missing = sorted(set(targets) - set(done))
    if missing or len(done) != len(set(done)):
        raise ValueError(f"torch entries not filled exactly once: missing {missing[:8]}")
    return done


def time_training(model: nn.Module, images: np.ndarray, labels: np.ndarray, *,
                  batch_size: int, steps: int, repeats: int, lr: float = 0.1,
                  weight_decay: float = 1e-4, epochs: int = 12, seed: int = 0,
                  warmup_steps: int = 3) -> dict:
    """Times `repeats` epochs of `steps` SGD steps (after untimed warm-up steps), on CPU.

    nhb's NAGO protocol (`nhb.nago.config`, `nhb.train.engine`): SGD Nesterov momentum 0.9,
    coupled weight decay, cosine annealing stepped per epoch, cross-entropy, random flip +
    4-pixel-pad crop of the normalised batch (`torch_reference.augment`), train mode (batch
    statistics, head dropout). Each timed epoch covers batch gather, flip/crop, forward,
    backward and the optimizer step.

    Args:
        model: the network (trained in place).
        images: uint8 [n, H, W, 3] with n >= steps * batch_size.
        labels: int [n].
        batch_size: SGD batch size.
        steps: SGD steps per timed epoch.
        repeats: timed epochs.
        lr: initial learning rate.
        weight_decay: coupled L2 decay.
        epochs: cosine period.
        seed: torch seed of the batch order and augmentation.
        warmup_steps: untimed steps first.

    Returns:
        Dict with `epoch_times_s`, `images_per_s` (best epoch), `images_per_s_median`,
        `final_loss`, `threads`, `torch_version`.
    """
    gen = torch.Generator().manual_seed(seed)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    x_all = torch.from_numpy(((images.astype(np.float32) / 255.0 - MEAN) / STD)
                             .transpose(0, 3, 1, 2).copy())
    y_all = torch.from_numpy(np.asarray(labels, np.int64))
    loss_fn = nn.CrossEntropyLoss()
    n = steps * batch_size
    last = [float("nan")]

    def sgd_steps(k: int) -> None:
        perm = torch.randperm(x_all.shape[0], generator=gen)[:n]
        for i in range(k):
            idx = perm[(i * batch_size) % n:(i * batch_size) % n + batch_size]
            loss = loss_fn(model(augment(x_all[idx], gen)), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        last[0] = float(loss.detach())

    sgd_steps(warmup_steps)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sgd_steps(steps)
        times.append(time.perf_counter() - t0)
        sched.step()
    return dict(epoch_times_s=times, images_per_s=n / min(times),
                images_per_s_median=n / float(np.median(times)), final_loss=last[0],
                threads=torch.get_num_threads(), torch_version=torch.__version__)
