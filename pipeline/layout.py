"""The shards directory's contract: its file names and the fingerprint that ties them to one run.

``<shards_dir>/provenance.json`` (written first by a preprocess run) holds the run's
``fingerprint`` (a hash of format version, params and toolchain); every clip's ``<clip_id>.json``
in the shards carries the same value and ``manifest.csv`` is written last, so shards of two runs
(a run killed after a params change) can be told apart and refused by the readers.
"""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST_FILE = "manifest.csv"
PROVENANCE_FILE = "provenance.json"
STATE_DIR = ".state"
FINGERPRINT = "fingerprint"


def read_fingerprint(shards_dir: Path) -> str | None:
    """The fingerprint in ``<shards_dir>/provenance.json``; None without a readable one."""
    try:
        return str(json.loads((Path(shards_dir) / PROVENANCE_FILE).read_text())[FINGERPRINT])
    except (OSError, ValueError, KeyError, TypeError):
        return None
