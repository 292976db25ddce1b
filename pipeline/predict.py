"""Predict the action in videos with a registered model, preprocessing them as the pipeline does.

A video goes through the same steps as a validation clip on its way to ``evaluate``: ffmpeg
decode at ``data.fps`` with the short side at ``data.short_side``, the shards' JPEG round trip,
``num_clips`` uniform clips × ``num_crops`` crops (``TestTransform``), normalisation; softmax
scores are summed over the views. The parameters come from the model's own metadata (written by
the register stage), so a model predicts with the preprocessing it was trained with.

The model is loaded from its pt2 archive (``torch.export``) with pickle deserialisation
disallowed: MLflow then checks the archive is pickle-free before loading it, and refuses a
pickled model.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import yaml

from pipeline.clips import uniform_clip_indices
from pipeline.config import StageError
from pipeline.preprocess import clip_jpegs
from pipeline.register import Preprocessing
from pipeline.shards import decode_frames
from pipeline.transforms import TestTransform, normalize
from pipeline.video import DecodeError

class VideoError(StageError):
    """A file that cannot be used as a video (missing, not a video, no frames)."""


@dataclass(frozen=True)
class LoadedModel:
    """A registered model ready to predict: the exported net plus what it needs around it."""

    uri: str
    net: torch.nn.Module
    classes: list[str]
    preprocessing: Preprocessing


@dataclass(frozen=True)
class Prediction:
    """Top-k labels of one video; ``probabilities`` are mean softmax scores over the views."""

    video: str
    labels: list[str]
    probabilities: list[float]


@contextlib.contextmanager
def _pickle_disallowed() -> Iterator[None]:
    """Make ``mlflow.pytorch.load_model`` refuse pickle and vet pt2 archives (its default allows)."""
    key = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            del os.environ[key]
        else:
            os.environ[key] = before


def load_model(model_uri: str) -> LoadedModel:
    """Download ``model_uri`` and load its pt2 program, class list and preprocessing (no pickle)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp, _pickle_disallowed():
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
            meta = yaml.safe_load((local / "MLmodel").read_text()).get("metadata") or {}
            net = mlflow.pytorch.load_model(str(local))
        except MlflowException as err:
            reason = str(err.message).splitlines()[0]
            raise StageError(f"cannot load model {model_uri}: {reason}") from None
    if "classes" not in meta or "preprocessing" not in meta:
        raise StageError(f"model {model_uri} has no classes/preprocessing metadata; "
                         "register it with `python -m pipeline.register`")
    return LoadedModel(model_uri, net, list(meta["classes"]),
                       Preprocessing.from_dict(meta["preprocessing"]))


def video_views(path: Path, prep: Preprocessing) -> torch.Tensor:
    """Decode ``path`` into the normalised eval views, float32 (V, C, T, S, S)."""
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        jpegs, _, _ = clip_jpegs(path, fps=prep.fps, short_side=prep.short_side, jpeg_quality=prep.jpeg_quality)
    except DecodeError as err:
        raise VideoError(f"{path}: not a readable video ({err})") from None
    clips = uniform_clip_indices(len(jpegs), prep.num_frames, prep.stride, prep.num_clips)
    views = torch.stack([decode_frames(jpegs, indices) for indices in clips])  # (V, T, C, H, W)
    crops = TestTransform(prep.crop_size, prep.num_crops)(views)
    return normalize(crops, prep.mean, prep.std)


@torch.inference_mode()
def video_scores(net: torch.nn.Module, views: torch.Tensor) -> torch.Tensor:
    """Mean softmax over the views of one video: (V, C, T, H, W) → (K,), sums to 1."""
    return net(views).softmax(dim=1).sum(dim=0) / views.shape[0]


def predict(model: LoadedModel, videos: Sequence[Path], top_k: int = 5) -> list[Prediction]:
    """Top-``top_k`` predictions for each video, in order; a bad video raises VideoError."""
    predictions = []
    for video in videos:
        scores = video_scores(model.net, video_views(Path(video), model.preprocessing))
        top = scores.topk(min(top_k, scores.numel()))
        predictions.append(Prediction(str(video), [model.classes[i] for i in top.indices.tolist()],
                                      [round(p, 6) for p in top.values.tolist()]))
    return predictions


def format_prediction(prediction: Prediction) -> str:
    """Human-readable lines: the video, then one ``probability  label`` line per class."""
    lines = [f"{prediction.video}:"]
    lines += [f"  {p:6.1%}  {label}" for label, p in zip(prediction.labels, prediction.probabilities)]
    return "\n".join(lines)
