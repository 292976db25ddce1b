"""Preprocess throughput vs its limit: bare ffmpeg decoding the same clips to a null sink.

The limit runs ``ffmpeg -threads 1 -i clip -vf fps,scale -an -f null -`` per clip over the same
number of processes as the stage (``--workers``); the stage additionally moves the RGB frames
to Python, JPEG-encodes them and writes the tar shards. Prints a Markdown table; the target is
stage/limit >= 0.7. Scenarios: the project's synthetic dataset (``pipeline.generate``, small
clips) and Kinetics-like clips (340x256, 640x360, 1280x720; 30 fps, 10 s; decoded at 30 fps, short
side 256).

    python benchmarks/preprocess.py [--workers 2] [--per-class 6] [--kinetics-clips 4]
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.generate import generate_dataset
from pipeline.kinetics import find_video, load_classes, read_annotations
from pipeline.preprocess import preprocess
from pipeline.video import encode_video, ffmpeg_exe

TARGET = 0.7


def null_decode(args: tuple[str, float, int]) -> None:
    """Decode one clip with the stage's fps and scale filters to ffmpeg's null muxer."""
    video, fps, short_side = args
    scale = f"scale='if(lt(iw,ih),{short_side},-2)':'if(lt(iw,ih),-2,{short_side})'"
    subprocess.run([ffmpeg_exe(), "-v", "quiet", "-nostdin", "-threads", "1", "-i", video,
                    "-an", "-vf", f"fps={fps},{scale}", "-threads", "1", "-f", "null", "-"],
                   check=False)


def limit_seconds(root: Path, fps: float, short_side: int, workers: int) -> float:
    """Wall time of bare ffmpeg over every annotated clip's video, ``workers`` at a time."""
    anns = read_annotations(root, load_classes(root / "classes.txt"))
    jobs = [(str(v), fps, short_side) for v in (find_video(root, a) for a in anns) if v]
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        list(pool.imap_unordered(null_decode, jobs))
    return time.perf_counter() - started


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
        frames = np.stack([texture[t:t + height, 2 * t:2 * t + width] for t in range(300)])
        folder = root / "videos" / "train" / "ab"[k % 2]
        folder.mkdir(parents=True, exist_ok=True)
        encode_video(frames, folder / f"clip{k:07d}xx_000000_000010.mp4", 30)
        rows.append(f"{'ab'[k % 2]},clip{k:07d}xx,0,10,train")
    (root / "annotations" / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def measure(root: Path, out: Path, fps: float, short_side: int, workers: int) -> dict:
    """Stage and limit frames/s on one root (stage run into a fresh ``out``)."""
    stage = preprocess(root, out, classes_file=None, fps=fps, short_side=short_side,
                       jpeg_quality=90, workers=workers, trim=False, samples_per_shard=64)
    frames = sum(split["frames"] for split in stage["splits"].values())
    limit = limit_seconds(root, fps, short_side, workers)
    with open(out / "manifest.csv", newline="") as f:
        clips = sum(row["status"] == "ok" for row in csv.DictReader(f))
    return {"clips": clips, "frames": frames, "stage": frames / stage["seconds"],
            "limit": frames / limit}


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
        generate_dataset(synthetic, seed=0, train_per_class=args.per_class,
                         validate_per_class=2, num_missing=0, num_corrupt=0,
                         workers=args.workers)
        rows.append(("synthetic (generate), 10 fps, short side 64",
                     measure(synthetic, tmp / "s1", 10, 64, args.workers)))
        for width, height in ((340, 256), (640, 360), (1280, 720)) if args.kinetics_clips else ():
            kinetics = kinetics_like_root(tmp / f"k{height}", args.kinetics_clips, width, height)
            rows.append((f"Kinetics-like {width}x{height} 30 fps 10 s -> 30 fps, short side 256",
                         measure(kinetics, tmp / f"s{height}", 30, 256, args.workers)))
    print(f"\nPreprocess throughput, {args.workers} processes (target stage/limit >= {TARGET})\n")
    print("| clips | n | frames | stage frames/s | bare ffmpeg frames/s | ratio |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        ratio = r["stage"] / r["limit"]
        print(f"| {name} | {r['clips']} | {r['frames']} | {r['stage']:.0f} | {r['limit']:.0f} "
              f"| {ratio:.2f} {'ok' if ratio >= TARGET else 'BELOW TARGET'} |")


if __name__ == "__main__":
    main()
