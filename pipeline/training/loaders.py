"""The training's data loaders over the clip shards: one random clip per training video, one
centre clip per validation video, each process taking its share of the global batch.

Training clips are decoded where ``train.decode_on`` says: in the DataLoader workers (``workers``,
the CPU path) or in batches on the training device (``device``: the workers only read the JPEG
bytes; ``pipeline.data.device_decode``). Both paths make the same crops and flips.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, DistributedSampler, Subset

from pipeline.core.errors import ConfigError
from pipeline.data.device_decode import DeviceDecoded, EncodedClips, collate_encoded
from pipeline.data.shards import ClipDataset, shard_paths
from pipeline.data.transforms import RandomClip, TestTransform, TrainTransform, UniformClips
from pipeline.training.distributed import DistInfo
from pipeline.training.seeding import seed_worker


@dataclass
class TrainingData:
    """The training split (call ``set_epoch`` on it and its sampler every epoch) and its loaders."""

    dataset: ClipDataset
    sampler: DistributedSampler
    loader: DataLoader | DeviceDecoded
    val_loader: DataLoader | None

    def set_epoch(self, epoch: int) -> None:
        """Pick the epoch's shuffle and the epoch's random clips and crops."""
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)


def training_data(cfg: DictConfig, info: DistInfo, device: torch.device) -> TrainingData:
    """Loaders of ``cfg.data``'s train and validation splits for process ``info.rank`` training on ``device``.

    A ``DistributedSampler`` is used even for one process, so W processes split exactly the
    global batches one process would take (``batch_size // W`` clips each). Batches are pinned
    for a CUDA device (the loop copies them with ``non_blocking=True``).
    """
    tc, clip = cfg.train, cfg.model.clip
    transform = TrainTransform(clip.crop_size, tuple(tc.scale_jitter), bool(cfg.data.hflip), tc.max_crop_shift)
    dataset = ClipDataset(
        Path(cfg.data.shards_dir), cfg.data.train_split, RandomClip(clip.num_frames, clip.stride), transform, tc.seed
    )
    if len(dataset) < tc.batch_size:
        raise ConfigError(
            f"split {cfg.data.train_split!r} has {len(dataset)} clips, fewer than train.batch_size={tc.batch_size}"
        )
    sampler = DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=tc.seed, drop_last=True
    )
    on_device = tc.decode_on == "device"
    loader = DataLoader(
        EncodedClips(dataset) if on_device else dataset,
        batch_size=tc.batch_size // info.world_size,
        sampler=sampler,
        num_workers=tc.num_workers,
        collate_fn=collate_encoded if on_device else None,
        pin_memory=device.type == "cuda",
        drop_last=True,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(tc.seed),
    )
    training = DeviceDecoded(loader, transform, device) if on_device else loader
    return TrainingData(dataset, sampler, training, validation_loader(cfg, info))


def validation_loader(cfg: DictConfig, info: DistInfo) -> DataLoader | None:
    """One centre clip and crop per validation video, this process's share (every W-th video).

    None when ``train.val_every`` is 0 or the split has no shards (evaluate reports the real
    multi-view accuracy).
    """
    if not cfg.train.val_every or not shard_paths(Path(cfg.data.shards_dir), cfg.data.val_split):
        return None
    clip = cfg.model.clip
    val_set = ClipDataset(
        Path(cfg.data.shards_dir),
        cfg.data.val_split,
        UniformClips(clip.num_frames, clip.stride, 1),
        TestTransform(clip.crop_size, 1),
    )
    share = Subset(val_set, range(info.rank, len(val_set), info.world_size))
    return DataLoader(share, batch_size=cfg.train.batch_size // info.world_size, num_workers=cfg.train.num_workers)
