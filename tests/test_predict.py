"""``a2net predict`` on the embedded SQLite store: real videos through ffmpeg, a pt2 model."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.data.video import encode_video
from pipeline.registry.predict import load_model, video_scores, video_views
from pipeline.registry.publish import Lineage, log_and_register
from pipeline.registry.tracking import setup_mlflow

from helpers import enter_project_store
from mlflow_server import CLASSES, GOOD_METRICS, PREPROCESSING, StandInNet

A2NET = Path(sys.executable).with_name("a2net")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A project directory with an SQLite store holding a registered stand-in model @staging."""
    root = tmp_path_factory.mktemp("project")
    with pytest.MonkeyPatch.context() as mp:
        enter_project_store(root, mp)
        experiment_id = setup_mlflow("a2nets")
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_metrics(GOOD_METRICS)
        net = StandInNet(seed=1)
        registered = log_and_register(
            net,
            run_id=run.info.run_id,
            model_name="a2net",
            architecture="stand_in",
            classes=CLASSES,
            preprocessing=PREPROCESSING,
            lineage=Lineage("c0ffee", "p", "s", validation="passed"),
        )
        assert main(["promote", "--version", registered.version, "--to", "staging"]) == 0
        yield {"root": root, "net": net, "uri": registered.model_uri, "version": registered.version}
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2.5 s, 25 fps, 64×48 H.264 video of moving noise."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(62, 48, 64, 3), dtype=np.uint8)
    return encode_video(frames, tmp_path_factory.mktemp("videos") / "clip.mp4", fps=25)


def test_views_are_the_eval_multi_view_crops(video: Path) -> None:
    views = video_views(video, PREPROCESSING)
    assert views.shape == (
        PREPROCESSING.num_clips * PREPROCESSING.num_crops,
        3,
        PREPROCESSING.num_frames,
        PREPROCESSING.crop_size,
        PREPROCESSING.crop_size,
    )
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
    done = subprocess.run(
        [str(A2NET), "predict", str(not_video), str(missing), str(video)],
        cwd=store["root"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    assert done.returncode == 2, done.stderr
    errors = done.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {not_video}: not a readable video (")
    assert errors[1] == f"error: {missing}: no such file"
    lines = done.stdout.splitlines()
    assert lines[0] == f"models:/a2net@staging is version {store['version']}"  # the default model
    assert lines[1] == f"{video}:" and len(lines) == 7  # the good video still gets its top 5
    assert all(line.split()[-1] in CLASSES for line in lines[2:])


def test_predict_names_the_version_an_alias_resolved_to(store, video, capsys) -> None:
    assert main(["predict", str(video), "--model", "models:/a2net@staging", "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"models:/a2net@staging is version {store['version']}", f"{video}:"]
    assert main(["predict", str(video), "--model", store["uri"], "--json"]) == 0  # models:/a2net/<N>
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == store["uri"] and result["version"] == store["version"]


def test_a_pickled_model_is_refused(store, capsys) -> None:
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(StandInNet(), name="model", serialization_format="pickle", pip_requirements=[])
    capsys.readouterr()
    assert main(["predict", "whatever.mp4", "--model", info.model_uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot load model {info.model_uri}: ") and "pickle" in err


# ------------------------------------------------- a model is data: no code, no foreign URIs, no leftovers


def _predict_in_clean_tmp(store, tmp_path: Path, video: Path, model: str) -> tuple[subprocess.CompletedProcess, Path]:
    """``a2net predict`` in a subprocess whose TMPDIR starts empty; returns it and that TMPDIR."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "TMPDIR": str(scratch),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
    }  # torch's own cache, made on import
    done = subprocess.run(
        [str(A2NET), "predict", str(video), "--model", model],
        cwd=store["root"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    return done, scratch


def _local_copy_of_staging(dest: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/a2net@staging", dst_path=str(dest)))


@pytest.mark.parametrize("declares", ["flavor code path", "code folder"])
def test_a_model_that_carries_code_is_refused_and_its_code_never_runs(store, video, tmp_path, declares) -> None:
    folder = _local_copy_of_staging(tmp_path / "model")
    marker = tmp_path / "ran"
    (folder / "code").mkdir()
    for module in ("yaml", "numpy", "torch", "a2model", "pipeline", "sitecustomize", "mlflow"):
        (folder / "code" / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').write('{module}')\n")
    if declares == "flavor code path":
        mlmodel = (folder / "MLmodel").read_text().replace("    code: null", "    code: code")
        assert "code: code" in mlmodel
        (folder / "MLmodel").write_text(mlmodel)
    done, _ = _predict_in_clean_tmp(store, tmp_path, video, str(folder))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: model {folder} carries code (") and "Traceback" not in done.stderr
    assert not marker.exists()


def test_a_local_model_folder_predicts_like_its_registered_version(store, video, tmp_path) -> None:
    folder = _local_copy_of_staging(tmp_path / "model")
    local, registered = load_model(str(folder)), load_model("models:/a2net@staging")
    views = video_views(video, local.preprocessing)
    torch.testing.assert_close(video_scores(local.net, views), video_scores(registered.net, views))


@pytest.mark.parametrize(
    "uri, says",
    [
        ("file:///etc", "/etc holds no MLmodel file"),
        ("/etc", "/etc holds no MLmodel file"),
        ("s3://bucket/model", "not a model URI"),
        ("http://127.0.0.1:9/model", "not a model URI"),
        ("models:/no-such-model@staging", "cannot load model models:/no-such-model@staging: "),
    ],
)
def test_foreign_or_missing_model_uris_are_one_line_and_leave_no_temp_files(
    store, video, tmp_path, uri, says, monkeypatch, capsys
) -> None:
    scratch = tmp_path / "scratch"  # in process (a subprocess costs ~10 s of imports): its temp dir
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    capsys.readouterr()
    assert main(["predict", str(video), "--model", uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
    assert not any(scratch.iterdir()), list(scratch.iterdir())


def test_a_downloaded_model_leaves_no_temp_files(store, video, tmp_path) -> None:
    done, scratch = _predict_in_clean_tmp(store, tmp_path, video, "models:/a2net@staging")
    assert done.returncode == 0, done.stderr
    assert not any(scratch.iterdir()), list(scratch.iterdir())


@pytest.mark.parametrize("top_k", ["-1", "0", "abc"])
def test_a_bad_top_k_is_one_line(top_k, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "x.mp4", "--top-k", top_k])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert (
        err
        == f"error: a2net predict: argument --top-k: {top_k!r} is not a whole number >= 1 (see a2net predict --help)\n"
    )
