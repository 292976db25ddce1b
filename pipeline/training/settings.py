"""What one training takes, typed: made once from the config by the stage (``pipeline.settings``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.data.shard_store import ShardsLocation
from pipeline.runtime.checkpoint import ModelSpec, Schedule
from pipeline.tracking.run_record import RunSpec


@dataclass(frozen=True)
class Augmentation:
    """The training clips' random scale (``train.scale_jitter``), crop shift and flip."""

    scale_jitter: tuple[float, float]
    hflip: bool
    max_crop_shift: float | None


@dataclass(frozen=True)
class Optimiser:
    """SGD's settings besides the learning-rate schedule, and the loss's."""

    momentum: float
    weight_decay: float
    label_smoothing: float
    grad_clip: float  # 0: no clipping
    lr_backbone_scale: float = 1.0  # the learning rate of the weights model.init loaded, times this


@dataclass(frozen=True)
class InitSettings:
    """Where a training's first weights come from (``model.init``); None: He initialisation."""

    weights: str | None = None  # a torchvision 2-D .pth, a project last.pt, or a models:/ URI
    inflate: str | None = None  # centre | mean: how 2-D kernels spread over time
    exclude: tuple[str, ...] = ()  # fnmatch patterns of keys left at their initialisation


@dataclass(frozen=True)
class TrainSettings:
    """A training: the model and schedule it records, how it optimises and augments, where it reads
    and writes, what it runs on, and its MLflow run."""

    model: ModelSpec
    schedule: Schedule
    optimiser: Optimiser
    augmentation: Augmentation
    init: InitSettings
    run: RunSpec
    shards_dir: ShardsLocation  # a folder or an object-store URL
    train_split: str
    val_split: str
    classes_file: Path
    out_dir: Path
    metrics_csv: Path
    seed: int
    resume: bool
    device: str  # auto | cpu | cuda
    compile: bool
    channels_last: bool
    decode_on: str  # workers | device
    num_workers: int
    val_every: int  # epochs between validations; 0: none
