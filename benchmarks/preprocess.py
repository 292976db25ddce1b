"""Preprocess throughput vs its limit: bare ffmpeg decoding the same clips to a null sink.

The limit runs ``ffmpeg -threads 1 -i clip -vf fps,scale -an -f null -`` per clip over the same
number of processes as the stage (``--workers``); the stage additionally converts the frames to
full-range Y'CbCr 4:2:0, moves them to Python, JPEG-encodes them and writes the tar shards.
Prints a Markdown table; the target is stage/limit >= 0.7. Wall time is what matters on an idle
machine; CPU time (all processes) is printed too, as it is far less disturbed by other load.
Scenarios: the project's synthetic dataset (``pipeline.data.synthetic``, small clips) and
Kinetics-like clips (340x256, 640x360, 1280x720; 30 fps, 10 s; decoded at 30 fps, short
side 256).

    python benchmarks/preprocess.py [--workers 2] [--per-class 6] [--kinetics-clips 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.data.kinetics import find_video, load_classes, read_annotations
from pipeline.data.preprocessing import DecodeSettings, preprocess
from pipeline.data.synthetic import generate_dataset
from pipeline.data.video import encode_video, ffmpeg_exe

TARGET = 0.7


def null_decode(args: tuple[str, float, int]) -> None:
    """Decode one clip with the stage's fps and scale filters to ffmpeg's null muxer."""
    video, fps, short_side = args
    scale = f"scale='if(lt(iw,ih),{short_side},-2)':'if(lt(iw,ih),-2,{short_side})'"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "quiet",
            "-nostdin",
            "-threads",
            "1",
            "-i",
            video,
            "-an",
            "-vf",
            f"fps={fps},{scale}",
            "-threads",
            "1",
            "-f",
            "null",
            "-",
        ],
        check=False,
    )


def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (ffmpeg, pool workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(function, *args, **kwargs) -> tuple[object, float, float]:
    """(result, wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def bare_ffmpeg(root: Path, fps: float, short_side: int, workers: int) -> None:
    """Bare ffmpeg over every annotated clip's video, ``workers`` at a time."""
    anns = read_annotations(root, load_classes(root / "classes.txt"))
    jobs = [(str(v), fps, short_side) for v in (find_video(root, a) for a in anns) if v]
    pool = multiprocessing.get_context("fork").Pool(workers)
    list(pool.imap_unordered(null_decode, jobs))
    pool.close()
    pool.join()


def kinetics_like_root(root: Path, clips: int, width: int, height: int) -> Path:
    """A root of ``clips`` 10 s 30 fps H.264 clips: a smooth random texture panning by."""
    (root / "annotations").mkdir(parents=True)
    (root / "classes.txt").write_text("a\nb\n")
    generator = torch.Generator().manual_seed(0)
    rows = ["label,youtube_id,time_start,time_end,split"]
    for k in range(clips):
        coarse = torch.rand(1, 3, height // 16 + 20, width // 16 + 39, generator=generator)
        texture = torch.nn.functional.interpolate(coarse, scale_factor=16, mode="bicubic")
        texture = (texture[0].permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).numpy()
        frames = np.stack([texture[t : t + height, 2 * t : 2 * t + width] for t in range(300)])
        folder = root / "videos" / "train" / "ab"[k % 2]
        folder.mkdir(parents=True, exist_ok=True)
        encode_video(frames, folder / f"clip{k:07d}xx_000000_000010.mp4", 30)
        rows.append(f"{'ab'[k % 2]},clip{k:07d}xx,0,10,train")
    (root / "annotations" / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def measure(root: Path, out: Path, fps: float, short_side: int, workers: int) -> dict:
    """Stage and bare-ffmpeg frames per wall second and per CPU second on one root."""
    stage, stage_wall, stage_cpu = timed(
        preprocess,
        root,
        out,
        classes_file=None,
        workers=workers,
        settings=DecodeSettings(fps=fps, short_side=short_side, jpeg_quality=90, trim=False, samples_per_shard=64),
    )
    _, limit_wall, limit_cpu = timed(bare_ffmpeg, root, fps, short_side, workers)
    frames = sum(split["frames"] for split in stage["splits"].values())
    clips = sum(split["ok"] for split in stage["splits"].values())
    return {
        "clips": clips,
        "frames": frames,
        "stage": frames / stage_wall,
        "limit": frames / limit_wall,
        "stage_cpu": frames / stage_cpu,
        "limit_cpu": frames / limit_cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=6, help="synthetic train clips/class")
    parser.add_argument("--kinetics-clips", type=int, default=4)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic = tmp / "synthetic"
        generate_dataset(
            synthetic,
            seed=0,
            train_per_class=args.per_class,
            validate_per_class=2,
            num_missing=0,
            num_corrupt=0,
            workers=args.workers,
        )
        rows.append(
            ("synthetic (generate), 10 fps, short side 64", measure(synthetic, tmp / "s1", 10, 64, args.workers))
        )
        for width, height in ((340, 256), (640, 360), (1280, 720)) if args.kinetics_clips else ():
            kinetics = kinetics_like_root(tmp / f"k{height}", args.kinetics_clips, width, height)
            rows.append(
                (
                    f"Kinetics-like {width}x{height} 30 fps 10 s -> 30 fps, short side 256",
                    measure(kinetics, tmp / f"s{height}", 30, 256, args.workers),
                )
            )
    print(
        f"\nPreprocess throughput, {args.workers} processes (target stage/limit >= {TARGET}); "
        "frames per wall second and per CPU second (user+sys, all processes)\n"
    )
    print(
        "| clips | n | frames | stage fr/s | bare ffmpeg fr/s | ratio (wall) "
        "| stage fr/CPU-s | bare ffmpeg fr/CPU-s | ratio (CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        wall, cpu = r["stage"] / r["limit"], r["stage_cpu"] / r["limit_cpu"]
        print(
            f"| {name} | {r['clips']} | {r['frames']} | {r['stage']:.0f} | {r['limit']:.0f} "
            f"| {wall:.2f} | {r['stage_cpu']:.0f} | {r['limit_cpu']:.0f} | {cpu:.2f} |"
        )


if __name__ == "__main__":
    main()
