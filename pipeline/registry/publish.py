"""Publishing a trained model: log it (pt2, no pickle) to its training run and register a version.

The model is logged with ``mlflow.pytorch.log_model`` in the pt2 format (``torch.export``) with a
dynamic batch dimension, together with what ``a2net predict`` needs to use it alone: the class
list (``classes.txt`` and the ``classes`` metadata) and the clip and preprocessing parameters
(``preprocessing`` metadata). The new version carries its lineage as tags (git commit, md5 of the
run's own resolved config, shards md5, the toolchain that made the shards, validation outcome,
headline metrics) and a Markdown description with the metrics table.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.config import config_md5
from pipeline.core.errors import StageError
from pipeline.data.provenance import TOOLCHAIN_TAG, data_fingerprint, shards_toolchain
from pipeline.registry.tracking import git_commit, setup_mlflow
from pipeline.training.checkpoint import CHECKPOINT_FILE, RUN_ID_FILE, Checkpoint

HEADLINE_METRICS = ("video_top1", "video_top5", "clip_top1", "clip_top5")
TORCH_RELEASE = torch.__version__.split("+")[0]  # "2.14.1+cu130" → "2.14.1", as pip sees it
EXAMPLE_BATCH = 2  # > 1, or torch.export specialises the batch dimension to a constant


@dataclass(frozen=True)
class Preprocessing:
    """How a raw video becomes the model's input views: the pipeline's decode and eval transform."""

    fps: float
    short_side: int
    jpeg_quality: int  # frames go through the shards' JPEG round trip, as in evaluate
    num_frames: int
    stride: int
    crop_size: int
    num_clips: int
    num_crops: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Shape of one view, (C, T, H, W)."""
        return (3, self.num_frames, self.crop_size, self.crop_size)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preprocessing:
        """Inverse of ``dataclasses.asdict`` (as stored in the model's metadata)."""
        fields = dict(values)
        fields["mean"], fields["std"] = tuple(fields["mean"]), tuple(fields["std"])
        return cls(**fields)


@dataclass(frozen=True)
class Lineage:
    """Where a model came from, stored as model-version tags."""

    git_commit: str
    config_md5: str  # the training run's own resolved config (pipeline.core.config.config_md5)
    shards_md5: str
    validation: str  # passed | failed | missing
    toolchain: Mapping[str, str] = field(default_factory=dict)  # versions that made the shards
    unfinished: str = ""  # "epoch k of n" when register.allow_unfinished let an unfinished run in

    def tags(self) -> dict[str, str]:
        """Model-version tags: the fields, the toolchain as ``toolchain.<tool>``."""
        plain = {k: v for k, v in asdict(self).items() if k != "toolchain" and (k != "unfinished" or v)}
        return {**plain, **{f"{TOOLCHAIN_TAG}{k}": v for k, v in self.toolchain.items()}}


@dataclass(frozen=True)
class RegisteredModel:
    """What ``reports/registered_model.json`` records."""

    name: str
    version: str
    run_id: str
    model_uri: str
    logged_model_uri: str


