"""How a raw video becomes a registered model's input views, and its scores a top-k answer.

A video goes through the same steps as a validation clip on its way to ``evaluate``: ffmpeg
decode at ``fps`` with the short side at ``short_side``, the shards' JPEG round trip,
``num_clips`` uniform clips × ``num_crops`` crops (``TestTransform``), normalisation; softmax
scores are averaged over the views. ``a2net predict`` and the served model both call these
functions with the model's own ``Preprocessing`` metadata, so they give the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.core.errors import StageError
from pipeline.data.clips import uniform_clip_indices
from pipeline.data.frames import TooLong, clip_jpegs
from pipeline.data.jpeg import decode_frames
from pipeline.data.transforms import TestTransform, normalize
from pipeline.data.video import DecodeBudget, DecodeError, OverBudget
from pipeline.serving.bounds import BUDGET_KEYS


class VideoError(StageError):
    """A file that cannot be used as a video (missing, not a video, no frames, too long)."""


@dataclass(frozen=True)
class Preprocessing:
    """How a raw video becomes the model's input views: the pipeline's decode and eval transform."""

    fps: float
    short_side: int
    jpeg_quality: int  # frames go through the shards' JPEG round trip, as in evaluate
    num_frames: int
    stride: int
    crop_size: int
    num_clips: int
    num_crops: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Shape of one view, (C, T, H, W)."""
        return (3, self.num_frames, self.crop_size, self.crop_size)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preprocessing:
        """Inverse of ``dataclasses.asdict`` (as stored in the model's metadata)."""
        fields = dict(values)
        fields["mean"], fields["std"] = tuple(fields["mean"]), tuple(fields["std"])
        return cls(**fields)


def video_frames(
    path: Path, prep: Preprocessing, max_seconds: float | None = None, budget: DecodeBudget | None = None
) -> torch.Tensor:
    """The eval views of ``path`` before normalisation, uint8 (V, C, T, S, S), clip-major: V = clips × crops.

    A video longer than ``max_seconds`` is refused without decoding the rest of it; one that
    would cost more than ``budget`` (a served row) is refused naming the ``register.serving`` key.
    """
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file" if path.exists() else "no such file"
        raise VideoError(f"{path}: {what}; give a video file")
    max_frames = None if max_seconds is None else int(max_seconds * prep.fps)
    try:
        jpegs, _, _ = clip_jpegs(
            path,
            fps=prep.fps,
            short_side=prep.short_side,
            jpeg_quality=prep.jpeg_quality,
            max_frames=max_frames,
            budget=budget,
        )
    except OverBudget as err:
        raise VideoError(f"{path}: {err} (register.serving.{BUDGET_KEYS[err.limit]})") from None
    except TooLong as err:
        raise VideoError(f"{path}: {err}; give a clip of at most {max_seconds:g} s") from None
    except DecodeError as err:
        raise VideoError(f"{path}: not a readable video ({err})") from None
    clips = uniform_clip_indices(len(jpegs), prep.num_frames, prep.stride, prep.num_clips)
    views = torch.stack([decode_frames(jpegs, indices) for indices in clips])  # (clips, T, C, H, W)
    return TestTransform(prep.crop_size, prep.num_crops)(views)


def video_views(
    path: Path, prep: Preprocessing, max_seconds: float | None = None, budget: DecodeBudget | None = None
) -> torch.Tensor:
    """Decode ``path`` into the normalised eval views, float32 (V, C, T, S, S)."""
    return normalize(video_frames(path, prep, max_seconds, budget), prep.mean, prep.std)


@torch.inference_mode()
def video_scores(net: torch.nn.Module, views: torch.Tensor) -> torch.Tensor:
    """Mean softmax over the views of one video: (V, C, T, H, W) → (K,), sums to 1."""
    return net(views).softmax(dim=1).sum(dim=0) / views.shape[0]


def top_labels(scores: torch.Tensor, classes: Sequence[str], k: int) -> tuple[list[str], list[float]]:
    """The ``k`` best classes of ``scores`` (K,) and their probabilities (6 decimals), best first."""
    top = scores.topk(min(k, scores.numel()))
    return [classes[i] for i in top.indices.tolist()], [round(p, 6) for p in top.values.tolist()]
