"""The training's MLflow run: what identifies it, its per-epoch metrics, and runs left behind.

Epochs are logged only after their checkpoint is on disk, so a resumed run backfills the epochs
it lacks and never logs one twice; a run killed with ``kill -9`` in training is marked KILLED by
the next training in the same ``train.out_dir`` (one that trained to its last epoch never is).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pipeline.core.config import config_md5
from pipeline.core.errors import StageError
from pipeline.core.files import write_atomic
from pipeline.data.layout import MANIFEST_FILE
from pipeline.data.provenance import data_fingerprint
from pipeline.registry.tracking import dvc_experiment_tags, git_commit, setup_mlflow
from pipeline.training.checkpoint import CHECKPOINT_FILE, Checkpoint

WHERE_NOT_WHAT = {
    "train.out_dir",
    "train.metrics_csv",
    "train.resume",
    "train.num_workers",
    "train.device",
    "data.root",
    "data.shards_dir",
    "data.classes",
    "data.workers",
}
MAX_NAME_CHANGES = 60  # characters of changed settings in a run name; the md5 tells the rest apart
ABSENT = object()
METRIC_COLUMNS = ("epoch", "train_loss", "train_top1", "val_clip_top1", "lr", "epoch_time", "clips_per_s")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists kept as values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


@contextmanager
def mlflow_run(cfg: DictConfig, run_id: str | None, enabled: bool) -> Iterator[str | None]:
    """Start (or, given ``run_id``, continue) the training's MLflow run; no-op when not enabled.

    The run samples system metrics every ``train.system_metrics_s`` (CPU, memory, disk, network,
    and the GPU's utilisation and memory where nvidia-ml-py finds one), so a starved GPU shows in
    the UI next to the loss; 0 turns them off.
    """
    if not enabled:
        yield None
        return

    experiment_id = setup_mlflow(cfg.mlflow.experiment)
    interval = float(cfg.train.system_metrics_s)
    if interval > 0:
        mlflow.set_system_metrics_sampling_interval(interval)
        mlflow.set_system_metrics_samples_before_logging(1)
    system = {"log_system_metrics": interval > 0}
    if run_id:
        context = mlflow.start_run(run_id=run_id, **system)
    else:
        context = mlflow.start_run(experiment_id=experiment_id, run_name=run_name(cfg), **system)
    with context as run:
        yield run.info.run_id


def changed_settings(cfg: DictConfig) -> dict[str, Any]:
    """The model, data and train values of ``cfg`` that differ from pipeline/conf's defaults.

    Where things go (output paths, the dataset root, workers, resume) is left out: it does not
    change what a run learns.
    """
    from pipeline.core.config import compose

    defaults = compose()
    OmegaConf.resolve(defaults)
    ours = flatten(OmegaConf.to_container(cfg, resolve=True))
    theirs = flatten(OmegaConf.to_container(defaults))
    return {
        key: value
        for key, value in ours.items()
        if key.split(".")[0] in ("model", "data", "train")
        and key not in WHERE_NOT_WHAT
        and key != "model.net.name"
        and theirs.get(key, ABSENT) != value
    }


def run_name(cfg: DictConfig) -> str:
    """``<model> <changed settings> <config md5[:6]>``: runs of other configs get other names."""
    changed = " ".join(f"{key.split('.')[-1]}={value}" for key, value in changed_settings(cfg).items())
    md5 = config_md5(OmegaConf.to_container(cfg, resolve=True))[:6]
    return " ".join(part for part in (str(cfg.model.net.name), changed[:MAX_NAME_CHANGES], md5) if part)


def run_description(cfg: DictConfig, data_tags: Mapping[str, str]) -> str:
    """The run's Markdown description (``mlflow.note.content``): what was trained, on what, how."""
    tc, changed = cfg.train, changed_settings(cfg)
    overrides = ", ".join(f"`{key}={value}`" for key, value in changed.items()) or "none"
    return (
        f"**{cfg.model.net.name}** trained on `{cfg.data.shards_dir}` ({cfg.data.name}, manifest md5 "
        f"`{data_tags.get('data.manifest_md5', '?')}`) for {tc.epochs} epochs: batch {tc.batch_size}, SGD lr "
        f"{tc.lr} with {tc.warmup_epochs} warm-up epoch(s) then a cosine, seed {tc.seed}, clips of "
        f"{cfg.model.clip.num_frames}×{cfg.model.clip.crop_size}² every {cfg.model.clip.stride} frames.\n\n"
        f"Settings that differ from `pipeline/conf`: {overrides}.\n\nCommit `{git_commit()}`."
    )


def log_dataset(shards_dir: Path, data_tags: Mapping[str, str]) -> None:
    """The shards as the run's training dataset input: the manifest, its digest and source."""
    import pandas as pd
    from mlflow.data.sources import LocalArtifactDatasetSource

    manifest = Path(shards_dir) / MANIFEST_FILE
    if not manifest.is_file():
        return
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    digest = data_tags.get("data.dvc_md5") or data_tags["data.manifest_md5"]  # DVC's hash of the shards, if locked
    source = LocalArtifactDatasetSource(str(Path(shards_dir).resolve()))
    dataset = mlflow.data.from_pandas(table, source=source, name=str(shards_dir), digest=digest.removesuffix(".dir"))
    mlflow.log_input(dataset, context="training")


def log_run_start(cfg: DictConfig, net: nn.Module, clip_shape: tuple[int, ...]) -> None:
    """Log what identifies a new training run: config, params, model size, data hashes, commit."""
    import a2model

    container = OmegaConf.to_container(cfg, resolve=True)
    mlflow.log_params({k: str(v) for k, v in flatten(container).items()})
    mlflow.log_text(OmegaConf.to_yaml(cfg), "config.yaml")
    probe = copy.deepcopy(net).to("cpu").eval()
    with torch.no_grad():
        size = {"model_params": a2model.count_params(probe), "model_macs": a2model.count_macs(probe, (1, *clip_shape))}
    mlflow.log_metrics({k: float(v) for k, v in size.items()})
    data_tags = data_fingerprint(cfg.data.shards_dir)
    mlflow.set_tags(
        {
            "git_commit": git_commit(),
            "model_name": cfg.model.net.name,
            "config_md5": config_md5(container),
            "mlflow.note.content": run_description(cfg, data_tags),
            **data_tags,
            **dvc_experiment_tags(),
        }
    )
    log_dataset(Path(cfg.data.shards_dir), data_tags)


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
