"""Tests for nhb.nago.memory: XLA's compiled-step memory and the saved-residual proxy."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from nhb.models.hnag import make_model
from nhb.nago import memory
from nhb.nago.graphs import DAG, Hierarchy, chain
from nhb.train.model import linen_model

ONE = DAG(1, ((),), (0,), (0,))
IMAGE = (8, 8, 3)


def _minimal(extra_op_cell: int | None = None) -> Hierarchy:
    """Three one-op cells in a chain; `extra_op_cell` gets a second op (bottom chain of 2)."""
    bottoms = tuple((chain(2),) if c == extra_op_cell else (ONE,) for c in range(3))
    return Hierarchy("hnag", chain(3), (0, 1, 2), (ONE,) * 3, bottoms, ())


class _Sin(nn.Module):
    """logits = mean over pixels of sin(x * w) (3 classes = the 3 channels)."""

    @nn.compact
    def __call__(self, x, train=False):
        self.variable("batch_stats", "unused", lambda: jnp.zeros(()))
        w = self.param("w", nn.initializers.ones, (3,))
        return jnp.mean(jnp.sin(x * w), axis=(1, 2))


def test_activation_bytes_hand_count_on_a_one_op_model():
    model = linen_model(_Sin(), takes_inputs=False, takes_mask=False, input_shape=(1, 16, 16, 3))
    per_image = memory.activation_bytes_per_image(model, (16, 16, 3))
    # d loss / d w needs x and cos(x * w): two float32 [16, 16, 3] tensors per image; the
    # cross-entropy adds a few scalars per class and image.
    network = 2 * 16 * 16 * 3 * 4
    assert network <= per_image <= network + 4 * (3 + 4)


def test_activation_bytes_linear_in_batch_and_per_image_invariant():
    model = make_model(_minimal(), 2, 10, 8)
    r1, r2, r4 = (memory.activation_bytes(model, b, IMAGE) for b in (1, 2, 4))
    assert 0 < r1 < r2 < r4
    assert r4 - r2 == 2 * (r2 - r1)  # a + b * batch exactly
    assert memory.activation_bytes_per_image(model, IMAGE, (2, 4)) == r2 - r1
    assert memory.activation_bytes_per_image(model, IMAGE) == r2 - r1
    shapes = memory.residual_shapes(model, 2, IMAGE)
    assert any(s.shape == (2, 8, 8, 2) and s.dtype == jnp.float32 for s in shapes)


def test_activation_bytes_per_op_scale_with_its_activation_size():
    """An extra op costs a * (C * H * W) + b bytes per image whatever its stage: solve a, b
    from stages 0 and 2, predict stage 1 (m = 2, 8 px: C*H*W = 128, 64, 32)."""
    base = memory.activation_bytes_per_image(make_model(_minimal(), 2, 10, 8), IMAGE)
    extra = [memory.activation_bytes_per_image(make_model(_minimal(c), 2, 10, 8), IMAGE) - base
             for c in range(3)]
    size = (2 * 8 * 8, 4 * 4 * 4, 8 * 2 * 2)
    a = (extra[0] - extra[2]) / (size[0] - size[2])
    b = extra[0] - a * size[0]
    assert a == int(a) and 8 <= a <= 32  # PyTorch keeps 8 bytes per element (ReLU out, BN in)
    assert 0 <= b <= 16
    assert extra[1] == pytest.approx(a * size[1] + b)


def test_compiled_memory_of_the_sgd_step():
    model = make_model(_minimal(), 2, 10, 8)
    small, big = (memory.compiled_memory(model, b, IMAGE) for b in (4, 16))
    param_bytes = 4 * sum(x.size for x in jax.tree.leaves(
        jax.eval_shape(model.init, jax.random.key(0), ())["params"]))
    for mem in (small, big):
        assert mem.argument_bytes >= 2 * param_bytes  # parameters and momentum
        assert mem.output_bytes >= 2 * param_bytes
        assert mem.peak_bytes == (mem.argument_bytes + mem.output_bytes - mem.alias_bytes
                                  + mem.temp_bytes) > 0
        assert mem.per_image == mem.peak_bytes / mem.batch_size
    assert small.per_image > big.per_image  # parameters amortised over more images
    # The temporaries grow with the batch roughly like the saved activations.
    temp_slope = (big.temp_bytes - small.temp_bytes) / 12
    proxy = memory.activation_bytes_per_image(model, IMAGE)
    assert 0.5 * proxy < temp_slope < 4 * proxy
