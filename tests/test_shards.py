"""The shard reader (pipeline.data.shards) on shards made by the real preprocess stage."""

from __future__ import annotations

import gc
import os
import tarfile
import warnings
from pathlib import Path

import pytest
import torch
from torchvision.io import decode_jpeg

from pipeline.core.errors import StageError
from pipeline.data.clips import random_clip_indices
from pipeline.data.jpeg import decode_frames
from pipeline.data.shards import ClipDataset, item_generator, shard_paths

from helpers import CLASSES, GOOD_CLIPS, clip_id, iter_shard_clips, read_manifest, run_stage, write_kinetics_root

TRAIN = sorted((clip_id(c[2]), CLASSES.index(c[1])) for c in GOOD_CLIPS if c[0] == "train")


def two_views(num_frames: int, generator: torch.Generator) -> list[list[int]]:
    """A fixed view (first, last, first) plus a random strided one."""
    return [[0, num_frames - 1, 0], random_clip_indices(num_frames, 3, 2, generator)]


@pytest.fixture(scope="module")
def good_clip_shards(tmp_path_factory) -> Path:
    """Shards dir of the GOOD_CLIPS alone: 4 train clips in 2 shards, 2 validate clips in 1."""
    tmp = tmp_path_factory.mktemp("shards")
    root = write_kinetics_root(tmp / "root", faults=False)
    run_stage(root, tmp / "shards", samples_per_shard=3)
    return tmp / "shards"


def member_bytes(shard: Path, name: str) -> bytes:
    with tarfile.open(shard) as tar:
        return tar.extractfile(name).read()


def decode_reference(jpeg: bytes) -> torch.Tensor:
    return decode_jpeg(torch.frombuffer(bytearray(jpeg), dtype=torch.uint8))


def test_iter_shard_yields_every_clip_with_its_tar_members(good_clip_shards):
    paths = shard_paths(good_clip_shards, "train")
    assert [p.name for p in paths] == ["train-000000.tar", "train-000001.tar"]
    records = [r for p in paths for r in iter_shard_clips(p)]
    assert [(r.key, r.meta["label_index"]) for r in records] == TRAIN
    manifest = read_manifest(good_clip_shards)
    for path in paths:
        for record in iter_shard_clips(path):
            assert len(record.jpegs) == record.meta["num_frames"]
            assert record.meta["num_frames"] == int(manifest[record.key]["num_frames"])
            for i, jpeg in enumerate(record.jpegs):
                assert jpeg == member_bytes(path, f"{record.key}.{i:06d}.jpg")


def test_dataset_metadata_comes_from_the_shards(good_clip_shards):
    ds = ClipDataset(good_clip_shards, "train", two_views)
    manifest = read_manifest(good_clip_shards)
    assert len(ds) == len(TRAIN)
    assert list(zip(ds.keys, ds.labels)) == TRAIN
    assert ds.num_frames == [int(manifest[key]["num_frames"]) for key in ds.keys]
    ds.close()


def test_items_are_the_sampled_frames_decoded_exactly(good_clip_shards):
    seen = []

    def transform(frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seen.append(frames.shape)
        return frames

    ds = ClipDataset(good_clip_shards, "train", two_views, transform=transform, seed=3)
    manifest = read_manifest(good_clip_shards)
    for index in range(len(ds)):
        item = ds[index]
        key, n = item["key"], ds.num_frames[index]
        views = two_views(n, item_generator(3, 0, index))
        shard = good_clip_shards / manifest[key]["shard"]
        expected = torch.stack(
            [torch.stack([decode_reference(member_bytes(shard, f"{key}.{i:06d}.jpg")) for i in view]) for view in views]
        )
        assert item["frames"].dtype == torch.uint8 and item["frames"].shape[:3] == (2, 3, 3)
        assert torch.equal(item["frames"], expected)
        assert item["label"] == dict(TRAIN)[key]
        assert seen[-1] == expected.shape
    ds.close()


def test_only_the_needed_frames_are_read(good_clip_shards, monkeypatch):
    ds = ClipDataset(good_clip_shards, "train", lambda n, g: [[1, 1, 2], [2, 1, 1]])
    reads = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, size, offset: reads.append(size) or real_pread(fd, size, offset))
    ds[0]
    assert len(reads) == 2
    ds.close()


def test_items_depend_on_seed_epoch_index_not_on_workers(good_clip_shards):
    def draw(n: int, generator: torch.Generator) -> list[list[int]]:
        return [[int(torch.randint(0, n, (1,), generator=generator)) for _ in range(6)]]

    ds = ClipDataset(good_clip_shards, "train", draw)
    ds.set_epoch(2)
    direct = [ds[i] for i in range(len(ds))]
    loaded = list(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2))
    assert [d["key"] for d in loaded] == [d["key"] for d in direct]
    assert all(torch.equal(a["frames"], b["frames"]) for a, b in zip(direct, loaded))
    ds.set_epoch(3)
    assert any(not torch.equal(ds[i]["frames"], d["frames"]) for i, d in enumerate(direct))
    ds.close()


def test_decode_frames_repeats_without_decoding_twice(good_clip_shards):
    record = next(iter_shard_clips(shard_paths(good_clip_shards, "validate")[0]))
    frames = decode_frames(record.jpegs, [1, 0, 1])
    assert torch.equal(frames[0], frames[2])
    assert torch.equal(frames[1], decode_reference(record.jpegs[0]))


def test_no_resource_warnings_and_clear_error_without_shards(good_clip_shards, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ClipDataset(good_clip_shards, "validate", two_views)
        ds[0], ds[1]
        for _ in iter_shard_clips(shard_paths(good_clip_shards, "train")[0]):
            break
        del ds
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    with pytest.raises(StageError, match="run python -m pipeline.preprocess"):
        ClipDataset(tmp_path, "train", two_views)


@pytest.mark.parametrize(
    ("spans", "max_gap", "blocks"),
    [
        ([(0, 10), (10, 20)], 0, [(0, 20)]),  # touching
        ([(0, 10), (15, 20)], 4, [(0, 10), (15, 20)]),  # a gap wider than allowed
        ([(0, 10), (15, 20)], 5, [(0, 20)]),
        ([(30, 40), (0, 10), (12, 14)], 2, [(0, 14), (30, 40)]),  # any order
        ([(0, 50), (10, 20)], 0, [(0, 50)]),  # one inside another
    ],
)
def test_spans_are_fetched_in_merged_blocks_and_cut_back_out(spans, max_gap, blocks) -> None:
    from pipeline.data.shard_store import _cut_out, merged_blocks

    assert merged_blocks(spans, max_gap) == blocks
    data = bytes(range(64))
    fetched = [data[start:end] for start, end in blocks]
    assert [_cut_out(span, blocks, fetched) for span in spans] == [data[start:end] for start, end in spans]
