"""Decoding untrusted bytes (pipeline.data.video, pipeline.serving.bounds): ffmpeg reads only the
file it is given, in a container a video comes in, and within a budget of work; decodes at once
are bounded by slots shared between processes; a request's size is checked before any copy."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import psutil
import pytest

from pipeline.data.video import DecodeBudget, DecodeError, OverBudget, stream_jpeg_planes
from pipeline.registry.scoring_app import json_depth
from pipeline.serving.bounds import decode_slot
from pipeline.serving.pyfunc import decode_row
from pipeline.serving.views import VideoError

from helpers import hostile_files, lavfi_video

ONE_SECOND = "testsrc=size=64x48:rate=25:duration=1"
TEN_S = "(10000 fps for 10.0 s)"
HEADER_PASSES = {"max_source_frames": 10**6}  # fast_video's 100,000 and slow_video's 400,000 frames pass


def frames(path: Path, budget: DecodeBudget | None = None) -> int:
    return sum(1 for _ in stream_jpeg_planes(path, fps=10, short_side=32, budget=budget))


def budget(**changes: float) -> DecodeBudget:
    values = {"max_frame_pixels": 3840 * 2160, "max_source_frames": 7200, "cpu_seconds": 20, "deadline": None}
    return DecodeBudget(**{**values, **changes})


@pytest.mark.parametrize(
    "name, codec",
    [
        ("clip.mp4", ["-c:v", "libx264"]),
        ("clip.mov", ["-c:v", "libx264"]),
        ("clip.mkv", ["-c:v", "libx264"]),
        ("clip.webm", ["-c:v", "libvpx"]),
        ("clip.avi", ["-c:v", "mpeg4"]),  # UCF-101 and HMDB-51 come as avi
        ("clip.ts", ["-c:v", "mpeg2video"]),
        ("clip.mpg", ["-c:v", "mpeg2video"]),
        ("clip.flv", ["-c:v", "flv"]),
        ("clip.ogv", ["-c:v", "libtheora"]),
    ],
)
def test_every_container_a_video_comes_in_decodes(tmp_path: Path, name: str, codec: list[str]) -> None:
    video = lavfi_video(tmp_path / name, ONE_SECOND, *codec)
    assert frames(video) == frames(video, budget()) == 10


@pytest.mark.parametrize("name", ["dash.mpd", "list.ffconcat", "playlist.m3u8", "image.png"])
def test_a_file_that_names_other_files_or_holds_no_video_container_is_refused_unopened(
    tmp_path: Path, noise_video: Path, name: str
) -> None:
    """A manifest, playlist or concat list naming a video on this machine decodes nothing of it
    (before: that video's frames); an image is not a video either."""
    hostile = hostile_files(tmp_path / "hostile", noise_video)[name]
    for with_budget in (None, budget()):
        with pytest.raises(DecodeError, match=r"^not in a video container read here \(mp4/mov, mkv/webm, avi"):
            frames(hostile, with_budget)


def ffmpeg_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "ffmpeg" in p.name()]


@pytest.mark.parametrize(
    "video, changes, limit, says, within_s",
    [
        ("huge_frame", {}, "max_frame_pixels", "16000x16000 frames, over the 8294400-pixel limit", 1.0),
        ("fast_video", {}, "max_source_frames", f"100000 source frames {TEN_S}, over the 7200-frame limit", 1.0),
        ("slow_video", {**HEADER_PASSES, "cpu_seconds": 1}, "cpu_seconds", "decoding took over 1 s of CPU", 5.0),
        (
            "fast_video",
            {**HEADER_PASSES, "deadline": 0.3},
            "deadline",
            "the request's time ran out while decoding it",
            1.0,
        ),
    ],
)
def test_a_video_over_its_budget_is_stopped_naming_the_limit(request, video, changes, limit, says, within_s) -> None:
    """Each bomb is refused from its header or stopped by ffmpeg / the deadline, fast, and leaves
    no ffmpeg running; without a budget the 100,000 frames would all be decoded."""
    path = request.getfixturevalue(video)
    if "deadline" in changes:
        changes = {**changes, "deadline": time.monotonic() + changes["deadline"]}
    started = time.monotonic()
    with pytest.raises(OverBudget) as refused:
        frames(path, budget(**changes))
    assert (refused.value.limit, str(refused.value)) == (limit, says)
    assert time.monotonic() - started < within_s
    assert not ffmpeg_children()


def test_decode_slots_are_shared_between_processes_and_freed_when_one_dies(tmp_path: Path) -> None:
    hold = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(tmp_path / 'slot-0')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        started = time.monotonic()
        with (
            pytest.raises(TimeoutError, match="all 1 decode slots stayed busy"),
            decode_slot(1, time.monotonic() + 0.3, tmp_path),
        ):
            pass
        assert time.monotonic() - started >= 0.3
        with decode_slot(2, time.monotonic(), tmp_path):  # a second slot is free
            pass
    finally:
        holder.kill()
        holder.wait()
    with decode_slot(1, time.monotonic(), tmp_path):  # the dead holder's lock went with it
        pass


def test_one_slot_lets_one_decode_run_at_a_time(tmp_path: Path) -> None:
    running, most = [0], [0]
    lock = threading.Lock()

    def decode() -> None:
        with decode_slot(1, time.monotonic() + 30, tmp_path):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=decode) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1


def test_a_row_is_measured_as_sent_before_any_copy() -> None:
    """50 MB of whitespace-separated base64 against a 1 MiB bound: refused without a copy of it
    (before: split into 12.5 million strings, gigabytes)."""
    row = "AAA= " * 10_000_000
    tracemalloc.start()
    try:
        with pytest.raises(VideoError, match="over the 1048576-byte limit per video"):
            decode_row(row, 2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    wrapped = "\n".join(["QUFB" * 19] * 1000)  # `base64` output wrapped at 76 columns: still accepted
    assert decode_row(wrapped, 57_000) == b"AAA" * 19_000


@pytest.mark.parametrize(
    "body, depth",
    [
        (b"", 0),
        (b'{"dataframe_split": {"columns": ["video"], "data": [["AAAA"]]}}', 4),
        (b'{"dataframe_split": {"data": [["[[[[{{{{\\"]]]"]]}}', 4),  # brackets inside strings do not count
        (b"[" * 100_000, 100_000),
    ],
)
def test_json_depth_counts_nesting_outside_strings(body: bytes, depth: int) -> None:
    assert json_depth(body) == depth
