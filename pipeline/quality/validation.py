"""Validate one dataset: build its tables, run every check on them, write the report.

``validate_dataset(settings)`` is what the validate stage calls. It writes
``<report_dir>/summary.json`` (the verdict and one record per expectation, in a fixed order, the
same bytes for the same data), ``<report_dir>/summary.html`` (the same records as a page that
reads offline, also byte-stable) and ``<report_dir>/data_docs/`` (the GX Data Docs site, built
beside it and moved into place so a crash never leaves half a site) whatever the outcome.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline.core.errors import StageError
from pipeline.core.files import write_atomic
from pipeline.data.kinetics import load_classes
from pipeline.data.layout import MANIFEST_FILE
from pipeline.quality.checks import Check, Settings, all_checks
from pipeline.quality.gx import run_checks
from pipeline.quality.report_html import summary_html
from pipeline.quality.tables import (
    annotations_table,
    index_shards,
    manifest_table,
    pixels_table,
    shard_members,
    train_classes_table,
)

SUMMARY_FILE = "summary.json"
SUMMARY_HTML_FILE = "summary.html"
DATA_DOCS_DIR = "data_docs"


@dataclass
class Summary:
    """The outcome: ``success`` is False when any critical expectation failed."""

    success: bool
    expectations: list[dict[str, Any]]

    def failures(self, critical: bool) -> list[dict[str, Any]]:
        """The failed expectations that are (or are not) critical."""
        return [e for e in self.expectations if not e["passed"] and e["critical"] == critical]


def collect(s: Settings) -> tuple[dict[str, pd.DataFrame], list[Check]]:
    """The tables to validate (by suite name) and every check on them.

    Raises StageError only when there is nothing to check (no annotations, no manifest,
    no usable classes.txt); data that breaks a contract is left for the checks to report.
    """
    classes = load_classes(s.classes_path)
    annotations = annotations_table(s.root)
    if not (s.shards_dir / MANIFEST_FILE).is_file():
        raise StageError(f"{s.shards_dir / MANIFEST_FILE}: manifest not found; run python -m pipeline.preprocess first")
    splits = sorted(p.name for p in s.shards_dir.iterdir() if p.is_dir())
    datasets, errors = index_shards(s.shards_dir, splits)
    try:
        manifest = manifest_table(s.shards_dir, classes, shard_members(datasets))
        pixels = pixels_table(datasets, errors, s.pixel_clips_per_shard, s.seed)
    finally:
        for dataset in datasets:
            dataset.close()
    tables = {
        "annotations": annotations,
        "manifest": manifest,
        "train_classes": train_classes_table(manifest, classes, s.train_split),
        "pixels": pixels,
    }
    return tables, all_checks(classes, s)


def validate_dataset(s: Settings) -> Summary:
    """Check the dataset of ``s``; write summary.json, summary.html and data_docs/ under ``s.report_dir``."""
    tables, checks = collect(s)
    s.report_dir.mkdir(parents=True, exist_ok=True)
    docs_tmp = s.report_dir / f".{DATA_DOCS_DIR}.tmp"
    shutil.rmtree(docs_tmp, ignore_errors=True)
    records = run_checks(tables, checks, docs_tmp)
    shutil.rmtree(s.report_dir / DATA_DOCS_DIR, ignore_errors=True)
    os.replace(docs_tmp, s.report_dir / DATA_DOCS_DIR)
    summary = Summary(success=all(r["passed"] or not r["critical"] for r in records), expectations=records)
    text = json.dumps({"success": summary.success, "expectations": summary.expectations}, indent=2)
    write_atomic(s.report_dir / SUMMARY_FILE, text + "\n")
    write_atomic(s.report_dir / SUMMARY_HTML_FILE, summary_html(summary.success, summary.expectations))
    return summary


def failure_line(record: dict[str, Any]) -> str:
    """``<suite>: <name>: observed <value>, expected <threshold>`` of a failed expectation."""
    return f"{record['suite']}: {record['name']}: observed {record['observed']}, expected {record['threshold']}"
