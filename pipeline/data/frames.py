"""Decoding annotated clips into the shards' JPEG frames, one single-threaded ffmpeg per clip.

ffmpeg hands over full-range Y'CbCr 4:2:0 planes (``pipeline.data.video.stream_jpeg_planes``),
which libjpeg-turbo compresses as they are with its exact integer (islow) DCT: no RGB round
trip and bytes that depend neither on the number of workers nor on the CPU.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import simplejpeg

from pipeline.data.kinetics import Annotation
from pipeline.data.video import WHEEL_FFMPEG, DecodeBudget, DecodeError, stream_jpeg_planes


class TooLong(DecodeError):
    """A video that decodes to more frames than its bound allows: readable, but refused."""


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


# What decodes a run's clips: ``decode_all`` over local processes, or a cluster's workers
# (``pipeline.data.dask_executor``); either yields the results in the jobs' order.
Decoder = Callable[[list[ClipJob]], Generator[ClipResult, None, None]]


def clip_jpegs(video: Path, *, fps: float, short_side: int, jpeg_quality: int,
               start: float | None = None, end: float | None = None,
               ffmpeg_setting: str = WHEEL_FFMPEG, max_frames: int | None = None,
               budget: DecodeBudget | None = None) -> tuple[list[bytes], int, int]:
    """(JPEG frames, height, width) of ``video``, as the shards store them; raises DecodeError.

    The planes are compressed at libjpeg quality ``jpeg_quality``: no colour conversion or
    chroma downsampling in the encoder, half the bytes of RGB through the pipe. A video of more
    than ``max_frames`` frames at ``fps`` is refused (TooLong) as soon as the next frame arrives
    (ffmpeg is stopped), so a short file that decodes to hours of frames costs no more than the bound;
    ``budget`` bounds the decoding work of an untrusted video (``DecodeBudget``).
    """
    jpegs, height, width = [], 0, 0
    planes = stream_jpeg_planes(video, fps=fps, short_side=short_side, start=start, end=end,
                                ffmpeg_setting=ffmpeg_setting, budget=budget)
    with contextlib.closing(planes):
        for luma, cb, cr in planes:
            if max_frames is not None and len(jpegs) == max_frames:
                raise TooLong(f"longer than {max_frames} frames ({max_frames / fps:g} s at {fps:g} fps)")
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
        jpegs, height, width = clip_jpegs(Path(job.video), fps=job.fps, short_side=job.short_side,
                                          jpeg_quality=job.jpeg_quality, start=start, end=end,
                                          ffmpeg_setting=job.ffmpeg_setting)
    except DecodeError as err:
        return ClipResult("failed", str(err))
    return ClipResult("ok", "", jpegs, height, width)


def decode_all(jobs: list[ClipJob], workers: int) -> Generator[ClipResult, None, None]:
    """Results of ``jobs`` in order, decoded by ``workers`` local processes."""
    if workers <= 1:
        yield from map(process_clip, jobs)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(process_clip, jobs, chunksize=1)
