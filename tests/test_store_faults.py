"""Store faults never corrupt a run's record (issue 27, items 5 and 6).

Real parts only: the SQLite store, ``python -m pipeline.register`` in a subprocess killed with
SIGKILL, and a really full filesystem: a small tmpfs mounted over the project's ``mlflow/`` and
filled with a file (mounting needs root or CAP_SYS_ADMIN; without it those tests are skipped, as
RLIMIT_FSIZE would give EFBIG, not the ENOSPC and SQLITE_FULL a full disk gives).
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus

from pipeline.cli import main
from pipeline.core.config import load_config, write_params
from pipeline.register import main as register_main
from pipeline.registry.publish import DISCARDED_TAG
from pipeline.tracking.run_record import ABANDONED_TAG, mark_abandoned_run

from helpers import enter_project_store, write_training_output

REPO = Path(__file__).resolve().parents[1]
SMALL = ["model=tiny_plain", "train.epochs=2", "model.clip.num_frames=4", "model.clip.crop_size=32"]  # fast export
CLASSES = ["archery", "bowling", "cartwheeling"]
REGISTER = "python -m pipeline.register"
PENDING = LoggedModelStatus.PENDING.to_int()  # how the SQLite store writes the status


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty project directory (params.yaml, SQLite store in mlflow/) that is the cwd."""
    enter_project_store(tmp_path, monkeypatch)
    write_params(tmp_path / "params.yaml")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def start_register(project: Path) -> subprocess.Popen:
    """``python -m pipeline.register`` in ``project``, on its store."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{project}/mlflow/mlflow.db"}
    command = [sys.executable, "-m", "pipeline.register"]
    return subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_while_logging(register: subprocess.Popen, db: Path, timeout_s: float = 300) -> None:
    """SIGKILL ``register`` while it logs the model: once a logged model is PENDING, seen under the
    store's write lock (so that it cannot become READY between the look and the kill)."""
    con = sqlite3.connect(db, timeout=30, isolation_level=None)
    deadline = time.monotonic() + timeout_s
    try:
        while register.poll() is None and time.monotonic() < deadline:
            con.execute("begin immediate")
            try:
                if con.execute("select 1 from sqlite_master where name = 'logged_models'").fetchone() and (
                    con.execute("select 1 from logged_models where status = ?", (PENDING,)).fetchone()
                ):
                    register.send_signal(signal.SIGKILL)
                    register.wait()
                    return
            finally:
                con.execute("rollback")
            time.sleep(0.01)
    finally:
        con.close()
    register.kill()
    pytest.fail(f"register ended (rc {register.returncode}) before it logged a model: {register.communicate()[1]}")


def logged_models(run_id: str) -> list:
    """Every logged model whose source is the run ``run_id``."""
    client = MlflowClient()
    run = client.get_run(run_id)
    return list(client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"))


def test_a_register_killed_while_logging_leaves_the_training_run_finished_and_nothing_pending(project, capsys):
    """The kill comes while the model is PENDING: the training run stays FINISHED (it is never
    re-opened); the next register marks the PENDING model FAILED and registers a READY one; the
    next training's ``mark_abandoned_run`` leaves the run alone."""
    cfg = load_config(SMALL)
    _, run = write_training_output(cfg, CLASSES)
    run_id = run.info.run_id

    kill_while_logging(start_register(project), project / "mlflow/mlflow.db")

    client = MlflowClient()
    assert client.get_run(run_id).info.status == "FINISHED"
    [stale] = logged_models(run_id)
    assert stale.status == LoggedModelStatus.PENDING  # the kill came while it logged the model

    assert register_main([]) == 0
    assert f"note: logged model {stale.model_id} of run {run_id} was left PENDING" in capsys.readouterr().out
    by_id = {model.model_id: model for model in logged_models(run_id)}
    assert by_id.pop(stale.model_id).status == LoggedModelStatus.FAILED
    assert client.get_logged_model(stale.model_id).tags[DISCARDED_TAG].startswith("a register of its run")
    [(model_id, registered)] = by_id.items()
    assert registered.status == LoggedModelStatus.READY
    assert client.get_model_version("a2net", "1").source == f"models:/{model_id}"

    mark_abandoned_run(Path(cfg.train.out_dir) / "run_id.txt", cfg.mlflow.experiment)
    after = client.get_run(run_id)
    assert after.info.status == "FINISHED" and ABANDONED_TAG not in after.data.tags


@pytest.mark.parametrize(("epoch", "status"), [(2, "FINISHED"), (1, "KILLED")])
def test_mark_abandoned_run_judges_a_running_run_by_how_far_its_training_got(project, epoch, status) -> None:
    """A run left RUNNING (an old register re-opened it and was killed) whose checkpoint reached its
    last epoch is set back to FINISHED, untagged; one whose checkpoint stopped short is KILLED."""
    from pipeline.runtime.checkpoint import Checkpoint

    cfg = load_config(SMALL)
    _, run = write_training_output(cfg, CLASSES)
    out_dir = Path(cfg.train.out_dir)
    checkpoint = Checkpoint.load(out_dir / "last.pt")
    checkpoint.epoch = epoch
    checkpoint.save(out_dir / "last.pt")
    client = MlflowClient()
    client.update_run(run.info.run_id, status="RUNNING")  # what a killed process leaves

    mark_abandoned_run(out_dir / "run_id.txt", cfg.mlflow.experiment)

    after = client.get_run(run.info.run_id)
    assert after.info.status == status
    assert (ABANDONED_TAG in after.data.tags) == (status == "KILLED")


# ------------------------------------------------- a full disk


@pytest.fixture
def small_disk(project: Path) -> Iterator[Path]:
    """``project/mlflow`` on a new 4 MiB tmpfs (skipped where mounting is not allowed)."""
    folder = project / "mlflow"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        mlflow.set_tracking_uri(None)
        subprocess.run(["umount", "--lazy", str(folder)], check=True)  # lazy: pooled SQLite connections


def fill(folder: Path, leave: int) -> Path:
    """Fill the filesystem of ``folder`` with a file, leaving ``leave`` bytes free; the file."""
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(bytes(64 * 1024))
                handle.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
            handle.truncate(max(handle.tell() - leave, 0))
    return filler


def store_state(run_id: str, artifacts: Path) -> tuple[str, list, list[Path]]:
    """The training run's status, its logged models' statuses and the files under ``artifacts``."""
    statuses = [model.status for model in logged_models(run_id)]
    files = sorted(p for p in artifacts.rglob("*") if p.is_file())
    return MlflowClient().get_run(run_id).info.status, statuses, files


@pytest.mark.parametrize(
    ("free", "writing"),
    [(0, "mlflow/mlflow.db;"), (150 * 1024, "mlflow/artifacts/models/")],
    ids=["database-full", "artifacts-full"],
)
def test_register_on_a_full_disk_is_one_line_and_leaves_the_run_finished(project, small_disk, free, writing) -> None:
    """With no byte free, SQLite's 'database or disk is full'; with 150 kB free, the store's writes
    pass and the model's files do not fit (ENOSPC). Either way: exit 2, one line naming the mount
    and what was written, the run FINISHED, no PENDING model, no partial files; then, with room
    again, register works."""
    _, run = write_training_output(load_config(SMALL), CLASSES)
    filler = fill(small_disk, free)

    register = start_register(project)
    out, err = register.communicate(timeout=300)

    assert register.returncode == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: no space left on the disk mounted at {small_disk} (writing {project}/{writing}")
    assert err.endswith(f"free space there, then run {REGISTER} again\n")
    status, models, files = store_state(run.info.run_id, small_disk / "artifacts")
    assert status == "FINISHED" and LoggedModelStatus.PENDING not in models and files == []

    filler.unlink()
    assert register_main([]) == 0
    assert LoggedModelStatus.READY in store_state(run.info.run_id, small_disk / "artifacts")[1]


def test_promote_on_a_full_disk_is_one_line_not_a_race(project, small_disk, capsys) -> None:
    _, run = write_training_output(load_config(SMALL), CLASSES)
    assert register_main([]) == 0
    fill(small_disk, 0)
    capsys.readouterr()

    assert main(["promote", "--version", "1", "--to", "staging", "--force", "--reason", "test"]) == 2

    err = capsys.readouterr().err
    assert err == (
        f"error: no space left on the disk mounted at {small_disk} (writing {small_disk}/mlflow.db; 0 bytes free "
        "now): free space there, then run a2net promote again\n"
    )
    assert "staging" not in MlflowClient().get_registered_model("a2net").aliases


def test_a_store_error_while_promoting_is_its_own_line_not_a_race(project, capsys) -> None:
    """The store stays locked by another writer past SQLite's busy timeout (MLflow's 20 s), and no
    promotion wrote: the store's error, not 'lost the race'."""
    write_training_output(load_config(SMALL), CLASSES)
    assert register_main([]) == 0
    capsys.readouterr()
    locked, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        con = sqlite3.connect(project / "mlflow/mlflow.db", isolation_level=None)
        con.execute("begin immediate")
        locked.set()
        release.wait(120)
        con.execute("rollback")
        con.close()

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    try:
        assert locked.wait(30)
        code = main(["promote", "--version", "1", "--to", "staging", "--force", "--reason", "test"])
    finally:
        release.set()
        holder.join()

    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: the MLflow store sqlite:///{project}/mlflow/mlflow.db failed while promoting")
    assert "database is locked" in err and "race" not in err
