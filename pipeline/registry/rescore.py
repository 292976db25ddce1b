"""Champion / challenger: score registered versions again, on one evaluation's data and views.

When a candidate and the alias holder were evaluated differently (another validation set, other
views), their recorded metrics do not compare. If the candidate's evaluation data is still on
disk, byte for byte (its split digest), both versions are scored on it with the candidate's
split and clips × crops, each through its registered pt2 program and its own clip geometry and
normalisation, and the gate compares those scores.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from pipeline.core.errors import StageError
from pipeline.data.layout import MANIFEST_FILE
from pipeline.evaluation.meters import Evaluation
from pipeline.evaluation.multiview import TestViews, score_split
from pipeline.evaluation.setting import EvalSetting, split_digest
from pipeline.registry.predict import load_model

BATCH_SIZE = 16  # views per forward pass


def project_path(path: str, start: Path | None = None) -> Path:
    """``path`` as a stage wrote it: relative paths are the project's (the nearest folder with a
    ``dvc.yaml`` around ``start``, default the working directory), wherever the command runs."""
    if Path(path).is_absolute():
        return Path(path)
    start = (start or Path.cwd()).resolve()
    root = next((folder for folder in (start, *start.parents) if (folder / "dvc.yaml").is_file()), start)
    return root / path


def present_shards(shards_dir: str, setting: EvalSetting) -> Path | None:
    """The recorded ``shards_dir`` when it still holds exactly the bytes ``setting`` was measured
    on (a queued experiment's temp copy is gone, but the workspace has the same shards), else None."""
    path = project_path(shards_dir)
    if not (path / MANIFEST_FILE).is_file():
        return None
    return path if split_digest(path, setting.split) == setting.data_digest else None


def check_classes(classes: list[str], shards_dir: Path, split: str, model_uri: str) -> None:
    """StageError unless every clip of ``split`` has its label at its index in ``classes``."""
    with open(shards_dir / MANIFEST_FILE, newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["split"] == split and row["status"] == "ok"]
    for row in rows:
        index = int(row["label_index"])
        if index >= len(classes) or classes[index] != row["label"]:
            raise StageError(
                f"{model_uri} does not know class {row['label']!r} at index {index} of {shards_dir}; "
                "it cannot be scored on that data"
            )


def rescore(model_uri: str, setting: EvalSetting, shards_dir: Path) -> dict[str, float]:
    """The metrics of the registered model ``model_uri`` on ``setting``'s split and views of ``shards_dir``."""
    model = load_model(model_uri)
    check_classes(model.classes, shards_dir, setting.split, model_uri)
    prep = model.preprocessing
    views = TestViews(
        prep.num_frames, prep.stride, prep.crop_size, setting.num_clips, setting.num_crops, prep.mean, prep.std
    )
    cpu = torch.device("cpu")
    scored = score_split(model.net, views, shards_dir, setting.split, BATCH_SIZE, cpu, progress=False)
    return Evaluation(model.classes, scored.scores, scored.labels).metrics()
