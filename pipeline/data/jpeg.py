"""JPEG frames to tensors: what the shard reader and the served model share (the served model
carries this, not the shard reader and its object-store client)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.io import ImageReadMode, decode_jpeg


def decode_frames(jpegs: Sequence[bytes], indices: Sequence[int]) -> torch.Tensor:
    """Decode the frames ``indices`` of ``jpegs`` to uint8 RGB (T, C, H, W), each JPEG once."""
    unique = sorted(set(indices))
    data = [torch.frombuffer(bytearray(jpegs[i]), dtype=torch.uint8) for i in unique]
    decoded = decode_jpeg(data, mode=ImageReadMode.RGB)
    position = {frame: k for k, frame in enumerate(unique)}
    return torch.stack([decoded[position[i]] for i in indices])
