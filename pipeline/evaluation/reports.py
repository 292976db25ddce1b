"""The evaluation's reports: metrics and per-class JSON, per-class and predictions CSVs, confusion PNG, MLflow."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import mlflow
import torch

from pipeline.core.files import atomic_path, write_atomic
from pipeline.evaluation.meters import Evaluation
from pipeline.evaluation.setting import EvalSetting
from pipeline.runtime.checkpoint import RUN_ID_FILE
from pipeline.tracking.store import setup_mlflow

CLASS_METRICS_FILE = "class_metrics.json"  # beside eval.metrics_file
KIND_METRICS_FILE = "kind_metrics.json"  # beside eval.metrics_file
COUNTS = ("num_videos", "views_per_video")  # of metrics.json: tags on the run, not metric charts


def write_reports(result: Evaluation, metrics_file: Path, per_class_file: Path, plots_dir: Path) -> list[Path]:
    """Write metrics, the class-averaged metrics (``class_metrics.json`` beside them) and the
    per-kind ones (``kind_metrics.json``; ``{}`` for data without kinds): other DVC metrics files,
    so each table stays readable; per-class accuracy (JSON and CSV), predictions
    CSV and the confusion PNG.

    Returns the paths written, for MLflow. ``per_class_file`` is for people and MLflow (keys are
    full class labels, too wide for ``dvc metrics show``); ``per_class.csv`` is its DVC bar plot.
    """
    write_atomic(metrics_file, json.dumps(result.metrics(), indent=2) + "\n")
    class_metrics = metrics_file.with_name(CLASS_METRICS_FILE)
    write_atomic(class_metrics, json.dumps(result.class_metrics(), indent=2) + "\n")
    kind_metrics = metrics_file.with_name(KIND_METRICS_FILE)
    write_atomic(kind_metrics, json.dumps(result.kind_metrics(), indent=2) + "\n")
    write_atomic(per_class_file, json.dumps(result.per_class_top1(), indent=2) + "\n")
    per_class = plots_dir / "per_class.csv"
    write_atomic(per_class, per_class_csv(result))
    pairs = zip(result.labels.tolist(), result.predictions().tolist())
    predictions = plots_dir / "predictions.csv"
    write_atomic(
        predictions, csv_text(["actual", "predicted"], [(result.classes[a], result.classes[p]) for a, p in pairs])
    )
    confusion_png = plots_dir / "confusion.png"
    plot_confusion(result.confusion(), result.classes, confusion_png)
    return [metrics_file, class_metrics, kind_metrics, per_class_file, per_class, predictions, confusion_png]


def csv_text(header: list[str], rows: list[tuple]) -> str:
    """``header`` and ``rows`` as CSV text (``\\n`` line ends, quoting where a field needs it)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue()


def per_class_csv(result: Evaluation) -> str:
    """``class_index,class,video_top1``: one row per class with validation videos, in class order."""
    top1 = result.per_class_top1()
    rows = [(i, name, f"{top1[name]:.6g}") for i, name in enumerate(result.classes) if name in top1]
    return csv_text(["class_index", "class", "video_top1"], rows)


def plot_confusion(matrix: torch.Tensor, classes: list[str], path: Path) -> None:
    """Row-normalised confusion matrix as a PNG (class names and counts shown for ≤ 20 classes).

    Columns are labelled by class index and rows by ``index: name`` (long names wrapped), so
    Kinetics-length labels never squeeze the matrix.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    rates = matrix.float() / matrix.sum(1, keepdim=True).clamp(min=1)
    side = min(4 + 0.4 * k, 20)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    if k <= 20:
        ax.set_xticks(range(k), [str(i) for i in range(k)])
        ax.set_yticks(range(k), [textwrap.fill(f"{i}: {name}", 32) for i, name in enumerate(classes)])
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(
                        j,
                        i,
                        int(matrix[i, j]),
                        ha="center",
                        va="center",
                        color="black" if rates[i, j] < 0.5 else "white",
                    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def log_to_run(
    out_dir: Path,
    experiment: str,
    metrics: dict[str, float],
    files: list[Path],
    unfinished: bool = False,
    attention_figures: Sequence[Path] = (),
    setting: EvalSetting | None = None,
) -> str | None:
    """Log test metrics and report files (under ``evaluation/``, the attention figures under
    ``evaluation/attention/``) to the training's MLflow run (``run_id.txt``).

    ``unfinished`` (an ``eval.allow_unfinished`` override) is recorded as the run tag
    ``evaluated_unfinished``; ``setting`` as ``eval.*`` tags (the last evaluation's data and views).
    """
    run_id_file = out_dir / RUN_ID_FILE
    if not run_id_file.is_file():
        print(f"warning: {run_id_file} not found; metrics not logged to MLflow")
        return None
    run_id = run_id_file.read_text().strip()
    setup_mlflow(experiment)
    counts = {key: metrics[key] for key in COUNTS if key in metrics}
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({key: value for key, value in metrics.items() if key not in counts})
        mlflow.set_tags({f"eval.{key}": f"{value:g}" for key, value in counts.items()})  # counts, not scores
        if unfinished:
            mlflow.set_tag("evaluated_unfinished", "true (eval.allow_unfinished)")
        if setting is not None:
            mlflow.set_tags(
                {"eval.fingerprint": setting.fingerprint, **{f"eval.{k}": v for k, v in asdict(setting).items()}}
            )
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
        for path in attention_figures:
            mlflow.log_artifact(str(path), artifact_path="evaluation/attention")
    return run_id
