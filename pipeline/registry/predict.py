"""Predict the action in videos with a registered model, preprocessing them as the pipeline does.

A video goes through the same steps as a validation clip on its way to ``evaluate``: ffmpeg
decode at ``data.fps`` with the short side at ``data.short_side``, the shards' JPEG round trip,
``num_clips`` uniform clips × ``num_crops`` crops (``TestTransform``), normalisation; softmax
scores are summed over the views. The parameters come from the model's own metadata (written by
the register stage), so a model predicts with the preprocessing it was trained with.

A model is data, never code. Only MLflow model URIs (``models:/``, ``runs:/``) and local model
folders holding an ``MLmodel`` are accepted; a model whose ``MLmodel`` declares code (a flavor's
``code`` paths, which ``mlflow.pytorch.load_model`` would put on ``sys.path``) or carries a
``code/`` folder is refused; only its pt2 program (``torch.export``) is loaded, after MLflow's
check that every record of the archive is JSON, text or tensors (no pickle). Downloads go to a
temporary folder that is always removed. An alias URI (``models:/a2net@staging``) is resolved to
its version before the download, so the version reported is the one that predicts.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from pipeline.core.errors import StageError
from pipeline.data.clips import uniform_clip_indices
from pipeline.data.frames import clip_jpegs
from pipeline.data.shards import decode_frames
from pipeline.data.transforms import TestTransform, normalize
from pipeline.data.video import DecodeError
from pipeline.registry.publish import Preprocessing


class VideoError(StageError):
    """A file that cannot be used as a video (missing, not a video, no frames)."""


@dataclass(frozen=True)
class LoadedModel:
    """A registered model ready to predict: the exported net plus what it needs around it."""

    uri: str
    net: torch.nn.Module
    classes: list[str]
    preprocessing: Preprocessing
    version: str | None = None  # the registered version loaded, when the URI is models:/<name>...


@dataclass(frozen=True)
class Prediction:
    """Top-k labels of one video; ``probabilities`` are mean softmax scores over the views."""

    video: str
    labels: list[str]
    probabilities: list[float]


MLFLOW_URI_SCHEMES = ("models:/", "runs:/")
PT2_FILE = "model.pt2"


@contextlib.contextmanager
def _pickle_disallowed() -> Iterator[None]:
    """Make MLflow's pt2 check refuse any record that is not pickle-free (its default allows)."""
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


@contextlib.contextmanager
def model_folder(model_uri: str, shown: str | None = None) -> Iterator[Path]:
    """The local folder of ``model_uri``: downloaded to a temp dir (removed after) or used in place.

    Accepts ``models:/...``, ``runs:/...`` and local folders (a path or ``file://``) holding an
    ``MLmodel``; any other scheme is refused before anything is fetched. Errors name the model
    ``shown`` (the URI the user gave, before its alias was pinned), else ``model_uri``.
    """
    if model_uri.startswith(MLFLOW_URI_SCHEMES):
        import mlflow
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory(prefix="a2net-model-") as tmp:
            try:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
            except MlflowException as err:
                raise StageError(
                    f"cannot load model {shown or model_uri}: {str(err.message).splitlines()[0]}"
                ) from None
            yield _checked_folder(local, shown or model_uri)
        return
    if "://" in model_uri and not model_uri.startswith("file://"):
        raise StageError(
            f"model {model_uri}: not a model URI; give models:/<name>@<alias>, "
            "models:/<name>/<version>, runs:/<run>/<path> or a local model folder"
        )
    yield _checked_folder(Path(model_uri.removeprefix("file://")), model_uri)


def _checked_folder(folder: Path, model_uri: str) -> Path:
    if not (folder / "MLmodel").is_file():
        raise StageError(
            f"model {model_uri}: {folder} holds no MLmodel file; give a registered "
            "model (models:/...) or a folder written by the register stage"
        )
    return folder


def carried_code(mlmodel: Mapping[str, Any], folder: Path) -> str | None:
    """What code a model folder would bring to run (a flavor's code paths, a code/ dir), or None."""
    for flavor, conf in (mlmodel.get("flavors") or {}).items():
        if isinstance(conf, Mapping) and conf.get("code"):
            return f"flavors.{flavor}.code = {conf['code']!r}"
    return "a code/ folder" if (folder / "code").exists() else None


