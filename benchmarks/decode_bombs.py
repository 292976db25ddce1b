"""What a hostile row costs the served model's decode, without and with the serving bounds.

Each case decodes one crafted file through the served path (``pipeline.serving.views.video_views``
with the model's preprocessing) in a fresh forked process, once unbounded (as before issue 27)
and once under the default ``ServingBounds``; it prints wall seconds, CPU seconds (Python and
ffmpeg) and peak RSS (Python, ffmpeg), and what came out. The burst case runs four huge-frame
rows at once, as four concurrent requests would. The ffmpeg RSS is the kernel's largest child
RSS, which counts a child before its exec too (a copy of the Python process, ~376 MB here): a
value equal to the Python RSS means ffmpeg itself stayed below it. Files that are not in a video
container never reach ffmpeg, bounds or not (tests/test_untrusted_video.py).

    .venv/bin/python benchmarks/decode_bombs.py [--out folder]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.data.video import ffmpeg_exe
from pipeline.serving.bounds import ServingBounds, decode_slot
from pipeline.serving.views import Preprocessing, VideoError, video_views

PREP = Preprocessing(10.0, 64, 90, 8, 2, 56, 1, 1, (0.45,) * 3, (0.225,) * 3)


def make_bombs(folder: Path) -> dict[str, Path]:
    """The crafted files: one 16000x16000 frame (780 kB), 100,000 16x16 frames (1.5 MB)."""
    lavfi = [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i"]
    huge, fast = folder / "huge.mkv", folder / "fast.mp4"
    subprocess.run(
        [*lavfi, "color=c=red:size=16000x16000", "-frames:v", "1", "-c:v", "png", "-y", str(huge)], check=True
    )
    source = "testsrc=size=16x16:rate=10000:duration=10"
    subprocess.run([*lavfi, source, "-c:v", "libx264", "-preset", "ultrafast", "-y", str(fast)], check=True)
    return {"16000x16000 frame": huge, "100,000 frames": fast}


def decode_once(path: Path, bounded: bool) -> str:
    """Decode ``path`` as a served row: what came out (views or the row's error)."""
    bounds = ServingBounds()
    deadline = time.monotonic() + bounds.request_seconds
    try:
        if not bounded:
            return f"{tuple(video_views(path, PREP).shape)} views"
        with decode_slot(bounds.concurrent_decodes, deadline):
            views = video_views(path, PREP, bounds.max_seconds, bounds.decode_budget(deadline))
        return f"{tuple(views.shape)} views"
    except (VideoError, TimeoutError) as err:
        return f"error: {str(err).replace(str(path), 'the row')[:90]}"


def _child(paths: list[Path], bounded: bool, out: multiprocessing.Queue) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(len(paths)) as pool:
        outcomes = list(pool.map(lambda p: decode_once(p, bounded), paths))
    wall = time.monotonic() - started
    me, ffmpeg = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    out.put(
        {
            "wall_s": round(wall, 2),
            "python_cpu_s": round(me.ru_utime + me.ru_stime, 2),
            "ffmpeg_cpu_s": round(ffmpeg.ru_utime + ffmpeg.ru_stime, 2),
            "python_rss_mb": round(me.ru_maxrss / 1024),
            "ffmpeg_rss_mb": round(ffmpeg.ru_maxrss / 1024),  # the largest one ffmpeg's peak
            "outcome": outcomes[0],
        }
    )


def measure(paths: list[Path], bounded: bool) -> dict:
    """Costs of decoding ``paths`` at once in a fresh forked process (its own rusage)."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child, args=(paths, bounded, queue))
    child.start()
    result = queue.get(timeout=600)
    child.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cases = {name: [path] for name, path in make_bombs(Path(tmp)).items()}
        cases["4 x 16000x16000 at once"] = cases["16000x16000 frame"] * 4
        rows = [
            {"case": name, "bounds": "on" if bounded else "off", **measure(paths, bounded)}
            for name, paths in cases.items()
            for bounded in (False, True)
        ]
    keys = ["case", "bounds", "wall_s", "python_cpu_s", "ffmpeg_cpu_s", "python_rss_mb", "ffmpeg_rss_mb", "outcome"]
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[key]) for key in keys) + " |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "decode_bombs.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
