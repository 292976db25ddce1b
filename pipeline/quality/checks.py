"""The expectations on the tables of ``pipeline.quality.tables``, one suite per table.

A ``Check`` names a Great Expectations expectation by class name with its arguments, so the
suites are plain data here (GX is imported only by ``pipeline.quality.gx`` when they run).
Every check has a name people read (in summary.json, on stderr, in Data Docs), a ``threshold``
saying what passing means, and ``critical``: a failed critical check stops the pipeline, a
failed non-critical one warns. Thresholds that are not config keys are the constants below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.data.kinetics import UNLABELLED_SPLIT
from pipeline.data.layout import MANIFEST_COLUMNS
from pipeline.quality.tables import ANNOTATION_COLUMNS

KNOWN_SPLITS = ("train", "validate", "test")
MIN_PIXEL_STD = 2.0  # grey levels; below this a clip is (nearly) one flat colour
PIXEL_MEAN_RANGE = (5.0, 250.0)  # outside: (nearly) black or white frames


@dataclass(frozen=True)
class Settings:
    """Plain inputs of the validation (from ``data.*``, ``model.clip`` and ``validate.*``)."""

    root: Path
    classes_path: Path
    shards_dir: Path
    report_dir: Path
    short_side: int
    fps: float
    train_split: str
    min_frames: int  # frames one training clip spans: (num_frames - 1) * stride + 1
    max_missing_fraction: float
    max_failed_fraction: float
    min_clips_per_class: int
    pixel_clips_per_shard: int
    seed: int


@dataclass(frozen=True)
class Check:
    """One named expectation: a GX expectation class name and its arguments, lazily built."""

    suite: str
    name: str
    expectation: str  # class name in great_expectations.expectations
    kwargs: dict[str, Any]
    threshold: str  # what passing means, for people
    critical: bool = True


def annotation_checks(classes: list[str], known_splits: list[str]) -> list[Check]:
    """The annotations suite: columns, row shape, labels, times, splits, unique clips."""
    # fmt: off
    suite = "annotations"
    checks = [Check(suite, "annotation files have rows", "ExpectTableRowCountToBeBetween",
                    {"min_value": 1}, ">= 1 row")]
    checks += [
        Check(suite, f"column {name} present in every annotation file",
              "ExpectColumnValuesToNotBeNull", {"column": name},
              f"header of every annotations/*.csv names {name}")
        for name in ANNOTATION_COLUMNS
    ]
    checks += [
        Check(suite, "every row has as many fields as its header", "ExpectColumnPairValuesToBeEqual",
              {"column_A": "fields", "column_B": "header_fields"}, "fields == header fields"),
        Check(suite, "labels are in classes.txt", "ExpectColumnValuesToBeInSet",
              {"column": "checked_label", "value_set": classes},
              f"one of the {len(classes)} classes (empty only on split {UNLABELLED_SPLIT})"),
        Check(suite, "time_start is a whole number of seconds", "ExpectColumnValuesToMatchRegex",
              {"column": "time_start", "regex": r"^\d+$"}, "digits only"),
        Check(suite, "time_end is a whole number of seconds", "ExpectColumnValuesToMatchRegex",
              {"column": "time_end", "regex": r"^\d+$"}, "digits only"),
        Check(suite, "time_end > time_start", "ExpectColumnPairValuesAToBeGreaterThanB",
              {"column_A": "end_s", "column_B": "start_s", "or_equal": False,
               "ignore_row_if": "either_value_is_missing"}, "time_end > time_start"),
        Check(suite, "split values are known", "ExpectColumnValuesToBeInSet",
              {"column": "split", "value_set": known_splits}, f"one of {known_splits}"),
        Check(suite, "clip ids are unique per split", "ExpectCompoundColumnsToBeUnique",
              {"column_list": ["split", "clip_id"], "ignore_row_if": "any_value_is_missing"},
              "no (split, clip_id) twice"),
    ]
    return checks
    # fmt: on


def manifest_checks(s: Settings) -> list[Check]:
    """The manifest suite: statuses and their fractions, ok clips' shape, labels, shards."""
    # fmt: off
    suite = "manifest"
    return [
        Check(suite, "manifest has the contract's columns", "ExpectTableColumnsToMatchSet",
              {"column_set": list(MANIFEST_COLUMNS), "exact_match": False},
              f"includes {list(MANIFEST_COLUMNS)}"),
        Check(suite, "manifest lists clips", "ExpectTableRowCountToBeBetween", {"min_value": 1},
              ">= 1 row"),
        Check(suite, "status is ok, missing or failed", "ExpectColumnValuesToBeInSet",
              {"column": "status", "value_set": ["ok", "missing", "failed"]}, "ok|missing|failed"),
        Check(suite, "clip ids are unique per split", "ExpectCompoundColumnsToBeUnique",
              {"column_list": ["split", "clip_id"]}, "no (split, clip_id) twice"),
        Check(suite, "fraction of missing clips", "ExpectColumnMeanToBeBetween",
              {"column": "missing", "max_value": s.max_missing_fraction},
              f"<= {s.max_missing_fraction}"),
        Check(suite, "fraction of failed clips", "ExpectColumnMeanToBeBetween",
              {"column": "failed", "max_value": s.max_failed_fraction},
              f"<= {s.max_failed_fraction}"),
        Check(suite, "ok clips have enough frames for one training clip",
              "ExpectColumnValuesToBeBetween", {"column": "ok_num_frames", "min_value": s.min_frames},
              f">= {s.min_frames} frames"),
        Check(suite, "ok clips have the configured short side", "ExpectColumnValuesToBeBetween",
              {"column": "ok_short_side", "min_value": s.short_side, "max_value": s.short_side},
              f"== {s.short_side} (data.short_side)"),
        Check(suite, "ok clips have the configured fps", "ExpectColumnValuesToBeBetween",
              {"column": "ok_fps", "min_value": s.fps, "max_value": s.fps}, f"== {s.fps} (data.fps)"),
        Check(suite, "label_index matches classes.txt", "ExpectColumnPairValuesToBeEqual",
              {"column_A": "label", "column_B": "class_at_index"}, "classes[label_index] == label"),
        Check(suite, "ok clips are in their shard", "ExpectColumnValuesToBeInSet",
              {"column": "ok_in_shard", "value_set": [True]}, "clip indexed in the shard it names"),
    ]
    # fmt: on


