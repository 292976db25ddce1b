"""What a newcomer sees in MLflow: the experiment's view, run names, descriptions, the dataset
input, exact metric values, and a local store whose artifacts stay beside its database."""

from __future__ import annotations

import csv
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import pytest
import torch

from pipeline.core.config import load_config
from pipeline.data.layout import MANIFEST_COLUMNS, MANIFEST_FILE
from pipeline.evaluation.meters import Evaluation
from pipeline.settings import run_spec
from pipeline.tracking.run_record import log_run_start, mlflow_run
from pipeline.tracking.store import MODEL_TRAINING, ROOT_TAG, relocate_moved_store, setup_mlflow


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow database (creating the tables takes seconds; copying it does not)."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_db: Path) -> Path:
    """A fresh SQLite store in its own folder, used from another working directory."""
    folder = tmp_path / "store"
    folder.mkdir()
    shutil.copy(empty_db, folder / "mlflow.db")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")
    yield folder
    mlflow.set_tracking_uri(None)


def tiny_shards(folder: Path) -> Path:
    """A shards folder with a two-row manifest (what the run's dataset input records)."""
    folder.mkdir(parents=True)
    with open(folder / MANIFEST_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for clip in ("a_000000_000010", "b_000000_000010"):
            writer.writerow({**dict.fromkeys(MANIFEST_COLUMNS, ""), "clip_id": clip, "status": "ok", "split": "train"})
    return folder


def start_run(overrides: list[str], shards: Path) -> mlflow.entities.Run:
    """Open and record a training run as the train stage does, without training."""
    import a2model

    cfg = load_config([*overrides, f"data.shards_dir={shards}"], params_file=Path("absent.yaml"))
    spec = run_spec(cfg)
    with mlflow_run(spec, None, enabled=True) as run_id:
        log_run_start(spec, a2model.build_model("tiny_plain", 4))
    return mlflow.get_run(run_id)


def test_experiments_open_in_the_model_training_view_and_keep_artifacts_beside_the_store(store: Path) -> None:
    experiment = mlflow.get_experiment(setup_mlflow("a2nets"))
    assert experiment.tags["mlflow.experimentKind"] == MODEL_TRAINING == "custom_model_development"
    assert experiment.artifact_location == (store / "artifacts").as_uri()  # not ./mlflow/artifacts of the cwd
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        mlflow.log_text("x", "note.txt")
    assert len(list((store / "artifacts").rglob("note.txt"))) == 1
    assert not Path("mlflow").exists()


def test_an_experiment_made_elsewhere_gets_the_model_training_view(store: Path) -> None:
    setup_mlflow("other")
    client = mlflow.MlflowClient()
    client.delete_experiment_tag(client.get_experiment_by_name("other").experiment_id, "mlflow.experimentKind")
    assert mlflow.get_experiment(setup_mlflow("other")).tags["mlflow.experimentKind"] == MODEL_TRAINING


def test_a_copied_store_writes_its_artifacts_beside_itself(store: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    with mlflow.start_run(experiment_id=setup_mlflow("a2nets")) as run:
        mlflow.log_text("first", "first.txt")
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{copy}/mlflow.db")

    experiment = mlflow.get_experiment(setup_mlflow("a2nets"))
    assert "was moved" in capsys.readouterr().err
    assert experiment.artifact_location == (copy / "artifacts").as_uri()
    assert experiment.tags[ROOT_TAG] == (copy / "artifacts").as_uri()
    log_later = (  # another process (this one caches the run's first artifact location)
        "import mlflow; from pipeline.tracking.store import setup_mlflow; setup_mlflow('a2nets'); "
        f"mlflow.start_run(run_id='{run.info.run_id}'); mlflow.log_text('second', 'second.txt'); mlflow.end_run()"
    )
    subprocess.run([sys.executable, "-c", log_later], check=True, capture_output=True, env=os.environ)
    assert list((copy / "artifacts").rglob("second.txt")) and not list(store.rglob("second.txt"))
    artifact_uri = mlflow.get_run(run.info.run_id).info.artifact_uri
    assert artifact_uri.startswith((copy / "artifacts").as_uri()) and mlflow.artifacts.load_text(
        f"{artifact_uri}/first.txt"
    )
    setup_mlflow("a2nets")
    assert "was moved" not in capsys.readouterr().err  # relocated once


def test_a_moved_store_waits_for_another_writer_instead_of_failing(store: Path, tmp_path: Path, monkeypatch) -> None:
    """A training logging metrics holds the write lock for a moment: the relocation waits its turn
    (a read that turns into a write inside one transaction could not; it failed at once)."""
    setup_mlflow("a2nets")
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{copy}/mlflow.db")
    writer = sqlite3.connect(copy / "mlflow.db", isolation_level=None, check_same_thread=False)
    writer.execute("begin immediate")
    threading.Timer(0.5, writer.execute, ("rollback",)).start()
    try:
        assert relocate_moved_store(copy / "mlflow.db") == (store / "artifacts").as_uri()
    finally:
        writer.close()
    assert mlflow.get_experiment(setup_mlflow("a2nets")).artifact_location == (copy / "artifacts").as_uri()


def test_legacy_experiments_are_adopted_when_their_store_moves(store: Path, tmp_path: Path, monkeypatch) -> None:
    setup_mlflow("a2nets")
    legacy = tmp_path / "old-checkout/mlflow/artifacts"
    with sqlite3.connect(store / "mlflow.db") as con:  # as stores made before the root was tagged look
        con.execute("delete from experiment_tags where key = ?", (ROOT_TAG,))
        con.execute("update experiments set artifact_location = ? where name = 'a2nets'", (legacy.as_uri(),))
    assert mlflow.get_experiment(setup_mlflow("a2nets")).artifact_location == (store / "artifacts").as_uri()


def test_runs_of_other_configs_get_other_names_a_description_and_the_shards_as_dataset(store: Path, tmp_path: Path):
    shards = tiny_shards(tmp_path / "shards")
    default = start_run([], shards)
    changed = start_run(["train.lr=0.2", "train.epochs=3"], shards)
    moved = start_run(["train.out_dir=/elsewhere", "data.workers=1"], shards)  # where, not what

    assert default.info.run_name.startswith("tiny_a2 ") and default.info.run_name != changed.info.run_name
    assert changed.info.run_name.startswith("tiny_a2 epochs=3 lr=0.2 ")
    assert moved.info.run_name.split()[:-1] == default.info.run_name.split()[:-1]
    assert run_spec(load_config(["model=tiny_plain"], params_file=Path("absent.yaml"))).name.startswith("tiny_plain ")
    note = changed.data.tags["mlflow.note.content"]
    assert "**tiny_a2**" in note and "`train.epochs=3`" in note and "`train.lr=0.2`" in note
    assert "differ from `pipeline/conf`: none" in default.data.tags["mlflow.note.content"]

    (dataset_input,) = changed.inputs.dataset_inputs
    assert dataset_input.dataset.name == str(shards) and dataset_input.dataset.source_type == "local"
    assert dataset_input.dataset.digest == changed.data.tags["data.manifest_md5"]
    assert [tag.value for tag in dataset_input.tags] == ["training"]
    assert '"clip_id"' in dataset_input.dataset.schema  # the manifest's columns


def test_a_training_run_lands_in_the_experiment_mlflow_experiment_names(store: Path, tmp_path: Path) -> None:
    """The training's run is made in ``mlflow.experiment`` (what ``a2net ui`` and the ablation list)."""
    run = start_run(["mlflow.experiment=elsewhere"], tiny_shards(tmp_path / "shards"))
    assert mlflow.get_experiment(run.info.experiment_id).name == "elsewhere"
    assert mlflow.get_experiment_by_name("a2nets") is None  # the default's experiment was never made


def test_metrics_are_exact_fractions_not_float32() -> None:
    labels = torch.arange(48) % 4
    scores = torch.nn.functional.one_hot(torch.where(torch.arange(48) < 41, labels, (labels + 1) % 4), 4).float()
    metrics = Evaluation(["a", "b", "c", "d"], scores[:, None], labels).metrics()
    assert metrics["video_top1"] == 41 / 48 == 0.8541666666666666  # float32 would give 0.8541666865
    assert (
        Evaluation(["a", "b", "c", "d"], scores[:, None], labels).per_class_top1()["a"] == 11 / 12
    )  # one of its 12 videos wrong


def test_the_ui_makes_new_experiments_beside_the_store_too(tmp_path: Path) -> None:
    from pipeline.cli import ui_command

    command = ui_command(5000, f"sqlite:///{tmp_path}/mlflow.db")
    assert command[command.index("--default-artifact-root") + 1] == (tmp_path / "artifacts").as_uri()
    assert "--default-artifact-root" not in ui_command(5000, "http://127.0.0.1:5001")


def test_a2net_ui_links_each_experiment_in_the_model_training_view(store: Path, capsys, monkeypatch) -> None:
    import pipeline.cli.serve as serve_cli
    from pipeline.cli import main

    experiment_id = setup_mlflow("a2nets")
    monkeypatch.setattr(serve_cli.os, "execve", lambda *args: None)
    main(["ui", "--port", "5123"])
    assert f"a2nets: http://127.0.0.1:5123/#/experiments/{experiment_id}?workflowType=machine_learning" in (
        capsys.readouterr().out
    )


def test_a_stage_in_a_dvc_temp_copy_writes_the_store_of_the_workspace_in_dvc_root(tmp_path, monkeypatch, empty_db):
    """What DVC gives a queued experiment's stage: a cwd in a temp copy, $DVC_ROOT the workspace."""
    from pipeline.core.errors import StageError
    from pipeline.tracking.store import dvc_experiment_tags, tracking_uri

    workspace, temp_copy = tmp_path / "workspace", tmp_path / "workspace/.dvc/tmp/exps/tmp1234"
    temp_copy.mkdir(parents=True)
    (workspace / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(temp_copy)
    monkeypatch.setenv("DVC_ROOT", str(workspace))
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lamb")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "f" * 40)
    assert tracking_uri() == f"sqlite:///{workspace / 'mlflow/mlflow.db'}"
    assert not (temp_copy / "mlflow").exists()
    assert dvc_experiment_tags() == {"dvc.exp_name": "brisk-lamb", "dvc.baseline_rev": "f" * 40}

    monkeypatch.delenv("DVC_ROOT")  # dvc repro and hand-run stages: the working directory's store
    assert tracking_uri() == f"sqlite:///{temp_copy / 'mlflow/mlflow.db'}"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "gone"))
    with pytest.raises(StageError, match=r"^DVC_ROOT=\S+/gone is not a DVC project \(no dvc.yaml there\)"):
        tracking_uri()


def test_two_first_runs_at_once_share_one_new_store(tmp_path: Path) -> None:
    """Two processes set up a store that does not exist yet at the same moment (two queue workers
    in a fresh clone): the setup lock lets one create the tables and the experiment, both log."""
    script = (
        "import os, sys, mlflow\n"
        "from pipeline.tracking.store import setup_mlflow\n"
        "with mlflow.start_run(experiment_id=setup_mlflow('a2nets')):\n"
        "    mlflow.log_metric('x', float(sys.argv[1]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"DVC_ROOT": str(tmp_path)}
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    repo = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(repo)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(i)], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
        )
        for i in range(3)
    ]
    errors = [w.communicate(timeout=300)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], errors
    runs = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow/mlflow.db'}").search_runs(["1"])
    assert sorted(r.data.metrics["x"] for r in runs) == [0.0, 1.0, 2.0]


