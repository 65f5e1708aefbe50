"""nhb's NAGO network vs the PyTorch re-statement of the authors' (benchmarks/hnag_torch.py).

Skipped without torch (CI has none). One tiny HNAG hierarchy: the 3-node top graph is the
triangle 0 -> 1 -> 2, 0 -> 2, so cell 2 merges a stage-0 and a stage-1 input (a 1x1 conv
and a sigmoid weight), cells run at 32/16/8 px, and the 3-op bottom graphs have merges too.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))
import hnag_torch  # noqa: E402

from nhb.models import hnag  # noqa: E402
from nhb.nago import graphs  # noqa: E402
from nhb.space import generators  # noqa: E402

VECTOR = (3, 2, 0.5, 1, 0.5, 3, 2, 0.5)
WIDTH = 2


def _perturbed(variables: dict, seed: int = 0) -> dict:
    """Every BN statistic / affine and merge weight moved off its default."""
    rng = np.random.default_rng(seed)

    def move(path, leaf):
        name = path[-1].key
        if name in ("scale", "var"):
            return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), jnp.float32)
        if name == "mean" or name.startswith("merge_w") or (
                name == "bias" and path[-2].key.endswith(("bn", "bn0", "bn1"))):
            return jnp.asarray(rng.normal(0, 0.3, leaf.shape), jnp.float32)
        return leaf

    return jax.tree_util.tree_map_with_path(move, variables)


@pytest.mark.parametrize("image_size", [32, 40])
def test_torch_restatement_matches_nhb(image_size):
    h = graphs.sample(generators.make("hnag"), VECTOR)
    assert h.top.preds == ((), (0,), (0, 1)) and h.stages == (0, 1, 2)
    net = hnag.HNAGNet(h, WIDTH, 10, image_size)
    x = np.random.default_rng(1).normal(size=(3, image_size, image_size, 3)).astype(np.float32)
    variables = _perturbed(dict(net.init(jax.random.key(0), jnp.asarray(x[:1]), train=False)))
    model = hnag_torch.build_torch(h, WIDTH, 10, image_size, seed=0)
    n_linen = sum(a.size for a in jax.tree.leaves(variables["params"]))
    assert hnag_torch.param_count(model) == n_linen == hnag.param_count(h, WIDTH, 10,
                                                                         image_size)
    filled = hnag_torch.copy_from_linen(model, variables)
    assert any(".merger.0.weight" in n for n in filled)  # the top-level 1x1 merge conv
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    model.eval()
    with torch.no_grad():
        ref = model(xt).numpy()
    got = np.asarray(net.apply(variables, jnp.asarray(x), train=False))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    # train mode (batch statistics), dropout off
    model.train()
    model.dropout.p = 0.0
    with torch.no_grad():
        ref = model(xt).numpy()
    got, _ = hnag.HNAGNet(h, WIDTH, 10, image_size, dropout_rate=0.0).apply(
        variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_authors_position_bug_is_optional():
    h = graphs.sample(generators.make("hnag"), VECTOR)
    with pytest.raises(ValueError, match="output_by"):
        hnag_torch.build_torch(h, WIDTH, output_by="dict")
    # a single output cell: the authors' positional pick equals the pick by id
    a = hnag_torch.build_torch(h, WIDTH, seed=0, output_by="position").eval()
    b = hnag_torch.build_torch(h, WIDTH, seed=0).eval()
    xt = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_array_equal(a(xt).numpy(), b(xt).numpy())
