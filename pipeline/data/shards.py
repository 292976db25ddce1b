"""Read the preprocess stage's JPEG-frame shards: sampled clips by index (a map-style dataset).

A shard ``<split>-000000.tar`` holds, per clip, ``<clip_id>.<frame:06d>.jpg`` members and a
``<clip_id>.json`` record. ``ClipDataset`` scans the tar headers once into an index of member
offsets, so reading a training clip touches only the JPEGs of the frames it samples (``os.pread``
on a local folder; one batched ranged request to an object store, ``pipeline.data.shard_store``),
and decodes them with ``torchvision.io.decode_jpeg``. Every item draws its randomness from a
generator seeded by (seed, epoch, index), so a sample is the same whatever the number of
DataLoader workers or training processes.

Why not ``webdataset.WebDataset`` for reading: it streams whole tars in order (an
``IterableDataset``), so it reads and decodes every frame of every clip, and what a worker gets
depends on how the shards are split among workers; a ``DistributedSampler`` over a map-style
dataset gives every process exactly its share of the global batch, reading only sampled frames.
On an object store that share is each rank's and worker's clips, not whole shards: a node streams
none of the clips it does not train on, and the batches are those of the local folder.
The shards stay plain WebDataset tars (written by ``webdataset.TarWriter``) for other readers.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.core.errors import StageError
from pipeline.core.seeds import derived_seed
from pipeline.data.jpeg import decode_frames
from pipeline.data.layout import FINGERPRINT, PROVENANCE_FILE, shard_pattern
from pipeline.data.shard_store import LocalStore, RemoteStore, ShardsLocation, open_store

Sampler = Callable[[int, torch.Generator], list[list[int]]]
Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class ClipEntry:
    """Where one clip's frames lie in its shard: data offsets and sizes, frame order."""

    key: str
    meta: dict
    shard: int  # index into the dataset's shard list
    offsets: np.ndarray  # int64 (num_frames,)
    sizes: np.ndarray  # int64 (num_frames,)

    @property
    def num_frames(self) -> int:
        return len(self.offsets)


@dataclass(frozen=True)
class SampledClip:
    """The drawn views of one clip before decoding: the JPEGs they need, each once, and their order."""

    jpegs: list[bytes]
    order: list[int]  # V·T positions into ``jpegs``, view-major
    num_views: int


def shard_paths(shards_dir: Path, split: str) -> list[Path]:
    """The shards of ``split`` in order: ``<shards_dir>/<split>/<split>-NNNNNN.tar``."""
    pattern = shard_pattern(split)
    folder = Path(shards_dir) / split
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name))


def scan_shard(path: Path, shard: int = 0) -> list[ClipEntry]:
    """Index the clips of one local shard from its tar headers (reads only the small JSON members)."""
    with tarfile.open(path) as tar:
        return scan_tar(tar, str(path), shard)


def scan_tar(tar: tarfile.TarFile, where: str, shard: int = 0) -> list[ClipEntry]:
    """Index the clips of an open shard (``where`` names it in errors)."""
    frames: dict[str, dict[int, tuple[int, int]]] = {}
    metas: dict[str, dict] = {}
    for member in tar:
        key, _, suffix = member.name.partition(".")
        if suffix == "json":
            metas[key] = json.loads(tar.extractfile(member).read())
        elif suffix.endswith(".jpg") and suffix[:-4].isdigit():
            frames.setdefault(key, {})[int(suffix[:-4])] = (member.offset_data, member.size)
    entries = []
    for key, meta in metas.items():
        found = frames.get(key, {})
        if sorted(found) != list(range(meta["num_frames"])):
            raise StageError(
                f"{where}: clip {key} has frames {len(found)} of {meta['num_frames']}; "
                "rerun python -m pipeline.preprocess to rebuild the shards"
            )
        spans = np.array([found[i] for i in range(len(found))], dtype=np.int64).reshape(-1, 2)
        entries.append(ClipEntry(key, meta, shard, spans[:, 0].copy(), spans[:, 1].copy()))
    return entries