def test_the_default_experiment_moves_with_the_store_too(store: Path, tmp_path: Path, monkeypatch) -> None:
    """MLflow makes experiment 0 under the first command's cwd; it is given a place beside the store
    and follows a copy of the store like the project's experiments."""
    setup_mlflow("a2nets")
    assert mlflow.get_experiment("0").artifact_location == f"{(store / 'artifacts').as_uri()}/0"
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{copy}/mlflow.db")
    setup_mlflow("a2nets")
    assert mlflow.get_experiment("0").artifact_location == f"{(copy / 'artifacts').as_uri()}/0"


def _halved(db: Path) -> None:
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])


def _smashed_header(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[16:100] = bytes(84)  # page size, format numbers, counters
    db.write_bytes(bytes(data))


BROKEN_STORES = [  # (how the store breaks, what the one line says)
    (lambda db: db.write_bytes(b""), "is empty (0 bytes), not a store"),
    (lambda db: db.write_bytes(os.urandom(4096)), "is not an SQLite database"),
    (_halved, "is damaged ("),
    (_smashed_header, "is damaged ("),
]


@pytest.mark.parametrize(("damage", "says"), BROKEN_STORES)
@pytest.mark.parametrize(
    "command", [["promote", "--list"], ["predict", "x.mp4"], ["promote", "--version", "1", "--to", "staging"]]
)
def test_a_broken_store_is_one_line_and_left_as_it_is(tmp_path, monkeypatch, capsys, empty_db, damage, says, command):
    from pipeline.cli import main
    from pipeline.tracking.store import check_store

    check_store.cache_clear()
    (tmp_path / "mlflow").mkdir()
    db = tmp_path / "mlflow/mlflow.db"
    shutil.copy(empty_db, db)
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    run = client.create_run(client.create_experiment("x"))
    client.log_batch(run.info.run_id, params=[mlflow.entities.Param(f"p{i}", "v" * 200) for i in range(50)])
    damage(db)
    before = db.read_bytes()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err == f"error: MLflow store {db} {says}" + err.split(says, 1)[1] and err.count("\n") == 1, err
    assert err.endswith("; restore it from a backup, or move it away to start a new store\n")
    assert db.read_bytes() == before
