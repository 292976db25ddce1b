"""The served model: an MLflow pyfunc that takes video files (base64) and answers top-k labels.

Input: a DataFrame with a string column ``video``, each row the base64 bytes of one video file
(any container ffmpeg reads), e.g. ``{"dataframe_split": {"columns": ["video"], "data": [["AAAA…"]]}}``.
Output, one record per row, in order: ``{"labels": [...], "probabilities": [...], "error": null}``;
a row that is not a usable video (empty, not base64, not a video, no frames, over a bound) gets
``labels: [], probabilities: [], error: "row <i>: <why>"`` and never fails the other rows.
Bounds (``model_config``, written by the register stage, overridable at load): ``max_rows``
videos per request (more: HTTP 400), ``max_video_bytes`` per decoded row, ``max_seconds`` of
video per row (decoding stops there). The ``top_k`` param (default 5) sets the labels per row.
The numbers are ``a2net predict``'s: the same functions (``pipeline.serving.views``) on the
same model parts (``load_parts``).
"""

from __future__ import annotations

import base64
import binascii
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from mlflow.pyfunc import PythonModel

from pipeline.serving.program import load_program
from pipeline.serving.views import Preprocessing, VideoError, top_labels, video_scores, video_views

PROGRAM, CLASSES, PREPROCESSING = "program", "classes", "preprocessing"  # the model's artifacts
DEFAULT_BOUNDS = {"max_rows": 32, "max_video_bytes": 32 * 2**20, "max_seconds": 60.0}
DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class ModelParts:
    """What answers a request: the exported net, its class list and how it sees a video."""

    net: torch.nn.Module
    classes: list[str]
    preprocessing: Preprocessing
    state_dict: Mapping[str, torch.Tensor]  # the program's weights, to rebuild an eager net (explain)


def load_parts(artifacts: Mapping[str, str | Path], shown: str) -> ModelParts:
    """The net (pt2, pickle-free), classes and preprocessing from a model's artifact files."""
    try:
        classes = Path(artifacts[CLASSES]).read_text().splitlines()
        preprocessing = Preprocessing.from_dict(json.loads(Path(artifacts[PREPROCESSING]).read_text()))
    except (KeyError, OSError, ValueError, TypeError) as err:
        raise VideoError(f"model {shown}: unreadable classes or preprocessing artifact ({err})") from None
    program = load_program(Path(artifacts[PROGRAM]), shown)
    return ModelParts(program.module(), classes, preprocessing, program.state_dict)


def decode_row(value: Any, max_bytes: int) -> bytes:
    """The video file bytes of one ``video`` cell; VideoError says why they are unusable."""
    if not isinstance(value, str) or not value.strip():
        raise VideoError("empty; give the base64 bytes of a video file")
    text = "".join(value.split())  # `base64` wraps lines at 76 columns unless -w0
    if len(text) > 4 * (max_bytes // 3 + 1):
        raise VideoError(f"over the {max_bytes}-byte limit per video")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VideoError("not base64; give the base64 bytes of a video file (base64 -w0 clip.mp4)") from None
    if len(data) > max_bytes:
        raise VideoError(f"over the {max_bytes}-byte limit per video")
    return data


class VideoClassifier(PythonModel):
    """MLflow pyfunc: base64 video files in, top-k labels with probabilities out (one per row)."""

    def load_context(self, context) -> None:
        self.parts = load_parts(context.artifacts, "being served")
        self.bounds = {**DEFAULT_BOUNDS, **(context.model_config or {})}

    def classify(self, data: bytes, top_k: int) -> dict[str, Any]:
        """The answer for one video file's bytes (decoded from a temporary file, removed after)."""
        with tempfile.NamedTemporaryFile(prefix="a2net-serve-", suffix=".video") as file:
            file.write(data)
            file.flush()
            try:
                views = video_views(Path(file.name), self.parts.preprocessing, float(self.bounds["max_seconds"]))
            except VideoError as err:  # the temporary name means nothing to the client
                raise VideoError(str(err).replace(f"{file.name}: ", "").replace(file.name, "the video")) from None
        labels, probabilities = top_labels(video_scores(self.parts.net, views), self.parts.classes, top_k)
        return {"labels": labels, "probabilities": probabilities, "error": None}

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        from mlflow.exceptions import MlflowException

        rows = list(model_input["video"])
        if len(rows) > int(self.bounds["max_rows"]):
            raise MlflowException.invalid_parameter_value(
                f"{len(rows)} videos in one request; send at most {self.bounds['max_rows']}"
            )
        answers = []
        for index, value in enumerate(rows):
            try:
                top_k = self.top_k(params)
                answers.append(self.classify(decode_row(value, int(self.bounds["max_video_bytes"])), top_k))
            except VideoError as err:
                answers.append({"labels": [], "probabilities": [], "error": f"row {index}: {err}"})
        return answers

    def top_k(self, params: dict[str, Any] | None) -> int:
        """``params.top_k`` (default 5; MLflow fills the default in), at most the number of classes;
        a VideoError naming the bounds for anything but a whole number >= 1."""
        value = (params or {}).get("top_k", DEFAULT_TOP_K)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise VideoError(f"params.top_k={str(value)[:20]!r} is not valid; give a whole number >= 1")
        return min(value, len(self.parts.classes))
