"""Which frames of a decoded video make a clip (as PySlowFast's ``decoder.py`` picks them).

A clip is ``clip_len`` frames ``stride`` apart, so it spans ``(clip_len - 1) * stride + 1``
frames. Training takes one clip at a random start; testing takes ``num_clips`` clips with
starts spread evenly from the first to the last possible start. Videos shorter than the span
repeat their last frame (indices are clamped), so every clip has exactly ``clip_len`` frames.
"""

from __future__ import annotations

import torch


def clip_span(clip_len: int, stride: int) -> int:
    """Number of source frames a clip of ``clip_len`` frames ``stride`` apart covers."""
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip_len and stride must be >= 1, got {clip_len} and {stride}")
    return (clip_len - 1) * stride + 1


def _clip_at(start: int, num_frames: int, clip_len: int, stride: int) -> list[int]:
    return [min(start + i * stride, num_frames - 1) for i in range(clip_len)]


def _last_start(num_frames: int, clip_len: int, stride: int) -> int:
    if num_frames < 1:
        raise ValueError(f"a clip needs a video with frames, got num_frames={num_frames}")
    return max(num_frames - clip_span(clip_len, stride), 0)


def random_clip_indices(
    num_frames: int, clip_len: int, stride: int, generator: torch.Generator
) -> list[int]:
    """Frame indices of one clip with a start drawn uniformly from ``generator``."""
    last = _last_start(num_frames, clip_len, stride)
    start = int(torch.randint(0, last + 1, (1,), generator=generator))
    return _clip_at(start, num_frames, clip_len, stride)


def uniform_clip_indices(
    num_frames: int, clip_len: int, stride: int, num_clips: int
) -> list[list[int]]:
    """Frame indices of ``num_clips`` clips with evenly spread starts (one clip: the centre)."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    last = _last_start(num_frames, clip_len, stride)
    if num_clips == 1:
        starts = [last // 2]
    else:
        starts = [round(k * last / (num_clips - 1)) for k in range(num_clips)]
    return [_clip_at(start, num_frames, clip_len, stride) for start in starts]
