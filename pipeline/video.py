"""ffmpeg access: which binaries to run, decoding a clip to RGB frames, encoding test videos.

Decoding goes through ffmpeg-python with one thread per ffmpeg process (``-threads 1``), so
the frames of a clip are the same bytes however many clips run in parallel.
"""

from __future__ import annotations

import functools
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: the system one when on PATH, else the imageio-ffmpeg wheel's."""
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.cache
def ffprobe_exe() -> str | None:
    """Path of a system ffprobe, or None (imageio-ffmpeg ships none)."""
    return shutil.which("ffprobe")


@functools.cache
def ffmpeg_version() -> str:
    """First line of ``ffmpeg -version`` (part of what decides the decoded bytes)."""
    import subprocess

    out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0]


class DecodeError(Exception):
    """ffmpeg could not decode a video; ``str(err)`` is ffmpeg's own reason."""


@dataclass(frozen=True)
class DecodedClip:
    """RGB frames of one clip, ``frames`` uint8 (N, H, W, 3)."""

    frames: np.ndarray

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


def short_side_scale(short_side: int) -> dict[str, str]:
    """``scale`` filter arguments: short side to ``short_side``, long side even, aspect kept."""
    return {
        "w": f"if(lt(iw,ih),{short_side},-2)",
        "h": f"if(lt(iw,ih),-2,{short_side})",
    }


_PROGRESS = re.compile(r"^(frame=|size=|video:|\[out#)")
_CONTEXT = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*")
_OUTPUT_SIZE = re.compile(r"Output #0.*?Stream #0:\d+.*?: Video: rawvideo.*?, (\d+)x(\d+)", re.S)


def ffmpeg_reason(stderr: bytes | str | None) -> str:
    """ffmpeg's reason for a failure: its last meaningful stderr line, without the ``[x @ 0x..]``."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr or ""
    for line in reversed(text.replace("\r", "\n").splitlines()):
        line = _CONTEXT.sub("", line.strip())
        if line and not _PROGRESS.match(line):
            return line
    return "ffmpeg failed without a message"


def decode_clip(
    path: Path,
    *,
    fps: float,
    short_side: int,
    start: float | None = None,
    end: float | None = None,
) -> DecodedClip:
    """Decode ``path`` to RGB frames at ``fps`` with the short side scaled to ``short_side``.

    ``start``/``end`` (seconds) cut a window out of an untrimmed source. Audio is dropped.
    Raises DecodeError with ffmpeg's reason when the file cannot be decoded or has no frames.
    """
    window = {k: v for k, v in (("ss", start), ("to", end)) if v is not None}
    stream = (
        ffmpeg.input(str(path), threads=1, **window)
        .video.filter("fps", fps=fps)
        .filter("scale", **short_side_scale(short_side))
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", an=None, threads=1,
                filter_threads=1)
        .global_args("-hide_banner", "-nostdin", "-nostats")
    )
    try:
        out, err = stream.run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as error:
        raise DecodeError(ffmpeg_reason(error.stderr)) from None
    size = _OUTPUT_SIZE.search(err.decode("utf-8", "replace"))
    if not out or size is None:
        raise DecodeError(f"no video frames decoded ({ffmpeg_reason(err)})")
    width, height = int(size.group(1)), int(size.group(2))
    frame_bytes = width * height * 3
    if len(out) % frame_bytes:
        raise DecodeError(f"ffmpeg output is not whole {width}x{height} RGB frames")
    frames = np.frombuffer(bytearray(out), np.uint8).reshape(-1, height, width, 3)
    return DecodedClip(frames)


def encode_video(frames: np.ndarray, path: Path, fps: float, codec: str = "libx264") -> Path:
    """Write uint8 RGB frames (N, H, W, 3) as a video file (for tests and benchmarks).

    H.264 needs even sizes, so use ``codec="mpeg4"`` or even ``H``/``W`` for odd shapes.
    """
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    n, height, width, _ = frames.shape
    process = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}",
                     framerate=fps)
        .output(str(path), vcodec=codec, pix_fmt="yuv420p", threads=1, g=max(1, n // 2))
        .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
        .overwrite_output()
    )
    try:
        process.run(cmd=ffmpeg_exe(), input=frames.tobytes(), capture_stdout=True,
                    capture_stderr=True)
    except ffmpeg.Error as error:
        raise DecodeError(f"cannot encode {path}: {ffmpeg_reason(error.stderr)}") from None
    return Path(path)
