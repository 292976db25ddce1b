"""``preprocess``: every annotated clip of a Kinetics-layout root into frame shards + manifest.

Per split, ``<shards_dir>/<split>/<split>-000000.tar``... (members ``<clip_id>.<frame:06d>.jpg``
and ``<clip_id>.json``, clips sorted by clip_id, ``samples_per_shard`` clips per shard), plus
``<shards_dir>/manifest.csv`` with one row per annotated clip (status ok | missing | failed and
ffmpeg's reason) and ``provenance.json``: the format version, the decoding params and the
toolchain that made the bytes. Shards a killed run finished are kept (``shard_writer``); a run
with another fingerprint starts from a clean folder. Bad videos never stop the run.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from pipeline.core.errors import StageError
from pipeline.core.files import TMP_SUFFIX, write_atomic
from pipeline.data.frames import ClipJob, Decoder, decode_all
from pipeline.data.kinetics import Annotation, find_video, load_classes, read_annotations
from pipeline.data.layout import (FINGERPRINT, FORMAT_VERSION, MANIFEST_COLUMNS, MANIFEST_FILE, PROVENANCE_FILE,
                                  STATE_DIR, read_fingerprint, shard_name, shard_pattern)
from pipeline.data.provenance import toolchain
from pipeline.data.shard_writer import SplitWriter, remove_stale, reusable_prefix
from pipeline.data.video import WHEEL_FFMPEG


@dataclass(frozen=True)
class DecodeSettings:
    """How clips become frames and shards (``data.*`` and ``video.ffmpeg``)."""

    fps: float
    short_side: int
    jpeg_quality: int
    trim: bool
    samples_per_shard: int
    ffmpeg_setting: str = WHEEL_FFMPEG

    def provenance(self) -> dict:
        """What ``provenance.json`` records (its hash is the run's fingerprint)."""
        return {
            "format_version": FORMAT_VERSION,
            "params": {"fps": float(self.fps), "short_side": self.short_side, "jpeg_quality": self.jpeg_quality,
                       "trim": self.trim, "samples_per_shard": self.samples_per_shard},
            "ffmpeg_setting": self.ffmpeg_setting,
            "toolchain": toolchain(self.ffmpeg_setting),
        }

    def job(self, ann: Annotation, video: Path | None) -> ClipJob:
        """The clip's job; its video path absolute, as a cluster's workers have other working directories
        (ffmpeg is handed the resolved path either way, so a failure's reason is the same)."""
        return ClipJob(ann, None if video is None else str(video.absolute()), self.fps, self.short_side,
                       self.jpeg_quality, self.trim, self.ffmpeg_setting)


@dataclass
class SplitPlan:
    """One split's clips, the shards of an earlier run that can be kept and what is left to decode."""

    split: str
    annotations: list[Annotation]
    videos: list[Path | None]
    clip_fingerprints: list[str]
    reused_shards: int
    reused_rows: list[dict]  # manifest rows of the clips in the kept shards

    @property
    def todo(self) -> range:
        """Indices of the clips still to decode."""
        return range(len(self.reused_rows), len(self.annotations))


def clip_fingerprint(root: Path, ann: Annotation, video: Path | None) -> str:
    """What decides a clip's output besides the params: its annotation and its video's bytes.

    A content hash, not the file's mtime: the state files live in the shards directory, whose
    DVC hash must not change when the same videos are written again.
    """
    fields = [ann.label, ann.label_index, ann.youtube_id, ann.time_start, ann.time_end, ann.split]
    if video is not None:
        with video.open("rb") as handle:
            content = hashlib.file_digest(handle, "sha256").hexdigest()
        fields += [video.relative_to(root).as_posix(), content]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:20]


def by_split(annotations: Iterable[Annotation]) -> dict[str, list[Annotation]]:
    """Annotations grouped by split (splits sorted), each sorted by clip_id; duplicates rejected."""
    splits: dict[str, dict[str, Annotation]] = {}
    for ann in annotations:
        seen = splits.setdefault(ann.split, {})
        if ann.clip_id in seen:
            raise StageError(
                f"clip {ann.clip_id} of split {ann.split!r} is annotated twice "
                f"({seen[ann.clip_id].source} and {ann.source}); remove one of the rows"
            )
        seen[ann.clip_id] = ann
    return {split: [clips[c] for c in sorted(clips)] for split, clips in sorted(splits.items())}


def start_run(shards_dir: Path, provenance: dict) -> None:
    """Begin a run in ``shards_dir``: a run with other params starts from a clean output.

    The manifest goes first (a killed run leaves none, so nothing validates), then, when the
    fingerprint changed, every shard and state file of the earlier run; ``provenance.json`` is
    written before any shard, so the readers can tell this run's shards from any other's.
    """
    (shards_dir / MANIFEST_FILE).unlink(missing_ok=True)
    if read_fingerprint(shards_dir) != provenance[FINGERPRINT] and shards_dir.is_dir():
        shutil.rmtree(shards_dir / STATE_DIR, ignore_errors=True)
        for split_dir in (d for d in shards_dir.iterdir() if d.is_dir()):
            remove_stale(split_dir, shard_pattern(split_dir.name, TMP_SUFFIX), set())
    write_atomic(shards_dir / PROVENANCE_FILE, json.dumps(provenance, indent=2, sort_keys=True) + "\n")


