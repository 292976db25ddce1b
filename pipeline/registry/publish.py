"""Publishing a trained model: log it (pt2, no pickle) to its training run and register a version.

The model is logged as an MLflow pyfunc from code (``pipeline.serving``): ``mlflow models serve``
takes base64 video files and answers top-k labels with nothing but the model folder. It holds
the pt2 program (``torch.export``, dynamic batch), ``classes.txt``, ``preprocessing.json`` (the
decode and eval-view parameters), the project's own serving code and pinned pip requirements;
the ``architecture``, ``classes`` and ``preprocessing`` metadata repeat them for the UI. The new
version carries its lineage as tags (git commit, md5 of the run's own resolved config, shards
md5, the toolchain that made the shards, validation outcome, headline metrics) and a Markdown
description with the metrics table.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import torch

from pipeline.core.errors import StageError
from pipeline.data.provenance import TOOLCHAIN_TAG, data_fingerprint, shards_toolchain
from pipeline.evaluation.setting import EvalRecord, EvalSetting
from pipeline.registry.version_tags import HEADLINE_METRICS, evaluation_tags
from pipeline.runtime.checkpoint import CHECKPOINT_FILE, RUN_ID_FILE, Checkpoint
from pipeline.serving.bounds import ServingBounds
from pipeline.serving.package import CODE_DIR, entry_file, pip_requirements, signature, stage_code
from pipeline.serving.program import PT2_FILE, export_program
from pipeline.serving.pyfunc import CLASSES, PREPROCESSING, PROGRAM
from pipeline.serving.views import Preprocessing
from pipeline.tracking.store import dvc_experiment_tags, git_commit, setup_mlflow, store_lock

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModel, Run


@dataclass(frozen=True)
class Lineage:
    """Where a model came from, stored as model-version tags."""

    git_commit: str
    config_md5: str  # the training run's own resolved config (pipeline.core.config.config_md5)
    shards_md5: str
    validation: str  # passed | failed | missing
    toolchain: Mapping[str, str] = field(default_factory=dict)  # versions that made the shards
    unfinished: str = ""  # "epoch k of n" when register.allow_unfinished let an unfinished run in
    init_weights: str = ""  # "<md5> <source>" of the weights model.init started the training from

    def tags(self) -> dict[str, str]:
        """Model-version tags: the fields, the toolchain as ``toolchain.<tool>``."""
        plain = {
            k: v for k, v in asdict(self).items() if k != "toolchain" and (k not in ("unfinished", "init_weights") or v)
        }
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


DISCARDED_TAG = "a2nets.discarded"  # logged-model tag: why a model that never became READY is FAILED


def local_folder(uri: str) -> Path | None:
    """The folder of a ``file://`` artifact location; None for a server's or a bucket's."""
    parts = urlsplit(uri)
    return Path(url2pathname(parts.path)) if parts.scheme == "file" else None


def discard_model(client: MlflowClient, model: LoggedModel, why: str) -> None:
    """Mark a logged model that never became READY FAILED (tag ``a2nets.discarded``: ``why``),
    its local files deleted first: a partial model.pt2 on a full disk frees the room the store needs."""
    from mlflow.entities import LoggedModelStatus

    folder = local_folder(model.artifact_location)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # models/<model id>/, when nothing else is in it
    client.set_logged_model_tags(model.model_id, {DISCARDED_TAG: why})
    client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)


def pending_models(client: MlflowClient, run: Run) -> list[LoggedModel]:
    """The logged models of ``run`` still PENDING (their ``log_model`` never ended)."""
    from mlflow.entities import LoggedModelStatus

    found, token = [], None
    while True:
        page = client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'", page_token=token
        )
        found += [model for model in page if model.status == LoggedModelStatus.PENDING]
        token = page.token
        if not token:
            return found


