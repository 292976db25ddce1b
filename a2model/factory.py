"""Named models, their inputs, and parameter / multiply-add counting."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from a2model import image_resnet, video_resnet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet50": image_resnet.resnet50,
    "a2_resnet50": image_resnet.a2_resnet50,
    "tiny_plain": video_resnet.tiny,
    "tiny_a2": partial(video_resnet.tiny, attention="a2"),
    "tiny_a2_frame": partial(video_resnet.tiny, attention="a2_frame"),
    "tiny_nonlocal": partial(video_resnet.tiny, attention="nonlocal"),
    "tiny_plain_deep": video_resnet.tiny_deep,
    "r26_plain": video_resnet.r26,
    "r26_a2": partial(video_resnet.r26, attention="a2"),
    "r26_nonlocal": partial(video_resnet.r26, attention="nonlocal"),
    "r29_plain": video_resnet.r29,
    "r50_plain": video_resnet.r50,
    "r50_a2": partial(video_resnet.r50, attention="a2"),
}

_TINY_CLIP, _R26_CLIP, _R50_CLIP = (3, 8, 56, 56), (3, 16, 112, 112), (3, 8, 224, 224)
MODEL_INPUTS: dict[str, tuple[int, ...]] = {
    "resnet50": (3, 224, 224),
    "a2_resnet50": (3, 224, 224),
    **{name: _TINY_CLIP for name in MODELS if name.startswith("tiny")},
    **{name: _R26_CLIP for name in MODELS if name.startswith(("r26", "r29"))},
    **{name: _R50_CLIP for name in MODELS if name.startswith("r50")},
}


def build_model(name: str, num_classes: int, **overrides) -> nn.Module:
    """Build the named model with a ``num_classes``-way classifier; ``overrides`` go to its factory."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name](num_classes=num_classes, **overrides)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass on an input of ``input_shape`` (batch included).

    Counted on a meta-device copy (no memory, no compute); ``torch.utils.flop_counter`` counts
    2 FLOPs per multiply-add, the papers count multiply-adds, hence the halving.
    """
    meta_model = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta_model(torch.empty(input_shape, device="meta"))
    return counter.get_total_flops() // 2
