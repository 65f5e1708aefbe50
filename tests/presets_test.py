"""Tests for nhb.bench.presets (the presets themselves are checked in build_test.py)."""

import pytest

from nhb.bench import build, presets


def test_apply_overrides():
    p = presets.apply_overrides(build.PRESETS["smoke"], dict(
        epochs=5, lrs="0.1, 0.4", cells="", train_eval=False, max_per_split=0, mode=None))
    assert (p.epochs, p.lrs, p.train_eval) == (5, (0.1, 0.4), False)
    assert p.cells == build.PRESETS["smoke"].cells and p.max_per_split == 128
    assert presets.apply_overrides(p, {}) is p
    with pytest.raises(ValueError, match=r"unknown preset field 'epoch'; valid choices: \["):
        presets.apply_overrides(p, dict(epoch=3))
    with pytest.raises(ValueError, match="learning rate"):
        presets.apply_overrides(p, dict(lrs="0.3"))