def load_program(folder: Path, mlmodel: Mapping[str, Any], model_uri: str) -> torch.nn.Module:
    """The model's pt2 program, checked pickle-free, loaded with ``torch.export.load``."""
    from mlflow.exceptions import MlflowException
    from mlflow.pytorch import _validate_pt2_archive_is_pickle_free  # MLflow's own record check

    code = carried_code(mlmodel, folder)
    if code is not None:
        raise StageError(
            f"model {model_uri} carries code ({code}); a2net never runs code from a "
            "model: register it with `python -m pipeline.register`"
        )
    data = str(((mlmodel.get("flavors") or {}).get("pytorch") or {}).get("model_data", ""))
    archive = (folder / data / PT2_FILE).resolve()
    if not data or folder.resolve() not in archive.parents or not archive.is_file():
        raise StageError(
            f"cannot load model {model_uri}: no pt2 program in its pytorch flavor "
            "(a pickled model or not a PyTorch model); register it with the register stage"
        )
    try:
        with _pickle_disallowed():
            _validate_pt2_archive_is_pickle_free(str(archive))
        return torch.export.load(str(archive)).module()
    except MlflowException as err:
        raise StageError(f"cannot load model {model_uri}: {str(err.message).splitlines()[0]}") from None
    except Exception as err:  # torch.export.load raises many types on a damaged archive
        raise StageError(f"cannot load model {model_uri}: damaged pt2 archive ({type(err).__name__})") from None


def resolve_version(model_uri: str) -> tuple[str, str | None]:
    """(the URI to load, its registered version): ``models:/<name>@<alias>`` becomes ``models:/<name>/<N>``.

    Pinning the version before the download makes the version reported the one loaded, even if
    the alias moves meanwhile. Other URIs are returned as they are (version None unless they
    name one, ``models:/<name>/<N>``).
    """
    if not model_uri.startswith("models:/"):
        return model_uri, None
    path = model_uri.removeprefix("models:/")
    name, _, suffix = path.partition("/")
    if suffix.isdigit():
        return model_uri, suffix
    if suffix or "@" not in name:
        return model_uri, None  # a stage, "latest" or a logged model id: MLflow resolves it
    name, alias = name.rsplit("@", 1)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        version = str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as err:
        raise StageError(f"cannot load model {model_uri}: {str(err.message).splitlines()[0]}") from None
    return f"models:/{name}/{version}", version


def load_model(model_uri: str) -> LoadedModel:
    """Load ``model_uri``'s pt2 program, class list and preprocessing: no pickle, no code.

    An alias URI is resolved to its version first; ``LoadedModel.version`` says which.
    """
    pinned, version = resolve_version(model_uri)
    with model_folder(pinned, shown=model_uri) as folder:
        try:
            mlmodel = yaml.safe_load((folder / "MLmodel").read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError):
            raise StageError(f"model {model_uri}: its MLmodel is not YAML") from None
        if not isinstance(mlmodel, dict):
            raise StageError(f"model {model_uri}: its MLmodel is not a mapping")
        net = load_program(folder, mlmodel, model_uri)
    meta = mlmodel.get("metadata") or {}
    if "classes" not in meta or "preprocessing" not in meta:
        raise StageError(
            f"model {model_uri} has no classes/preprocessing metadata; register it with `python -m pipeline.register`"
        )
    try:
        preprocessing = Preprocessing.from_dict(meta["preprocessing"])
    except (TypeError, ValueError):
        raise StageError(f"model {model_uri}: its preprocessing metadata is malformed") from None
    return LoadedModel(model_uri, net, [str(c) for c in meta["classes"]], preprocessing, version)


def format_source(model: LoadedModel) -> str | None:
    """``models:/a2net@staging is version 3`` for a URI that does not name its version; else None."""
    if model.version is None or model.uri.endswith(f"/{model.version}"):
        return None
    return f"{model.uri} is version {model.version}"


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
        predictions.append(
            Prediction(
                str(video), [model.classes[i] for i in top.indices.tolist()], [round(p, 6) for p in top.values.tolist()]
            )
        )
    return predictions


def format_prediction(prediction: Prediction) -> str:
    """Human-readable lines: the video, then one ``probability  label`` line per class."""
    lines = [f"{prediction.video}:"]
    lines += [f"  {p:6.1%}  {label}" for label, p in zip(prediction.labels, prediction.probabilities)]
    return "\n".join(lines)
