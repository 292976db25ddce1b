"""Training-clip loading: JPEG shards (ClipDataset) vs decoding the mp4 for every clip.

Both paths produce the same training input: one clip of T=8 frames stride 2 at a random start,
randomly cropped to 56x56, from the project's synthetic dataset (``pipeline.generate``)
preprocessed at 10 fps, short side 64. The mp4 path decodes the whole video with ffmpeg (same
fps and scale filters) for every clip, as PySlowFast's decoder does, then samples the same way.
Both run through a DataLoader with the same worker count. The shards are also read streamed
from an S3 store (moto's server on loopback, as in the scale-out tests: it measures the client's
cost per clip, one batched ranged request, not a network's latency). Prints a Markdown table; the
target is shards/mp4 >= 5.

    python benchmarks/loader.py [--workers 2] [--per-class 6] [--epochs 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import ffmpeg
import numpy as np
import torch

from pipeline.data.clips import random_clip_indices
from pipeline.data.kinetics import find_video, load_classes, read_annotations
from pipeline.data.preprocessing import DecodeSettings, preprocess
from pipeline.data.shards import ClipDataset, item_generator
from pipeline.data.synthetic import generate_dataset
from pipeline.data.video import ffmpeg_exe, short_side_scale

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' S3 server
CLIP_LEN, STRIDE, CROP, FPS, SHORT_SIDE = 8, 2, 56, 10, 64
TARGET = 5.0


def sample_clip(num_frames: int, generator: torch.Generator) -> list[list[int]]:
    return [random_clip_indices(num_frames, CLIP_LEN, STRIDE, generator)]


def random_crop(frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Same-position random CROP x CROP crop of every frame of (..., H, W)."""
    height, width = frames.shape[-2:]
    top = int(torch.randint(0, height - CROP + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - CROP + 1, (1,), generator=generator))
    return frames[..., top : top + CROP, left : left + CROP].contiguous()


def decode_rgb(path: Path) -> np.ndarray:
    """Every frame of ``path`` at ``FPS``, short side ``SHORT_SIDE``, as uint8 RGB (N, H, W, 3).

    What a loader without shards does on every access: ffmpeg decodes the whole video (PPM frames
    through a pipe, each ``P6\\n<w> <h>\\n255\\n`` + pixels).
    """
    stream = (
        ffmpeg.input(str(path), threads=1)
        .video.filter("fps", fps=FPS)
        .filter("scale", **short_side_scale(SHORT_SIDE))
        .filter("format", "rgb24")
    )
    out, _ = stream.output("pipe:", format="image2pipe", vcodec="ppm").run(
        cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True
    )
    magic, size, maxval, _ = out.split(b"\n", 3)
    width, height = map(int, size.split())
    header = len(magic) + len(size) + len(maxval) + 3
    frames = np.frombuffer(out, np.uint8).reshape(-1, header + width * height * 3)[:, header:]
    return frames.reshape(-1, height, width, 3)


class Mp4Clips(torch.utils.data.Dataset):
    """The same training clips, decoded from the source videos on every access."""

    def __init__(self, videos: list[Path], labels: list[int]):
        self.videos, self.labels = videos, labels

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict:
        generator = item_generator(0, 0, index)
        frames = decode_rgb(self.videos[index])
        views = sample_clip(len(frames), generator)
        clip = torch.from_numpy(frames[views[0]]).permute(0, 3, 1, 2)[None]  # (V, T, C, H, W)
        return {"frames": random_crop(clip, generator), "label": self.labels[index]}


def clips_per_second(dataset: torch.utils.data.Dataset, workers: int, epochs: int) -> float:
    """Clips/s of iterating ``dataset`` ``epochs`` times through a DataLoader."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=8, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    started = time.perf_counter()
    count = 0
    for epoch in range(epochs):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        for batch in loader:
            assert batch["frames"].shape[1:] == (1, CLIP_LEN, 3, CROP, CROP)
            count += len(batch["label"])
    return count / (time.perf_counter() - started)


@contextlib.contextmanager
def streamed_copy(shards: Path):
    """The URL of ``shards`` uploaded to a fresh S3 server; its clients' environment is set."""
    from s3_server import S3Server

    server = S3Server().start()
    saved = dict(os.environ)
    os.environ.update(server.env)
    try:
        server.make_bucket("loader-bench")
        yield server.upload_folder(shards, "loader-bench", "shards")
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=6, help="synthetic train clips/class")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, shards = Path(tmp) / "synthetic", Path(tmp) / "shards"
        generate_dataset(
            root,
            seed=0,
            train_per_class=args.per_class,
            validate_per_class=1,
            num_missing=0,
            num_corrupt=0,
            workers=args.workers,
        )
        settings = DecodeSettings(fps=FPS, short_side=SHORT_SIDE, jpeg_quality=90, trim=False, samples_per_shard=16)
        preprocess(root, shards, classes_file=None, settings=settings, workers=args.workers)
        from_shards = ClipDataset(shards, "train", sample_clip, random_crop)
        anns = {a.clip_id: a for a in read_annotations(root, load_classes(root / "classes.txt")) if a.split == "train"}
        videos = [find_video(root, anns[key]) for key in from_shards.keys]
        from_mp4 = Mp4Clips(videos, from_shards.labels)
        shard_rate = clips_per_second(from_shards, args.workers, args.epochs)
        mp4_rate = clips_per_second(from_mp4, args.workers, args.epochs)
        from_shards.close()
        with streamed_copy(shards) as url:
            streamed = ClipDataset(url, "train", sample_clip, random_crop)
            streamed_rate = clips_per_second(streamed, args.workers, args.epochs)
    ratio = shard_rate / mp4_rate
    print(
        f"\nTraining clip loading, T={CLIP_LEN} stride {STRIDE}, crop {CROP}, "
        f"{args.workers} DataLoader workers, {len(videos)} clips x {args.epochs} epochs "
        f"(target >= {TARGET:g}x)\n"
    )
    print("| source | clips/s |")
    print("|---|---|")
    print(f"| mp4, ffmpeg decode per clip (PySlowFast style) | {mp4_rate:.0f} |")
    print(f"| JPEG shards, ClipDataset | {shard_rate:.0f} |")
    print(f"| JPEG shards streamed from S3 (moto, loopback), ClipDataset | {streamed_rate:.0f} |")
    print(f"| **speed-up** | **{ratio:.1f}x** {'ok' if ratio >= TARGET else 'BELOW TARGET'} |")
    print(f"| streamed / local shards | {streamed_rate / shard_rate:.2f}x |")


if __name__ == "__main__":
    main()
