"""Generate stage: ``python -m pipeline.generate data.root=...`` writes the synthetic dataset.

A Kinetics-layout root (``classes.txt``, ``annotations/{train,validate}.csv``,
``videos/<split>/<label>/<clip>.mp4``, a few missing and corrupt videos) whose four classes need
long-range context; the same bytes on every x86-64 machine. See ``pipeline.data.synthetic``
and docs/data.md.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from pipeline.core.config import stage_main
from pipeline.data.synthetic import generate_dataset


def run(cfg: DictConfig) -> None:
    """Generate ``cfg.generate`` into ``cfg.data.root`` and print a one-line summary."""
    g = cfg.generate
    started = time.perf_counter()
    summary = generate_dataset(
        Path(cfg.data.root),
        seed=int(g.seed),
        train_per_class=int(g.train_per_class),
        validate_per_class=int(g.validate_per_class),
        num_missing=int(g.num_missing),
        num_corrupt=int(g.num_corrupt),
        workers=int(cfg.data.workers),
        ffmpeg_setting=str(cfg.video.ffmpeg),
    )
    clips = ", ".join(f"{n} {split}" for split, n in summary["clips"].items())
    print(
        f"generated {clips} clips in {summary['root']} ({len(summary['missing'])} missing, "
        f"{len(summary['corrupt'])} corrupt) in {time.perf_counter() - started:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
