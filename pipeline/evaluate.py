"""Multi-view testing of the trained model: ``python -m pipeline.evaluate [key=value ...]``.

Every video of ``data.val_split`` is seen as ``eval.num_clips`` uniformly spaced clips ×
``eval.num_crops`` spatial crops (PySlowFast's 3-crop testing: short side resized to the crop
size, then left/centre/right crops). Each view is one *clip* prediction; the softmax scores of a
video's views are summed into its *video* prediction. Writes ``eval.metrics_file`` (clip/video
top-1/top-5 as fractions), ``eval.per_class_file`` (video top-1 per class), and under
``eval.plots_dir`` the confusion matrix (``confusion.png``) and ``predictions.csv`` (actual,
predicted class name per video, for ``dvc plots``); logs them to the training's MLflow run.
The model, its clip geometry and normalisation come from ``train.out_dir/last.pt`` itself.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import mlflow
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.core.config import stage_main
from pipeline.core.files import write_atomic
from pipeline.registry.tracking import setup_mlflow
from pipeline.train import (
    CHECKPOINT,
    RUN_ID_FILE,
    autocast,
    check_finished,
    load_checkpoint,
    model_from_checkpoint,
    open_split,
    resolve_device,
)
from pipeline.data.transforms import TestTransform, UniformClips, normalize


@dataclass
class Evaluation:
    """Scores of one evaluation: per-view and per-video labels and predictions."""

    classes: list[str]
    view_scores: torch.Tensor  # (num_videos, V, K) softmax of every view
    labels: torch.Tensor  # (num_videos,)
    unfinished: bool = False  # the checkpoint's training had not reached its last epoch

    @property
    def video_scores(self) -> torch.Tensor:
        """``(num_videos, K)``: softmax scores summed over each video's views."""
        return self.view_scores.sum(1)

    def metrics(self) -> dict[str, float]:
        """Clip and video top-1/top-5 (k clamped to the number of classes), as fractions."""
        views = self.view_scores.shape[1]
        view_labels = self.labels.repeat_interleave(views)
        flat = self.view_scores.flatten(0, 1)
        return {
            "video_top1": topk_accuracy(self.video_scores, self.labels, 1),
            "video_top5": topk_accuracy(self.video_scores, self.labels, 5),
            "clip_top1": topk_accuracy(flat, view_labels, 1),
            "clip_top5": topk_accuracy(flat, view_labels, 5),
            "num_videos": float(len(self.labels)),
            "views_per_video": float(views),
        }

    def predictions(self) -> torch.Tensor:
        """Top-1 class index of every video."""
        return self.video_scores.argmax(1)

    def confusion(self) -> torch.Tensor:
        """``(K, K)`` counts; row = actual class, column = predicted class."""
        k = len(self.classes)
        pairs = self.labels * k + self.predictions()
        return torch.bincount(pairs, minlength=k * k).view(k, k)

    def per_class_top1(self) -> dict[str, float]:
        """Video top-1 of each class that has validation videos."""
        matrix = self.confusion()
        totals = matrix.sum(1)
        return {
            name: float(matrix[i, i] / totals[i]) for i, name in enumerate(self.classes) if totals[i] > 0
        }


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows of ``scores (N, K)`` whose top-``min(k, K)`` classes contain the label."""
    if len(labels) == 0:
        return float("nan")
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return float((top == labels[:, None]).any(1).float().mean())


@torch.no_grad()
def evaluate(
    checkpoint_path: Path,
    shards_dir: Path,
    split: str,
    num_clips: int,
    num_crops: int,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    allow_unfinished: bool = False,
) -> Evaluation:
    """Score every video of ``split`` with ``num_clips × num_crops`` views of the checkpoint's model.

    An unfinished training's checkpoint is refused unless ``allow_unfinished``.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    net = model_from_checkpoint(checkpoint, checkpoint_path).to(device).eval()
    unfinished = check_finished(checkpoint, checkpoint_path, "eval.allow_unfinished", allow_unfinished)
    clip = checkpoint["clip"]
    data_cfg = checkpoint["config"]["data"]
    dataset = open_split(
        shards_dir,
        split,
        UniformClips(clip["num_frames"], clip["stride"], num_clips),
        TestTransform(clip["crop_size"], num_crops),
    )
    views = num_clips * num_crops
    loader = DataLoader(dataset, batch_size=max(1, batch_size // views), num_workers=num_workers)
    amp = checkpoint["config"]["train"]["amp"]
    scores, labels = [], []
    for batch in tqdm(loader, desc="evaluate", dynamic_ncols=True, leave=False):
        frames = batch["frames"]  # (N, V, C, T, H, W) uint8
        clips = normalize(frames.to(device).flatten(0, 1), data_cfg["mean"], data_cfg["std"])
        with autocast(device, amp):
            logits = net(clips)
        scores.append(logits.float().softmax(1).view(len(frames), views, -1).cpu())
        labels.append(batch["label"])
    return Evaluation(list(checkpoint["classes"]), torch.cat(scores), torch.cat(labels), unfinished)


def write_reports(result: Evaluation, metrics_file: Path, per_class_file: Path, plots_dir: Path) -> list[Path]:
    """Write metrics, per-class accuracy, predictions CSV and the confusion PNG; return the paths."""
    write_atomic(metrics_file, json.dumps(result.metrics(), indent=2) + "\n")
    write_atomic(per_class_file, json.dumps(result.per_class_top1(), indent=2) + "\n")
    predictions = plots_dir / "predictions.csv"
    rows = ["actual,predicted"] + [
        f"{csv_field(result.classes[a])},{csv_field(result.classes[p])}"
        for a, p in zip(result.labels.tolist(), result.predictions().tolist())
    ]
    write_atomic(predictions, "\n".join(rows) + "\n")
    confusion_png = plots_dir / "confusion.png"
    plot_confusion(result.confusion(), result.classes, confusion_png)
    return [metrics_file, per_class_file, predictions, confusion_png]


def csv_field(name: str) -> str:
    """Quote a class name for CSV when it holds a comma or a quote."""
    return f'"{name.replace(chr(34), chr(34) * 2)}"' if ("," in name or '"' in name) else name


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
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", color="black" if rates[i, j] < 0.5 else "white")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def log_to_run(out_dir: Path, experiment: str, metrics: dict[str, float], files: list[Path],
               unfinished: bool = False) -> str | None:
    """Log test metrics and report files to the training's MLflow run (``run_id.txt``).

    ``unfinished`` (an ``eval.allow_unfinished`` override) is recorded as the run tag
    ``evaluated_unfinished``.
    """
    run_id_file = out_dir / RUN_ID_FILE
    if not run_id_file.is_file():
        print(f"warning: {run_id_file} not found; metrics not logged to MLflow")
        return None
    run_id = run_id_file.read_text().strip()
    setup_mlflow(experiment)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(metrics)
        if unfinished:
            mlflow.set_tag("evaluated_unfinished", "true (eval.allow_unfinished)")
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
    return run_id


def evaluate_config(cfg: DictConfig) -> Evaluation:
    """``evaluate`` on ``train.out_dir/last.pt`` with the ``eval`` and ``data`` settings of ``cfg``."""
    return evaluate(
        Path(cfg.train.out_dir) / CHECKPOINT,
        Path(cfg.data.shards_dir),
        cfg.data.val_split,
        cfg.eval.num_clips,
        cfg.eval.num_crops,
        cfg.eval.batch_size,
        resolve_device(cfg.train.device),
        cfg.train.num_workers,
        bool(cfg.eval.get("allow_unfinished", False)),
    )


def run(cfg: DictConfig) -> int:
    """Stage entry: evaluate ``train.out_dir/last.pt``, write reports, log them."""
    out_dir = Path(cfg.train.out_dir)
    result = evaluate_config(cfg)
    metrics = result.metrics()
    files = write_reports(result, Path(cfg.eval.metrics_file), Path(cfg.eval.per_class_file), Path(cfg.eval.plots_dir))
    log_to_run(out_dir, cfg.mlflow.experiment, metrics, files, result.unfinished)
    print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
