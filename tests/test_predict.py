"""``a2net predict`` on the embedded SQLite store: real videos through ffmpeg, a pt2 model."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from pipeline.cli import main
from pipeline.registry.predict import load_model
from pipeline.serving.views import video_scores, video_views

from helpers import hostile_files
from mlflow_server import CLASSES, PREPROCESSING, StandInNet

A2NET = Path(sys.executable).with_name("a2net")


def test_views_are_the_eval_multi_view_crops(noise_video: Path) -> None:
    views = video_views(noise_video, PREPROCESSING)
    assert views.shape == (
        PREPROCESSING.num_clips * PREPROCESSING.num_crops,
        3,
        PREPROCESSING.num_frames,
        PREPROCESSING.crop_size,
        PREPROCESSING.crop_size,
    )
    assert views.dtype == torch.float32
    assert -3 < views.mean() < 3 and views.std() > 0.1  # normalised, not raw 0..255 pixels


def test_predict_json_is_the_trained_nets_top5_over_summed_views(stand_in_store, noise_video, capsys) -> None:
    assert main(["predict", str(noise_video), "--model", "models:/a2net@staging", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    [prediction] = result["predictions"]
    expected = video_scores(stand_in_store["net"], video_views(noise_video, PREPROCESSING))
    top = expected.topk(5)
    assert prediction["labels"] == [CLASSES[i] for i in top.indices.tolist()]
    assert prediction["probabilities"] == pytest.approx(top.values.tolist(), abs=1e-5)
    assert expected.sum() == pytest.approx(1.0)


def test_loaded_model_carries_its_classes_and_preprocessing(stand_in_store) -> None:
    model = load_model("models:/a2net@staging")
    assert model.classes == CLASSES
    assert model.preprocessing == PREPROCESSING


def test_cli_reports_bad_files_in_one_line_and_predicts_the_rest(stand_in_store, noise_video, tmp_path) -> None:
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video\n")
    missing = tmp_path / "missing.mp4"
    manifest = hostile_files(tmp_path / "hostile", noise_video)["dash.mpd"]  # names the good video: read nothing of it
    done = subprocess.run(
        [str(A2NET), "predict", str(not_video), str(missing), str(manifest), str(noise_video)],
        cwd=stand_in_store["root"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    assert done.returncode == 2, done.stderr
    errors = done.stderr.splitlines()
    assert len(errors) == 3
    assert errors[0].startswith(f"error: {not_video}: not a readable video (")
    assert errors[1] == f"error: {missing}: no such file; give a video file"
    assert errors[2].startswith(f"error: {manifest}: not a readable video (not in a video container read here (")
    lines = done.stdout.splitlines()
    assert lines[0] == f"models:/a2net@staging is version {stand_in_store['version']}"  # the default model
    assert lines[1] == f"{noise_video}:" and len(lines) == 7  # the good video still gets its top 5
    assert all(line.split()[-1] in CLASSES for line in lines[2:])


def test_predict_names_the_version_an_alias_resolved_to(stand_in_store, noise_video, capsys) -> None:
    assert main(["predict", str(noise_video), "--model", "models:/a2net@staging", "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"models:/a2net@staging is version {stand_in_store['version']}", f"{noise_video}:"]
    assert main(["predict", str(noise_video), "--model", stand_in_store["uri"], "--json"]) == 0  # models:/a2net/<N>
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == stand_in_store["uri"] and result["version"] == stand_in_store["version"]


def test_a_pickled_model_is_refused(stand_in_store, capsys) -> None:
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(StandInNet(), name="model", serialization_format="pickle", pip_requirements=[])
    capsys.readouterr()
    assert main(["predict", "whatever.mp4", "--model", info.model_uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: model {info.model_uri} carries code that is not this checkout's (") and (
        "'mlflow.pytorch'" in err
    )


# ------------------------------------------------- a model is data: no code, no foreign URIs, no leftovers


def _predict_in_clean_tmp(
    stand_in_store, tmp_path: Path, noise_video: Path, model: str
) -> tuple[subprocess.CompletedProcess, Path]:
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
        [str(A2NET), "predict", str(noise_video), "--model", model],
        cwd=stand_in_store["root"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    return done, scratch


def _local_copy_of_staging(dest: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/a2net@staging", dst_path=str(dest)))


def test_a_model_whose_code_shadows_modules_is_refused_and_its_code_never_runs(
    stand_in_store, noise_video, tmp_path
) -> None:
    folder = _local_copy_of_staging(tmp_path / "model")
    marker = tmp_path / "ran"
    for module in ("yaml", "numpy", "torch", "a2model", "sitecustomize", "mlflow"):
        (folder / "code" / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').write('{module}')\n")
    done, _ = _predict_in_clean_tmp(stand_in_store, tmp_path, noise_video, str(folder))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: model {folder} carries code that is not this checkout's (code/")
    assert "which the register stage did not write" in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists()


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


CODE_TAMPERING = {  # what is done to a registered model's folder → what the refusal names
    "a carried module edited": (
        lambda m: _append(m / "code/pipeline/serving/views.py", "\nEVIL = 1\n"),
        "code/pipeline/serving/views.py, missing or not this checkout's",
    ),
    "a carried module removed": (
        lambda m: (m / "code/pipeline/data/clips.py").unlink(),
        "code/pipeline/data/clips.py, missing or not this checkout's",
    ),
    "the entry edited": (lambda m: _append(m / "entry.py", "\nimport os\n"), "an entry file 'entry.py'"),
    "another code folder": (
        lambda m: _edit_mlmodel(m, lambda flavors: flavors["python_function"].update(code="other")),
        "flavors.python_function.code = 'other'",
    ),
    "a second flavor with code": (
        lambda m: _edit_mlmodel(m, lambda flavors: flavors.update(sklearn={"code": "code"})),
        "flavors.sklearn.code = 'code'",
    ),
}


def _edit_mlmodel(folder: Path, change) -> None:
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    change(mlmodel["flavors"])
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))


@pytest.mark.parametrize("tampering", sorted(CODE_TAMPERING))
def test_a_model_whose_code_is_not_the_register_stages_is_refused(stand_in_store, tmp_path, tampering, capsys) -> None:
    folder = _local_copy_of_staging(tmp_path / "model")
    change, says = CODE_TAMPERING[tampering]
    change(folder)
    assert main(["predict", "whatever.mp4", "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: model {folder} carries code that is not this checkout's (") and says in err, err
    assert err.count("\n") == 1


def test_a_local_model_folder_predicts_like_its_registered_version(stand_in_store, noise_video, tmp_path) -> None:
    folder = _local_copy_of_staging(tmp_path / "model")
    local, registered = load_model(str(folder)), load_model("models:/a2net@staging")
    views = video_views(noise_video, local.preprocessing)
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
    stand_in_store, noise_video, tmp_path, uri, says, monkeypatch, capsys
) -> None:
    scratch = tmp_path / "scratch"  # in process (a subprocess costs ~10 s of imports): its temp dir
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    capsys.readouterr()
    assert main(["predict", str(noise_video), "--model", uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
    assert not any(scratch.iterdir()), list(scratch.iterdir())


def test_a_downloaded_model_leaves_no_temp_files(stand_in_store, noise_video, tmp_path) -> None:
    done, scratch = _predict_in_clean_tmp(stand_in_store, tmp_path, noise_video, "models:/a2net@staging")
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


@pytest.mark.parametrize(
    "path, what",
    [("/dev/zero", "not a regular file"), ("/dev/null", "not a regular file"), ("{tmp}", "a folder")],
)
def test_a_path_that_is_no_video_file_says_what_it_is(stand_in_store, tmp_path, capsys, path, what) -> None:
    path = path.format(tmp=tmp_path)
    assert main(["predict", path]) == 2
    assert capsys.readouterr().err == f"error: {path}: {what}; give a video file\n"
