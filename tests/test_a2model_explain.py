"""a2model.explain: the A² blocks' gather and distribution maps, read without changing forward."""

from __future__ import annotations

import pytest
import torch

import a2model
from a2model.attention import DoubleAttention, double_attention, per_frame_double_attention
from a2model.explain import attention_maps, block_maps

A2_MODELS = sorted(name for name in a2model.MODELS if "a2" in name)


@pytest.mark.parametrize("name", ["tiny_a2", "a2_resnet50"])
def test_maps_are_distributions_on_each_blocks_grid(name: str) -> None:
    torch.manual_seed(0)
    model = a2model.build_model(name, num_classes=4).eval()
    size = (1, *a2model.MODEL_INPUTS[name])
    if name == "a2_resnet50":
        size = (1, 3, 64, 64)  # any image size; keeps the test cheap
    maps = attention_maps(model, torch.randn(size))
    blocks = [n for n, m in model.named_modules() if isinstance(m, DoubleAttention)]
    assert [m.block for m in maps] == blocks and maps
    for found in maps:
        n, grid = found.gather.shape[1], found.gather.shape[2:]
        assert found.distribution.shape == found.gather.shape and len(grid) == len(size) - 2
        torch.testing.assert_close(found.gather.flatten(2).sum(-1), torch.ones(1, n))
        torch.testing.assert_close(found.distribution.sum(1), torch.ones(1, *grid))


def test_a_per_frame_blocks_maps_are_distributions_in_each_frame() -> None:
    torch.manual_seed(0)
    model = a2model.build_model("tiny_a2_frame", num_classes=4).eval()
    (found,) = attention_maps(model, torch.randn(1, *a2model.MODEL_INPUTS["tiny_a2_frame"]))
    n, frames = found.gather.shape[1:3]
    torch.testing.assert_close(found.gather.flatten(3).sum(-1), torch.ones(1, n, frames))


@pytest.mark.parametrize("per_frame", [False, True], ids=["space-time", "per-frame"])
def test_the_maps_are_the_ones_the_block_computes_with(per_frame: bool) -> None:
    """Z = A·gatherᵀ·distribution with the maps read out, over all positions or within each frame."""
    torch.manual_seed(0)
    block = DoubleAttention(16, m=8, n=4, per_frame=per_frame).eval()
    x = torch.randn(2, 16, 3, 5, 5)
    gather, distribution = block_maps(block, x)
    a, b, v = (p.unflatten(2, x.shape[2:]) for p in block.projections(x))
    per_position = "nmt,nkt->nmk" if not per_frame else "nmtl,nktl->nmkt"  # l: positions within a frame
    shape = (2, -1, 75) if not per_frame else (2, -1, 3, 25)
    descriptors = torch.einsum(per_position, a.reshape(shape), gather.reshape(shape))
    z = torch.einsum("nmk,nkt->nmt" if not per_frame else "nmkt,nktl->nmtl", descriptors, distribution.reshape(shape))
    attend = per_frame_double_attention if per_frame else double_attention
    torch.testing.assert_close(z.reshape(2, 8, 3, 5, 5), attend(a, b, v))


def test_reading_the_maps_leaves_the_model_as_it_was() -> None:
    model = a2model.build_model("tiny_a2", num_classes=4).eval()
    clips = torch.randn(2, *a2model.MODEL_INPUTS["tiny_a2"])
    before = model(clips)
    attention_maps(model, clips)
    torch.testing.assert_close(model(clips), before)
    assert not any(m._forward_pre_hooks for m in model.modules())  # hooks removed


@pytest.mark.parametrize("name", ["tiny_plain", "tiny_nonlocal"])
def test_a_model_without_a2_blocks_is_a_clear_error(name: str) -> None:
    model = a2model.build_model(name, num_classes=4)
    with pytest.raises(ValueError, match="has no double attention"):
        attention_maps(model, torch.randn(1, *a2model.MODEL_INPUTS[name]))


def test_every_a2_model_of_the_factory_has_blocks() -> None:
    assert A2_MODELS and all(
        any(isinstance(m, DoubleAttention) for m in a2model.build_model(n, 4).modules()) for n in A2_MODELS
    )
