"""What the double attention blocks of a model look at: their gather and distribution maps.

The gather maps are the paper's own explanation of a prediction (A²-Nets, Fig. 3): the n
softmax maps ``softmax(B)`` over all positions with which a block pools its global descriptors,
and the distribution weights ``softmax(V)`` with which every position picks among them. They are
read with forward pre-hooks from each block's input, so the model's ``forward`` (and
``torch.export`` of it) is untouched. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from a2model.attention import DoubleAttention


@dataclass(frozen=True)
class AttentionMaps:
    """The maps of one A² block for a batch, on the block's own grid ``S`` (e.g. ``(T', H', W')``)."""

    block: str  # the block's module name in the model
    gather: torch.Tensor  # (N, n, *S): each of the n maps sums to 1 over its positions (per frame: over each frame's)
    distribution: torch.Tensor  # (N, n, *S): sums to 1 over the n maps at each position


def block_maps(block: DoubleAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gather, distribution)`` of ``block`` on its input ``x`` ``(N, C, *S)``, each ``(N, n, *S)``."""
    _, b, v = block.projections(x)
    spatial = x.shape[2:]
    if block.per_frame:  # (N, n, T, H, W): one softmax over H·W per frame
        gather = F.softmax(b.unflatten(2, spatial).flatten(3), dim=-1).unflatten(3, spatial[1:])
    else:
        gather = F.softmax(b.flatten(2), dim=-1).unflatten(2, spatial)
    distribution = F.softmax(v.flatten(2), dim=1).unflatten(2, spatial)
    return gather, distribution


@torch.no_grad()
def attention_maps(model: nn.Module, inputs: torch.Tensor) -> list[AttentionMaps]:
    """Run ``model`` on ``inputs`` and return the maps of every A² block, in forward order.

    Raises ValueError when the model has no ``DoubleAttention`` block (a plain or non-local net).
    """
    blocks = [(name, module) for name, module in model.named_modules() if isinstance(module, DoubleAttention)]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no double attention (A²) block; choose an A² model")
    found: list[AttentionMaps] = []

    def record(name: str):
        return lambda module, args: found.append(AttentionMaps(name, *block_maps(module, args[0])))

    hooks = [module.register_forward_pre_hook(record(name)) for name, module in blocks]
    try:
        model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return found