@contextlib.contextmanager
def pending_model(client: MlflowClient, run_id: str) -> Iterator[LoggedModel]:
    """A new PENDING logged model of the run ``run_id``, for ``Model.log(model_id=...)`` to fill
    and make READY; the run is never re-opened (``mlflow.start_run`` would set a finished training
    RUNNING, and a kill would leave it so). The run's models left PENDING by a register killed
    while logging are marked FAILED first; this one is too, its files deleted, if the block fails.
    Under the store's register lock: a concurrent register of the run never discards this one."""
    import mlflow

    run = client.get_run(run_id)
    with store_lock(client.tracking_uri, "register"):
        for stale in pending_models(client, run):
            discard_model(client, stale, "a register of its run was interrupted while logging it")
            print(
                f"note: logged model {stale.model_id} of run {run_id} was left PENDING by an interrupted register; "
                "marked FAILED"
            )
        model = mlflow.initialize_logged_model(
            name="model", source_run_id=run_id, params=dict(run.data.params), experiment_id=run.info.experiment_id
        )
        try:
            yield model
        except BaseException:
            with contextlib.suppress(Exception):  # the store may be what failed; the next register retries
                discard_model(client, model, "logging it failed")
            raise


def log_and_register(
    model: torch.nn.Module,
    *,
    run_id: str,
    model_name: str,
    architecture: str,
    classes: list[str],
    preprocessing: Preprocessing,
    lineage: Lineage,
    bounds: ServingBounds | None = None,
    net_config: Mapping[str, Any] | None = None,
    evaluation: EvalRecord | None = None,
) -> RegisteredModel:
    """Log ``model`` (pt2) to the run ``run_id`` and register it as a new version of ``model_name``.

    ``bounds`` are the served model's request bounds (default ``ServingBounds()``); ``net_config``
    (the checkpoint's ``model.net``, plain values) lets ``a2net explain`` rebuild the eager net.
    ``evaluation`` (the evaluate stage's record) gives the version its metrics and the setting they
    were measured in (tag ``evaluation``, for the promotion gate); without it the metrics are read
    from the run and the setting is unknown. The MLflow tracking URI must already be set. Returns
    the new version's coordinates.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # log_model copies the artifacts
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import Model

    client = MlflowClient()
    recorded = evaluation.metrics if evaluation is not None else client.get_run(run_id).data.metrics
    metrics = headline_metrics(recorded, run_id)
    metadata = {"architecture": architecture, "classes": classes, "preprocessing": asdict(preprocessing)}
    if net_config is not None:
        metadata["net"] = dict(net_config)
    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp)
        (files / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
        (files / "preprocessing.json").write_text(json.dumps(asdict(preprocessing), indent=2) + "\n")
        artifacts = {
            PROGRAM: str(export_program(model, preprocessing.input_shape, files / PT2_FILE)),
            CLASSES: str(files / "classes.txt"),
            PREPROCESSING: str(files / "preprocessing.json"),
        }
        with warnings.catch_warnings(), pending_model(client, run_id) as logged:  # the run is not re-opened
            # the signature is explicit; an example would be a video
            warnings.filterwarnings("ignore", message=".*An input example was not provided")  # colour codes first
            info = Model.log(
                artifact_path=None,  # deprecated for name, yet required
                name="model",
                flavor=mlflow.pyfunc,
                run_id=run_id,
                model_id=logged.model_id,
                python_model=str(entry_file()),
                artifacts=artifacts,
                code_paths=[str(stage_code(files / CODE_DIR))],
                model_config=(bounds or ServingBounds()).model_config(),
                signature=signature(),
                metadata=metadata,
                pip_requirements=pip_requirements(),
            )
    tags = {**lineage.tags(), "architecture": architecture, **{name: f"{value:.4f}" for name, value in metrics.items()}}
    tags |= dvc_experiment_tags()
    if evaluation is not None:
        tags |= evaluation_tags(evaluation)
    description = (
        f"**{architecture}** trained in run `{run_id}`, validation "
        f"**{lineage.validation}**.\n\n{metrics_table(metrics)}\n"
    )
    with store_lock(mlflow.get_tracking_uri(), "register"):  # two registrations at once: one number each
        version = mlflow.register_model(info.model_uri, model_name, tags=tags)
        client.update_model_version(model_name, version.version, description=description)
        if not client.get_registered_model(model_name).description:
            client.update_registered_model(model_name, description=MODEL_DESCRIPTION)
    return RegisteredModel(
        name=model_name,
        version=str(version.version),
        run_id=run_id,
        model_uri=f"models:/{model_name}/{version.version}",
        logged_model_uri=info.model_uri,
    )


MODEL_DESCRIPTION = (  # the registered model's page: what it is and how a version moves
    "A²-Net (double attention) video classifier from the **a2nets** pipeline. Each version is one training "
    "registered by the `register` stage, with its evaluation metrics, data and code lineage as tags and "
    "`models:/<name>/<version>` serving base64 videos.\n\n"
    "**Promotion.** `a2net promote --version N --to staging` moves the alias through the gate (validation "
    "passed; the same evaluation data and views; the metric not worse than the holder's by more than "
    "`promote.margin`); `--to production` takes only the staging version; `--rollback` goes back. The tags "
    "`current.<alias>` say who holds each alias since when; `a2net promote --history` lists every move."
)


def preprocessing_of(checkpoint: Checkpoint, setting: EvalSetting) -> Preprocessing:
    """How ``a2net predict`` must turn a video into the inputs ``checkpoint``'s model was tested on:
    the training's frames and clip, the evaluation's views and crop size."""
    frames, clip = checkpoint.model.frames, checkpoint.clip
    return Preprocessing(
        fps=frames.fps,
        short_side=frames.short_side,
        jpeg_quality=frames.jpeg_quality,
        num_frames=clip.num_frames,
        stride=clip.stride,
        crop_size=setting.crop_size,
        num_clips=setting.num_clips,
        num_crops=setting.num_crops,
        mean=frames.mean,
        std=frames.std,
    )


def lineage_of(
    checkpoint: Checkpoint, run_tags: Mapping[str, str], shards_dir: Path, validation: str, unfinished: bool
) -> Lineage:
    """Lineage from the checkpoint (the md5 of the run's resolved config) and the training run's own tags (the
    commit it ran at, the shards' dvc.lock md5 and toolchain it saw), else the current checkout's."""
    toolchain = {k.removeprefix(TOOLCHAIN_TAG): v for k, v in run_tags.items() if k.startswith(TOOLCHAIN_TAG)}
    return Lineage(
        git_commit=run_tags.get("git_commit") or git_commit(),
        config_md5=checkpoint.config_md5,
        shards_md5=run_tags.get("data.dvc_md5") or data_fingerprint(shards_dir).get("data.dvc_md5", "unknown"),
        validation=validation,
        toolchain=toolchain or shards_toolchain(shards_dir),
        unfinished=f"epoch {checkpoint.epoch} of {checkpoint.epochs}" if unfinished else "",
        init_weights=f"{run_tags['init.md5']} {run_tags.get('init.weights', '')}" if "init.md5" in run_tags else "",
    )


def register_training(
    out_dir: Path,
    model_name: str,
    experiment: str,
    shards_dir: Path,
    validation_summary: Path,
    evaluation_file: Path,
    allow_unfinished: bool,
    serving: Mapping[str, float] | None = None,
) -> tuple[RegisteredModel, Lineage]:
    """Register ``<out_dir>/last.pt`` under ``model_name`` with its lineage; its coordinates and lineage.

    The metrics, and the views the model is served with, are those of the evaluate stage's record
    ``evaluation_file``, which must have scored this training's run. ``serving`` is
    ``register.serving``: the served model's request bounds.
    """
    from mlflow import MlflowClient

    run_id_file, checkpoint_path = out_dir / RUN_ID_FILE, out_dir / CHECKPOINT_FILE
    if not run_id_file.exists():
        raise StageError(f"{run_id_file} not found; run the train stage first")
    checkpoint = Checkpoint.load(checkpoint_path)
    model = checkpoint.build_net(checkpoint_path).eval()
    unfinished = checkpoint.refuse_unfinished(checkpoint_path, "register.allow_unfinished", allow_unfinished)
    run_id = run_id_file.read_text().strip()
    evaluation = EvalRecord.read(evaluation_file)
    if evaluation.run_id != run_id:
        raise StageError(
            f"{evaluation_file} scores run {evaluation.run_id}, not the training run {run_id} of {out_dir}; "
            "rerun the evaluate stage"
        )
    setup_mlflow(experiment)
    run_tags = MlflowClient().get_run(run_id).data.tags
    lineage = lineage_of(checkpoint, run_tags, shards_dir, validation_outcome(validation_summary), unfinished)
    registered = log_and_register(
        model,
        run_id=run_id,
        model_name=model_name,
        architecture=checkpoint.model_name,
        classes=list(checkpoint.classes),
        preprocessing=preprocessing_of(checkpoint, evaluation.setting),
        lineage=lineage,
        bounds=ServingBounds.from_register(serving or {}),
        net_config=checkpoint.model.net,
        evaluation=evaluation,
    )
    return registered, lineage
