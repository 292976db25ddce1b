"""The shards directory's contract: its file names, the manifest's columns and the fingerprint
that ties them to one run. Writer (preprocess), readers (shards, train) and checks (validate)
take them from here.

``<shards_dir>/provenance.json`` (written first by a preprocess run) holds the run's
``fingerprint`` (a hash of format version, params and toolchain); every clip's ``<clip_id>.json``
in the shards carries the same value and ``manifest.csv`` is written last, so shards of two runs
(a run killed after a params change) can be told apart and refused by the readers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

FORMAT_VERSION = 4  # of the shards: bump when their layout or the decoding changes
MANIFEST_FILE = "manifest.csv"
PROVENANCE_FILE = "provenance.json"
STATE_DIR = ".state"
FINGERPRINT = "fingerprint"
MANIFEST_COLUMNS = (
    "clip_id", "youtube_id", "label", "label_index", "split", "time_start", "time_end", "kind",
    "status", "reason", "num_frames", "height", "width", "fps", "shard",
)


def shard_name(split: str, index: int) -> str:
    """File name of shard ``index`` of ``split``: ``<split>-000000.tar``."""
    return f"{split}-{index:06d}.tar"


def shard_pattern(split: str, temp_suffix: str = "") -> re.Pattern:
    """Matches the shard file names of ``split`` (and, given ``temp_suffix``, their temp files)."""
    suffix = f"(?:{re.escape(temp_suffix)})?" if temp_suffix else ""
    return re.compile(rf"{re.escape(split)}-\d{{6}}\.tar{suffix}")


def read_fingerprint(shards_dir: Path) -> str | None:
    """The fingerprint in ``<shards_dir>/provenance.json``; None without a readable one."""
    try:
        return str(json.loads((Path(shards_dir) / PROVENANCE_FILE).read_text())[FINGERPRINT])
    except (OSError, ValueError, KeyError, TypeError):
        return None