def validation_outcome(summary_file: Path) -> str:
    """``passed``/``failed`` from the validate stage's summary.json, ``missing`` without one."""
    if not summary_file.exists():
        return "missing"
    try:
        success = json.loads(summary_file.read_text())["success"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise StageError(f"{summary_file} has no 'success' field; rerun the validate stage") from None
    return "passed" if success is True else "failed"


def metrics_table(metrics: Mapping[str, float]) -> str:
    """A Markdown table of metrics, one row each, in the order given."""
    rows = [f"| {name} | {value:.4f} |" for name, value in metrics.items()]
    return "\n".join(["| metric | value |", "|---|---|", *rows])


def headline_metrics(run_metrics: Mapping[str, float], run_id: str) -> dict[str, float]:
    """The evaluate stage's headline metrics from a run; an error names the ones missing."""
    missing = [m for m in HEADLINE_METRICS if m not in run_metrics]
    if missing:
        raise StageError(
            f"run {run_id} has no metric {', '.join(missing)}; run the evaluate stage on this training run first"
        )
    return {m: float(run_metrics[m]) for m in HEADLINE_METRICS}


def log_and_register(
    model: torch.nn.Module,
    *,
    run_id: str,
    model_name: str,
    architecture: str,
    classes: list[str],
    preprocessing: Preprocessing,
    lineage: Lineage,
) -> RegisteredModel:
    """Log ``model`` (pt2) to the run ``run_id`` and register it as a new version of ``model_name``.

    The MLflow tracking URI must already be set. Returns the new version's coordinates.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    metrics = headline_metrics(client.get_run(run_id).data.metrics, run_id)
    example = np.zeros((EXAMPLE_BATCH, *preprocessing.input_shape), dtype=np.float32)
    metadata = {"architecture": architecture, "classes": classes, "preprocessing": asdict(preprocessing)}
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
        classes_path = Path(tmp) / "classes.txt"
        classes_path.write_text("".join(f"{c}\n" for c in classes))
        info = mlflow.pytorch.log_model(
            model.eval(),
            name="model",
            input_example=example,
            metadata=metadata,
            extra_files=[str(classes_path)],
            pip_requirements=[f"torch=={TORCH_RELEASE}"],
        )
    tags = {**lineage.tags(), "architecture": architecture, **{name: f"{value:.4f}" for name, value in metrics.items()}}
    version = mlflow.register_model(info.model_uri, model_name, tags=tags)
    description = (
        f"**{architecture}** trained in run `{run_id}`, validation "
        f"**{lineage.validation}**.\n\n{metrics_table(metrics)}\n"
    )
    client.update_model_version(model_name, version.version, description=description)
    return RegisteredModel(
        name=model_name,
        version=str(version.version),
        run_id=run_id,
        model_uri=f"models:/{model_name}/{version.version}",
        logged_model_uri=info.model_uri,
    )


def preprocessing_of(checkpoint: Checkpoint, num_clips: int, num_crops: int) -> Preprocessing:
    """How ``a2net predict`` must turn a video into the inputs ``checkpoint``'s model was tested on."""
    data, clip = checkpoint.config["data"], checkpoint.clip
    return Preprocessing(
        fps=float(data["fps"]),
        short_side=int(data["short_side"]),
        jpeg_quality=int(data["jpeg_quality"]),
        num_frames=clip["num_frames"],
        stride=clip["stride"],
        crop_size=clip["crop_size"],
        num_clips=int(num_clips),
        num_crops=int(num_crops),
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
    )


def lineage_of(
    checkpoint: Checkpoint, run_tags: Mapping[str, str], shards_dir: Path, validation: str, unfinished: bool
) -> Lineage:
    """Lineage from the checkpoint (the run's resolved config) and the training run's own tags (the
    commit it ran at, the shards' dvc.lock md5 and toolchain it saw), else the current checkout's."""
    toolchain = {k.removeprefix(TOOLCHAIN_TAG): v for k, v in run_tags.items() if k.startswith(TOOLCHAIN_TAG)}
    return Lineage(
        git_commit=run_tags.get("git_commit") or git_commit(),
        config_md5=config_md5(checkpoint.config),
        shards_md5=run_tags.get("data.dvc_md5") or data_fingerprint(shards_dir).get("data.dvc_md5", "unknown"),
        validation=validation,
        toolchain=toolchain or shards_toolchain(shards_dir),
        unfinished=f"epoch {checkpoint.epoch} of {checkpoint.epochs}" if unfinished else "",
    )


def register_training(
    out_dir: Path,
    model_name: str,
    experiment: str,
    shards_dir: Path,
    validation_summary: Path,
    num_clips: int,
    num_crops: int,
    allow_unfinished: bool,
) -> tuple[RegisteredModel, Lineage]:
    """Register ``<out_dir>/last.pt`` under ``model_name`` with its lineage; its coordinates and lineage."""
    from mlflow import MlflowClient

    run_id_file, checkpoint_path = out_dir / RUN_ID_FILE, out_dir / CHECKPOINT_FILE
    if not run_id_file.exists():
        raise StageError(f"{run_id_file} not found; run the train stage first")
    checkpoint = Checkpoint.load(checkpoint_path)
    model = checkpoint.build_net(checkpoint_path).eval()
    unfinished = checkpoint.refuse_unfinished(checkpoint_path, "register.allow_unfinished", allow_unfinished)
    run_id = run_id_file.read_text().strip()
    setup_mlflow(experiment)
    run_tags = MlflowClient().get_run(run_id).data.tags
    lineage = lineage_of(checkpoint, run_tags, shards_dir, validation_outcome(validation_summary), unfinished)
    registered = log_and_register(
        model,
        run_id=run_id,
        model_name=model_name,
        architecture=checkpoint.model_name,
        classes=list(checkpoint.classes),
        preprocessing=preprocessing_of(checkpoint, num_clips, num_crops),
        lineage=lineage,
    )
    return registered, lineage
