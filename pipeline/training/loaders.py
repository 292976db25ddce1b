"""The training's data loaders over the clip shards: one random clip per training video, one
centre clip per validation video, each process taking its share of the global batch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, DistributedSampler, Subset

from pipeline.core.errors import ConfigError, StageError
from pipeline.data.shards import ClipDataset, shard_paths
from pipeline.data.transforms import RandomClip, TestTransform, TrainTransform, UniformClips
from pipeline.training.distributed import DistInfo
from pipeline.training.seeding import seed_worker


def open_split(shards_dir: Path, split: str, sampler: Any, transform: Any, seed: int = 0) -> ClipDataset:
    """The ``ClipDataset`` of ``split``, or a one-line error when its shards are missing."""
    if not Path(shards_dir).is_dir():
        raise StageError(
            f"shards dir {shards_dir} not found (data.shards_dir); run `python -m pipeline.preprocess` first"
        )
    return ClipDataset(shards_dir, split, sampler, transform, seed)


@dataclass
class TrainingData:
    """The training split (call ``set_epoch`` on it and its sampler every epoch) and its loaders."""

    dataset: ClipDataset
    sampler: DistributedSampler
    loader: DataLoader
    val_loader: DataLoader | None

    def set_epoch(self, epoch: int) -> None:
        """Pick the epoch's shuffle and the epoch's random clips and crops."""
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)


def training_data(cfg: DictConfig, info: DistInfo, pin_memory: bool) -> TrainingData:
    """Loaders of ``cfg.data``'s train and validation splits for process ``info.rank``.

    A ``DistributedSampler`` is used even for one process, so W processes split exactly the
    global batches one process would take (``batch_size // W`` clips each).
    """
    tc, clip = cfg.train, cfg.model.clip
    dataset = open_split(
        Path(cfg.data.shards_dir),
        cfg.data.train_split,
        RandomClip(clip.num_frames, clip.stride),
        TrainTransform(clip.crop_size, tuple(tc.scale_jitter), bool(cfg.data.hflip), tc.max_crop_shift),
        tc.seed,
    )
    if len(dataset) < tc.batch_size:
        raise ConfigError(
            f"split {cfg.data.train_split!r} has {len(dataset)} clips, fewer than train.batch_size={tc.batch_size}"
        )
    sampler = DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=tc.seed, drop_last=True
    )
    loader = DataLoader(
        dataset,
        batch_size=tc.batch_size // info.world_size,
        sampler=sampler,
        num_workers=tc.num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(tc.seed),
    )
    return TrainingData(dataset, sampler, loader, validation_loader(cfg, info))


def validation_loader(cfg: DictConfig, info: DistInfo) -> DataLoader | None:
    """One centre clip and crop per validation video, this process's share (every W-th video).

    None when ``train.val_every`` is 0 or the split has no shards (evaluate reports the real
    multi-view accuracy).
    """
    if not cfg.train.val_every or not shard_paths(Path(cfg.data.shards_dir), cfg.data.val_split):
        return None
    clip = cfg.model.clip
    val_set = open_split(
        Path(cfg.data.shards_dir),
        cfg.data.val_split,
        UniformClips(clip.num_frames, clip.stride, 1),
        TestTransform(clip.crop_size, 1),
    )
    share = Subset(val_set, range(info.rank, len(val_set), info.world_size))
    return DataLoader(share, batch_size=cfg.train.batch_size // info.world_size, num_workers=cfg.train.num_workers)
