"""Fixtures for the registry tests: a real ``mlflow server`` subprocess and registered versions.

Import the fixtures into a test module (``from mlflow_server import mlflow_server, ...``).
The server runs on a free port over a temporary SQLite store and artifact folder, with one
worker, and is terminated when the module's tests are done.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch
from torch import nn

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pipeline.register import Lineage, Preprocessing, RegisteredModel, log_and_register  # noqa: E402

MLFLOW = Path(sys.executable).with_name("mlflow")
CLASSES = ["abseiling", "bowling", "cartwheeling", "dancing", "eating", "fencing"]
# Small views so that export and inference take well under a second.
PREPROCESSING = Preprocessing(fps=10, short_side=40, jpeg_quality=90, num_frames=4, stride=2,
                              crop_size=32, num_clips=2, num_crops=3,
                              mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))
GOOD_METRICS = {"video_top1": 0.80, "video_top5": 0.99, "clip_top1": 0.70, "clip_top5": 0.95}


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"mlflow server at {url} not healthy after {timeout} s")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a fresh ``mlflow server``; MLFLOW_TRACKING_URI points at it for the module."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow_server")
    url = f"http://127.0.0.1:{free_port()}"
    command = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1],
               "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}",
               "--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
    log = (root / "server.log").open("wb")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    try:
        wait_healthy(url, process)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", url)
            mlflow.set_tracking_uri(url)
            yield url
            mlflow.set_tracking_uri(None)  # forget the server; the context restores the env
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


RegisterVersion = Callable[..., RegisteredModel]


@pytest.fixture(scope="module")
def register_version(mlflow_server: str) -> RegisterVersion:
    """Make a training run with metrics and register a stand-in model from it."""
    import mlflow

    experiment_id = mlflow.set_experiment("registry-tests").experiment_id

    def register(model_name: str, metrics: dict[str, float] = GOOD_METRICS,
                 validation: str = "passed", net: nn.Module | None = None) -> RegisteredModel:
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_metrics(metrics)
        return log_and_register(
            net or StandInNet(), run_id=run.info.run_id, model_name=model_name,
            architecture="stand_in", classes=CLASSES, preprocessing=PREPROCESSING,
            lineage=Lineage(git_commit="c0ffee", config_md5="p" * 32, shards_md5="s" * 32,
                            validation=validation),
        )

    return register
