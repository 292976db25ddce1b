"""Writing one split's clips into WebDataset shards that a killed run can pick up after.

Shards are written by ``webdataset.TarWriter`` with fixed metadata (mtime 0, no owner names,
mode 0644), so the same clips give the same bytes, under a temp name and renamed when full.
After each shard a state record ``<shards_dir>/.state/<split>/<shard>.json`` lists the
fingerprints and manifest rows of every clip consumed since the previous shard (ok or not), the
run's fingerprint and the shard's sha256: a rerun keeps a shard only when all of these match.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import BinaryIO

from webdataset import TarWriter

from pipeline.core.files import temp_name, write_atomic
from pipeline.data.frames import ClipResult
from pipeline.data.kinetics import Annotation
from pipeline.data.layout import FINGERPRINT, STATE_DIR, shard_name


def clip_meta(ann: Annotation, result: ClipResult, fps: float, fingerprint: str) -> dict:
    """The ``<clip_id>.json`` record of an ok clip (``fingerprint``: the run's, see layout)."""
    return {
        "label": ann.label, "label_index": ann.label_index, "split": ann.split,
        "youtube_id": ann.youtube_id, "time_start": ann.time_start, "time_end": ann.time_end, "kind": ann.kind,
        "num_frames": len(result.jpegs), "height": result.height, "width": result.width,
        "fps": fps, FINGERPRINT: fingerprint,
    }


def manifest_row(ann: Annotation, result: ClipResult, fps: float, shard: str) -> dict:
    """The manifest row of one annotated clip (numbers empty unless it is ok)."""
    ok = result.status == "ok"
    return {
        "clip_id": ann.clip_id, "youtube_id": ann.youtube_id, "label": ann.label,
        "label_index": ann.label_index, "split": ann.split, "time_start": ann.time_start,
        "time_end": ann.time_end, "kind": ann.kind, "status": result.status, "reason": result.reason,
        "num_frames": len(result.jpegs) if ok else "", "height": result.height if ok else "",
        "width": result.width if ok else "", "fps": f"{fps:g}" if ok else "", "shard": shard,
    }


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class SplitWriter:
    """Streams one split's results into shards and keeps each finished shard's state record."""

    def __init__(self, shards_dir: Path, split: str, fingerprint: str, first_index: int,
                 samples_per_shard: int, fps: float):
        self.split_dir = shards_dir / split
        self.state_dir = shards_dir / STATE_DIR / split
        self.split, self.fingerprint, self.fps = split, fingerprint, fps
        self.samples_per_shard = samples_per_shard
        self.index = first_index
        self.file: BinaryIO | None = None
        self.tar: TarWriter | None = None
        self.samples = 0
        self.pending: list[tuple[str, dict]] = []  # (clip fingerprint, manifest row) since last shard
        self.rows: list[dict] = []  # manifest rows of every clip this writer consumed

    @property
    def shard_path(self) -> Path:
        return self.split_dir / shard_name(self.split, self.index)

    def add(self, ann: Annotation, clip_fingerprint: str, result: ClipResult) -> None:
        """Write an ok clip's frames and record into the open shard; record every clip's row."""
        shard = ""
        if result.status == "ok":
            if self.tar is None:
                self.file = open(temp_name(self.shard_path), "wb")
                self.tar = TarWriter(self.file, user="", group="", mode=0o644, mtime=0, encoder=False)
            meta = json.dumps(clip_meta(ann, result, self.fps, self.fingerprint), sort_keys=True)
            frames = {f"{i:06d}.jpg": jpeg for i, jpeg in enumerate(result.jpegs)}
            self.tar.write({"__key__": ann.clip_id, **frames, "json": meta.encode()})  # members sorted by name
            self.samples += 1
            shard = f"{self.split}/{self.shard_path.name}"
        row = manifest_row(ann, result, self.fps, shard)
        self.pending.append((clip_fingerprint, row))
        self.rows.append(row)
        if self.samples == self.samples_per_shard:
            self.finish_shard()

    def _close(self) -> None:
        tar, file, self.tar, self.file = self.tar, self.file, None, None
        try:
            tar.close()
        finally:
            file.close()

    def abort(self) -> None:
        """Drop the open shard's temp file (a failed run leaves only finished shards)."""
        if self.tar is not None:
            try:
                self._close()
            except OSError:  # the disk that failed the write may fail the close too
                pass
            temp_name(self.shard_path).unlink(missing_ok=True)

    def finish_shard(self) -> None:
        """Close the open shard, rename it into place, then record its state."""
        if self.tar is None:
            return
        self._close()
        os.replace(temp_name(self.shard_path), self.shard_path)
        state = {
            "params": self.fingerprint,
            "fingerprints": [fp for fp, _ in self.pending],
            "rows": [row for _, row in self.pending],
            "sha256": file_sha256(self.shard_path),
        }
        write_atomic(self.state_dir / f"{self.shard_path.name}.json", json.dumps(state, sort_keys=True).encode())
        self.samples, self.pending = 0, []
        self.index += 1


def reusable_prefix(shards_dir: Path, split: str, fingerprint: str,
                    clip_fingerprints: list[str]) -> tuple[int, list[dict]]:
    """(number of shards of a previous run that can be kept, manifest rows of their clips)."""
    index, consumed, rows = 0, 0, []
    while True:
        shard = shards_dir / split / shard_name(split, index)
        state_path = shards_dir / STATE_DIR / split / f"{shard.name}.json"
        if not (shard.is_file() and state_path.is_file()):
            break
        try:
            state = json.loads(state_path.read_text())
        except ValueError:
            break
        taken = state.get("fingerprints", [])
        if (state.get("params") != fingerprint or not taken
                or clip_fingerprints[consumed:consumed + len(taken)] != taken
                or state.get("sha256") != file_sha256(shard)):
            break
        rows += state["rows"]
        consumed += len(taken)
        index += 1
    return index, rows


def remove_stale(directory: Path, pattern: re.Pattern, keep: set[str]) -> None:
    """Delete files in ``directory`` whose names match ``pattern`` and are not in ``keep``."""
    if directory.is_dir():
        for path in directory.iterdir():
            if path.is_file() and pattern.fullmatch(path.name) and path.name not in keep:
                path.unlink()
