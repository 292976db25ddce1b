"""Aggregation of view predictions into video predictions (PySlowFast's ``meters.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows of ``scores (N, K)`` whose top-``min(k, K)`` classes contain the label (a Python float
    of correct / N, so 41 of 48 is 0.8541666666666666, not float32's 0.8541666865)."""
    if len(labels) == 0:
        return float("nan")
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return int((top == labels[:, None]).any(1).sum()) / len(labels)  # an exact fraction, not float32


@dataclass
class Evaluation:
    """Scores of one evaluation: per-view and per-video labels and predictions."""

    classes: list[str]
    view_scores: torch.Tensor  # (num_videos, V, K) softmax of every view
    labels: torch.Tensor  # (num_videos,)
    unfinished: bool = False  # the checkpoint's training had not reached its last epoch
    crop_size: int = 0  # of its views (the model's input side), for the evaluation's record
    kinds: Sequence[str] = ()  # each video's annotation kind ("" or none: not recorded)

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

    def class_metrics(self) -> dict[str, float]:
        """Over the classes that have validation videos: the mean of their video top-1 (``mean_class_accuracy``,
        UCF-101 and HMDB-51's headline; by definition also the macro recall) and the macro precision
        (a class never predicted has precision 0)."""
        matrix = self.confusion().double()
        present = matrix.sum(1) > 0
        if not present.any():
            return {"mean_class_accuracy": float("nan"), "macro_precision": float("nan"), "macro_recall": float("nan")}
        hits = matrix.diagonal()
        recall = hits[present] / matrix.sum(1)[present]
        precision = (hits / matrix.sum(0).clamp(min=1))[present]
        mean_recall = float(recall.mean())
        return {
            "mean_class_accuracy": mean_recall,
            "macro_precision": float(precision.mean()),
            "macro_recall": mean_recall,
        }

    def kind_metrics(self) -> dict[str, float]:
        """Video top-1 of the videos of each recorded kind, ``video_top1_<kind>`` (the synthetic set's
        spatial and temporal clips); empty when the data records no kinds."""
        correct = (self.predictions() == self.labels).tolist()
        found = sorted(set(self.kinds) - {""})
        hits = {kind: [ok for ok, k in zip(correct, self.kinds, strict=True) if k == kind] for kind in found}
        return {f"video_top1_{kind}": sum(h) / len(h) for kind, h in hits.items()}

    def per_class_top1(self) -> dict[str, float]:
        """Video top-1 of each class that has validation videos."""
        matrix = self.confusion()
        totals = matrix.sum(1)
        return {name: int(matrix[i, i]) / int(totals[i]) for i, name in enumerate(self.classes) if totals[i] > 0}
