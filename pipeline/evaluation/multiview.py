"""Multi-view testing: every video as ``num_clips`` uniformly spaced clips × ``num_crops`` crops.

PySlowFast's 3-crop testing: short side resized to the crop size, then left/centre/right crops.
Each view is one *clip* prediction; the softmax scores of a video's views are summed into its
*video* prediction. The model, its clip geometry and normalisation come from the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.data.shards import ClipDataset
from pipeline.data.transforms import TestTransform, UniformClips, normalize
from pipeline.evaluation.meters import Evaluation
from pipeline.training.checkpoint import CHECKPOINT_FILE, Checkpoint
from pipeline.training.loop import autocast
from pipeline.training.net import resolve_device


@dataclass(frozen=True)
class TestViews:
    """How a model sees a validation video: its clip geometry and normalisation, the views taken."""

    num_frames: int
    stride: int
    crop_size: int
    num_clips: int
    num_crops: int
    mean: Sequence[float]
    std: Sequence[float]


@torch.no_grad()
def score_split(
    net: nn.Module,
    views: TestViews,
    shards_dir: Path,
    split: str,
    batch_size: int,
    device: torch.device,
    amp: str = "fp32",
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax scores ``(videos, num_clips·num_crops, classes)`` of ``net`` on every video of
    ``split`` and the videos' labels; ``batch_size`` views per forward pass (a progress bar on
    stderr unless not ``progress``)."""
    dataset = ClipDataset(
        shards_dir,
        split,
        UniformClips(views.num_frames, views.stride, views.num_clips),
        TestTransform(views.crop_size, views.num_crops),
    )
    per_video = views.num_clips * views.num_crops
    loader = DataLoader(dataset, batch_size=max(1, batch_size // per_video), num_workers=num_workers)
    scores, labels = [], []
    for batch in tqdm(loader, desc="evaluate", dynamic_ncols=True, leave=False, disable=not progress):
        frames = batch["frames"]  # (N, V, C, T, H, W) uint8
        clips = normalize(frames.to(device).flatten(0, 1), views.mean, views.std)
        with autocast(device, amp):
            logits = net(clips)
        scores.append(logits.float().softmax(1).view(len(frames), per_video, -1).cpu())
        labels.append(batch["label"])
    return torch.cat(scores), torch.cat(labels)


def evaluate(
    checkpoint_path: Path,
    shards_dir: Path,
    split: str,
    num_clips: int,
    num_crops: int,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    allow_unfinished: bool = False,
) -> Evaluation:
    """Score every video of ``split`` with ``num_clips × num_crops`` views of the checkpoint's model.

    An unfinished training's checkpoint is refused unless ``allow_unfinished``.
    """
    checkpoint = Checkpoint.load(checkpoint_path)
    net = checkpoint.build_net(checkpoint_path).to(device).eval()
    unfinished = checkpoint.refuse_unfinished(checkpoint_path, "eval.allow_unfinished", allow_unfinished)
    clip, data_cfg = checkpoint.clip, checkpoint.config["data"]
    views = TestViews(**clip, num_clips=num_clips, num_crops=num_crops, mean=data_cfg["mean"], std=data_cfg["std"])
    amp = checkpoint.config["train"]["amp"]
    scores, labels = score_split(net, views, shards_dir, split, batch_size, device, amp, num_workers)
    return Evaluation(list(checkpoint.classes), scores, labels, unfinished, views.crop_size)


def evaluate_config(cfg: DictConfig) -> Evaluation:
    """``evaluate`` on ``train.out_dir/last.pt`` with the ``eval`` and ``data`` settings of ``cfg``."""
    return evaluate(
        Path(cfg.train.out_dir) / CHECKPOINT_FILE,
        Path(cfg.data.shards_dir),
        cfg.data.val_split,
        cfg.eval.num_clips,
        cfg.eval.num_crops,
        cfg.eval.batch_size,
        resolve_device(cfg.train.device),
        cfg.train.num_workers,
        bool(cfg.eval.get("allow_unfinished", False)),
    )
