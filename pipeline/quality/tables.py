"""The tables the validate stage checks, built from the data with pandas (no Great Expectations).

- ``annotations``: every row of ``<root>/annotations/*.csv``, read as plain strings, so a file with
  a missing column or a malformed row is reported, not crashed on;
- ``manifest``: ``<shards_dir>/manifest.csv`` plus derived columns (``ok_num_frames``, ...);
- ``train_classes``: one row per class of ``classes.txt`` with its ok clips in the train split;
- ``pixels``: statistics of the decoded frames of a seeded sample of clips from every shard.

Every table has a ``row`` column naming each row for people (file:line, clip id, class name),
so a failing expectation can quote the rows it failed on. The shard reader (and with it torch)
is imported inside the functions that read shards.
"""

from __future__ import annotations

import csv
import math
import random
import tarfile
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.errors import StageError
from pipeline.data.kinetics import UNLABELLED_SPLIT
from pipeline.data.layout import MANIFEST_COLUMNS, MANIFEST_FILE

ANNOTATION_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
PIXEL_FRAMES_PER_CLIP = 16  # evenly spaced frames decoded per sampled clip
UNREADABLE_SHARD = (StageError, tarfile.TarError, OSError)  # truncated tar, clip missing frames
ROW = "row"  # every table's row identifier (file:line, clip id, class name)


# --- annotations --------------------------------------------------------------------------


def _whole_seconds(text: pd.Series) -> pd.Series:
    """Non-negative whole numbers of ``text`` as floats; NaN where the text is not one."""
    return pd.to_numeric(text.where(text.str.fullmatch(r"\d+", na=False)), errors="coerce")


def _annotation_records(path: Path) -> list[dict[str, Any]]:
    """The rows of one annotation CSV as dicts of stripped strings plus ``row`` and field counts."""
    records = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [name.strip() for name in next(reader, [])]
        for row in reader:
            if not row:
                continue
            record = dict.fromkeys(header, "")  # a short row's absent fields are empty
            record.update((h, v.strip()) for h, v in zip(header, row))
            record.update(
                {ROW: f"annotations/{path.name}:{reader.line_num}", "fields": len(row), "header_fields": len(header)}
            )
            records.append(record)
    return records


def annotations_table(root: Path) -> pd.DataFrame:
    """Every row of ``<root>/annotations/*.csv`` as strings; absent columns are NaN.

    Columns: ``row`` ("annotations/train.csv:17"), the official columns, ``fields`` and
    ``header_fields`` (per-row field counts), ``checked_label`` (the label; NaN for an unlabelled
    test row), ``start_s``/``end_s`` (numbers or NaN) and ``clip_id`` (NaN when times are bad).
    """
    files = sorted((Path(root) / "annotations").glob("*.csv"))
    if not files:
        raise StageError(
            f"{Path(root) / 'annotations'}: no *.csv annotation files; set data.root to a "
            "Kinetics-layout dataset (python -m pipeline.generate writes one)"
        )
    records = [record for path in files for record in _annotation_records(path)]
    table = pd.DataFrame.from_records(records)
    table = table.reindex(columns=[ROW, *ANNOTATION_COLUMNS, "fields", "header_fields"])
    unlabelled = (table["label"] == "") & (table["split"] == UNLABELLED_SPLIT)
    table["checked_label"] = table["label"].mask(unlabelled)
    table["start_s"] = _whole_seconds(table["time_start"])
    table["end_s"] = _whole_seconds(table["time_end"])
    valid = table["start_s"].notna() & table["end_s"].notna() & table["youtube_id"].notna()
    table["clip_id"] = None
    table.loc[valid, "clip_id"] = [
        f"{y}_{int(s):06d}_{int(e):06d}"
        for y, s, e in zip(table["youtube_id"][valid], table["start_s"][valid], table["end_s"][valid])
    ]
    return table


# --- manifest and classes -----------------------------------------------------------------


def manifest_table(shards_dir: Path, classes: list[str], in_shards: set[str]) -> pd.DataFrame:
    """``manifest.csv`` as strings plus numeric columns of the ok clips (NaN on other rows).

    ``ok_num_frames``, ``ok_short_side`` and ``ok_fps`` are -1 on an ok row whose value is not
    a number, so a blank never passes; ``class_at_index`` is ``classes[label_index]``;
    ``missing``/``failed`` are 0/1 so their mean is the fraction; ``ok_in_shard`` says whether
    an ok clip is among ``in_shards`` (``<shard>:<clip_id>`` of the clips the shards hold).
    """
    table = pd.read_csv(Path(shards_dir) / MANIFEST_FILE, dtype=str, keep_default_na=False)
    raw = table.reindex(columns=MANIFEST_COLUMNS)  # absent columns read as NaN below
    table[ROW] = raw["clip_id"]
    status = raw["status"]
    ok = status == "ok"

    def ok_number(column: pd.Series) -> pd.Series:
        return column.where(ok).mask(ok & column.isna(), -1.0)

    numbers = {name: pd.to_numeric(raw[name], errors="coerce") for name in ("height", "width")}
    short_side = pd.concat(numbers, axis=1).min(axis=1, skipna=False)
    table["ok_num_frames"] = ok_number(pd.to_numeric(raw["num_frames"], errors="coerce"))
    table["ok_short_side"] = ok_number(short_side)
    table["ok_fps"] = ok_number(pd.to_numeric(raw["fps"], errors="coerce"))
    table["missing"] = (status == "missing").astype(float)
    table["failed"] = (status == "failed").astype(float)
    index = pd.to_numeric(raw["label_index"].where(raw["label_index"].str.fullmatch(r"\d+", na=False)))
    table["class_at_index"] = [
        classes[int(i)] if pd.notna(i) and int(i) < len(classes) else f"<no class at index {text!r}>"
        for i, text in zip(index, raw["label_index"])
    ]
    table["label_index_value"] = index
    table["ok_in_shard"] = [
        f"{shard}:{clip}" in in_shards if is_ok else None
        for shard, clip, is_ok in zip(raw["shard"], raw["clip_id"], ok)
    ]
    return table


