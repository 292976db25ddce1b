"""The training's MLflow run: what identifies it, its per-epoch metrics, and runs left behind.

Epochs are logged only after their checkpoint is on disk, so a resumed run backfills the epochs
it lacks and never logs one twice; a run killed with ``kill -9`` in training is marked KILLED by
the next training in the same ``train.out_dir`` (one that trained to its last epoch never is).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch
from torch import nn

from pipeline.core.errors import StageError
from pipeline.core.files import write_atomic
from pipeline.data.layout import MANIFEST_FILE
from pipeline.data.provenance import data_fingerprint
from pipeline.data.shard_store import ShardsLocation, is_url, open_store
from pipeline.runtime.checkpoint import CHECKPOINT_FILE, Checkpoint
from pipeline.tracking.store import dvc_experiment_tags, git_commit, setup_mlflow

MAX_NAME_CHANGES = 60  # characters of changed settings in a run name; the md5 tells the rest apart
METRIC_COLUMNS = ("epoch", "train_loss", "train_top1", "val_clip_top1", "lr", "epoch_time", "clips_per_s")


@dataclass(frozen=True)
class RunSpec:
    """What names, describes and identifies a training's MLflow run, made by the stage from its config."""

    experiment: str
    model_name: str
    dataset: str  # data.name
    shards_dir: ShardsLocation  # a folder or an object-store URL
    recipe: str  # "for 60 epochs: batch 32, SGD lr 0.05 ...": how it trains, in words
    changed: dict[str, Any]  # model, data and train values that differ from pipeline/conf's defaults
    params: dict[str, str]  # the whole resolved config, flattened (``train.lr``)
    config_yaml: str
    config_md5: str
    clip_shape: tuple[int, int, int, int]  # (C, T, H, W) of one clip, for the model's MACs
    system_metrics_s: float  # 0: no system metrics

    @property
    def name(self) -> str:
        """``<model> <changed settings> <config md5[:6]>``: runs of other configs get other names."""
        changed = " ".join(f"{key.split('.')[-1]}={value}" for key, value in self.changed.items())
        return " ".join(part for part in (self.model_name, changed[:MAX_NAME_CHANGES], self.config_md5[:6]) if part)

    def description(self, data_tags: Mapping[str, str]) -> str:
        """The run's Markdown description (``mlflow.note.content``): what was trained, on what, how."""
        overrides = ", ".join(f"`{key}={value}`" for key, value in self.changed.items()) or "none"
        return (
            f"**{self.model_name}** trained on `{self.shards_dir}` ({self.dataset}, manifest md5 "
            f"`{data_tags.get('data.manifest_md5', '?')}`) {self.recipe}.\n\n"
            f"Settings that differ from `pipeline/conf`: {overrides}.\n\nCommit `{git_commit()}`."
        )


@contextmanager
def mlflow_run(spec: RunSpec, run_id: str | None, enabled: bool) -> Iterator[str | None]:
    """Start (or, given ``run_id``, continue) the training's MLflow run; no-op when not enabled.

    The run samples system metrics every ``spec.system_metrics_s`` (CPU, memory, disk, network,
    and the GPU's utilisation and memory where nvidia-ml-py finds one), so a starved GPU shows in
    the UI next to the loss; 0 turns them off.
    """
    if not enabled:
        yield None
        return

    experiment_id = setup_mlflow(spec.experiment)
    interval = spec.system_metrics_s
    if interval > 0:
        mlflow.set_system_metrics_sampling_interval(interval)
        mlflow.set_system_metrics_samples_before_logging(1)
    system = {"log_system_metrics": interval > 0}
    if run_id:
        context = mlflow.start_run(run_id=run_id, **system)
    else:
        context = mlflow.start_run(experiment_id=experiment_id, run_name=spec.name, **system)
    with context as run:
        yield run.info.run_id


def log_dataset(shards_dir: ShardsLocation, data_tags: Mapping[str, str]) -> None:
    """The shards as the run's training dataset input: the manifest, its digest and source (the
    folder, or the object-store URL, which MLflow shows as an S3/GCS source)."""
    import pandas as pd
    from mlflow.data.sources import LocalArtifactDatasetSource

    manifest = open_store(shards_dir).read_bytes(MANIFEST_FILE)
    if manifest is None:
        return
    table = pd.read_csv(io.BytesIO(manifest), dtype=str, keep_default_na=False)
    digest = data_tags.get("data.dvc_md5") or data_tags["data.manifest_md5"]  # DVC's hash of the shards, if locked
    source = str(shards_dir) if is_url(shards_dir) else LocalArtifactDatasetSource(str(Path(shards_dir).resolve()))
    dataset = mlflow.data.from_pandas(table, source=source, name=str(shards_dir), digest=digest.removesuffix(".dir"))
    mlflow.log_input(dataset, context="training")


