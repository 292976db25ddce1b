"""Multi-view testing: every video as ``num_clips`` uniformly spaced clips × ``num_crops`` crops.

PySlowFast's 3-crop testing: short side resized to the crop size, then left/centre/right crops.
Each view is one *clip* prediction; the softmax scores of a video's views are summed into its
*video* prediction. The model, its clip geometry and normalisation come from the checkpoint,
whose network is built once (``load_trained``) and shared with the attention examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.data.shard_store import ShardsLocation
from pipeline.data.shards import ClipDataset
from pipeline.data.transforms import TestTransform, UniformClips, normalize
from pipeline.evaluation.meters import Evaluation
from pipeline.evaluation.plan import EvalPlan
from pipeline.runtime.checkpoint import Checkpoint, TrainedNet
from pipeline.runtime.device import autocast, resolve_device


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


class SplitScores(NamedTuple):
    """A split's views scored: softmax ``(videos, views, classes)``, labels ``(videos,)``, each
    video's annotation kind ("" where the data records none)."""

    scores: torch.Tensor
    labels: torch.Tensor
    kinds: list[str]


@torch.no_grad()
def score_split(
    net: nn.Module,
    views: TestViews,
    shards_dir: ShardsLocation,
    split: str,
    batch_size: int,
    device: torch.device,
    amp: str = "fp32",
    num_workers: int = 0,
    progress: bool = True,
) -> SplitScores:
    """Scores of ``net`` on every video of ``split``, ``num_clips·num_crops`` views each;
    ``batch_size`` views per forward pass (a progress bar on stderr unless not ``progress``)."""
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
    return SplitScores(torch.cat(scores), torch.cat(labels), dataset.kinds)


def evaluate(
    trained: TrainedNet,
    shards_dir: ShardsLocation,
    split: str,
    num_clips: int,
    num_crops: int,
    batch_size: int,
    num_workers: int = 0,
    crop_size: int | None = None,
) -> Evaluation:
    """Score every video of ``split`` with ``num_clips × num_crops`` views of the trained network,
    crops of ``crop_size`` (None: the training crop; larger test crops as PySlowFast and MMAction2 test)."""
    model, clip = trained.model, trained.model.clip
    views = TestViews(
        clip.num_frames,
        clip.stride,
        crop_size or clip.crop_size,
        num_clips,
        num_crops,
        mean=model.frames.mean,
        std=model.frames.std,
    )
    scored = score_split(trained.net, views, shards_dir, split, batch_size, trained.device, model.amp, num_workers)
    return Evaluation(
        list(trained.classes), scored.scores, scored.labels, trained.unfinished, views.crop_size, scored.kinds
    )


def load_trained(plan: EvalPlan) -> TrainedNet:
    """The plan's checkpoint as a network on its device, built once (unfinished: ``eval.allow_unfinished``)."""
    checkpoint = Checkpoint.load(plan.checkpoint)
    return checkpoint.trained_net(
        plan.checkpoint, resolve_device(plan.device), "eval.allow_unfinished", plan.allow_unfinished
    )


def evaluate_plan(plan: EvalPlan, trained: TrainedNet) -> Evaluation:
    """``evaluate`` with the plan's data, views, batch size and workers."""
    return evaluate(
        trained,
        plan.shards_dir,
        plan.split,
        plan.num_clips,
        plan.num_crops,
        plan.batch_size,
        plan.num_workers,
        plan.crop_size,
    )
