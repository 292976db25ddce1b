"""Kinetics scale: benchmarks/kinetics_scale.py's metadata is shaped like Kinetics-400 (so its timings
are Kinetics'), and the validate stage's pixel sample groups the clips by shard in one pass (one
pass per shard made it shards x clips, ~940 x 240,000 at Kinetics size)."""

from __future__ import annotations

import csv
import importlib.util
import re
import sys
from collections import Counter
from pathlib import Path

import torch

from pipeline.data.kinetics import find_video, load_classes, read_annotations
from pipeline.data.layout import MANIFEST_COLUMNS, MANIFEST_FILE
from pipeline.quality.tables import pixels_table

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("kinetics_scale", ROOT / "benchmarks" / "kinetics_scale.py")
scale = sys.modules[SPEC.name] = importlib.util.module_from_spec(SPEC)  # dataclasses look it up
SPEC.loader.exec_module(scale)
CLASSES = load_classes(ROOT / "pipeline" / "resources" / "kinetics400_classes.txt")


def test_the_full_size_has_kinetics_400s_rows_classes_and_videos() -> None:
    full = scale.kinetics_like(scale.KINETICS_ROWS, CLASSES)
    anns = full.annotations
    assert len(anns) == 246_534 and len({a.clip_id for a in anns}) == len(anns)
    assert {a.label for a in anns} == set(CLASSES) and len(CLASSES) == 400
    assert all(CLASSES[a.label_index] == a.label for a in anns)
    assert int(full.has_video.sum()) == 240_258  # 97.45 %, as downloaded Kinetics-400
    assert Counter(a.split for a in anns) == {"train": 226_628, "validate": 19_906}
    assert scale.kinetics_like(3000, CLASSES).annotations == anns[:3000]  # a size is the full set's first rows


def test_a_tiny_size_is_a_kinetics_root_and_the_manifest_preprocess_writes(tmp_path: Path) -> None:
    data = scale.kinetics_like(3000, CLASSES)
    scale.write_videos(tmp_path / "videos", data)
    root, shards = scale.write_dataset(tmp_path / "rows", data, tmp_path / "videos")
    classes = load_classes(root / "classes.txt")
    assert classes == CLASSES and len(set(classes)) == 400  # the packaged canonical list (a clone has no ../shared)
    parsed = read_annotations(root, classes)
    assert [a.clip_id for a in parsed] == [a.clip_id for a in data.annotations if a.split == "train"] + [
        a.clip_id for a in data.annotations if a.split == "validate"
    ]
    found = sum(find_video(root, a) is not None for a in parsed)
    assert 0.96 < found / len(parsed) < 0.99

    with open(shards / MANIFEST_FILE, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == MANIFEST_COLUMNS and len(rows) == 3000
    status = Counter(r["status"] for r in rows)
    assert status["ok"] + status["failed"] == found and 0.01 < status["missing"] / len(rows) < 0.04
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(90 <= int(r["num_frames"]) <= 300 and r["fps"] == "30" for r in ok)
    assert all(min(int(r["height"]), int(r["width"])) == 256 for r in ok)
    per_shard = Counter(r["shard"] for r in ok)
    assert all(re.fullmatch(rf"{s}/{s}-\d{{6}}\.tar", name) for name in per_shard for s in [name.split("/")[0]])
    assert max(per_shard.values()) == scale.SAMPLES_PER_SHARD


class CountedEntry:
    """A ClipEntry stand-in that counts how often its shard is looked up."""

    def __init__(self, key: str, shard: int, reads: list[int]) -> None:
        self.key, self._shard, self._reads = key, shard, reads

    @property
    def shard(self) -> int:
        self._reads[0] += 1
        return self._shard


class GreyClips:
    """A dataset stand-in: ``names``, ``entries`` and textured frames for every clip."""

    def __init__(self, shards: int, per_shard: int, reads: list[int]) -> None:
        self.names = [f"train/train-{i:06d}.tar" for i in range(shards)]
        self.entries = [CountedEntry(f"clip{s}_{k}", s, reads) for s in range(shards) for k in range(per_shard)]

    def __getitem__(self, index: int) -> dict:
        return {"frames": torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(1, 2, 3, 8, 8)}


def test_the_pixel_sample_looks_each_clips_shard_up_once_not_once_per_shard() -> None:
    reads = [0]
    dataset = GreyClips(shards=40, per_shard=10, reads=reads)
    table = pixels_table([dataset], [], clips_per_shard=2, seed=0)
    assert reads[0] <= len(dataset.entries)  # per shard over all entries would be 40 x 400
    shard_of = {row: row.split(":")[0] for row in table["row"]}
    assert Counter(shard_of.values()) == dict.fromkeys(dataset.names, 2)
    assert all(row.split(":")[1].startswith(f"clip{int(name[-10:-4])}_") for row, name in shard_of.items())
