"""Read a Kinetics-layout dataset root: class list, annotation CSVs and where each clip's video is.

A root holds ``classes.txt`` (one class per line; the index is the 0-based line number),
``annotations/*.csv`` with the official columns ``label,youtube_id,time_start,time_end,split[,is_cc]``
(and optionally ``kind``, a subset the evaluation reports apart)
and videos at ``videos/<split>/<label>/<clip>.<ext>`` or flat ``videos/<split>/<clip>.<ext>``.

Labels map to indices only through ``classes.txt`` (never through sorted folder names, which swap
the two "skiing" classes 308/309 of Kinetics-400). Rows with an empty label whose split is
``test`` (the unlabelled Kinetics-400 test release, with or without a ``label`` column) are
skipped: they cannot be trained or scored. Rows with ``time_end <= time_start`` are parsed; the
validate stage judges them. A missing video is normal (``find_video`` returns None).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import StageError

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi")
REQUIRED_COLUMNS = ("youtube_id", "time_start", "time_end", "split")
UNLABELLED_SPLIT = "test"
# YouTube's id alphabet: a '.' would end the WebDataset key of the clip's frames early
YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]+")
KIND = re.compile(r"[a-z0-9_]+")  # it becomes a metric name (video_top1 per kind)
SECONDS = re.compile(r"[0-9]+")  # ASCII digits only: int() would also take '1_26', ' 126 ', '١٢٦'


class AnnotationError(StageError):
    """A class list or annotation CSV that cannot be used; message ``path:line: problem; fix``."""


@dataclass(frozen=True)
class Annotation:
    """One annotated clip: a labelled time window of a YouTube video."""

    label: str
    label_index: int
    youtube_id: str
    time_start: int
    time_end: int
    split: str
    source: str  # where it came from, e.g. "annotations/train.csv:17"
    kind: str = ""  # optional ``kind`` column: a subset evaluate scores apart (the synthetic set's spatial/temporal)

    @property
    def clip_id(self) -> str:
        """The clip's file stem, as in the Kinetics downloads: ``<id>_<start:06d>_<end:06d>``."""
        return f"{self.youtube_id}_{self.time_start:06d}_{self.time_end:06d}"


def _unsafe_path_part(name: str) -> bool:
    """True when ``name`` cannot be used as one path component inside the root."""
    return name in ("", ".", "..") or any(c in name for c in "/\\\0")


def quote_label(label: str) -> str:
    """A label as a CSV field the way the Kinetics CSVs write it (labels with spaces are quoted)."""
    if any(c in label for c in ' ,"()'):
        return '"' + label.replace('"', '""') + '"'
    return label


