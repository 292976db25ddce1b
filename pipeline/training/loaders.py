"""The training's data loaders over the clip shards: one random clip per training video, one
centre clip per validation video, each process taking its share of the global batch.

Training clips are decoded where ``train.decode_on`` says: in the DataLoader workers (``workers``,
the CPU path) or in batches on the training device (``device``: the workers only read the JPEG
bytes; ``pipeline.data.device_decode``). Both paths make the same crops and flips.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from pipeline.core.errors import ConfigError
from pipeline.data.device_decode import DeviceDecoded, EncodedClips, collate_encoded
from pipeline.data.shard_store import open_store
from pipeline.data.shards import ClipDataset
from pipeline.data.transforms import RandomClip, TestTransform, TrainTransform, UniformClips
from pipeline.training.distributed import DistInfo
from pipeline.training.seeding import seed_worker
from pipeline.training.settings import TrainSettings


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


def training_data(settings: TrainSettings, info: DistInfo, device: torch.device) -> TrainingData:
    """Loaders of the train and validation splits for process ``info.rank`` training on ``device``.

    A ``DistributedSampler`` is used even for one process, so W processes split exactly the
    global batches one process would take (``batch_size // W`` clips each). Batches are pinned
    for a CUDA device (the loop copies them with ``non_blocking=True``).
    """
    s, clip, aug = settings, settings.model.clip, settings.augmentation
    batch_size = s.schedule.batch_size
    transform = TrainTransform(clip.crop_size, aug.scale_jitter, aug.hflip, aug.max_crop_shift)
    dataset = ClipDataset(s.shards_dir, s.train_split, RandomClip(clip.num_frames, clip.stride), transform, s.seed)
    if len(dataset) < batch_size:
        raise ConfigError(f"split {s.train_split!r} has {len(dataset)} clips, fewer than train.batch_size={batch_size}")
    sampler = DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=s.seed, drop_last=True
    )
    on_device = s.decode_on == "device"
    loader = DataLoader(
        EncodedClips(dataset) if on_device else dataset,
        batch_size=batch_size // info.world_size,
        sampler=sampler,
        num_workers=s.num_workers,
        collate_fn=collate_encoded if on_device else None,
        pin_memory=device.type == "cuda",
        drop_last=True,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(s.seed),
    )
    training = DeviceDecoded(loader, transform, device) if on_device else loader
    return TrainingData(dataset, sampler, training, validation_loader(settings, info))


def validation_loader(settings: TrainSettings, info: DistInfo) -> DataLoader | None:
    """One centre clip and crop per validation video, this process's share (every W-th video).

    None when ``train.val_every`` is 0 or the split has no shards (evaluate reports the real
    multi-view accuracy).
    """
    s, clip = settings, settings.model.clip
    if not s.val_every or not open_store(s.shards_dir).shards(s.val_split):
        return None
    val_set = ClipDataset(
        s.shards_dir, s.val_split, UniformClips(clip.num_frames, clip.stride, 1), TestTransform(clip.crop_size, 1)
    )
    share = Subset(val_set, range(info.rank, len(val_set), info.world_size))
    return DataLoader(share, batch_size=s.schedule.batch_size // info.world_size, num_workers=s.num_workers)
