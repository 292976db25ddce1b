"""Predict the action in videos with a registered model, preprocessing them as the pipeline does.

The views and scores are the served model's (``pipeline.serving.views``): the same decode,
JPEG round trip, multi-view crops and mean softmax, with the preprocessing the model carries
(written by the register stage), so a model predicts with the preprocessing it was trained with
and ``a2net predict`` answers what ``mlflow models serve`` answers.

A model is data, never code. Only MLflow model URIs (``models:/``, ``runs:/``) and local model
folders holding an ``MLmodel`` are accepted; a model whose code (entry file, ``code/`` modules,
a flavor's code paths, a pickled python model) is not byte for byte this checkout's own
register-stage code is refused (``pipeline.serving.package.foreign_code``), and none of its code
runs here: only its pt2 program (``torch.export``) is loaded, after MLflow's check that every
record of the archive is JSON, text or tensors (no pickle). Downloads go to a temporary folder
that is always removed. An alias URI (``models:/a2net@staging``) is resolved to its version
before the download, so the version reported is the one that predicts.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from pipeline.core.errors import StageError
from pipeline.serving.package import foreign_code
from pipeline.serving.pyfunc import load_parts
from pipeline.serving.views import Preprocessing, top_labels, video_scores, video_views


@dataclass(frozen=True)
class LoadedModel:
    """A registered model ready to predict: the exported net plus what it needs around it."""

    uri: str
    net: torch.nn.Module
    classes: list[str]
    preprocessing: Preprocessing
    version: str | None = None  # the registered version loaded, when the URI is models:/<name>...
    architecture: str = ""  # a2model factory name (metadata)
    net_config: Mapping[str, Any] = field(default_factory=dict)  # the checkpoint's model.net (metadata)
    state_dict: Mapping[str, torch.Tensor] = field(default_factory=dict)  # the program's weights


@dataclass(frozen=True)
class Prediction:
    """Top-k labels of one video; ``probabilities`` are mean softmax scores over the views."""

    video: str
    labels: list[str]
    probabilities: list[float]


MLFLOW_URI_SCHEMES = ("models:/", "runs:/")


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


def read_mlmodel(folder: Path, model_uri: str) -> dict[str, Any]:
    """The model folder's ``MLmodel`` as a mapping; StageError when it is not one."""
    try:
        mlmodel = yaml.safe_load((folder / "MLmodel").read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        raise StageError(f"model {model_uri}: its MLmodel is not YAML") from None
    if not isinstance(mlmodel, dict):
        raise StageError(f"model {model_uri}: its MLmodel is not a mapping")
    return mlmodel


def checked_mlmodel(folder: Path, model_uri: str) -> dict[str, Any]:
    """The folder's ``MLmodel``, after checking that its code is this checkout's register-stage code."""
    mlmodel = read_mlmodel(folder, model_uri)
    code = foreign_code(mlmodel, folder)
    if code is not None:
        raise StageError(
            f"model {model_uri} carries code that is not this checkout's ({code}); a2net runs no "
            "code from a model: register it with `python -m pipeline.register`"
        )
    return mlmodel


def artifact_files(folder: Path, mlmodel: Mapping[str, Any], model_uri: str) -> dict[str, Path]:
    """The pyfunc's artifact files by name, each inside ``folder``; StageError for any outside."""
    pyfunc = (mlmodel.get("flavors") or {}).get("python_function") or {}
    files = {}
    for name, info in (pyfunc.get("artifacts") or {}).items():
        path = (folder / str((info or {}).get("path", ""))).resolve()
        if folder.resolve() not in path.parents:
            raise StageError(f"model {model_uri}: artifact {name!r} lies outside the model folder")
        files[str(name)] = path
    return files


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
    """Load ``model_uri``'s pt2 program, class list and preprocessing: no pickle, no foreign code.

    An alias URI is resolved to its version first; ``LoadedModel.version`` says which.
    """
    pinned, version = resolve_version(model_uri)
    with model_folder(pinned, shown=model_uri) as folder:
        mlmodel = checked_mlmodel(folder, model_uri)
        parts = load_parts(artifact_files(folder, mlmodel, model_uri), model_uri)
    meta = mlmodel.get("metadata") or {}
    net_config = meta.get("net") if isinstance(meta.get("net"), Mapping) else {}
    return LoadedModel(
        model_uri,
        parts.net,
        parts.classes,
        parts.preprocessing,
        version,
        str(meta.get("architecture", "")),
        net_config,
        parts.state_dict,
    )


def format_source(model: LoadedModel) -> str | None:
    """``models:/a2net@staging is version 3`` for a URI that does not name its version; else None."""
    if model.version is None or model.uri.endswith(f"/{model.version}"):
        return None
    return f"{model.uri} is version {model.version}"


def predict(model: LoadedModel, videos: Sequence[Path], top_k: int = 5) -> list[Prediction]:
    """Top-``top_k`` predictions for each video, in order; a bad video raises VideoError."""
    predictions = []
    for video in videos:
        scores = video_scores(model.net, video_views(Path(video), model.preprocessing))
        predictions.append(Prediction(str(video), *top_labels(scores, model.classes, top_k)))
    return predictions


def format_prediction(prediction: Prediction) -> str:
    """Human-readable lines: the video, then one ``probability  label`` line per class."""
    lines = [f"{prediction.video}:"]
    lines += [f"  {p:6.1%}  {label}" for label, p in zip(prediction.labels, prediction.probabilities)]
    return "\n".join(lines)
