"""ffmpeg access: which binary to run, decoding a clip to JPEG-ready Y'CbCr planes, and the
exact H.264 encoder (the synthetic set, test and benchmark videos).

Every data stage runs the ffmpeg that ``video.ffmpeg`` names: ``wheel`` (the default, the
static binary of the pinned ``imageio-ffmpeg`` wheel, the same build on every machine),
``system`` (the ``ffmpeg`` on PATH) or a path. Decoding is set for bytes that do not depend on
the machine: one thread per ffmpeg process (``-threads 1``), and swscale with
``accurate_rnd+bitexact``, so its SIMD paths round like its C code on every CPU.

A decoder opens only the bytes it was given: the container is told from the file's first bytes
(``CONTAINERS``) and ffmpeg is held to that demuxer and to the ``file`` protocol, so no manifest,
playlist, concat list or image pattern can make it read another file or a URL. A ``DecodeBudget``
bounds the work an untrusted video may cost (frame size, source frames, CPU seconds, a deadline).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import io
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import ffmpeg
import numpy as np

from pipeline.core.errors import ConfigError, StageError

WHEEL_FFMPEG = "wheel"
SYSTEM_FFMPEG = "system"
# bicubic (swscale's default kernel) with SIMD rounding equal to the C code's on every CPU
EXACT_SWS_FLAGS = "bicubic+accurate_rnd+bitexact"


@functools.cache
def ffmpeg_exe(setting: str = WHEEL_FFMPEG) -> str:
    """Path of the ffmpeg that ``video.ffmpeg`` names: ``wheel``, ``system`` or a file path.

    Raises ConfigError naming the setting when it names nothing that runs as ffmpeg.
    """
    if setting == WHEEL_FFMPEG:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    path = shutil.which("ffmpeg") if setting == SYSTEM_FFMPEG else setting
    if path is None:
        raise ConfigError("video.ffmpeg=system but there is no ffmpeg on PATH; "
                          "install one or set video.ffmpeg=wheel")
    try:
        out = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        raise ConfigError(f"video.ffmpeg={setting!r} cannot be run ({err.__class__.__name__}: "
                          f"{err}); set it to wheel, system or the path of an ffmpeg") from None
    if out.returncode != 0 or not out.stdout.startswith("ffmpeg version"):
        raise ConfigError(f"video.ffmpeg={setting!r} is not ffmpeg (`{path} -version` does not "
                          "say 'ffmpeg version'); set it to wheel, system or an ffmpeg's path")
    return path


@functools.cache
def ffmpeg_version_text(setting: str = WHEEL_FFMPEG) -> str:
    """The whole ``ffmpeg -version`` output: version, compiler, configure line, library versions."""
    out = subprocess.run([ffmpeg_exe(setting), "-version"], capture_output=True, text=True,
                         check=True)
    return out.stdout


def ffmpeg_version(setting: str = WHEEL_FFMPEG) -> str:
    """First line of ``ffmpeg -version`` without the copyright (part of what decides the bytes)."""
    return ffmpeg_version_text(setting).splitlines()[0].split(" Copyright")[0]


class DecodeError(Exception):
    """ffmpeg could not decode a video; ``str(err)`` is ffmpeg's own reason."""


