"""``a2net predict`` on the embedded SQLite store: real videos through ffmpeg, a pt2 model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from mlflow_server import CLASSES, GOOD_METRICS, PREPROCESSING, StandInNet
from pipeline.cli import main
from pipeline.predict import load_model, video_scores, video_views
from pipeline.register import Lineage, log_and_register
from pipeline.tracking import setup_mlflow
from pipeline.video import encode_video

A2NET = Path(sys.executable).with_name("a2net")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A project directory with an SQLite store holding a registered stand-in model @staging."""
    root = tmp_path_factory.mktemp("project")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        # absolute: MLflow caches stores by URI, and other tests use the relative default
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow/mlflow.db")
        (root / "mlflow").mkdir()
        experiment_id = setup_mlflow("a2nets")
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_metrics(GOOD_METRICS)
        net = StandInNet(seed=1)
        registered = log_and_register(
            net, run_id=run.info.run_id, model_name="a2net", architecture="stand_in",
            classes=CLASSES, preprocessing=PREPROCESSING,
            lineage=Lineage("c0ffee", "p", "s", validation="passed"))
        assert main(["promote", "--version", registered.version, "--to", "staging"]) == 0
        yield {"root": root, "net": net, "uri": registered.model_uri}
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2.5 s, 25 fps, 64×48 H.264 video of moving noise."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(62, 48, 64, 3), dtype=np.uint8)
    return encode_video(frames, tmp_path_factory.mktemp("videos") / "clip.mp4", fps=25)


def test_views_are_the_eval_multi_view_crops(video: Path) -> None:
    views = video_views(video, PREPROCESSING)
    assert views.shape == (PREPROCESSING.num_clips * PREPROCESSING.num_crops, 3,
                           PREPROCESSING.num_frames, PREPROCESSING.crop_size, PREPROCESSING.crop_size)
    assert views.dtype == torch.float32
    assert -3 < views.mean() < 3 and views.std() > 0.1  # normalised, not raw 0..255 pixels


def test_predict_json_is_the_trained_nets_top5_over_summed_views(store, video, capsys) -> None:
    assert main(["predict", str(video), "--model", "models:/a2net@staging", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    [prediction] = result["predictions"]
    expected = video_scores(store["net"], video_views(video, PREPROCESSING))
    top = expected.topk(5)
    assert prediction["labels"] == [CLASSES[i] for i in top.indices.tolist()]
    assert prediction["probabilities"] == pytest.approx(top.values.tolist(), abs=1e-5)
    assert expected.sum() == pytest.approx(1.0)


def test_loaded_model_carries_its_classes_and_preprocessing(store) -> None:
    model = load_model("models:/a2net@staging")
    assert model.classes == CLASSES
    assert model.preprocessing == PREPROCESSING


def test_cli_reports_bad_files_in_one_line_and_predicts_the_rest(store, video, tmp_path) -> None:
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video\n")
    missing = tmp_path / "missing.mp4"
    done = subprocess.run([str(A2NET), "predict", str(not_video), str(missing), str(video)],
                          cwd=store["root"], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert done.returncode == 2, done.stderr
    errors = done.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {not_video}: not a readable video (")
    assert errors[1] == f"error: {missing}: no such file"
    lines = done.stdout.splitlines()
    assert lines[0] == f"{video}:" and len(lines) == 6  # the good video still gets its top 5
    assert all(line.split()[-1] in CLASSES for line in lines[1:])


def test_a_pickled_model_is_refused(store, capsys) -> None:
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(StandInNet(), name="model", serialization_format="pickle",
                                        pip_requirements=[])
    capsys.readouterr()
    assert main(["predict", "whatever.mp4", "--model", info.model_uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot load model {info.model_uri}: ") and "pickle" in err