def load_classes(path: Path) -> list[str]:
    """Return the class names of ``path`` (``classes.txt``); index = 0-based line number."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(
            f"{path}: class list not found; write one class name per line "
            "(for Kinetics-400 copy pipeline/resources/kinetics400_classes.txt)"
        )
    names = path.read_text(encoding="utf-8-sig").splitlines()
    while names and not names[-1].strip():
        names.pop()
    seen: dict[str, int] = {}
    for line_no, name in enumerate(names, start=1):
        if name != name.strip() or _unsafe_path_part(name):
            raise AnnotationError(
                f"{path}:{line_no}: class name {name!r} is empty, has surrounding spaces or a path "
                "separator; fix the line (indices are line numbers, so do not just delete it)"
            )
        if name in seen:
            raise AnnotationError(
                f"{path}:{line_no}: class {name!r} repeats line {seen[name]}; remove the duplicate"
            )
        seen[name] = line_no
    if not names:
        raise AnnotationError(f"{path}: class list is empty; write one class name per line")
    return names


def _parse_row(
    row: list[str], header: list[str], where: str, class_index: dict[str, int], source: str
) -> Annotation | None:
    """Turn one CSV row into an Annotation; None for an unlabelled test row."""
    if len(row) != len(header):
        raise AnnotationError(
            f"{where}: {len(row)} columns but the header has {len(header)}; "
            "quote labels that contain commas and fix the row"
        )
    fields = dict(zip(header, row))
    label = fields.get("label", "").strip()
    split = fields["split"].strip()
    if not label and split == UNLABELLED_SPLIT:
        return None
    if not label:
        raise AnnotationError(
            f"{where}: label is empty (only split {UNLABELLED_SPLIT!r} rows may be unlabelled); "
            "fill in the label or drop the row"
        )
    if label not in class_index:
        raise AnnotationError(
            f"{where}: label {label!r} is not in the class list; "
            "fix the label or add it to classes.txt"
        )
    youtube_id = fields["youtube_id"].strip()
    for name, value in (("youtube_id", youtube_id), ("split", split)):
        if _unsafe_path_part(value):
            raise AnnotationError(
                f"{where}: {name} {value!r} is empty or contains '..', '/' or '\\' and would "
                "leave the dataset root; fix the row"
            )
    if not YOUTUBE_ID.fullmatch(youtube_id):
        raise AnnotationError(
            f"{where}: youtube_id {youtube_id!r} has characters outside A-Z a-z 0-9 _ - "
            "(YouTube's id alphabet; a '.' would break the clip's shard key); fix the row"
        )
    kind = fields.get("kind", "").strip()
    if kind and not KIND.fullmatch(kind):
        raise AnnotationError(f"{where}: kind {kind!r} is not a lower-case word (a-z, 0-9, _); fix the row")
    times = []
    for name in ("time_start", "time_end"):
        text = fields[name]
        if not SECONDS.fullmatch(text):
            raise AnnotationError(
                f"{where}: {name} {text!r} is not a non-negative whole number of seconds "
                "(ASCII digits only); fix the row"
            )
        times.append(int(text))
    return Annotation(
        label=label,
        label_index=class_index[label],
        youtube_id=youtube_id,
        time_start=times[0],
        time_end=times[1],
        split=split,
        source=source,
        kind=kind,
    )


def read_csv(path: Path, root: Path, classes: list[str]) -> list[Annotation]:
    """Return the annotations of one CSV file in row order (``source`` is relative to ``root``)."""
    class_index = {name: i for i, name in enumerate(classes)}
    try:
        relative = path.relative_to(root).as_posix()
    except ValueError:
        relative = path.as_posix()
    if not path.is_file():
        raise AnnotationError(f"{path}: not a file; annotations/*.csv must be CSV files")
    try:
        return _read_rows(path, relative, class_index)
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: not UTF-8 text (byte {err.start}); save the CSV as UTF-8") from None
    except csv.Error as err:
        raise AnnotationError(f"{path}: not a readable CSV ({err}); fix the file") from None


def _read_rows(path: Path, relative: str, class_index: dict[str, int]) -> list[Annotation]:
    annotations = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [name.strip() for name in next(reader, [])]
        missing = [name for name in REQUIRED_COLUMNS if name not in header]
        if missing:
            raise AnnotationError(
                f"{path}:1: header lacks column(s) {', '.join(missing)}; the first line must be "
                "label,youtube_id,time_start,time_end,split[,is_cc]"
            )
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            ann = _parse_row(row, header, f"{path}:{line}", class_index, f"{relative}:{line}")
            if ann is not None:
                annotations.append(ann)
    return annotations


def read_annotations(root: Path, classes: list[str]) -> list[Annotation]:
    """Return the annotations of every ``<root>/annotations/*.csv`` (files by name, rows in order)."""
    root = Path(root)
    files = sorted((root / "annotations").glob("*.csv"))
    if not files:
        raise AnnotationError(
            f"{root / 'annotations'}: no *.csv annotation files; put train.csv/validate.csv there"
        )
    return [ann for path in files for ann in read_csv(path, root, classes)]


def find_video(root: Path, ann: Annotation) -> Path | None:
    """Return the clip's video file, or None when it was never downloaded.

    Looks in ``videos/<split>/<label>/`` (label as written or with spaces as underscores, as
    some downloaders save it) and then flat in ``videos/<split>/``, for each of VIDEO_EXTENSIONS.
    """
    split_dir = Path(root) / "videos" / ann.split
    folders = [split_dir / ann.label, split_dir / ann.label.replace(" ", "_"), split_dir]
    for folder in dict.fromkeys(folders):
        for ext in VIDEO_EXTENSIONS:
            candidate = folder / f"{ann.clip_id}.{ext}"
            if candidate.is_file():
                return candidate
    return None