class OverBudget(DecodeError):
    """A video that would cost more than its ``DecodeBudget``: ``limit`` names the field it passed."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class DecodeBudget:
    """What decoding one untrusted video may cost; ffmpeg is refused or stopped past any of it.

    ``max_frame_pixels`` and ``max_source_frames`` (declared frame rate x duration) are checked on
    the container's header before decoding; ffmpeg's decoders refuse larger frames met later, it
    ends itself after ``cpu_seconds`` of CPU, and it is killed at ``deadline`` (``time.monotonic``).
    """

    max_frame_pixels: int
    max_source_frames: int
    cpu_seconds: int
    deadline: float | None = None


# The containers a video file comes in: the ffmpeg demuxer that reads each, told by its first
# bytes. Decoding forces that demuxer, never one that opens other files or URLs (dash, hls,
# concat, image2, sdp, ...), whatever a file's name or contents claim.
_MOV_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")
CONTAINERS: dict[str, Callable[[bytes], bool]] = {
    "mov": lambda head: head[4:8] in _MOV_BOXES,  # mp4, mov, m4v, 3gp
    "matroska": lambda head: head.startswith(b"\x1a\x45\xdf\xa3"),  # mkv, webm
    "avi": lambda head: head.startswith(b"RIFF") and head[8:12] == b"AVI ",
    "mpegts": lambda head: _ts_synced(head, 0, 188) or _ts_synced(head, 4, 192),  # ts, m2ts
    "mpeg": lambda head: head.startswith(b"\x00\x00\x01\xba"),  # mpeg program stream, vob
    "flv": lambda head: head.startswith(b"FLV\x01"),
    "ogg": lambda head: head.startswith(b"OggS"),
}
CONTAINER_NAMES = "mp4/mov, mkv/webm, avi, mpeg-ts, mpeg-ps, flv, ogg"
_HEAD_BYTES = 400  # enough for three mpeg-ts packets


def _ts_synced(head: bytes, offset: int, packet: int) -> bool:
    return len(head) > offset + 2 * packet and all(head[offset + i * packet] == 0x47 for i in range(3))


def container_of(path: Path) -> str:
    """The demuxer for ``path``'s container (a key of ``CONTAINERS``); DecodeError for any other bytes."""
    with open(path, "rb") as file:
        head = file.read(_HEAD_BYTES)
    for demuxer, matches in CONTAINERS.items():
        if matches(head):
            return demuxer
    raise DecodeError(f"not in a video container read here ({CONTAINER_NAMES})")


def _input_options(path: Path, budget: DecodeBudget | None) -> tuple[str, dict[str, str | int]]:
    """(url, ffmpeg input options) of ``path``: its own container's demuxer, the file protocol only."""
    demuxer = container_of(path)
    options: dict[str, str | int] = {"f": demuxer, "format_whitelist": demuxer, "protocol_whitelist": "file"}
    if budget is not None:
        options["max_pixels"] = budget.max_frame_pixels  # the decoders refuse larger frames
    return str(Path(path).resolve()), options


_STREAM = re.compile(r"Stream #\d+:\d+[^\n]*?: Video: [^\n]*")
_SIZE = re.compile(r", (\d+)x(\d+)")
_RATE = re.compile(r"(\d+(?:\.\d+)?)(k?) (?:fps|tbr)")
_OVER_PIXELS = re.compile(r"Picture size (\d+)x(\d+) exceeds specified max pixel count")
_CPU_SPENT = "received signal 24"  # SIGXCPU: ffmpeg's -timelimit CPU seconds are spent


def check_budget(source: tuple[str, dict[str, str | int]], budget: DecodeBudget,
                 ffmpeg_setting: str = WHEEL_FFMPEG) -> None:
    """OverBudget when the header of ``source`` (``_input_options``) declares larger or more frames
    than ``budget`` allows.

    ffmpeg opens the input without decoding it further (no output), within the budget's CPU
    seconds and deadline; a header it cannot read is left to the decode, which names the reason.
    """
    url, options = source
    command = [ffmpeg_exe(ffmpeg_setting), "-hide_banner", "-nostdin", "-timelimit", str(budget.cpu_seconds)]
    for key, value in options.items():
        command += [f"-{key}", str(value)]
    wall = budget.cpu_seconds + 5.0 if budget.deadline is None else max(0.0, budget.deadline - time.monotonic())
    try:
        log = subprocess.run([*command, "-i", url], stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=wall).stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        raise budget_failure("", budget, killed=budget.deadline is not None) or OverBudget(
            "cpu_seconds", f"reading its header took over {wall:g} s") from None
    over = budget_failure(log, budget, killed=False)
    if over:
        raise over
    stream = _STREAM.search(log)
    size = _SIZE.search(stream.group(0)) if stream else None
    if size is None:
        return
    width, height = int(size.group(1)), int(size.group(2))
    if width * height > budget.max_frame_pixels:
        raise _too_large(width, height, budget)
    rate, duration = _RATE.search(stream.group(0)), _DURATION.search(log)
    if rate and duration:
        fps, seconds = float(rate.group(1)) * (1000 if rate.group(2) else 1), _seconds(*duration.groups())
        if fps * seconds > budget.max_source_frames:
            raise OverBudget("max_source_frames", f"{fps * seconds:.0f} source frames ({fps:g} fps for "
                             f"{seconds:.1f} s), over the {budget.max_source_frames}-frame limit")


