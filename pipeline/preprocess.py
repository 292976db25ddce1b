"""Preprocess stage: decode every annotated clip once into JPEG-frame WebDataset shards.

``python -m pipeline.preprocess data.root=... data.shards_dir=...`` runs
``pipeline.data.preprocessing.preprocess`` on ``<root>/annotations/*.csv``: per split
``<shards_dir>/<split>/<split>-NNNNNN.tar``, plus ``manifest.csv`` (one row per annotated clip,
status ok | missing | failed and ffmpeg's reason) and ``provenance.json`` (format version,
decoding params, toolchain). Each clip is decoded by its own single-threaded ffmpeg with
bit-exact scaling and JPEG-encoded with libjpeg-turbo's integer DCT, so the bytes depend neither
on ``data.workers`` nor on the CPU; a killed run picks up after its last finished shard.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from pipeline.core.config import stage_main
from pipeline.data.preprocessing import DecodeSettings, preprocess


def run(cfg: DictConfig) -> int:
    """Thin stage entry: plain values from ``cfg.data`` into ``preprocess``, print the summary."""
    data = cfg.data
    settings = DecodeSettings(
        fps=data.fps,
        short_side=int(data.short_side),
        jpeg_quality=int(data.jpeg_quality),
        trim=bool(data.trim),
        samples_per_shard=int(data.samples_per_shard),
        ffmpeg_setting=str(cfg.video.ffmpeg),
    )
    classes_file = None if data.classes is None else Path(data.classes)
    summary = preprocess(
        Path(data.root), Path(data.shards_dir), classes_file=classes_file, settings=settings, workers=int(data.workers)
    )
    for split, c in summary["splits"].items():
        print(
            f"{split}: {c['ok']} ok, {c['missing']} missing, {c['failed']} failed, "
            f"{c['frames']} frames in {c['shards']} shards"
        )
    print(
        f"decoded {summary['decoded_clips']} clips, kept {summary['reused_shards']} finished "
        f"shards, {summary['seconds']:.1f} s -> {data.shards_dir}/manifest.csv"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
