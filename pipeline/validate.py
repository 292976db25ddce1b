"""Validate stage: data contracts on the annotations, the manifest and the shards' pixels.

Between preprocess and train. Builds four small pandas tables (no Great Expectations yet):

- ``annotations``: every row of ``<root>/annotations/*.csv``, read as plain strings, so a file with
  a missing column or a malformed row is reported, not crashed on;
- ``manifest``: ``<shards_dir>/manifest.csv`` plus derived columns (``ok_num_frames``, ...);
- ``train_classes``: one row per class of ``classes.txt`` with its ok clips in the train split;
- ``pixels``: statistics of the decoded frames of a seeded sample of clips from every shard;

then validates each with its Great Expectations suite in one ephemeral context (one
ValidationDefinition per table: a checkpoint would hand every table the same dataframe) and
builds the Data Docs site once. Every expectation carries ``meta`` = {name, critical}.
Writes ``<report_dir>/summary.json`` and ``<report_dir>/data_docs/index.html`` whatever the
outcome; a failed critical expectation makes the stage exit 1, a failed non-critical one warns.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from pipeline.core.config import classes_file, stage_main
from pipeline.core.errors import StageError

ANNOTATION_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
MANIFEST_COLUMNS = (
    "clip_id", "youtube_id", "label", "label_index", "split", "time_start", "time_end",
    "status", "reason", "num_frames", "height", "width", "fps", "shard",
)
KNOWN_SPLITS = ("train", "validate", "test")
UNLABELLED_SPLIT = "test"  # the Kinetics-400 test release has no labels
PIXEL_FRAMES_PER_CLIP = 16  # evenly spaced frames decoded per sampled clip
MIN_PIXEL_STD = 2.0  # grey levels; below this a clip is (nearly) one flat colour
PIXEL_MEAN_RANGE = (5.0, 250.0)  # outside: (nearly) black or white frames
EXAMPLES = 5  # failing rows quoted per expectation
UNREADABLE_SHARD = (StageError, tarfile.TarError, OSError)  # truncated tar, clip missing frames
ROW = "row"  # every table's row identifier (file:line, clip id, class name)


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


@dataclass
class Summary:
    """The outcome: ``success`` is False when any critical expectation failed."""

    success: bool
    expectations: list[dict[str, Any]]

    def failures(self, critical: bool) -> list[dict[str, Any]]:
        """The failed expectations that are (or are not) critical."""
        return [e for e in self.expectations if not e["passed"] and e["critical"] == critical]


def min_clip_frames(num_frames: int, stride: int) -> int:
    """Frames a clip of ``num_frames`` frames every ``stride`` frames spans without repeating."""
    return (num_frames - 1) * stride + 1


# --- tables -------------------------------------------------------------------------------


def _whole_seconds(text: pd.Series) -> pd.Series:
    """Non-negative whole numbers of ``text`` as floats; NaN where the text is not one."""
    return pd.to_numeric(text.where(text.str.fullmatch(r"\d+", na=False)), errors="coerce")


def annotations_table(root: Path) -> pd.DataFrame:
    """Every row of ``<root>/annotations/*.csv`` as strings; absent columns are NaN.

    Columns: ``row`` ("annotations/train.csv:17"), the official columns, ``fields`` and
    ``header_fields`` (per-row field counts), ``checked_label`` (the label; NaN for an unlabelled
    test row), ``start_s``/``end_s`` (numbers or NaN) and ``clip_id`` (NaN when times are bad).
    """
    files = sorted((Path(root) / "annotations").glob("*.csv"))
    if not files:
        raise StageError(
            f"{Path(root) / 'annotations'}: no *.csv annotation files; set data.root to a "
            "Kinetics-layout dataset (python -m pipeline.generate writes one)"
        )
    records = []
    for path in files:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [name.strip() for name in next(reader, [])]
            for row in reader:
                if not row:
                    continue
                record = dict.fromkeys(header, "")  # a short row's absent fields are empty
                record.update((h, v.strip()) for h, v in zip(header, row))
                record.update({ROW: f"annotations/{path.name}:{reader.line_num}",
                               "fields": len(row), "header_fields": len(header)})
                records.append(record)
    table = pd.DataFrame.from_records(records)
    table = table.reindex(columns=[ROW, *ANNOTATION_COLUMNS, "fields", "header_fields"])
    unlabelled = (table["label"] == "") & (table["split"] == UNLABELLED_SPLIT)
    table["checked_label"] = table["label"].mask(unlabelled)
    table["start_s"] = _whole_seconds(table["time_start"])
    table["end_s"] = _whole_seconds(table["time_end"])
    valid = table["start_s"].notna() & table["end_s"].notna() & table["youtube_id"].notna()
    table["clip_id"] = None
    table.loc[valid, "clip_id"] = [
        f"{y}_{int(s):06d}_{int(e):06d}"
        for y, s, e in zip(table["youtube_id"][valid], table["start_s"][valid], table["end_s"][valid])
    ]
    return table


def manifest_table(shards_dir: Path, classes: list[str], in_shards: set[str]) -> pd.DataFrame:
    """``manifest.csv`` as strings plus numeric columns of the ok clips (NaN on other rows).

    ``ok_num_frames``, ``ok_short_side`` and ``ok_fps`` are -1 on an ok row whose value is not
    a number, so a blank never passes; ``class_at_index`` is ``classes[label_index]``;
    ``missing``/``failed`` are 0/1 so their mean is the fraction; ``ok_in_shard`` says whether
    an ok clip is among ``in_shards`` (``<shard>:<clip_id>`` of the clips the shards hold).
    """
    table = pd.read_csv(Path(shards_dir) / "manifest.csv", dtype=str, keep_default_na=False)
    raw = table.reindex(columns=MANIFEST_COLUMNS)  # absent columns read as NaN below
    table[ROW] = raw["clip_id"]
    status = raw["status"]
    ok = status == "ok"

    def ok_number(column: pd.Series) -> pd.Series:
        return column.where(ok).mask(ok & column.isna(), -1.0)

    numbers = {name: pd.to_numeric(raw[name], errors="coerce") for name in ("height", "width")}
    short_side = pd.concat(numbers, axis=1).min(axis=1, skipna=False)
    table["ok_num_frames"] = ok_number(pd.to_numeric(raw["num_frames"], errors="coerce"))
    table["ok_short_side"] = ok_number(short_side)
    table["ok_fps"] = ok_number(pd.to_numeric(raw["fps"], errors="coerce"))
    table["missing"] = (status == "missing").astype(float)
    table["failed"] = (status == "failed").astype(float)
    index = pd.to_numeric(raw["label_index"].where(raw["label_index"].str.fullmatch(r"\d+", na=False)))
    table["class_at_index"] = [
        classes[int(i)] if pd.notna(i) and int(i) < len(classes) else f"<no class at index {text!r}>"
        for i, text in zip(index, raw["label_index"])
    ]
    table["label_index_value"] = index
    table["ok_in_shard"] = [
        f"{shard}:{clip}" in in_shards if is_ok else None
        for shard, clip, is_ok in zip(raw["shard"], raw["clip_id"], ok)
    ]
    return table


def train_classes_table(manifest: pd.DataFrame, classes: list[str], train_split: str) -> pd.DataFrame:
    """One row per class (``row`` = class name) with ``train_ok_clips`` in ``train_split``."""
    raw = manifest.reindex(columns=["split", "status"])
    train_ok = manifest[(raw["split"] == train_split) & (raw["status"] == "ok")]
    counts = train_ok["label_index_value"].value_counts()
    return pd.DataFrame({
        ROW: classes,
        "class_index": range(len(classes)),
        "train_ok_clips": [int(counts.get(float(i), 0)) for i in range(len(classes))],
    })


def spread_indices(num_frames: int, count: int) -> list[int]:
    """Up to ``count`` frame indices spread evenly over ``0 .. num_frames - 1``."""
    count = min(count, num_frames)
    if count <= 1:
        return [0] * count
    return [round(k * (num_frames - 1) / (count - 1)) for k in range(count)]


def index_shards(shards_dir: Path, splits: list[str]) -> tuple[list[Any], list[str]]:
    """A ``ClipDataset`` per split that has shards, and ``<shard>: <error>`` for each shard that
    cannot be indexed (its split gets no dataset). Close the datasets when done."""
    from pipeline.data.shards import ClipDataset, shard_paths

    datasets, errors = [], []
    for split in splits:
        if not shard_paths(shards_dir, split):
            continue
        try:
            datasets.append(ClipDataset(
                shards_dir, split, lambda n, _: [spread_indices(n, PIXEL_FRAMES_PER_CLIP)]))
        except UNREADABLE_SHARD as err:
            errors += _shard_errors(shard_paths(shards_dir, split)) or [f"{split}: {err}"]  # e.g. mixed runs
    return datasets, errors


def _shard_errors(paths: list[Path]) -> list[str]:
    """``<shard>: <error>`` of each shard of ``paths`` that cannot be indexed."""
    from pipeline.data.shards import scan_shard

    errors = []
    for path in paths:
        try:
            scan_shard(path)
        except UNREADABLE_SHARD as err:
            errors.append(f"{_shard_name(path)}: {err}")
    return errors


def _shard_name(path: Path) -> str:
    """A shard's path as the manifest writes it: ``<split>/<split>-NNNNNN.tar``."""
    return f"{path.parent.name}/{path.name}"


def shard_members(datasets: list[Any]) -> set[str]:
    """``<shard>:<clip_id>`` of every clip indexed in ``datasets``."""
    return {f"{_shard_name(d.paths[e.shard])}:{e.key}" for d in datasets for e in d.entries}


def pixels_table(datasets: list[Any], errors: list[str], clips_per_shard: int,
                 seed: int) -> pd.DataFrame:
    """Pixel statistics of ``clips_per_shard`` clips drawn per shard (seeded by seed and shard name).

    Columns: ``row`` ("train/train-000000.tar:<clip_id>", or one of ``errors``),
    ``decodes`` (bool), ``mean``/``std`` of the decoded uint8 RGB values of up to
    PIXEL_FRAMES_PER_CLIP evenly spaced frames (NaN when the JPEGs do not decode) and
    ``short_side`` of the decoded frames.
    """
    records = [_undecodable(error) for error in errors]
    for dataset in datasets:
        for shard, path in enumerate(dataset.paths):
            members = [i for i, e in enumerate(dataset.entries) if e.shard == shard]
            rng = random.Random(f"{seed}/{_shard_name(path)}")
            for index in sorted(rng.sample(members, min(clips_per_shard, len(members)))):
                records.append(_pixel_stats(dataset, index, _shard_name(path)))
    return pd.DataFrame.from_records(records, columns=[ROW, "decodes", "mean", "std", "short_side"])


def _undecodable(row: str) -> dict[str, Any]:
    return {ROW: row, "decodes": False, "mean": math.nan, "std": math.nan, "short_side": math.nan}


def _pixel_stats(dataset: Any, index: int, shard: str) -> dict[str, Any]:
    """Statistics of one clip of ``dataset`` (a ClipDataset); ``decodes`` False on a bad JPEG."""
    row = f"{shard}:{dataset.entries[index].key}"
    try:
        frames = dataset[index]["frames"]  # uint8 (1, T, C, H, W)
    except RuntimeError:  # torchvision raises RuntimeError on undecodable JPEG data
        return _undecodable(row)
    values = frames.float()
    return {ROW: row, "decodes": True, "mean": values.mean().item(), "std": values.std().item(),
            "short_side": min(frames.shape[-2:])}


# --- expectations -------------------------------------------------------------------------


def annotation_checks(classes: list[str], known_splits: list[str]) -> list[Check]:
    """The annotations suite: columns, row shape, labels, times, splits, unique clips."""
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


def manifest_checks(s: Settings) -> list[Check]:
    """The manifest suite: statuses and their fractions, ok clips' shape, labels, shards."""
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


def train_class_checks(s: Settings) -> list[Check]:
    """Every class of classes.txt has enough ok clips in the training split."""
    return [Check("train_classes", f"every class has >= {s.min_clips_per_class} ok clips in "
                  f"{s.train_split}", "ExpectColumnValuesToBeBetween",
                  {"column": "train_ok_clips", "min_value": s.min_clips_per_class},
                  f">= {s.min_clips_per_class} (validate.min_clips_per_class)")]


def pixel_checks(s: Settings) -> list[Check]:
    """Decoded frames of sampled clips: they decode, are not flat, have the right size."""
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


# --- running ------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """Numbers, strings, lists and dicts only (numpy scalars → Python, NaN → None)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def _error(result: Any) -> str | None:
    """The exception messages of an expectation GX could not evaluate, else None."""
    info = result.exception_info or {}
    infos = [info] if "raised_exception" in info else list(info.values())
    messages = [i.get("exception_message") or "unknown error" for i in infos
                if isinstance(i, dict) and i.get("raised_exception")]
    return "; ".join(messages) or None


def _observed(result: Any) -> Any:
    """What an expectation saw: its observed value, or "N of M rows: row (value); ..."."""
    error = _error(result)
    if error:
        return f"error: {error}"
    outcome = result.result
    if "observed_value" in outcome:
        return _json_safe(outcome["observed_value"])
    count = outcome.get("unexpected_count", 0)
    total = outcome.get("element_count", 0) - (outcome.get("missing_count") or 0)  # nulls: not checked
    examples = []
    for item in outcome.get("partial_unexpected_index_list") or []:
        values = [f"{v!r}" for k, v in _json_safe(item).items() if k != ROW]
        examples.append(f"{item.get(ROW)} ({', '.join(values)})")
    text = f"{count} of {total} rows"
    return f"{text}: {'; '.join(examples)}" if examples else text


def run_checks(tables: dict[str, pd.DataFrame], checks: list[Check],
               docs_dir: Path | None = None) -> list[dict]:
    """Validate each suite's table with its checks (one ValidationDefinition per table, each
    table passed as its batch's dataframe); build the Data Docs site into ``docs_dir`` if given.

    Returns one record per check, in the order of ``checks``.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("tables")
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES,
                     "unexpected_index_column_names": [ROW]}
    found = {}
    for suite_name, table in tables.items():
        suite = context.suites.add(gx.ExpectationSuite(name=suite_name))
        for check in checks:
            if check.suite == suite_name:
                suite.add_expectation(getattr(gxe, check.expectation)(
                    **check.kwargs, description=check.name,
                    meta={"name": check.name, "critical": check.critical}))
        batch = source.add_dataframe_asset(suite_name).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite_name, data=batch, suite=suite))
        outcome = definition.run(batch_parameters={"dataframe": table}, result_format=result_format)
        for result in outcome.results:
            found[(suite_name, result.expectation_config.meta["name"])] = result
    if docs_dir is not None:
        context.add_data_docs_site(site_name="local", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(docs_dir.resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
        context.build_data_docs()
    return [
        {"suite": c.suite, "name": c.name, "critical": c.critical,
         "passed": bool(found[(c.suite, c.name)].success),
         "observed": _observed(found[(c.suite, c.name)]), "threshold": c.threshold}
        for c in checks
    ]


def collect(s: Settings) -> tuple[dict[str, pd.DataFrame], list[Check]]:
    """The tables to validate (by suite name) and every check on them.

    Raises StageError only when there is nothing to check (no annotations, no manifest,
    no usable classes.txt); data that breaks a contract is left for the checks to report.
    """
    from pipeline.data.kinetics import load_classes

    classes = load_classes(s.classes_path)
    annotations = annotations_table(s.root)
    if not (s.shards_dir / "manifest.csv").is_file():
        raise StageError(f"{s.shards_dir / 'manifest.csv'}: manifest not found; "
                         "run python -m pipeline.preprocess first")
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
    known_splits = list(dict.fromkeys([*KNOWN_SPLITS, s.train_split]))
    checks = [*annotation_checks(classes, known_splits), *manifest_checks(s),
              *train_class_checks(s), *pixel_checks(s)]
    return tables, checks


def validate_dataset(s: Settings) -> Summary:
    """Check the dataset of ``s``; write ``summary.json`` and ``data_docs/`` under ``s.report_dir``."""
    tables, checks = collect(s)
    s.report_dir.mkdir(parents=True, exist_ok=True)
    docs_tmp = s.report_dir / ".data_docs.tmp"
    shutil.rmtree(docs_tmp, ignore_errors=True)
    records = run_checks(tables, checks, docs_tmp)
    shutil.rmtree(s.report_dir / "data_docs", ignore_errors=True)
    os.replace(docs_tmp, s.report_dir / "data_docs")
    summary = Summary(success=all(r["passed"] or not r["critical"] for r in records),
                      expectations=records)
    text = json.dumps({"success": summary.success, "expectations": summary.expectations}, indent=2)
    tmp = s.report_dir / "summary.json.tmp"
    tmp.write_text(text + "\n")
    os.replace(tmp, s.report_dir / "summary.json")
    return summary


def failure_line(record: dict[str, Any]) -> str:
    """``<suite>: <name>: observed <value>, expected <threshold>`` of a failed expectation."""
    return (f"{record['suite']}: {record['name']}: observed {record['observed']}, "
            f"expected {record['threshold']}")


def settings_from(cfg: DictConfig) -> Settings:
    """The Settings of a stage config (``data.*``, ``model.clip``, ``validate.*``)."""
    data, limits = cfg.data, cfg.validate
    return Settings(
        root=Path(data.root), classes_path=classes_file(data), shards_dir=Path(data.shards_dir),
        report_dir=Path(limits.report_dir), short_side=int(data.short_side), fps=float(data.fps),
        train_split=str(data.train_split),
        min_frames=min_clip_frames(int(cfg.model.clip.num_frames), int(cfg.model.clip.stride)),
        max_missing_fraction=float(limits.max_missing_fraction),
        max_failed_fraction=float(limits.max_failed_fraction),
        min_clips_per_class=int(limits.min_clips_per_class),
        pixel_clips_per_shard=int(limits.pixel_clips_per_shard), seed=int(limits.seed),
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
    print(f"validate: {passed}/{len(summary.expectations)} expectations passed; report in "
          f"{s.report_dir}/summary.json and {s.report_dir}/data_docs/index.html")
    return 0 if summary.success else 1


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