def _too_large(width: int, height: int, budget: DecodeBudget) -> OverBudget:
    return OverBudget("max_frame_pixels", f"{width}x{height} frames, over the {budget.max_frame_pixels}-pixel limit")


def budget_failure(log: str, budget: DecodeBudget | None, killed: bool) -> OverBudget | None:
    """The budget an ffmpeg run with ``log`` failed on, or None (its failure is the video's own)."""
    if budget is None:
        return None
    if killed:
        return OverBudget("deadline", "the request's time ran out while decoding it")
    if _CPU_SPENT in log:
        return OverBudget("cpu_seconds", f"decoding took over {budget.cpu_seconds} s of CPU")
    pixels = _OVER_PIXELS.search(log)
    return _too_large(int(pixels.group(1)), int(pixels.group(2)), budget) if pixels else None


@contextlib.contextmanager
def _killed_at(process: subprocess.Popen, deadline: float | None) -> Iterator[threading.Event]:
    """An Event that is set when ``process`` is killed at ``deadline`` (``time.monotonic``)."""
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        process.kill()

    timer = None if deadline is None else threading.Timer(max(0.0, deadline - time.monotonic()), kill)
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield killed
    finally:
        if timer is not None:
            timer.cancel()


def short_side_scale(short_side: int) -> dict[str, str]:
    """``scale`` filter arguments: short side to ``short_side``, long side even, aspect kept."""
    return {
        "w": f"if(lt(iw,ih),{short_side},-2)",
        "h": f"if(lt(iw,ih),-2,{short_side})",
    }


_PROGRESS = re.compile(r"^(frame=|size=|video:|\[out#)")
_CONTEXT = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*")
_OUTPUT_SIZE = re.compile(r"Output #0.*?Stream #0:\d+.*?: Video: rawvideo.*?, (\d+)x(\d+)", re.S)


_NO_VIDEO_STREAM = re.compile(r"Stream specifier ':v' in filtergraph description .* matches no streams")


