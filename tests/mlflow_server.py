"""The stand-in model of the registry and predict tests, and the ``mlflow`` executable they run.

The fixtures that start the server (``mlflow_server``) and register stand-in versions on it
(``register_version``) are in conftest.py; ``pipeline.registry.server.wait_healthy`` waits for it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pipeline.evaluation.setting import EvalSetting
from pipeline.serving.views import Preprocessing  # noqa: E402

MLFLOW = Path(sys.executable).with_name("mlflow")
CLASSES = ["abseiling", "bowling", "cartwheeling", "dancing", "eating", "fencing"]
# Small views so that export and inference take well under a second.
PREPROCESSING = Preprocessing(
    fps=10,
    short_side=40,
    jpeg_quality=90,
    num_frames=4,
    stride=2,
    crop_size=32,
    num_clips=2,
    num_crops=3,
    mean=(0.45, 0.45, 0.45),
    std=(0.225, 0.225, 0.225),
)
GOOD_METRICS = {"video_top1": 0.80, "video_top5": 0.99, "clip_top1": 0.70, "clip_top5": 0.95}
# Where the stand-ins were "evaluated": one setting, so their metrics compare at the gate.
STAND_IN_SETTING = EvalSetting("d" * 64, "validate", num_clips=3, num_crops=3, crop_size=32)


class StandInNet(nn.Module):
    """A tiny video classifier (N, 3, T, H, W) → (N, K) with the layers our nets use."""

    def __init__(self, num_classes: int = len(CLASSES), seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv3d(3, 8, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(8)
        self.fc = nn.Linear(8, num_classes)
        self.eval()

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.norm(self.conv(clips))).mean(dim=(2, 3, 4)))