def plan_split(root: Path, shards_dir: Path, split: str, annotations: list[Annotation], fingerprint: str) -> SplitPlan:
    """Find the split's videos, fingerprint its clips and keep the earlier run's matching shards."""
    videos = [find_video(root, ann) for ann in annotations]
    fingerprints = [clip_fingerprint(root, a, v) for a, v in zip(annotations, videos)]
    reused, rows = reusable_prefix(shards_dir, split, fingerprint, fingerprints)
    (shards_dir / split).mkdir(parents=True, exist_ok=True)
    return SplitPlan(split, annotations, videos, fingerprints, reused, rows)


def clip_decoder(workers: int, scheduler: str | None,
                 ffmpeg_setting: str) -> contextlib.AbstractContextManager[Decoder]:
    """Where the clips are decoded: ``workers`` local processes, or the workers of the Dask cluster
    at ``scheduler`` (dask is imported only then)."""
    if scheduler is None:
        return contextlib.nullcontext(functools.partial(decode_all, workers=workers))
    from pipeline.data.dask_executor import dask_decoder

    return dask_decoder(scheduler, ffmpeg_setting)


def write_shards(plans: list[SplitPlan], writers: dict[str, SplitWriter], settings: DecodeSettings, decode: Decoder,
                 shards_dir: Path) -> int:
    """Decode what the plans leave to do into their writers; return the number of clips decoded.

    ``decode`` yields the results in the jobs' order, so the shards do not depend on who decoded
    what. On any failure the open shards' temp files are dropped and the decoder is closed (a pool
    ended, a cluster's tasks in flight cancelled); a full or read-only disk is one line.
    """
    slots = [(plan, i) for plan in plans for i in plan.todo]
    jobs = [settings.job(plan.annotations[i], plan.videos[i]) for plan, i in slots]
    bar = tqdm(total=len(jobs), desc="preprocess", unit="clip", file=sys.stderr, disable=not jobs, mininterval=1.0)
    try:
        with contextlib.closing(decode(jobs)) as results, bar:
            for result, (plan, i) in zip(results, slots):
                writers[plan.split].add(plan.annotations[i], plan.clip_fingerprints[i], result)
                bar.update()
        for writer in writers.values():
            writer.finish_shard()
    except BaseException as err:
        for writer in writers.values():
            writer.abort()
        if isinstance(err, OSError):  # name the folder, not the errno
            raise StageError(f"{shards_dir}: cannot write the shards ({err.strerror or err}); free space or "
                             "set data.shards_dir to a writable folder") from None
        raise
    return len(jobs)


def finish_split(shards_dir: Path, plan: SplitPlan, writer: SplitWriter) -> tuple[list[dict], dict]:
    """Remove what an earlier, longer run left beyond this run's shards; (manifest rows, counts)."""
    keep = {shard_name(plan.split, i) for i in range(writer.index)}
    remove_stale(shards_dir / plan.split, shard_pattern(plan.split, TMP_SUFFIX), keep)
    remove_stale(shards_dir / STATE_DIR / plan.split, re.compile(rf".*\.json(?:{re.escape(TMP_SUFFIX)})?"),
                 {f"{name}.json" for name in keep})
    rows = plan.reused_rows + writer.rows
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "missing", "failed")}
    counts["frames"] = sum(int(r["num_frames"] or 0) for r in rows)
    counts["shards"] = writer.index
    return rows, counts


def write_manifest(path: Path, rows: list[dict]) -> None:
    """``manifest.csv``: one row per annotated clip, the contract's columns, written last."""
    text = io.StringIO()
    out = csv.DictWriter(text, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    out.writeheader()
    out.writerows(rows)
    write_atomic(path, text.getvalue())


def preprocess(root: Path, shards_dir: Path, *, classes_file: Path | None, settings: DecodeSettings,
               workers: int, scheduler: str | None = None) -> dict:
    """Decode every annotated clip under ``root`` into shards + manifest under ``shards_dir``.

    ``classes_file`` None means ``<root>/classes.txt``. The clips are decoded by ``workers`` local
    processes, or with a ``scheduler`` address by the workers of that Dask cluster, reached before
    anything is written; the bytes are the same. Returns a summary ``{"splits": {split:
    {ok, missing, failed, frames, shards}}, "reused_shards": n, "decoded_clips": n, "seconds": s}``.
    """
    provenance = settings.provenance()
    root, shards_dir = Path(root), Path(shards_dir)
    if not root.is_dir():
        raise StageError(f"{root}: dataset root not found; set data.root to a Kinetics-layout dir")
    started = time.perf_counter()
    classes = load_classes(root / "classes.txt" if classes_file is None else Path(classes_file))
    splits = by_split(read_annotations(root, classes))
    fingerprint = hashlib.sha256(json.dumps(provenance, sort_keys=True).encode()).hexdigest()[:20]
    with clip_decoder(workers, scheduler, settings.ffmpeg_setting) as decode:
        start_run(shards_dir, {**provenance, FINGERPRINT: fingerprint})
        plans = [plan_split(root, shards_dir, split, anns, fingerprint) for split, anns in splits.items()]
        writers = {plan.split: SplitWriter(shards_dir, plan.split, fingerprint, plan.reused_shards,
                                           settings.samples_per_shard, settings.fps) for plan in plans}
        decoded = write_shards(plans, writers, settings, decode, shards_dir)
    manifest: list[dict] = []
    summary: dict = {"splits": {}, "reused_shards": sum(p.reused_shards for p in plans), "decoded_clips": decoded}
    for plan in plans:
        rows, summary["splits"][plan.split] = finish_split(shards_dir, plan, writers[plan.split])
        manifest += rows
    write_manifest(shards_dir / MANIFEST_FILE, manifest)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary
