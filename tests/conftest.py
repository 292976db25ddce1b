"""Fixtures shared by several test modules (pytest finds them here; plain helpers are in helpers.py).

- ``pytest_collection_modifyitems``: files with slow or scaleout tests run first (xdist balance).
- ``training_data`` (session): a dataset root and its shards, big enough to train on.
- ``trained`` (module): a 1-epoch tiny_a2 training's out_dir, for the tests that only evaluate.
- ``mlflow_uri`` (session) and ``workdir``: an SQLite MLflow store and a fresh cwd using it.
- ``mlflow_server`` and ``register_version`` (module): a real ``mlflow server`` subprocess and
  stand-in models registered on it.
- ``stand_in_store`` and ``noise_video`` (module): an SQLite store with a stand-in model
  @staging in a project cwd, and a small H.264 video (predict and serving tests).
- ``fast_video`` and ``huge_frame`` (session): decode bombs, 100,000 tiny frames and one
  16000x16000 frame in small files (untrusted-video and serving tests).
- ``reproduced`` (session): a tiny copy of the project after one real ``dvc repro`` (the DVC
  pipeline and DVC-remote tests work on copies of it).

Imports happen inside the fixtures that need them: modules that use none of these fixtures
collect as fast as they would without this file.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with slow or scaleout tests first (each file's own order kept): under xdist's
    ``--dist loadfile`` the longest files then start at once instead of ending the run alone."""
    heavy = {item.path for item in items if item.get_closest_marker("slow") or item.get_closest_marker("scaleout")}
    items.sort(key=lambda item: item.path not in heavy)


TRAIN_CLIPS = 8  # the 4 train clips of helpers.write_kinetics_root's root + 4 extra


@pytest.fixture(scope="session")
def training_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset root, shards dir): 8 train and 2 validate clips of 3 classes, short side 32."""
    from helpers import run_stage, write_kinetics_root

    tmp = tmp_path_factory.mktemp("train-data")
    root = write_kinetics_root(tmp / "root", faults=False, extra_train=TRAIN_CLIPS - 4)
    run_stage(root, tmp / "shards", samples_per_shard=3)
    return root, tmp / "shards"


@pytest.fixture(scope="module")
def trained(training_data: tuple[Path, Path], mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train.out_dir`` of a 1-epoch tiny_a2 training on 4×32² clips, for the tests that only evaluate."""
    from pipeline import train as train_stage

    from helpers import tiny_overrides

    out = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(out)
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
        assert train_stage.main(tiny_overrides(training_data, out, "train.epochs=1", "train.val_every=0")) == 0
    return out / "model"


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow store for the session (creating its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_uri: str) -> Path:
    """A fresh cwd without params.yaml (the config is composed) and the session's MLflow store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    return tmp_path


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a fresh ``mlflow server``; MLFLOW_TRACKING_URI points at it for the module.

    The server runs on a free port over a temporary SQLite store and artifact folder, with one
    worker, and is terminated when the module's tests are done.
    """
    import mlflow

    from pipeline.registry.server import wait_healthy

    from helpers import free_port
    from mlflow_server import MLFLOW

    root = tmp_path_factory.mktemp("mlflow_server")
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        str(MLFLOW),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        url.rsplit(":", 1)[1],
        "--backend-store-uri",
        f"sqlite:///{root / 'db.sqlite'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]
    log = (root / "server.log").open("wb")
    from pipeline.registry.server import ui_env

    env = ui_env(os.environ)  # as `a2net ui` runs it: no job runner, so 2 processes instead of ~15
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
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


@pytest.fixture(scope="module")
def register_version(mlflow_server: str):
    """``register_version(model_name, metrics=GOOD_METRICS, validation="passed", net=None)``:
    ``helpers.register_stand_in`` on the module's server; returns the ``RegisteredModel``."""
    import functools

    from pipeline.tracking.store import setup_mlflow

    from helpers import register_stand_in

    # Not mlflow.set_experiment: an active experiment outlives the module, and a later
    # start_run(run_id=...) on another store then fails ("active experiment ID does not match").
    experiment_id = setup_mlflow("registry-tests")
    return functools.partial(register_stand_in, experiment_id)


@pytest.fixture(scope="module")
def stand_in_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A project directory with an SQLite store holding a registered stand-in model @staging.

    Yields ``{"root", "net", "uri", "version"}``; the cwd and ``MLFLOW_TRACKING_URI`` point at it.
    """
    import mlflow

    from pipeline.cli import main
    from pipeline.registry.publish import Lineage, log_and_register
    from pipeline.tracking.store import setup_mlflow

    from helpers import enter_project_store
    from mlflow_server import CLASSES, GOOD_METRICS, PREPROCESSING, StandInNet

    root = tmp_path_factory.mktemp("project")
    with pytest.MonkeyPatch.context() as mp:
        enter_project_store(root, mp)
        with mlflow.start_run(experiment_id=setup_mlflow("a2nets")) as run:
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
def noise_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2.5 s, 25 fps, 64×48 H.264 video of moving noise."""
    import numpy as np

    from pipeline.data.video import encode_video

    frames = np.random.default_rng(0).integers(0, 256, size=(62, 48, 64, 3), dtype=np.uint8)
    return encode_video(frames, tmp_path_factory.mktemp("videos") / "clip.mp4", fps=25)


@pytest.fixture(scope="session")
def fast_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s of 16x16 frames at 10,000 fps: 100,000 source frames in 1.5 MB (about 1.4 s of CPU to decode)."""
    from helpers import lavfi_video

    path = tmp_path_factory.mktemp("bombs") / "fast.mp4"
    return lavfi_video(path, "testsrc=size=16x16:rate=10000:duration=10", "-c:v", "libx264", "-preset", "ultrafast")


@pytest.fixture(scope="session")
def slow_video(fast_video: Path) -> Path:
    """``fast_video`` four times over (stream-copied): 400,000 source frames, 4-13 s of CPU to decode
    (ffmpeg's own threads spin less on a loaded machine), so a 1-s CPU budget is always spent."""
    from pipeline.data.video import ffmpeg_exe

    path = fast_video.with_name("slow.mp4")
    command = [ffmpeg_exe(), "-v", "error", "-stream_loop", "3", "-i", str(fast_video), "-c", "copy", "-y", str(path)]
    subprocess.run(command, check=True)
    return path


@pytest.fixture(scope="session")
def huge_frame(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 16000x16000 PNG frame in a Matroska file of 780 kB (a 768 MB picture decoded)."""
    from helpers import lavfi_video

    path = tmp_path_factory.mktemp("bombs") / "huge.mkv"
    return lavfi_video(path, "color=c=red:size=16000x16000:rate=25", "-frames:v", "1", "-c:v", "png")


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny copy of the project (``helpers.project_copy``) after one ``dvc repro``; the tests work
    on copies of it (``helpers.copy_project``)."""
    from helpers import project_copy, run_cmd

    project = project_copy(tmp_path_factory.mktemp("reproduced") / "project")
    run_cmd(["dvc", "repro"], project)
    return project