def ffmpeg_reason(stderr: bytes | str | None) -> str:
    """ffmpeg's reason for a failure: its last meaningful stderr line, without the ``[x @ 0x..]``."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr or ""
    if _NO_VIDEO_STREAM.search(text):  # ffmpeg's last line would be "Error binding filtergraph ..."
        return "no video stream"
    for line in reversed(text.replace("\r", "\n").splitlines()):
        line = _CONTEXT.sub("", line.strip())
        if line and not _PROGRESS.match(line):
            return line
    return "ffmpeg failed without a message"


_PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux)


def _frame_size(stderr_fd: int) -> tuple[int, int] | None:
    """(width, height) of the rawvideo output, from what ffmpeg has logged so far."""
    text = os.pread(stderr_fd, os.fstat(stderr_fd).st_size, 0).decode("utf-8", "replace")
    size = _OUTPUT_SIZE.search(text)
    return None if size is None else (int(size.group(1)), int(size.group(2)))


def _scale_chain(source: tuple[str, dict[str, str | int]], fps: float, short_side: int, start: float | None,
                 end: float | None, **scale_args: str) -> ffmpeg.nodes.FilterableStream:
    """ffmpeg-python stream of ``source`` (``_input_options``; ``start..end`` cut), at ``fps``, short side scaled."""
    window = {k: v for k, v in (("ss", start), ("to", end)) if v is not None}
    url, options = source
    return (
        ffmpeg.input(url, threads=1, **options, **window)
        .video.filter("fps", fps=fps)
        .filter("scale", **short_side_scale(short_side), flags=EXACT_SWS_FLAGS, **scale_args)
        .filter("format", "yuv420p")
    )


_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
SHORTFALL_FRACTION, SHORTFALL_SECONDS = 0.1, 0.5  # how much earlier than declared a clip may end


def _seconds(hours: str, minutes: str, seconds: str) -> float:
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def truncation(log: str, frames: int, fps: float, start: float | None, end: float | None) -> str | None:
    """Why ``frames`` frames at ``fps`` are a truncated decode of the input ffmpeg logged, or None.

    A file cut short behind a front index (faststart mp4) decodes without error; only the
    container's declared duration tells. Allowed shortfall: 10 % or 0.5 s, whichever is more
    (audio may outlast video a little).
    """
    found = _DURATION.search(log)
    if not found:
        return None  # some containers (webm) may not declare one
    duration = _seconds(*found.groups())
    expected = (duration if end is None else min(duration, end)) - (start or 0)
    decoded = frames / fps
    if decoded < expected - max(SHORTFALL_FRACTION * expected, SHORTFALL_SECONDS):
        return (f"truncated: {frames} frames ({decoded:.1f} s) decoded of the {expected:.1f} s "
                "the container declares")
    return None


def _stream_raw(chain: ffmpeg.nodes.FilterableStream, pix_fmt: str,
                frame_bytes: Callable[[int, int], int], ffmpeg_setting: str, fps: float,
                window: tuple[float | None, float | None],
                budget: DecodeBudget | None) -> Iterator[tuple[bytearray, int, int]]:
    """Yield ``(frame bytes, width, height)`` of ``chain`` piped out of ffmpeg as ``pix_fmt``.

    Raises DecodeError with ffmpeg's reason when it fails (possibly after some frames: a
    truncated file), yields no frame, or ends well before the container's duration (see
    ``truncation``; ``window`` is the ``start, end`` cut); OverBudget when it passed ``budget``.
    ffmpeg's stdout comes through an enlarged pipe one frame at a time; its stderr goes to a
    temporary file, so it can never block.
    """
    limits = () if budget is None else ("-timelimit", str(budget.cpu_seconds))
    command = (
        chain.output("pipe:", format="rawvideo", pix_fmt=pix_fmt, an=None, threads=1,
                     filter_threads=1, sws_flags=EXACT_SWS_FLAGS)
        .global_args("-hide_banner", "-nostdin", "-nostats", *limits)
        .compile(cmd=ffmpeg_exe(ffmpeg_setting))
    )
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=stderr)
        try:
            with _killed_at(process, budget and budget.deadline) as killed:
                try:
                    yield from _frames_of(process, stderr, frame_bytes, fps, window)
                except DecodeError as err:
                    raise budget_failure(_log_text(stderr), budget, killed.is_set()) or err from None
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _frames_of(process: subprocess.Popen, stderr, frame_bytes: Callable[[int, int], int], fps: float,
               window: tuple[float | None, float | None]) -> Iterator[tuple[bytearray, int, int]]:
    """The frames ``process`` writes to its stdout; DecodeError as ``_stream_raw`` says."""
    with process.stdout as pipe:
        try:
            fcntl.fcntl(pipe, _F_SETPIPE_SZ, _PIPE_BYTES)
        except OSError:  # capped by /proc/sys/fs/pipe-max-size; the default works
            pass
        has_output = bool(pipe.peek(1))
        # ffmpeg logs the output stream before its first frame; else read to the end
        size = _frame_size(stderr.fileno()) if has_output else None
        rest = None if size or not has_output else io.BytesIO(pipe.read())
        if rest is not None:
            process.wait()
            size = _frame_size(stderr.fileno())
        if size is None:
            failed = process.wait() != 0
            reason = _reason(stderr)
            raise DecodeError(reason if failed else f"no video frames ({reason})")
        width, height = size
        source = pipe if rest is None else rest
        count = 0
        while True:
            frame = bytearray(frame_bytes(width, height))
            got = source.readinto(frame)
            if got == 0:
                break
            if got != len(frame):
                raise DecodeError(f"ffmpeg output ends inside a {width}x{height} frame")
            count += 1
            yield frame, width, height
    if process.wait() != 0:
        raise DecodeError(_reason(stderr))
    short = truncation(_log_text(stderr), count, fps, *window)
    if short:
        raise DecodeError(short)


def stream_jpeg_planes(
    path: Path,
    *,
    fps: float,
    short_side: int,
    start: float | None = None,
    end: float | None = None,
    ffmpeg_setting: str = WHEEL_FFMPEG,
    budget: DecodeBudget | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield the frames of ``path`` as JPEG-ready planes: Y uint8 (H, W), Cb and Cr (H/2, W/2).

    Frames are resampled to ``fps`` and scaled to short side ``short_side`` (long side even,
    aspect kept); ``start``/``end`` (seconds) cut a window out of an untrimmed source; audio is
    dropped; ``ffmpeg_setting`` is ``video.ffmpeg``. Never converted to RGB: ffmpeg scales
    straight to full-range BT.601 Y'CbCr 4:2:0 (halves rounded up), the colour space JPEG/JFIF
    stores, so a JPEG encoder can take the planes as they are; a source tagged with another
    matrix (BT.709 ...) or limited range is converted by the same swscale pass. An untrusted
    video gets a ``budget``, checked on its header first (``check_budget``). Errors: see
    ``_stream_raw``.
    """
    source = _input_options(path, budget)  # the container is told once
    if budget is not None:
        check_budget(source, budget, ffmpeg_setting)
    chain = _scale_chain(source, fps, short_side, start, end, out_range="full", out_color_matrix="bt601")
    for frame, width, height in _stream_raw(chain, "yuv420p", _yuv420_bytes, ffmpeg_setting, fps,
                                            (start, end), budget):
        luma, chroma = width * height, ((width + 1) // 2) * ((height + 1) // 2)
        planes = np.frombuffer(frame, np.uint8)
        yield (planes[:luma].reshape(height, width),
               planes[luma:luma + chroma].reshape((height + 1) // 2, (width + 1) // 2),
               planes[luma + chroma:].reshape((height + 1) // 2, (width + 1) // 2))


def _yuv420_bytes(width: int, height: int) -> int:
    return width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)


def _log_text(stderr) -> str:
    return os.pread(stderr.fileno(), os.fstat(stderr.fileno()).st_size, 0).decode("utf-8", "replace")


def _reason(stderr) -> str:
    return ffmpeg_reason(_log_text(stderr))


X264_ASM = "SSE2" if platform.machine() in ("x86_64", "AMD64") else "0"  # x86-64 baseline kernels = C output
X264_QP = 24  # constant QP: no float rate control, macroblock tree or adaptive quantisation


def rgb_to_yuv420p(frames: np.ndarray) -> bytes:
    """uint8 RGB (T, H, W, 3), even H and W, as raw yuv420p: BT.601 limited range, integer maths.

    Done here rather than by swscale so that the encoder's input is the same on every CPU.
    Chroma is the rounded mean of each 2 x 2 block.
    """
    n, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"H.264 4:2:0 needs even frame sizes, not {width}x{height}")
    rgb = frames.astype(np.uint16)  # 220 * 255 + 128 < 2**16
    luma = ((66 * rgb[..., 0] + 129 * rgb[..., 1] + 25 * rgb[..., 2] + 128) >> 8) + 16
    blocks = rgb.reshape(n, height // 2, 2, width // 2, 2, 3).sum((2, 4), dtype=np.int32)
    r, g, b = blocks[..., 0], blocks[..., 1], blocks[..., 2]  # 4 x each block's mean
    cb = ((-38 * r - 74 * g + 112 * b + 512) >> 10) + 128
    cr = ((112 * r - 94 * g - 18 * b + 512) >> 10) + 128
    planes = [plane.reshape(n, -1).astype(np.uint8) for plane in (luma, cb, cr)]
    return np.concatenate(planes, axis=1).tobytes()


def encode_video(frames: np.ndarray, path: Path, fps: float, ffmpeg_setting: str = WHEEL_FFMPEG) -> Path:
    """Encode uint8 RGB frames (T, H, W, 3), even H and W, to H.264/yuv420p mp4: the same bytes
    on every machine (integer colour conversion, libx264 at constant QP with its SSE2 kernels)."""
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    num_frames, height, width, _ = frames.shape
    command = [
        ffmpeg_exe(ffmpeg_setting), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-",
        "-c:v", "libx264", "-preset", "veryfast", "-qp", str(X264_QP), "-threads", "1",
        "-x264-params", f"asm={X264_ASM}",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
        "-f", "mp4", str(path),
    ]  # fmt: skip
    result = subprocess.run(command, input=rgb_to_yuv420p(frames), capture_output=True)
    if result.returncode != 0:
        raise StageError(f"ffmpeg could not encode {path}: {ffmpeg_reason(result.stderr)}")
    return Path(path)