def train_classes_table(manifest: pd.DataFrame, classes: list[str], train_split: str) -> pd.DataFrame:
    """One row per class (``row`` = class name) with ``train_ok_clips`` in ``train_split``."""
    raw = manifest.reindex(columns=["split", "status"])
    train_ok = manifest[(raw["split"] == train_split) & (raw["status"] == "ok")]
    counts = train_ok["label_index_value"].value_counts()
    return pd.DataFrame(
        {
            ROW: classes,
            "class_index": range(len(classes)),
            "train_ok_clips": [int(counts.get(float(i), 0)) for i in range(len(classes))],
        }
    )


# --- shards and pixels --------------------------------------------------------------------


def spread_indices(num_frames: int, count: int) -> list[int]:
    """Up to ``count`` frame indices spread evenly over ``0 .. num_frames - 1``."""
    count = min(count, num_frames)
    if count <= 1:
        return [0] * count
    return [round(k * (num_frames - 1) / (count - 1)) for k in range(count)]


def index_shards(shards_dir: Path, splits: list[str]) -> tuple[list[Any], list[str]]:
    """A ``ClipDataset`` per split that has shards, and ``<shard>: <error>`` for each shard that
    cannot be indexed (its split gets no dataset). Close the datasets when done."""
    from pipeline.data.shards import ClipDataset, shard_paths

    datasets, errors = [], []
    for split in splits:
        if not shard_paths(shards_dir, split):
            continue
        try:
            datasets.append(ClipDataset(shards_dir, split, lambda n, _: [spread_indices(n, PIXEL_FRAMES_PER_CLIP)]))
        except UNREADABLE_SHARD as err:
            errors += _shard_errors(shard_paths(shards_dir, split)) or [f"{split}: {err}"]  # e.g. mixed runs
    return datasets, errors


def _shard_errors(paths: list[Path]) -> list[str]:
    """``<shard>: <error>`` of each shard of ``paths`` that cannot be indexed."""
    from pipeline.data.shards import scan_shard

    errors = []
    for path in paths:
        try:
            scan_shard(path)
        except UNREADABLE_SHARD as err:
            errors.append(f"{_shard_name(path)}: {err}")
    return errors


def _shard_name(path: Path) -> str:
    """A shard's path as the manifest writes it: ``<split>/<split>-NNNNNN.tar``."""
    return f"{path.parent.name}/{path.name}"


def shard_members(datasets: list[Any]) -> set[str]:
    """``<shard>:<clip_id>`` of every clip indexed in ``datasets``."""
    return {f"{d.names[e.shard]}:{e.key}" for d in datasets for e in d.entries}


def pixels_table(datasets: list[Any], errors: list[str], clips_per_shard: int, seed: int) -> pd.DataFrame:
    """Pixel statistics of ``clips_per_shard`` clips drawn per shard (seeded by seed and shard name).

    Columns: ``row`` ("train/train-000000.tar:<clip_id>", or one of ``errors``),
    ``decodes`` (bool), ``mean``/``std`` of the decoded uint8 RGB values of up to
    PIXEL_FRAMES_PER_CLIP evenly spaced frames (NaN when the JPEGs do not decode) and
    ``short_side`` of the decoded frames.
    """
    records = [_undecodable(error) for error in errors]
    for dataset in datasets:
        by_shard = _clips_by_shard(dataset.entries)
        for shard, name in enumerate(dataset.names):  # names: <split>/<split>-NNNNNN.tar, as the manifest
            members = by_shard.get(shard, [])
            rng = random.Random(f"{seed}/{name}")
            for index in sorted(rng.sample(members, min(clips_per_shard, len(members)))):
                records.append(_pixel_stats(dataset, index, name))
    return pd.DataFrame.from_records(records, columns=[ROW, "decodes", "mean", "std", "short_side"])


def _clips_by_shard(entries: list[Any]) -> dict[int, list[int]]:
    """Indices of ``entries`` (ClipEntry) grouped by their shard, in one pass: looking each shard's
    clips up in all entries would cost shards x clips (Kinetics-400: ~940 x 240,000)."""
    groups: dict[int, list[int]] = {}
    for index, entry in enumerate(entries):
        groups.setdefault(entry.shard, []).append(index)
    return groups


def _undecodable(row: str) -> dict[str, Any]:
    """The pixels row of a clip (or shard) that could not be decoded: no statistics."""
    return {ROW: row, "decodes": False, "mean": math.nan, "std": math.nan, "short_side": math.nan}


def _pixel_stats(dataset: Any, index: int, shard: str) -> dict[str, Any]:
    """Statistics of one clip of ``dataset`` (a ClipDataset); ``decodes`` False on a bad JPEG."""
    row = f"{shard}:{dataset.entries[index].key}"
    try:
        frames = dataset[index]["frames"]  # uint8 (1, T, C, H, W)
    except RuntimeError:  # torchvision raises RuntimeError on undecodable JPEG data
        return _undecodable(row)
    values = frames.float()
    return {
        ROW: row,
        "decodes": True,
        "mean": values.mean().item(),
        "std": values.std().item(),
        "short_side": min(frames.shape[-2:]),
    }
