"""Clip sampling and pixel transforms shared by train, evaluate and predict.

A ``ClipDataset`` item is built in two steps, both driven by the item's own ``torch.Generator``
so that augmentation does not depend on worker or process counts:

1. a *sampler* picks the frame indices of each view (``RandomClip`` for training: one clip at a
   random start; ``UniformClips`` for testing: clips with evenly spread starts),
2. a *transform* turns the decoded views, uint8 ``(V, T, C, H, W)``, into uint8 crops
   ``(V', C, T, S, S)`` (``TrainTransform``: short-side scale jitter, random crop, optional
   horizontal flip; ``TestTransform``: short side to S, then 1 or 3 crops along the long side as
   in PySlowFast's 3-crop testing).

Crops stay uint8 until they reach the device, where ``normalize`` makes them float: a quarter of
the host-to-device traffic of float32 clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torchvision.transforms.v2 import functional as F

from pipeline.data.clips import random_clip_indices, uniform_clip_indices


@dataclass(frozen=True)
class RandomClip:
    """Training sampler: one clip of ``clip_len`` frames ``stride`` apart at a random start."""

    clip_len: int
    stride: int

    def __call__(self, num_frames: int, generator: torch.Generator) -> list[list[int]]:
        return [random_clip_indices(num_frames, self.clip_len, self.stride, generator)]


@dataclass(frozen=True)
class UniformClips:
    """Test sampler: ``num_clips`` clips with evenly spread starts (deterministic)."""

    clip_len: int
    stride: int
    num_clips: int

    def __call__(self, num_frames: int, generator: torch.Generator) -> list[list[int]]:
        return uniform_clip_indices(num_frames, self.clip_len, self.stride, self.num_clips)


def resize_short_side(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(..., H, W)`` frames so that the shorter side is ``size`` (antialiased)."""
    height, width = frames.shape[-2:]
    if min(height, width) == size:
        return frames
    return F.resize(frames, [size], antialias=True)


def crop_offsets(length: int, size: int, num_crops: int) -> list[int]:
    """Start offsets of ``num_crops`` crops of ``size`` along a side of ``length``.

    One crop is centred; three are first/centre/last (left/centre/right or top/centre/bottom).
    """
    if size > length:
        raise ValueError(f"crop {size} is larger than the side {length}")
    if num_crops == 1:
        return [(length - size) // 2]
    if num_crops == 3:
        return [0, (length - size) // 2, length - size]
    raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")


def to_clip_layout(views: torch.Tensor) -> torch.Tensor:
    """``(V, T, C, H, W)`` → ``(V, C, T, H, W)``, the layout of 3-D convolutions."""
    return views.permute(0, 2, 1, 3, 4).contiguous()


def resized_shape(height: int, width: int, short: int) -> tuple[int, int]:
    """(H, W) of a ``height × width`` frame whose short side ``resize_short_side`` makes ``short``."""
    if min(height, width) == short:
        return height, width
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


@dataclass(frozen=True)
class CropPlan:
    """One training item's geometry: the short side it is resized to, the crop's corner, the flip."""

    short: int
    top: int
    left: int
    flip: bool


@dataclass(frozen=True)
class TrainTransform:
    """Scale jitter + random crop + optional horizontal flip, one draw per item.

    The short side is resized to ``crop_size × U(scale_jitter)`` and a ``crop_size²`` window is
    cut at a random position — anywhere, or with ``max_shift`` at most ``max_shift × crop_size``
    pixels from the centred window (for data whose subject is framed in the centre); every view
    and frame of the item gets the same geometry. The draw (``plan``) needs only the frame size,
    so a worker can draw it for frames that are decoded later on the device (``apply``).
    """

    crop_size: int
    scale_jitter: tuple[float, float] = (1.0, 1.0)
    hflip: bool = False
    max_shift: float | None = None

    def __call__(self, views: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 ``(V, T, C, H, W)`` → uint8 ``(V, C, T, crop, crop)``."""
        return self.apply(views, self.plan(*views.shape[-2:], generator))

    def plan(self, height: int, width: int, generator: torch.Generator) -> CropPlan:
        """The item's random geometry for ``height × width`` frames (four draws, in this order)."""
        low, high = self.scale_jitter
        scale = low + (high - low) * float(torch.rand((), generator=generator))
        short = max(self.crop_size, round(self.crop_size * scale))
        height, width = resized_shape(height, width, short)
        top = self._offset(height, generator)
        left = self._offset(width, generator)
        flip = self.hflip and bool(torch.rand((), generator=generator) < 0.5)
        return CropPlan(short, top, left, flip)

    def apply(self, views: torch.Tensor, plan: CropPlan) -> torch.Tensor:
        """uint8 ``(V, T, C, H, W)`` on any device → uint8 ``(V, C, T, crop, crop)`` cut as ``plan`` says."""
        views = resize_short_side(views, plan.short)
        views = views[..., plan.top : plan.top + self.crop_size, plan.left : plan.left + self.crop_size]
        return to_clip_layout(views.flip(-1) if plan.flip else views)

    def _offset(self, length: int, generator: torch.Generator) -> int:
        """A random crop start along a side of ``length``, within ``max_shift`` of the centre."""
        low, high = 0, length - self.crop_size
        if self.max_shift is not None:
            centre, reach = high // 2, round(self.max_shift * self.crop_size)
            low, high = max(low, centre - reach), min(high, centre + reach)
        return int(torch.randint(low, high + 1, (), generator=generator))


@dataclass(frozen=True)
class TestTransform:
    """Short side to ``crop_size``, then ``num_crops`` (1 or 3) crops along the long side."""

    __test__ = False  # not a pytest test class despite the name
    crop_size: int
    num_crops: int = 1

    def __call__(self, views: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 ``(V, T, C, H, W)`` → uint8 ``(V · num_crops, C, T, crop, crop)``, view-major."""
        views = resize_short_side(views, self.crop_size)
        height, width = views.shape[-2:]
        size = self.crop_size
        crops = []
        for view in views:
            if width >= height:
                crops += [view[..., :size, x : x + size] for x in crop_offsets(width, size, self.num_crops)]
            else:
                crops += [view[..., y : y + size, :size] for y in crop_offsets(height, size, self.num_crops)]
        return to_clip_layout(torch.stack(crops))


def normalize(clips: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(N, C, T, H, W)`` → float32 ``(x / 255 - mean) / std`` per channel."""
    shape = (1, -1) + (1,) * (clips.dim() - 2)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=clips.device).view(shape)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=clips.device).view(shape)
    return (clips.float().div_(255.0) - mean_t) / std_t
