"""The served model: an MLflow pyfunc that takes video files (base64) and answers top-k labels.

Input: a DataFrame with a string column ``video``, each row the base64 bytes of one video file
(mp4/mov, mkv/webm, avi, mpeg-ts, mpeg-ps, flv, ogg: ``pipeline.data.video.CONTAINERS``),
e.g. ``{"dataframe_split": {"columns": ["video"], "data": [["AAAA…"]]}}``.
Output, one record per row, in order: ``{"labels": [...], "probabilities": [...], "error": null}``;
a row that is not a usable video (empty, not base64, not a video, no frames, over a bound) gets
``labels: [], probabilities: [], error: "row <i>: <why>"`` and never fails the other rows.
Bounds (``ServingBounds``: the ``model_config`` the register stage writes, overridable at load):
rows per request (more: HTTP 400), bytes, seconds, frame size, source frames and CPU seconds
per row, wall clock per request (the rows left when it runs out get an error each, and their
ffmpeg is killed), decodes at once. The ``top_k`` param (default 5) sets the labels per row.
The numbers are ``a2net predict``'s: the same functions (``pipeline.serving.views``) on the
same model parts (``load_parts``).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from mlflow.pyfunc import PythonModel

from pipeline.serving.bounds import ServingBounds, decode_slot
from pipeline.serving.program import load_program
from pipeline.serving.views import Preprocessing, VideoError, top_labels, video_scores, video_views

PROGRAM, CLASSES, PREPROCESSING = "program", "classes", "preprocessing"  # the model's artifacts
DEFAULT_TOP_K = 5
MLFLOW_TIMEOUT = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"  # where MLflow's server answers 504


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
    """The video file bytes of one ``video`` cell; VideoError says why they are unusable.

    The size is checked on the text as sent, before any copy: base64 of ``max_bytes`` with a
    line break (at most 2 characters) every 76 columns, as ``base64`` wraps it unless -w0.
    """
    if not isinstance(value, str) or not value or value.isspace():
        raise VideoError("empty; give the base64 bytes of a video file")
    encoded = 4 * (max_bytes // 3 + 1)
    if len(value) > encoded + 2 * (encoded // 76 + 1):
        raise VideoError(f"over the {max_bytes}-byte limit per video")
    text = "".join(value.split())
    if len(text) > encoded:
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
        self.bounds = ServingBounds.from_config(context.model_config)

    def request_seconds(self) -> float:
        """The wall clock of one request: the bound, and 5 s short of MLflow's own 504 timeout."""
        mlflow_timeout = float(os.environ.get(MLFLOW_TIMEOUT) or "inf")
        return max(1.0, min(self.bounds.request_seconds, mlflow_timeout - 5))

    def classify(self, data: bytes, top_k: int, deadline: float) -> dict[str, Any]:
        """The answer for one video file's bytes (decoded from a temporary file, removed after)."""
        with tempfile.NamedTemporaryFile(prefix="a2net-serve-", suffix=".video") as file:
            file.write(data)
            file.flush()
            try:
                with decode_slot(self.bounds.concurrent_decodes, deadline):
                    views = video_views(
                        Path(file.name),
                        self.parts.preprocessing,
                        self.bounds.max_seconds,
                        self.bounds.decode_budget(deadline),
                    )
            except TimeoutError as err:
                raise VideoError(
                    f"not decoded: {err} (register.serving.concurrent_decodes) until the request's "
                    f"time ran out (register.serving.request_seconds)"
                ) from None
            except VideoError as err:  # the temporary name means nothing to the client
                raise VideoError(str(err).replace(f"{file.name}: ", "").replace(file.name, "the video")) from None
        labels, probabilities = top_labels(video_scores(self.parts.net, views), self.parts.classes, top_k)
        return {"labels": labels, "probabilities": probabilities, "error": None}

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        from mlflow.exceptions import MlflowException

        deadline = time.monotonic() + self.request_seconds()
        rows = list(model_input["video"])
        if len(rows) > self.bounds.max_rows:
            raise MlflowException.invalid_parameter_value(
                f"{len(rows)} videos in one request; send at most {self.bounds.max_rows}"
            )
        answers = []
        for index, value in enumerate(rows):
            try:
                top_k = self.top_k(params)
                if time.monotonic() >= deadline:
                    raise VideoError(
                        "not decoded: the request's time ran out before this row (register.serving.request_seconds)"
                    )
                answers.append(self.classify(decode_row(value, self.bounds.max_video_bytes), top_k, deadline))
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
