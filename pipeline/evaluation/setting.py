"""What an evaluation's score depends on besides the model: its data, split and views.

Two scores compare only when they were measured alike: on the same validation bytes, the same
split, the same clips × crops and crop size. ``EvalSetting`` names those; its ``fingerprint``
is what the evaluate stage records (``reports/evaluation.json``), the register stage copies onto
the model version and the promotion gate compares (``pipeline.registry.promotion``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pipeline.core.errors import StageError
from pipeline.data.layout import MANIFEST_FILE
from pipeline.data.shard_store import LocalStore, RemoteStore, ShardsLocation, open_store

RECORD_FILE = "evaluation.json"  # beside eval.metrics_file


def split_digest(shards_dir: ShardsLocation, split: str) -> str:
    """sha256 of what an evaluation of ``split`` reads: its manifest rows and its shards' bytes
    (the same for a folder and for its copy in an object store)."""
    store = open_store(shards_dir)
    manifest = store.read_bytes(MANIFEST_FILE)
    if manifest is None:
        raise StageError(f"{store.where(MANIFEST_FILE)} not found; run the preprocess stage (data.shards_dir)")
    digest = hashlib.sha256()
    lines = manifest.decode().splitlines()
    column = lines[0].split(",").index("split") if lines else 0
    digest.update("\n".join([lines[0], *sorted(row for row in lines[1:] if row.split(",")[column] == split)]).encode())
    for rel in store.shards(split):
        tar_sha256 = store.retried(rel, functools.partial(_sha256, store, rel))
        digest.update(f"\n{rel.rpartition('/')[2]}\n".encode() + tar_sha256)
    return digest.hexdigest()


def _sha256(store: LocalStore | RemoteStore, rel: str) -> bytes:
    with store.open(rel) as handle:
        return hashlib.file_digest(handle, "sha256").digest()


@dataclass(frozen=True)
class EvalSetting:
    """The data and views of one evaluation (its model aside)."""

    data_digest: str  # split_digest of the shards it read
    split: str
    num_clips: int
    num_crops: int
    crop_size: int

    @property
    def fingerprint(self) -> str:
        """16 hex digits naming the setting: equal fingerprints, comparable scores."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def differences(self, other: EvalSetting) -> list[str]:
        """``num_crops 1 ≠ 3``-style descriptions of the fields that differ (digests shortened)."""
        changed = []
        for field in fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if mine != theirs:
                short = (lambda v: str(v)[:12]) if field.name == "data_digest" else str
                changed.append(f"{field.name} {short(mine)} ≠ {short(theirs)}")
        return changed

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EvalSetting:
        """The setting a record or a version tag holds; ValueError when it is not one."""
        try:
            counts = (int(values[key]) for key in ("num_clips", "num_crops", "crop_size"))
            return cls(str(values["data_digest"]), str(values["split"]), *counts)
        except (KeyError, TypeError) as err:
            raise ValueError(f"not an evaluation setting: {err}") from None


@dataclass(frozen=True)
class EvalRecord:
    """What an evaluation leaves for the next stages: which run it scored, how, where, its metrics."""

    run_id: str | None
    setting: EvalSetting
    shards_dir: str  # where its data was, as configured (relative: to the project), to score others on it
    metrics: dict[str, float]

    def to_json(self) -> str:
        body = {**asdict(self), "fingerprint": self.setting.fingerprint}
        return json.dumps(body, indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, path: Path) -> EvalRecord:
        """The record in ``path``; a StageError (one line) when it is missing or malformed."""
        if not path.is_file():
            raise StageError(f"{path} not found; run the evaluate stage first")
        try:
            body = json.loads(path.read_text())
            return cls(
                body["run_id"], EvalSetting.from_dict(body["setting"]), str(body["shards_dir"]), dict(body["metrics"])
            )
        except (ValueError, KeyError, TypeError) as err:
            raise StageError(f"{path} is not an evaluation record ({err}); rerun the evaluate stage") from None


def record_path(metrics_file: Path) -> Path:
    """Where the evaluate stage writes its record: ``evaluation.json`` beside ``eval.metrics_file``."""
    return Path(metrics_file).with_name(RECORD_FILE)