def scan_store(store: LocalStore | RemoteStore, rel: str, shard: int) -> list[ClipEntry]:
    """Index shard ``rel`` of ``store`` (a remote one is streamed once, and retried as a whole)."""

    def scan() -> list[ClipEntry]:
        with store.open(rel) as handle, tarfile.open(fileobj=handle) as tar:
            return scan_tar(tar, store.where(rel), shard)

    return store.retried(rel, scan)


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded from (seed, epoch, index) alone (independent of worker or rank)."""
    return torch.Generator().manual_seed(derived_seed(seed, epoch, index))


def _refuse_mixed_runs(store: LocalStore | RemoteStore, split: str, entries: list[ClipEntry], names: list[str]):
    """StageError unless every clip carries the fingerprint of ``provenance.json`` (one run's shards).

    Shards without a readable ``provenance.json`` beside them (made by hand) are not checked.
    """
    try:
        expected = str(json.loads(store.read_bytes(PROVENANCE_FILE) or b"")[FINGERPRINT])
    except (ValueError, KeyError, TypeError):
        return
    foreign = [e for e in entries if e.meta.get(FINGERPRINT) != expected]
    if foreign:
        first = names[foreign[0].shard].rpartition("/")[2]
        raise StageError(
            f"{store.where(split)}: {len(foreign)} clips (first {foreign[0].key} in {first}) "
            f"were written by another preprocess run than {PROVENANCE_FILE} names; rerun python -m pipeline.preprocess"
        )


class ClipDataset(torch.utils.data.Dataset):
    """Map-style dataset of sampled clips from the shards of one split.

    ``sampler(num_frames, generator)`` returns V lists of frame indices (views);
    ``transform(frames, generator)`` gets the uint8 (V, T, C, H, W) views. Items are
    ``{"frames": (V, T, C, H, W) tensor, "label": int, "key": str}``. ``shards_dir`` is a folder
    or a URL (``shard_store``); descriptors are opened lazily per process and released by
    ``close()`` (or when the dataset is collected).
    """

    def __init__(
        self,
        shards_dir: ShardsLocation,
        split: str,
        sampler: Sampler,
        transform: Transform | None = None,
        seed: int = 0,
    ):
        self.store = open_store(shards_dir)
        if not self.store.exists():
            raise StageError(
                f"shards dir {self.store.where()} not found (data.shards_dir); "
                "run `python -m pipeline.preprocess` first"
            )
        self.names = self.store.shards(split)
        if not self.names:
            raise StageError(
                f"{self.store.where(split)}: no {split}-NNNNNN.tar shards; run python -m pipeline.preprocess first"
            )
        self.entries = [e for i, name in enumerate(self.names) for e in scan_store(self.store, name, i)]
        _refuse_mixed_runs(self.store, split, self.entries, self.names)
        self.sampler, self.transform, self.seed = sampler, transform, seed
        self.epoch = 0

    @property
    def keys(self) -> list[str]:
        return [e.key for e in self.entries]

    @property
    def labels(self) -> list[int]:
        return [int(e.meta["label_index"]) for e in self.entries]

    @property
    def kinds(self) -> list[str]:
        """Each clip's annotation ``kind`` ("" where none was recorded)."""
        return [str(e.meta.get("kind", "")) for e in self.entries]

    @property
    def num_frames(self) -> list[int]:
        return [e.num_frames for e in self.entries]

    def set_epoch(self, epoch: int) -> None:
        """Pick the epoch whose random draws items use (call before each epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def read_jpegs(self, index: int, frames: Sequence[int]) -> list[bytes]:
        """JPEG bytes of the given frames of clip ``index`` (only those are read)."""
        entry = self.entries[index]
        return self.store.read_spans(self.names[entry.shard], entry.offsets[list(frames)], entry.sizes[list(frames)])

    def sample(self, index: int, generator: torch.Generator) -> SampledClip:
        """Draw clip ``index``'s views from ``generator`` and read the JPEGs they need."""
        views = self.sampler(self.entries[index].num_frames, generator)
        needed = sorted({i for view in views for i in view})
        position = {frame: k for k, frame in enumerate(needed)}
        order = [position[i] for view in views for i in view]
        return SampledClip(self.read_jpegs(index, needed), order, len(views))

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        generator = item_generator(self.seed, self.epoch, index)
        clip = self.sample(index, generator)
        frames = decode_frames(clip.jpegs, clip.order).unflatten(0, (clip.num_views, -1))
        if self.transform is not None:
            frames = self.transform(frames, generator)
        return {"frames": frames, "label": int(entry.meta["label_index"]), "key": entry.key}

    def close(self) -> None:
        """Release this process's shard descriptors."""
        self.store.close()

    def __del__(self) -> None:
        if "store" in self.__dict__:  # not when __init__ failed before opening it
            self.store.close()