def train_class_checks(s: Settings) -> list[Check]:
    """Every class of classes.txt has enough ok clips in the training split."""
    # fmt: off
    return [Check("train_classes", f"every class has >= {s.min_clips_per_class} ok clips in "
                  f"{s.train_split}", "ExpectColumnValuesToBeBetween",
                  {"column": "train_ok_clips", "min_value": s.min_clips_per_class},
                  f">= {s.min_clips_per_class} (validate.min_clips_per_class)")]
    # fmt: on


def pixel_checks(s: Settings) -> list[Check]:
    """Decoded frames of sampled clips: they decode, are not flat, have the right size."""
    # fmt: off
    suite = "pixels"
    low, high = PIXEL_MEAN_RANGE
    return [
        Check(suite, "clips were sampled from the shards", "ExpectTableRowCountToBeBetween",
              {"min_value": 1}, ">= 1 clip"),
        Check(suite, "shards read and sampled clips decode", "ExpectColumnValuesToBeInSet",
              {"column": "decodes", "value_set": [True]}, "every shard indexes, every JPEG decodes"),
        Check(suite, "frames are not constant (all-black or blank)", "ExpectColumnValuesToBeBetween",
              {"column": "std", "min_value": MIN_PIXEL_STD, "strict_min": True},
              f"pixel std > {MIN_PIXEL_STD}"),
        Check(suite, "decoded frames have the configured short side", "ExpectColumnValuesToBeBetween",
              {"column": "short_side", "min_value": s.short_side, "max_value": s.short_side},
              f"== {s.short_side} (data.short_side)"),
        Check(suite, "mean brightness is plausible", "ExpectColumnValuesToBeBetween",
              {"column": "mean", "min_value": low, "max_value": high},
              f"{low:g} <= mean <= {high:g}", critical=False),
    ]
    # fmt: on


def all_checks(classes: list[str], s: Settings) -> list[Check]:
    """Every check of the four suites, in report order (annotations, manifest, classes, pixels).

    The known splits are KNOWN_SPLITS plus ``s.train_split``, so a renamed train split is not
    reported as unknown.
    """
    known_splits = list(dict.fromkeys([*KNOWN_SPLITS, s.train_split]))
    return [*annotation_checks(classes, known_splits), *manifest_checks(s), *train_class_checks(s), *pixel_checks(s)]