def log_run_start(spec: RunSpec, net: nn.Module, extra_tags: Mapping[str, str] | None = None) -> None:
    """Log what identifies a new training run: config, params, model size, data hashes, commit,
    and ``extra_tags`` (where its first weights came from)."""
    import a2model

    mlflow.log_params(spec.params)
    mlflow.log_text(spec.config_yaml, "config.yaml")
    probe = copy.deepcopy(net).to("cpu").eval()
    with torch.no_grad():
        size = {
            "model_params": a2model.count_params(probe),
            "model_macs": a2model.count_macs(probe, (1, *spec.clip_shape)),
        }
    mlflow.log_params(size)  # facts about the run, not curves: params, so the UI draws no one-point charts
    data_tags = data_fingerprint(spec.shards_dir)
    mlflow.set_tags(
        {
            "git_commit": git_commit(),
            "model_name": spec.model_name,
            "config_md5": spec.config_md5,
            "mlflow.note.content": spec.description(data_tags),
            **data_tags,
            **dvc_experiment_tags(),
            **(extra_tags or {}),
        }
    )
    log_dataset(spec.shards_dir, data_tags)


def log_epoch_metrics(row: Mapping[str, float | None]) -> None:
    """Log one epoch's metrics to the active run at step ``epoch``."""
    mlflow.log_metrics({k: v for k, v in row.items() if v is not None and k != "epoch"}, step=int(row["epoch"]))


def backfill_epoch_metrics(run_id: str, history: list[dict[str, float | None]]) -> None:
    """On resume: log the checkpointed epochs the run lacks (killed between checkpoint and log)."""
    logged = {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "train_loss")}
    for row in history:
        if int(row["epoch"]) not in logged:
            log_epoch_metrics(row)


ABANDONED_TAG = "a2nets.abandoned"


def mark_abandoned_run(run_id_file: Path, experiment: str) -> None:
    """A new training in ``out_dir``: mark its previous run KILLED if its training died.

    A ``kill -9`` leaves the MLflow run RUNNING forever; the next run in the same place is the
    first to know it died. Only a RUNNING run is looked at, and it is judged by what its training
    recorded (``trained_to_the_end``): one that reached its last epoch did not die in training
    (an old register re-opened it) and is set back to FINISHED, never marked.
    """
    if not run_id_file.is_file():
        return
    from mlflow.exceptions import MlflowException

    setup_mlflow(experiment)
    client = mlflow.MlflowClient()
    try:
        previous = client.get_run(run_id_file.read_text().strip())
    except MlflowException:
        return
    run_id = previous.info.run_id
    if previous.info.status != "RUNNING":
        return
    if trained_to_the_end(run_id_file.with_name(CHECKPOINT_FILE), run_id):
        client.set_terminated(run_id, status="FINISHED")
        print(f"note: run {run_id} had trained to its last epoch but was left RUNNING; it is FINISHED again")
        return
    client.set_tag(run_id, ABANDONED_TAG, "killed before its last epoch; a new run replaced it")
    client.set_terminated(run_id, status="KILLED")


def trained_to_the_end(checkpoint_path: Path, run_id: str) -> bool:
    """Whether ``checkpoint_path`` is the checkpoint of run ``run_id`` after its last epoch (a
    missing or unreadable one says no: that training's end is not on record)."""
    try:
        checkpoint = Checkpoint.load(checkpoint_path)
    except StageError:
        return False
    return checkpoint.mlflow_run_id == run_id and checkpoint.finished


def write_metrics_csv(path: Path, history: list[dict[str, float | None]]) -> None:
    """Per-epoch metrics as CSV (rewritten whole, atomically) for ``dvc plots``."""
    lines = [",".join(METRIC_COLUMNS)]
    for row in history:
        lines.append(",".join("" if row.get(c) is None else f"{row[c]:.6g}" for c in METRIC_COLUMNS))
    write_atomic(path, "\n".join(lines) + "\n")
