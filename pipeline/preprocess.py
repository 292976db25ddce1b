"""Preprocess stage: decode every annotated clip once into JPEG-frame WebDataset shards.

``python -m pipeline.preprocess data.root=... data.shards_dir=...`` reads
``<root>/annotations/*.csv`` and writes, per split, ``<shards_dir>/<split>/<split>-000000.tar``...
(members ``<clip_id>.<frame:06d>.jpg`` and ``<clip_id>.json``, clips sorted by clip_id,
``samples_per_shard`` clips per shard) plus ``<shards_dir>/manifest.csv`` with one row per
annotated clip (status ok | missing | failed and ffmpeg's reason) and
``<shards_dir>/provenance.json``, the manifest's companion: the format version, the decoding
params and the toolchain (ffmpeg build, libjpeg-turbo, numpy) that made the bytes.

Each clip is decoded by its own single-threaded ffmpeg (fps filter, short side scaled, audio
dropped) straight to JPEG's Y'CbCr 4:2:0 planes, which are JPEG-encoded at an explicit libjpeg
quality with libjpeg-turbo's integer DCT, so the output bytes do not depend on ``workers`` nor on
the CPU (swscale runs bit-exact, the islow DCT is exact in every SIMD path). Shards are written under a temporary
name and renamed; after each shard a record of what went into it is kept in
``<shards_dir>/.state/``, so a killed run picks up after its last finished shard and still
produces the same bytes. Bad videos never stop the stage.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import re
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import simplejpeg
from omegaconf import DictConfig
from tqdm import tqdm

from pipeline.core.config import stage_main
from pipeline.core.errors import StageError
from pipeline.core.files import TMP_SUFFIX, write_atomic
from pipeline.data.kinetics import Annotation, find_video, load_classes, read_annotations
from pipeline.data.layout import (FINGERPRINT, MANIFEST_COLUMNS, MANIFEST_FILE, PROVENANCE_FILE, STATE_DIR,
                                  read_fingerprint, shard_name, shard_pattern)
from pipeline.data.provenance import toolchain
from pipeline.data.video import WHEEL_FFMPEG, DecodeError, stream_jpeg_planes

FORMAT_VERSION = 3  # bump when the shard layout or decoding changes


@dataclass(frozen=True)
class ClipJob:
    """What a worker needs to turn one annotated clip into JPEG frames."""

    annotation: Annotation
    video: str | None  # None: no video file was found
    fps: float
    short_side: int
    jpeg_quality: int
    trim: bool
    ffmpeg_setting: str = WHEEL_FFMPEG  # video.ffmpeg


@dataclass
class ClipResult:
    """A decoded clip (status ok: JPEG frames) or why it has none."""

    status: str  # ok | missing | failed
    reason: str = ""
    jpegs: list[bytes] = field(default_factory=list)
    height: int = 0
    width: int = 0


def clip_jpegs(video: Path, *, fps: float, short_side: int, jpeg_quality: int,
               start: float | None = None, end: float | None = None,
               ffmpeg_setting: str = WHEEL_FFMPEG) -> tuple[list[bytes], int, int]:
    """(JPEG frames, height, width) of ``video``, as the shards store them; raises DecodeError.

    ffmpeg hands over full-range Y'CbCr 4:2:0 planes, which libjpeg-turbo (simplejpeg)
    compresses as they are at libjpeg quality ``jpeg_quality``: no RGB round trip, no colour
    conversion or chroma downsampling in the encoder, half the bytes of RGB through the pipe.
    """
    jpegs, height, width = [], 0, 0
    for luma, cb, cr in stream_jpeg_planes(video, fps=fps, short_side=short_side,
                                           start=start, end=end, ffmpeg_setting=ffmpeg_setting):
        jpegs.append(simplejpeg.encode_jpeg_yuv_planes(luma, cb, cr, quality=jpeg_quality,
                                                         fastdct=False))  # islow, as libjpeg
        height, width = luma.shape
    return jpegs, height, width


def process_clip(job: ClipJob) -> ClipResult:
    """Decode and JPEG-encode one clip, frame by frame; never raises for a bad or missing video."""
    if job.video is None:
        return ClipResult("missing", "no video file found for this clip")
    ann = job.annotation
    start, end = (ann.time_start, ann.time_end) if job.trim else (None, None)
    try:
        jpegs, height, width = clip_jpegs(Path(job.video), fps=job.fps,
                                          short_side=job.short_side,
                                          jpeg_quality=job.jpeg_quality, start=start, end=end,
                                          ffmpeg_setting=job.ffmpeg_setting)
    except DecodeError as err:
        return ClipResult("failed", str(err))
    return ClipResult("ok", "", jpegs, height, width)


def _run_jobs(jobs: list[ClipJob], workers: int) -> Iterator[ClipResult]:
    """Results of ``jobs`` in order, decoded by ``workers`` processes, with a progress bar."""
    bar = tqdm(total=len(jobs), desc="preprocess", unit="clip", file=sys.stderr,
               disable=not jobs, mininterval=1.0)
    with bar:
        if workers <= 1:
            for job in jobs:
                yield process_clip(job)
                bar.update()
            return
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for result in pool.imap(process_clip, jobs, chunksize=1):
                yield result
                bar.update()


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add ``data`` as ``name`` with fixed metadata, so reruns give identical bytes."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def clip_meta(ann: Annotation, result: ClipResult, fps: float, fingerprint: str) -> dict:
    """The ``<clip_id>.json`` record of an ok clip (``fingerprint``: the run's, see layout)."""
    return {
        "label": ann.label, "label_index": ann.label_index, "split": ann.split,
        "youtube_id": ann.youtube_id, "time_start": ann.time_start, "time_end": ann.time_end,
        "num_frames": len(result.jpegs), "height": result.height, "width": result.width,
        "fps": fps, FINGERPRINT: fingerprint,
    }


def manifest_row(ann: Annotation, result: ClipResult, fps: float, shard: str) -> dict:
    """The manifest row of one annotated clip (numbers empty unless it is ok)."""
    ok = result.status == "ok"
    return {
        "clip_id": ann.clip_id, "youtube_id": ann.youtube_id, "label": ann.label,
        "label_index": ann.label_index, "split": ann.split, "time_start": ann.time_start,
        "time_end": ann.time_end, "status": result.status, "reason": result.reason,
        "num_frames": len(result.jpegs) if ok else "", "height": result.height if ok else "",
        "width": result.width if ok else "", "fps": f"{fps:g}" if ok else "", "shard": shard,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint(root: Path, ann: Annotation, video: Path | None) -> str:
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


class _SplitWriter:
    """Streams one split's results into shards and keeps each finished shard's state record.

    State ``.state/<split>/<shard>.json`` lists the fingerprints and manifest rows of every clip
    consumed up to and including that shard (ok or not) since the previous shard, the params
    hash and the shard's sha256: a rerun keeps a shard only when all of these still match.
    """

    def __init__(self, shards_dir: Path, split: str, params_hash: str, first_index: int,
                 samples_per_shard: int, fps: float):
        self.split_dir = shards_dir / split
        self.state_dir = shards_dir / STATE_DIR / split
        self.split, self.params_hash, self.fps = split, params_hash, fps
        self.samples_per_shard = samples_per_shard
        self.index = first_index
        self.tar: tarfile.TarFile | None = None
        self.samples = 0
        self.pending: list[tuple[str, dict]] = []  # (fingerprint, manifest row) since last shard
        self.rows: list[dict] = []  # manifest rows of every clip this writer consumed

    @property
    def _shard_path(self) -> Path:
        return self.split_dir / shard_name(self.split, self.index)

    def add(self, ann: Annotation, fingerprint: str, result: ClipResult) -> None:
        shard = ""
        if result.status == "ok":
            if self.tar is None:
                tmp = self._shard_path.with_name(self._shard_path.name + TMP_SUFFIX)
                self.tar = tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT)
            for i, jpeg in enumerate(result.jpegs):
                _tar_member(self.tar, f"{ann.clip_id}.{i:06d}.jpg", jpeg)
            meta = json.dumps(clip_meta(ann, result, self.fps, self.params_hash), sort_keys=True)
            _tar_member(self.tar, f"{ann.clip_id}.json", meta.encode())
            self.samples += 1
            shard = f"{self.split}/{self._shard_path.name}"
        row = manifest_row(ann, result, self.fps, shard)
        self.pending.append((fingerprint, row))
        self.rows.append(row)
        if self.samples == self.samples_per_shard:
            self.finish_shard()

    def abort(self) -> None:
        """Drop the open shard's temp file (a failed run leaves only finished shards)."""
        if self.tar is not None:
            tmp = Path(self.tar.name)
            try:
                self.tar.close()
            except OSError:  # the disk that failed the write may fail the close too
                pass
            tmp.unlink(missing_ok=True)
            self.tar = None

    def finish_shard(self) -> None:
        """Close the open shard, rename it into place, then record its state."""
        if self.tar is None:
            return
        tmp = Path(self.tar.name)
        self.tar.close()
        os.replace(tmp, self._shard_path)
        state = {
            "params": self.params_hash,
            "fingerprints": [fp for fp, _ in self.pending],
            "rows": [row for _, row in self.pending],
            "sha256": _sha256(self._shard_path),
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state_path = self.state_dir / f"{self._shard_path.name}.json"
        write_atomic(state_path, json.dumps(state, sort_keys=True).encode())
        self.tar, self.samples, self.pending = None, 0, []
        self.index += 1


def _reusable_prefix(shards_dir: Path, split: str, params_hash: str,
                     fingerprints: list[str]) -> tuple[int, list[dict]]:
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
        if (state.get("params") != params_hash or not taken
                or fingerprints[consumed:consumed + len(taken)] != taken
                or state.get("sha256") != _sha256(shard)):
            break
        rows += state["rows"]
        consumed += len(taken)
        index += 1
    return index, rows


def _remove_stale(directory: Path, pattern: re.Pattern, keep: set[str]) -> None:
    """Delete files in ``directory`` whose names match ``pattern`` and are not in ``keep``."""
    if directory.is_dir():
        for path in directory.iterdir():
            if path.is_file() and pattern.fullmatch(path.name) and path.name not in keep:
                path.unlink()


def _start_run(shards_dir: Path, provenance: dict) -> None:
    """Begin a run in ``shards_dir``: a run with other params starts from a clean output.

    The manifest goes first (a killed run leaves none, so nothing validates), then, when the
    fingerprint changed, every shard and state file of the earlier run; ``provenance.json`` is
    written before any shard, so the readers can tell this run's shards from any other's.
    """
    (shards_dir / MANIFEST_FILE).unlink(missing_ok=True)
    if read_fingerprint(shards_dir) != provenance[FINGERPRINT] and shards_dir.is_dir():
        shutil.rmtree(shards_dir / STATE_DIR, ignore_errors=True)
        for split_dir in (d for d in shards_dir.iterdir() if d.is_dir()):
            _remove_stale(split_dir, shard_pattern(split_dir.name, TMP_SUFFIX), set())
    shards_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(shards_dir / PROVENANCE_FILE, json.dumps(provenance, indent=2, sort_keys=True) + "\n")


def _by_split(annotations: Iterable[Annotation]) -> dict[str, list[Annotation]]:
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


def preprocess(
    root: Path,
    shards_dir: Path,
    *,
    classes_file: Path | None,
    fps: float,
    short_side: int,
    jpeg_quality: int,
    workers: int,
    trim: bool,
    samples_per_shard: int,
    ffmpeg_setting: str = WHEEL_FFMPEG,
) -> dict:
    """Decode every annotated clip under ``root`` into shards + manifest under ``shards_dir``.

    ``classes_file`` None means ``<root>/classes.txt``; ``ffmpeg_setting`` is ``video.ffmpeg``.

    Returns a summary ``{"splits": {split: {ok, missing, failed, frames, shards}},
    "reused_shards": n, "decoded_clips": n, "seconds": s}``.
    """
    provenance = {
        "format_version": FORMAT_VERSION,
        "params": {"fps": float(fps), "short_side": short_side, "jpeg_quality": jpeg_quality,
                   "trim": trim, "samples_per_shard": samples_per_shard},
        "ffmpeg_setting": ffmpeg_setting,
        "toolchain": toolchain(ffmpeg_setting),
    }
    root, shards_dir = Path(root), Path(shards_dir)
    if not root.is_dir():
        raise StageError(f"{root}: dataset root not found; set data.root to a Kinetics-layout dir")
    started = time.perf_counter()
    classes = load_classes(root / "classes.txt" if classes_file is None else Path(classes_file))
    splits = _by_split(read_annotations(root, classes))
    params_hash = hashlib.sha256(json.dumps(provenance, sort_keys=True).encode()).hexdigest()[:20]
    _start_run(shards_dir, {**provenance, FINGERPRINT: params_hash})

    plans = []  # (split, annotations, fingerprints, reused shard count, their manifest rows)
    jobs: list[ClipJob] = []
    for split, anns in splits.items():
        videos = [find_video(root, ann) for ann in anns]
        fingerprints = [_fingerprint(root, a, v) for a, v in zip(anns, videos)]
        reused, rows = _reusable_prefix(shards_dir, split, params_hash, fingerprints)
        plans.append((split, anns, fingerprints, reused, rows))
        jobs += [
            ClipJob(ann, None if video is None else str(video), fps, short_side, jpeg_quality,
                    trim, ffmpeg_setting)
            for ann, video in zip(anns[len(rows):], videos[len(rows):])
        ]
        (shards_dir / split).mkdir(parents=True, exist_ok=True)

    writers = {
        split: _SplitWriter(shards_dir, split, params_hash, reused, samples_per_shard, fps)
        for split, _anns, _fingerprints, reused, _rows in plans
    }
    slots = [
        (writers[split], ann, fingerprint)
        for split, anns, fingerprints, _reused, rows in plans
        for ann, fingerprint in zip(anns[len(rows):], fingerprints[len(rows):])
    ]
    try:
        for result, (writer, ann, fingerprint) in zip(_run_jobs(jobs, workers), slots):
            writer.add(ann, fingerprint, result)
    except BaseException as err:
        for writer in writers.values():
            writer.abort()
        if isinstance(err, OSError):  # a full or read-only disk: name the folder, not the errno
            raise StageError(f"{shards_dir}: cannot write the shards ({err.strerror or err}); free space or "
                             "set data.shards_dir to a writable folder") from None
        raise

    manifest: list[dict] = []
    summary: dict = {"splits": {}, "reused_shards": 0, "decoded_clips": len(jobs)}
    for split, _anns, _fingerprints, reused, rows in plans:
        writer = writers[split]
        writer.finish_shard()
        keep = {shard_name(split, i) for i in range(writer.index)}
        _remove_stale(shards_dir / split, shard_pattern(split, TMP_SUFFIX), keep)
        _remove_stale(shards_dir / STATE_DIR / split, re.compile(r".*\.json(\.tmp)?"),
                      {f"{name}.json" for name in keep})
        split_rows = rows + writer.rows
        manifest += split_rows
        counts = {s: sum(r["status"] == s for r in split_rows) for s in ("ok", "missing", "failed")}
        counts["frames"] = sum(int(r["num_frames"] or 0) for r in split_rows)
        counts["shards"] = writer.index
        summary["splits"][split] = counts
        summary["reused_shards"] += reused

    text = io.StringIO()
    out = csv.DictWriter(text, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    out.writeheader()
    out.writerows(manifest)
    write_atomic(shards_dir / MANIFEST_FILE, text.getvalue())
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def run(cfg: DictConfig) -> int:
    """Thin stage entry: plain values from ``cfg.data`` into ``preprocess``, print the summary."""
    data = cfg.data
    classes_file = None if data.classes is None else Path(data.classes)
    summary = preprocess(
        Path(data.root), Path(data.shards_dir), classes_file=classes_file,
        fps=data.fps, short_side=int(data.short_side), jpeg_quality=int(data.jpeg_quality),
        workers=int(data.workers), trim=bool(data.trim),
        samples_per_shard=int(data.samples_per_shard), ffmpeg_setting=str(cfg.video.ffmpeg),
    )
    for split, c in summary["splits"].items():
        print(f"{split}: {c['ok']} ok, {c['missing']} missing, {c['failed']} failed, "
              f"{c['frames']} frames in {c['shards']} shards")
    print(f"decoded {summary['decoded_clips']} clips, kept {summary['reused_shards']} finished "
          f"shards, {summary['seconds']:.1f} s -> {data.shards_dir}/manifest.csv")
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
