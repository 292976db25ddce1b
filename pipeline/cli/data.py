"""``a2net import``: UCF-101 or HMDB-51 in their official layout as a Kinetics root."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.common import add_command

DESCRIPTION = """\
Write one official split of UCF-101 or HMDB-51 as the Kinetics root the
pipeline reads: DEST/classes.txt (the official class order),
DEST/annotations/{train,validate}.csv (the split's train and test videos) and
DEST/videos/<split>/<class>/ (hard links to the videos where the file system
allows, else copies). A clip is a whole video: preprocess it with
data.trim=false (the ucf101 and hmdb51 data configs do). A listed video that
is absent is counted missing by preprocess, as in Kinetics."""

EPILOG = """\
examples:
  a2net import ucf101 /data/UCF101 data/ucf101 --split 1   # classInd.txt, trainlist01.txt, UCF-101/
  a2net import hmdb51 /data/hmdb51 data/hmdb51 --split 2   # <class>_test_split2.txt, <class>/*.avi
  dvc exp run -S experiment=ucf101_finetune_r50_a2

exit codes:
  0  done
  2  SRC is not the dataset's layout, no such split; one line on stderr"""


def cmd_import(args: argparse.Namespace) -> int:
    """``a2net import``: the importer's summary in one line."""
    from pipeline.data.importers import import_dataset

    done = import_dataset(args.dataset, Path(args.src), Path(args.dest), args.split)
    clips = ", ".join(f"{n} {split}" for split, n in done.clips.items())
    missing = f"{done.missing} missing"
    print(f"{done.dataset} split {args.split}: {done.classes} classes, {clips} clips ({missing}) in {args.dest}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``import`` sub-command and its options."""
    p = add_command(sub, "import", "UCF-101 / HMDB-51 as a Kinetics root", DESCRIPTION, EPILOG, cmd_import)
    p.add_argument("dataset", choices=("ucf101", "hmdb51"), help="which dataset SRC holds")
    p.add_argument("src", metavar="SRC", help="the dataset as downloaded and unpacked (its split files and videos)")
    p.add_argument("dest", metavar="DEST", help="the Kinetics root to write (data.root)")
    p.add_argument("--split", type=int, choices=(1, 2, 3), default=1, help="the official split (default: 1)")
