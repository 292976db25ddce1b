"""Training clips decoded on the training device: workers read the JPEGs, the main process decodes.

With ``train.decode_on=device`` a DataLoader worker does only what needs no pixels: it draws the
item's frames and crop (the same draws from the same generator, in the same order, as
``ClipDataset`` with ``TrainTransform``) and reads the JPEG bytes. The bytes of a batch travel
back to back in one buffer, pinned by the DataLoader, and the main process decodes them in one
``torchvision.io.decode_jpeg(device=...)`` call (nvJPEG on CUDA), then resizes, crops and flips
each item there. So the CPU workers, which decode 8 frames per clip on the other path, no longer
bound how fast a GPU trains; the crops and flips are the ones the CPU path makes, and with
``device="cpu"`` the pixels are too (what CI checks).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg

from pipeline.core.errors import StageError
from pipeline.data.shards import ClipDataset, item_generator
from pipeline.data.transforms import CropPlan, TrainTransform


@dataclass(frozen=True)
class ItemLayout:
    """Where one item's frames lie among its batch's JPEGs, and how to cut them."""

    count: int  # JPEGs of the item, each needed frame once
    order: list[int]  # V·T positions into them, view-major
    num_views: int
    plan: CropPlan
    size: tuple[int, int]  # (H, W) of the frames, as the shard's record says
    key: str


@dataclass(frozen=True)
class EncodedClip:
    """A training item with its frames still JPEG and its crop drawn, not yet cut."""

    jpegs: list[bytes]
    layout: ItemLayout
    label: int


class EncodedClips(Dataset):
    """The items of ``clips`` (whose transform is a ``TrainTransform``) as ``EncodedClip``s."""

    def __init__(self, clips: ClipDataset) -> None:
        if not isinstance(clips.transform, TrainTransform):
            raise TypeError(f"decoding on the device takes a TrainTransform, not {clips.transform!r}")
        self.clips, self.transform = clips, clips.transform

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> EncodedClip:
        entry = self.clips.entries[index]
        generator = item_generator(self.clips.seed, self.clips.epoch, index)
        clip = self.clips.sample(index, generator)
        size = (int(entry.meta["height"]), int(entry.meta["width"]))
        plan = self.transform.plan(*size, generator)  # after the sampler's draws, as on the CPU path
        layout = ItemLayout(len(clip.jpegs), clip.order, clip.num_views, plan, size, entry.key)
        return EncodedClip(clip.jpegs, layout, int(entry.meta["label_index"]))


@dataclass(frozen=True)
class EncodedBatch:
    """A batch of ``EncodedClip``s: every JPEG back to back in one uint8 buffer, plus the layouts."""

    data: torch.Tensor  # uint8 (total bytes,)
    sizes: list[int]  # bytes of each JPEG, item by item
    layouts: list[ItemLayout]
    label: torch.Tensor  # int64 (N,)

    def pin_memory(self) -> EncodedBatch:
        """The DataLoader's pin-memory thread calls this: page-locked buffers copy asynchronously."""
        return replace(self, data=self.data.pin_memory(), label=self.label.pin_memory())


def collate_encoded(items: list[EncodedClip]) -> EncodedBatch:
    """DataLoader ``collate_fn`` of ``EncodedClips``: one buffer for the whole batch's JPEGs."""
    jpegs = [jpeg for item in items for jpeg in item.jpegs]
    data = torch.frombuffer(bytearray().join(jpegs), dtype=torch.uint8)
    labels = torch.tensor([item.label for item in items])
    return EncodedBatch(data, [len(jpeg) for jpeg in jpegs], [item.layout for item in items], labels)


def decode_batch(batch: EncodedBatch, transform: TrainTransform, device: torch.device) -> torch.Tensor:
    """uint8 ``(N, V, C, T, S, S)`` on ``device``: the batch's JPEGs decoded at once there, each item cut
    as its plan says."""
    decoded = decode_jpeg(list(torch.split(batch.data, batch.sizes)), mode=ImageReadMode.RGB, device=device)
    clips, first = [], 0
    for layout in batch.layouts:
        frames = torch.stack([decoded[first + k] for k in layout.order])
        first += layout.count
        if tuple(frames.shape[-2:]) != layout.size:
            raise StageError(
                f"clip {layout.key}: frames are {frames.shape[-2]}x{frames.shape[-1]}, its shard record says "
                f"{layout.size[0]}x{layout.size[1]}; rerun python -m pipeline.preprocess to rebuild the shards"
            )
        clips.append(transform.apply(frames.unflatten(0, (layout.num_views, -1)), layout.plan))
    return torch.stack(clips)


class DeviceDecoded:
    """``loader`` over ``EncodedClips``, iterated as ``{"frames", "label", "key"}`` batches whose frames
    are decoded on ``device`` (what the training loop takes from the CPU path's loader)."""

    def __init__(self, loader: DataLoader, transform: TrainTransform, device: torch.device) -> None:
        self.loader, self.transform, self.device = loader, transform, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            frames = decode_batch(batch, self.transform, self.device)
            yield {"frames": frames, "label": batch.label, "key": [layout.key for layout in batch.layouts]}
