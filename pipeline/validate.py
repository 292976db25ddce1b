"""Validate stage: data contracts on the annotations, the manifest and the shards' pixels.

Between preprocess and train. Checks the dataset the trainer is about to read with Great
Expectations: four pandas tables (the annotation CSVs, ``manifest.csv``, the ok clips per class
of the train split, pixel statistics of a seeded sample of every shard's clips), one suite each.
Writes ``<report_dir>/summary.json``, ``summary.html`` (readable offline) and
``data_docs/index.html`` whatever the outcome; a failed critical expectation makes the stage
exit 1, a failed non-critical one warns (one stderr line each); nothing to check (no
annotations, no manifest) is exit 2.

This module only turns the config into ``Settings`` and the ``Summary`` into output and an exit
code; the tables, the checks and the GX runner are the library ``pipeline.quality``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from pipeline.core.config import classes_file, stage_main
from pipeline.data.clips import clip_span
from pipeline.data.shard_store import local_folder
from pipeline.quality.checks import Settings
from pipeline.quality.validation import DATA_DOCS_DIR, SUMMARY_FILE, SUMMARY_HTML_FILE, failure_line, validate_dataset


def settings_from(cfg: DictConfig) -> Settings:
    """The Settings of a stage config (``data.*``, ``model.clip``, ``validate.*``)."""
    data, limits = cfg.data, cfg.validate
    return Settings(
        root=Path(data.root),
        classes_path=classes_file(data),
        shards_dir=local_folder(data.shards_dir, "validate"),
        report_dir=Path(limits.report_dir),
        short_side=int(data.short_side),
        fps=float(data.fps),
        train_split=str(data.train_split),
        min_frames=clip_span(int(cfg.model.clip.num_frames), int(cfg.model.clip.stride)),
        max_missing_fraction=float(limits.max_missing_fraction),
        max_failed_fraction=float(limits.max_failed_fraction),
        min_clips_per_class=int(limits.min_clips_per_class),
        pixel_clips_per_shard=int(limits.pixel_clips_per_shard),
        seed=int(limits.seed),
    )


def run(cfg: DictConfig) -> int:
    """Validate; print failures (critical: FAILED, others: WARNING); 1 on a critical failure."""
    s = settings_from(cfg)
    summary = validate_dataset(s)
    for record in summary.failures(critical=False):
        print(f"WARNING {failure_line(record)}", file=sys.stderr)
    for record in summary.failures(critical=True):
        print(f"FAILED {failure_line(record)}", file=sys.stderr)
    passed = sum(r["passed"] for r in summary.expectations)
    print(
        f"validate: {passed}/{len(summary.expectations)} expectations passed; report in "
        f"{s.report_dir}/{SUMMARY_FILE}, {s.report_dir}/{SUMMARY_HTML_FILE} (offline) and "
        f"{s.report_dir}/{DATA_DOCS_DIR}/index.html"
    )
    return 0 if summary.success else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.validate [overrides]``: ``run``'s exit code; 2 and one ``error:`` line
    when there is nothing to check."""
    return stage_main(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
