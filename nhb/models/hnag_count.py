"""Closed-form parameter count of NAGO's reference PyTorch network (`reference/nago.md` §2).

Written from the reference (the authors' vega_NAGO `layer.py` / `ops.py`), not from the Linen
module `nhb.models.hnag.HNAGNet`, so the two can be checked against each other.
"""

from __future__ import annotations

from collections.abc import Sequence

from nhb.nago.graphs import CHANNEL_RATIOS, Hierarchy

HEAD_FEATURES = 1280  # the head's 1x1 conv (layer.py:97-107)
LARGE_IMAGE = 40  # images of at least this size get the stride-4 stem (layer.py:63-80)


def param_count(h: Hierarchy, width: int, num_classes: int = 10, image_size: int = 32,
                channel_ratios: Sequence[int] = CHANNEL_RATIOS,
                head_features: int = HEAD_FEATURES) -> int:
    """Parameters of the authors' PyTorch model (reference §2), in closed form.

    Counts conv weights and biases, BN weights and biases, merge sigmoid weights, merge and
    output 1x1 convs, the stem, the head conv/BN and the Linear layer (not BN running
    statistics).

    Args:
        h: the hierarchy.
        width: the channel multiplier m.
        num_classes: classifier outputs.
        image_size: input side (decides the stem).
        channel_ratios: per-stage channel ratios.
        head_features: channels of the head's 1x1 conv.

    Returns:
        The number of trainable parameters.
    """
    ch = lambda ratio: int(ratio * width)
    conv = lambda c_in, c_out, k, groups=1: c_out * (c_in // groups) * k * k + c_out
    bn = lambda c: 2 * c
    c0 = ch(channel_ratios[0])
    if image_size < LARGE_IMAGE:
        total = conv(3, c0, 3) + bn(c0) + conv(c0, c0, 3) + bn(c0)
    else:
        half = c0 // 2
        total = (conv(3, 3, 3, 3) + conv(3, half, 1) + bn(half)
                 + conv(half, half, 3, half) + conv(half, c0, 1) + bn(c0))
    ratio = [channel_ratios[s] for s in h.stages]
    for c in range(h.top.n):
        preds, r = h.top.preds[c], ratio[c]
        r_in = ratio[preds[-1]] if preds else channel_ratios[0]
        if len(preds) > 1:  # BoundedScalarMultiply (1 parameter) or Conv2d 1x1 with bias
            total += sum(1 if ratio[p] == r_in else conv(ch(ratio[p]), ch(r_in), 1)
                         for p in preds)
        mid = h.mids[c]
        for j in range(mid.n):
            mid_in = r if mid.preds[j] else r_in
            total += len(mid.preds[j]) if len(mid.preds[j]) > 1 else 0
            bot = h.bottoms[c][j]
            for o in range(bot.n):
                op_in = r if bot.preds[o] else mid_in
                total += len(bot.preds[o]) if len(bot.preds[o]) > 1 else 0
                total += conv(ch(op_in), ch(r), 3) + bn(ch(r))
    outs = h.top.outputs
    c_last = ch(ratio[outs[-1]])
    if len(outs) > 1:
        total += sum(conv(ch(ratio[o]), c_last, 1) for o in outs if ch(ratio[o]) != c_last)
    return (total + conv(c_last, head_features, 1) + bn(head_features)
            + head_features * num_classes + num_classes)
