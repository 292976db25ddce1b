"""Preprocess stage: decode every annotated clip once into JPEG-frame WebDataset shards.

``python -m pipeline.preprocess data.root=... data.shards_dir=...`` runs
``pipeline.data.preprocessing.preprocess`` on ``<root>/annotations/*.csv``: per split
``<shards_dir>/<split>/<split>-NNNNNN.tar``, plus ``manifest.csv`` (one row per annotated clip,
status ok | missing | failed and ffmpeg's reason) and ``provenance.json`` (format version,
decoding params, toolchain). Each clip is decoded by its own single-threaded ffmpeg with
bit-exact scaling and JPEG-encoded with libjpeg-turbo's integer DCT, so the bytes depend neither
on ``data.workers`` nor on the CPU; a killed run picks up after its last finished shard.
``data.executor=dask`` spreads the clips over the workers of a running Dask cluster instead
(``data.scheduler``, else ``$DASK_SCHEDULER_ADDRESS``), for the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from pipeline.core.config import stage_main
from pipeline.core.errors import ConfigError, shown
from pipeline.core.schema import DASK_ADDRESS
from pipeline.data.preprocessing import DecodeSettings, preprocess
from pipeline.data.shard_store import local_folder

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"  # Dask's own variable for it


def scheduler_address(data: DictConfig) -> str | None:
    """The Dask scheduler to decode on: None for ``data.executor=local``; else ``data.scheduler``,
    or ``$DASK_SCHEDULER_ADDRESS`` when that is null."""
    if data.executor == "local":
        return None
    address = data.scheduler or os.environ.get(SCHEDULER_ENV, "").strip()
    if not address:
        raise ConfigError(
            f"data.executor=dask needs the scheduler's address: set data.scheduler=tcp://<host>:8786 or {SCHEDULER_ENV}"
        )
    if not DASK_ADDRESS.accepts(address):  # data.scheduler's own check ran with the config
        raise ConfigError(f"{SCHEDULER_ENV}={shown(address)} is not valid: set it to {DASK_ADDRESS.expect}")
    return address


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
        Path(data.root),
        local_folder(data.shards_dir, "preprocess"),
        classes_file=classes_file,
        settings=settings,
        workers=int(data.workers),
        scheduler=scheduler_address(data),
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
