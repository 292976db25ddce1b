"""What one evaluation takes, typed: made once from the config by the stage (``pipeline.settings``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.data.shard_store import ShardsLocation


@dataclass(frozen=True)
class EvalPlan:
    """Which checkpoint is scored on which split with how many views, on what, and where the
    reports go (``eval.*``; the run is the training's, found beside its checkpoint)."""

    checkpoint: Path  # train.out_dir/last.pt
    shards_dir: ShardsLocation  # a folder or an object-store URL
    split: str  # data.val_split
    num_clips: int
    num_crops: int
    crop_size: int | None  # of the test views; None: the training crop (the checkpoint's)
    batch_size: int  # views per forward pass
    device: str  # auto | cpu | cuda (train.device)
    num_workers: int
    allow_unfinished: bool
    metrics_file: Path
    per_class_file: Path
    plots_dir: Path
    attention_classes: int
    experiment: str  # mlflow.experiment
