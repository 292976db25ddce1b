"""Where a network runs and what it is fed: the device, bf16 autocast, the normalised clip batch."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.core.errors import ConfigError
from pipeline.data.transforms import normalize


def resolve_device(setting: str) -> torch.device:
    """``auto`` → CUDA when present else CPU; ``cpu``/``cuda`` as asked (error if CUDA is absent)."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto")
    if setting not in ("cpu", "cuda"):
        raise ConfigError(f"train.device={setting!r} is not one of auto, cpu, cuda")
    return torch.device(setting)


def autocast(device: torch.device, amp: str) -> Any:
    """bf16 autocast on ``device`` (CUDA or CPU) when ``amp`` is ``bf16``; nothing for ``fp32``."""
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


@dataclass(frozen=True)
class ModelInput:
    """How uint8 frames become the network's input: the normalisation and the memory format."""

    mean: Sequence[float]
    std: Sequence[float]
    channels_last: bool = False

    def __call__(self, batch_frames: torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 ``(N, V, C, T, H, W)`` → normalised float ``(N·V, C, T, H, W)`` on ``device``."""
        clips = normalize(batch_frames.to(device, non_blocking=True).flatten(0, 1), self.mean, self.std)
        if self.channels_last:
            clips = clips.contiguous(memory_format=torch.channels_last_3d)
        return clips
