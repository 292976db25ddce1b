"""3-D (video) ResNets with optional double-attention or non-local blocks.

One generic :class:`VideoResNet` built from a :class:`VideoResNetSpec`, plus small factory
functions for the named models, in the style of torchvision's ``models/video/resnet.py``.
Temporal kernels follow the Slow pathway of SlowFast: ``(k_t, 1, 1)`` on the first 1×1 of a
bottleneck, ``(1, k, k)`` on its spatial convolution, so a 3×3 "inflation" never mixes frames
before the stages that ask for it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from a2model.attention import DoubleAttention, NonLocal

Attention = Literal["a2", "a2_frame", "nonlocal"] | None


@dataclass(frozen=True)
class VideoResNetSpec:
    """Architecture of a :class:`VideoResNet`.

    ``attention_after`` lists ``(stage, block)`` pairs (0-based) after which an attention block
    is inserted; ``attention_ratio`` sets m = n = c · ratio for A² and inner = c · ratio for
    non-local, c being the stage's output channels.
    """

    depths: tuple[int, ...]
    widths: tuple[int, ...]  # output channels per stage; bottleneck width = width // expansion
    spatial_strides: tuple[int, ...]
    temporal_kernels: tuple[int, ...]
    spatial_kernels: tuple[int, ...] = ()  # per stage; default 3 everywhere
    expansion: int = 4
    stem_channels: int = 64
    stem_kernel: tuple[int, int, int] = (1, 7, 7)
    stem_stride: tuple[int, int, int] = (1, 2, 2)
    stem_pool: bool = True
    attention: Attention = None
    attention_after: tuple[tuple[int, int], ...] = ()
    attention_ratio: float = 0.25
    dropout: float = 0.5


class Bottleneck3d(nn.Module):
    """``(k_t,1,1)`` 1×1 → ``(1,k,k)`` strided → 1×1 expansion, with a projection shortcut when needed."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        temporal_kernel: int,
        spatial_kernel: int,
        expansion: int,
    ) -> None:
        super().__init__()
        mid = out_channels // expansion
        self.conv_a = nn.Conv3d(
            in_channels, mid, (temporal_kernel, 1, 1), padding=(temporal_kernel // 2, 0, 0), bias=False
        )
        self.bn_a = nn.BatchNorm3d(mid)
        self.conv_b = nn.Conv3d(
            mid,
            mid,
            (1, spatial_kernel, spatial_kernel),
            stride=(1, stride, stride),
            padding=(0, spatial_kernel // 2, spatial_kernel // 2),
            bias=False,
        )
        self.bn_b = nn.BatchNorm3d(mid)
        self.conv_c = nn.Conv3d(mid, out_channels, 1, bias=False)
        self.bn_c = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False),
                nn.BatchNorm3d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, T, H, W) -> (N, C_out, T, H / stride, W / stride)``."""
        y = self.relu(self.bn_a(self.conv_a(x)))
        y = self.relu(self.bn_b(self.conv_b(y)))
        y = self.bn_c(self.conv_c(y))
        return self.relu(y + self.shortcut(x))


def attention_block(kind: Attention, channels: int, ratio: float) -> nn.Module:
    """An A² (m = n = c·ratio; ``a2_frame``: within each frame) or non-local (inner = c·ratio) block
    for 3-D maps of ``channels``."""
    inner = max(1, round(channels * ratio))
    if kind in ("a2", "a2_frame"):
        return DoubleAttention(channels, inner, inner, spatial_dims=3, per_frame=kind == "a2_frame")
    if kind == "nonlocal":
        return NonLocal(channels, inner, spatial_dims=3)
    raise ValueError(f"unknown attention {kind!r}: use None, 'a2', 'a2_frame' or 'nonlocal'")


class VideoResNet(nn.Module):
    """Stem → bottleneck stages (with attention blocks where the spec says) → pool → dropout → fc.

    Input ``(N, 3, T, H, W)`` float clips; output ``(N, num_classes)`` logits.
    """

    def __init__(self, spec: VideoResNetSpec, num_classes: int) -> None:
        super().__init__()
        self.spec = spec
        t, k, _ = spec.stem_kernel
        self.stem = nn.Sequential(
            nn.Conv3d(
                3,
                spec.stem_channels,
                spec.stem_kernel,
                stride=spec.stem_stride,
                padding=(t // 2, k // 2, k // 2),
                bias=False,
            ),
            nn.BatchNorm3d(spec.stem_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)) if spec.stem_pool else nn.Identity(),
        )
        spatial_kernels = spec.spatial_kernels or (3,) * len(spec.depths)
        stages = []
        in_channels = spec.stem_channels
        for stage, depth in enumerate(spec.depths):
            blocks: list[nn.Module] = []
            for block in range(depth):
                stride = spec.spatial_strides[stage] if block == 0 else 1
                blocks.append(
                    Bottleneck3d(
                        in_channels,
                        spec.widths[stage],
                        stride,
                        spec.temporal_kernels[stage],
                        spatial_kernels[stage],
                        spec.expansion,
                    )
                )
                in_channels = spec.widths[stage]
                if (stage, block) in spec.attention_after:
                    blocks.append(attention_block(spec.attention, in_channels, spec.attention_ratio))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(spec.dropout)
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """He init for the backbone's convolutions; attention blocks keep their own init."""
        for module in [self.stem, *self.stages.modules()]:
            if isinstance(module, Bottleneck3d) or module is self.stem:
                for conv in module.modules():
                    if isinstance(conv, nn.Conv3d):
                        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, T, H, W) -> (N, num_classes)``."""
        x = self.stages(self.stem(x))
        return self.fc(self.dropout(self.pool(x).flatten(1)))


# --- ResNet-26 / ResNet-29 (the paper's ablation backbone, 16×112×112 clips, m = n = c/4) -------------

_R26 = VideoResNetSpec(
    depths=(2, 2, 2, 2),
    widths=(256, 512, 1024, 2048),
    spatial_strides=(1, 2, 2, 2),
    temporal_kernels=(1, 1, 3, 3),
    stem_kernel=(3, 7, 7),
    attention_ratio=0.25,
)
_R26_ATTENTION_AFTER = ((2, 1),)  # after the last block of res4 (c = 1024)


def r26(num_classes: int, attention: Attention = None, **overrides) -> VideoResNet:
    """3-D ResNet-26 (2-2-2-2 bottlenecks) with an optional attention block at the end of res4."""
    after = _R26_ATTENTION_AFTER if attention else ()
    return VideoResNet(replace(_R26, attention=attention, attention_after=after, **overrides), num_classes)


def r29(num_classes: int, **overrides) -> VideoResNet:
    """3-D ResNet-29 (2-2-3-2): the deeper plain baseline of the ablation."""
    return VideoResNet(replace(_R26, depths=(2, 2, 3, 2), **overrides), num_classes)


# --- inflated ResNet-50 (the paper's Kinetics model, 8×224×224 clips, 5 A² blocks) ------------------

_R50 = VideoResNetSpec(
    depths=(3, 4, 6, 3),
    widths=(256, 512, 1024, 2048),
    spatial_strides=(1, 2, 2, 2),
    temporal_kernels=(1, 1, 3, 3),
    stem_kernel=(1, 7, 7),
    attention_ratio=0.25,
)
_R50_ATTENTION_AFTER = ((1, 1), (1, 3), (2, 1), (2, 3), (2, 5))  # 2 in res3, 3 in res4


def r50(num_classes: int, attention: Attention = None, **overrides) -> VideoResNet:
    """Slow-only-style inflated ResNet-50; with attention, 5 blocks (2 in res3, 3 in res4)."""
    after = _R50_ATTENTION_AFTER if attention else ()
    return VideoResNet(replace(_R50, attention=attention, attention_after=after, **overrides), num_classes)


# --- tiny variants for 2 CPU cores (8×56×56 clips) ---------------------------------------------------
# Receptive field of the plain tiny net: 15 px of the 56-px input (stem 3×3/2, one 3×3/2, one 3×3,
# then a stage of 1×1 spatial kernels), smaller than the distance between the synthetic set's objects,
# so only an attention block can relate them.

_TINY = VideoResNetSpec(
    depths=(1, 1, 1),
    widths=(32, 64, 128),
    spatial_strides=(2, 1, 1),
    temporal_kernels=(1, 3, 3),
    spatial_kernels=(3, 3, 1),
    expansion=2,
    stem_channels=16,
    stem_kernel=(1, 3, 3),
    stem_stride=(1, 2, 2),
    stem_pool=False,
    attention_ratio=0.5,
    dropout=0.2,
)
_TINY_ATTENTION_AFTER = ((1, 0), (2, 0))  # res3 (c = 64, 14×14), then res4 (c = 128)


def tiny(num_classes: int, attention: Attention = None, num_attention: int = 1, **overrides) -> VideoResNet:
    """Tiny 3-D ResNet (1-1-1 bottlenecks) with ``num_attention`` (1 or 2) attention blocks."""
    if attention and not 1 <= num_attention <= len(_TINY_ATTENTION_AFTER):
        raise ValueError(f"num_attention must be 1..{len(_TINY_ATTENTION_AFTER)}, got {num_attention}")
    after = _TINY_ATTENTION_AFTER[:num_attention] if attention else ()
    return VideoResNet(replace(_TINY, attention=attention, attention_after=after, **overrides), num_classes)


def tiny_deep(num_classes: int, **overrides) -> VideoResNet:
    """Tiny plain backbone one bottleneck deeper in res3 (1×1 temporal, 3×3 spatial): about the MACs of tiny A²."""
    return VideoResNet(
        replace(_TINY, depths=(1, 2, 1), temporal_kernels=(1, 3, 3), **overrides),
        num_classes,
    )
