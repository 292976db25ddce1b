"""UCF-101 and HMDB-51 in their official layouts → the Kinetics root the pipeline reads.

``import_dataset("ucf101" | "hmdb51", src, dest, split)`` writes ``dest/classes.txt``,
``dest/annotations/{train,validate}.csv`` and ``dest/videos/<split>/<label>/<clip>.avi`` (hard
links where the file system allows, else copies), keeping the official split ``split`` (1, 2 or 3):

- UCF-101: ``classInd.txt`` (``1 ApplyEyeMakeup``), ``trainlist0N.txt`` (``Class/v_Class_gXX_cYY.avi 1``),
  ``testlist0N.txt`` (``Class/v_Class_gXX_cYY.avi``), in ``src`` or ``src/ucfTrainTestlist``, videos at
  ``Class/v_Class_gXX_cYY.avi`` in ``src`` or ``src/UCF-101``;
- HMDB-51: ``<class>_test_splitN.txt`` (``name.avi 1``: 1 train, 2 test, 0 unused) anywhere under ``src``
  and ``<class>/name.avi`` in ``src`` or one folder below it; its classes are the split files' names,
  sorted.

A clip is a whole video (use ``data.trim=false``): ``time_start`` is 0 and ``time_end`` its
duration in whole seconds, rounded up, read from the AVI header (1 when the header says nothing).
Its id is the file stem in YouTube's id alphabet (HMDB's ``!``, ``&``, ``(``, ``'`` become ``-``)
plus, when that changed it, 8 hex digits of the original name's sha1, so ids never collide. A
split file naming a missing video keeps its row without a video: counted as missing, as in Kinetics.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import StageError
from pipeline.core.files import write_atomic
from pipeline.data.kinetics import quote_label

SPLITS = {"train": "train", "test": "validate"}  # official split → the pipeline's split name
UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Entry:
    """One video of the official split: its class, its file, its split."""

    label: str
    video: Path
    split: str  # train | validate


@dataclass(frozen=True)
class ImportSummary:
    dataset: str
    classes: int
    clips: dict[str, int]  # per split
    missing: int  # rows whose video is not in the source


def clip_stem(video: str) -> str:
    """A YouTube-alphabet id for a video file name (a hash suffix when characters were replaced)."""
    stem = Path(video).stem
    safe = UNSAFE.sub("-", stem)
    return safe if safe == stem else f"{safe}-{hashlib.sha1(stem.encode()).hexdigest()[:8]}"


def avi_seconds(path: Path) -> int:
    """Whole seconds (rounded up) of an AVI from its main header (``avih``); 1 when it has none."""
    with open(path, "rb") as f:
        head = f.read(64)
    if len(head) < 56 or head[:4] != b"RIFF" or head[8:12] != b"AVI " or head[24:28] != b"avih":
        return 1
    micro_per_frame, total_frames = struct.unpack_from("<I", head, 32)[0], struct.unpack_from("<I", head, 48)[0]
    return max(1, math.ceil(micro_per_frame * total_frames / 1e6))


def _lines(path: Path) -> Iterator[list[str]]:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            yield line.split()


def ucf101_entries(src: Path, split: int) -> tuple[list[str], list[Entry]]:
    """UCF-101's classes (``classInd.txt`` order) and the train/test entries of official split ``split``."""
    lists = src / "ucfTrainTestlist" if (src / "ucfTrainTestlist").is_dir() else src
    index = lists / "classInd.txt"
    if not index.is_file():
        raise StageError(f"{src} is not UCF-101: no classInd.txt (in it or in ucfTrainTestlist/); point at its root")
    classes = [fields[1] for fields in _lines(index)]
    videos = src / "UCF-101" if (src / "UCF-101").is_dir() else src
    entries = []
    for official, name in (("train", f"trainlist0{split}.txt"), ("test", f"testlist0{split}.txt")):
        listing = lists / name
        if not listing.is_file():
            raise StageError(f"{listing} not found: UCF-101's split {split} needs {name} beside classInd.txt")
        for fields in _lines(listing):
            label, _, name = fields[0].partition("/")
            entries.append(Entry(label, videos / label / name, SPLITS[official]))
    return classes, entries


def hmdb51_entries(src: Path, split: int) -> tuple[list[str], list[Entry]]:
    """HMDB-51's classes (sorted split-file names) and the train/test entries of official split ``split``."""
    split_files = sorted(src.rglob(f"*_test_split{split}.txt"))
    if not split_files:
        raise StageError(f"{src} is not HMDB-51: no *_test_split{split}.txt split files under it; point at its root")
    classes = [listing.name.removesuffix(f"_test_split{split}.txt") for listing in split_files]
    holders = [src, *sorted(p for p in src.iterdir() if p.is_dir())]
    videos = next((folder for folder in holders if (folder / classes[0]).is_dir()), src)
    entries = []
    for label, listing in zip(classes, split_files):
        for fields in _lines(listing):
            kind = fields[1] if len(fields) > 1 else "0"
            if kind in ("1", "2"):
                entries.append(Entry(label, videos / label / fields[0], SPLITS["train" if kind == "1" else "test"]))
    return classes, entries


READERS = {"ucf101": ucf101_entries, "hmdb51": hmdb51_entries}


def import_dataset(dataset: str, src: Path, dest: Path, split: int) -> ImportSummary:
    """Write the Kinetics root of ``dataset``'s official split ``split`` from ``src`` into ``dest``."""
    if dataset not in READERS:
        raise StageError(f"unknown dataset {dataset!r}; import one of {', '.join(READERS)}")
    if split not in (1, 2, 3):
        raise StageError(f"split {split} does not exist; the official splits are 1, 2 and 3")
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise StageError(f"{src} is not a folder; point at the {dataset} root")
    classes, entries = READERS[dataset](src, split)
    unknown = sorted({e.label for e in entries} - set(classes))
    if unknown:
        raise StageError(f"{src}: split lists name classes not in its class list: {', '.join(unknown[:3])}")
    rows: dict[str, list[str]] = {name: [] for name in SPLITS.values()}
    missing = 0
    for entry in entries:
        video, stem = entry.video, clip_stem(entry.video.name)
        seconds = avi_seconds(video) if video.is_file() else 1
        clip = f"{stem}_{0:06d}_{seconds:06d}"
        rows[entry.split].append(f"{quote_label(entry.label)},{stem},0,{seconds},{entry.split}")
        if video.is_file():
            _place(video, dest / "videos" / entry.split / entry.label / f"{clip}{video.suffix.lower()}")
        else:
            missing += 1
    write_atomic(dest / "classes.txt", "\n".join(classes) + "\n")
    for split_name, lines in rows.items():
        text = "\n".join(["label,youtube_id,time_start,time_end,split", *lines]) + "\n"
        write_atomic(dest / "annotations" / f"{split_name}.csv", text)
    return ImportSummary(dataset, len(classes), {k: len(v) for k, v in rows.items()}, missing)


def _place(video: Path, target: Path) -> None:
    """``video`` at ``target``: a hard link where possible, else a copy (temp name, then rename)."""
    if target.is_file() and target.stat().st_size == video.stat().st_size:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(video, temporary)
    except OSError:
        shutil.copyfile(video, temporary)
    os.replace(temporary, target)
