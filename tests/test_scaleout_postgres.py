"""A team's tracking server for real: ``a2net server`` starts PostgreSQL (pgserver's binaries)
and ``mlflow server`` on it; a tiny training, evaluate, register, the promotion gate (refusal and
racing promotions) and predict run against it over HTTP. Bad URIs and passwords are one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline.cli import main as a2net

from helpers import TeamServer, free_port, promote_concurrently, register_stand_in, running_team_server, tiny_overrides
from mlflow_server import GOOD_METRICS

pytestmark = pytest.mark.scaleout


@pytest.fixture(scope="module")
def team_server() -> Iterator[TeamServer]:
    """``a2net server`` on its own PostgreSQL and artifact folder; Ctrl-C stops it after the module."""
    with running_team_server() as server:
        yield server


@pytest.fixture
def on_team_server(team_server: TeamServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh cwd whose MLflow store is the team server."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server.url)
    mlflow.set_tracking_uri(team_server.url)
    yield tmp_path
    mlflow.set_tracking_uri(None)


def _passed_validation(overrides: list[str]) -> None:
    """The validate stage's verdict on the shards (the stage itself is tested in test_validate)."""
    from pipeline.core.config import load_config

    summary = Path(load_config(overrides, params_file=Path("no-params.yaml")).validate.report_dir) / "summary.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps({"success": True, "expectations": []}))


def test_train_evaluate_register_promote_and_predict_against_postgres(
    team_server, on_team_server, training_data, capsys
) -> None:
    import psycopg

    from pipeline.evaluate import main as evaluate_main
    from pipeline.register import main as register_main
    from pipeline.train import main as train_main

    overrides = tiny_overrides(training_data, on_team_server, "train.epochs=1")
    _passed_validation(overrides)
    for stage in (train_main, evaluate_main, register_main):
        assert stage(overrides) == 0
    registered = json.loads(Path("reports/registered_model.json").read_text())
    assert registered["model_uri"] == "models:/a2net/1"
    run = MlflowClient().get_run(registered["run_id"])
    assert {"train_loss", "video_top1"} <= run.data.metrics.keys()

    assert a2net(["promote", "--version", "1", "--to", "staging"]) == 0
    capsys.readouterr()
    video = next((training_data[0] / "videos/validate").rglob("*.mp4"))
    assert a2net(["predict", str(video), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert predicted["model"] == "models:/a2net@staging" and predicted["version"] == "1"
    [prediction] = predicted["predictions"]
    assert sorted(prediction["labels"]) == ["abseiling", "air drumming", "zumba"]  # top-5 of the 3 classes

    with psycopg.connect(team_server.database_uri()) as db:  # the registry lives in PostgreSQL
        rows = db.execute("select version, current_stage from model_versions where name = 'a2net'").fetchall()
        aliases = db.execute("select alias, version from registered_model_aliases where name = 'a2net'").fetchall()
    assert [row[0] for row in rows] == [1] and aliases == [("staging", 1)]
    artifacts = team_server.folder / "artifacts"
    assert any(artifacts.rglob("model.pt2")), "the model's files went to the server's artifact folder"


def test_the_gate_refuses_and_racing_promotions_never_share_a_predecessor(
    team_server, on_team_server, monkeypatch, capsys
) -> None:
    from pipeline.registry.promotion import Promotion, PromotionRaced
    from pipeline.tracking.store import setup_mlflow

    experiment = setup_mlflow("team-gate")  # not mlflow.set_experiment: no active experiment left behind
    name = "team-gate"
    holder, worse, left, right = (
        register_stand_in(experiment, name, {**GOOD_METRICS, "video_top1": top1}).version
        for top1 in (0.80, 0.50, 0.85, 0.85)
    )
    assert a2net(["promote", "--model-name", name, "--version", holder, "--to", "staging"]) == 0
    capsys.readouterr()
    assert a2net(["promote", "--model-name", name, "--version", worse, "--to", "staging"]) == 1
    assert capsys.readouterr().err.startswith("refused: ")

    done = promote_concurrently(name, [left, right], monkeypatch, team_server.url)  # no lock on a server
    succeeded = [d for d in done if isinstance(d, Promotion)]
    assert any(isinstance(d, PromotionRaced) for d in done), done
    assert len(succeeded) <= 1
    staging = MlflowClient().get_registered_model(name).aliases["staging"]
    # the winner holds the alias; when both lost (PostgreSQL refused one's write of a shared tag
    # before either moved the alias, or both saw the other's entry) it is one of the three
    assert str(staging) == succeeded[0].version if succeeded else str(staging) in (holder, left, right)


def test_an_unreachable_server_is_one_line_and_the_training_writes_nothing(
    training_data, tmp_path, monkeypatch, capsys
):
    from pipeline.train import main as train_main

    monkeypatch.chdir(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    assert train_main(tiny_overrides(training_data, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the MLflow tracking server {dead} does not answer") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_a_wrong_password_is_one_line_for_the_server_and_the_clients(team_server, tmp_path, monkeypatch, capsys):
    wrong = team_server.database_uri(password="not-the-password")
    shown = wrong.replace("not-the-password", "***")
    folder = tmp_path / "second-server"
    assert a2net(["server", "--database", wrong, "--folder", str(folder), "--port", str(free_port())]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (
        f'error: cannot use the PostgreSQL database {shown}: FATAL:  password authentication failed for user "mlflow"'
        "; check the user and password in the URI\n"
    )
    assert not folder.exists()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", wrong)  # a client straight on the database
    assert a2net(["promote", "--list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot use the PostgreSQL database {shown}") and err.count("\n") == 1


def test_a_port_in_use_is_one_line(team_server, tmp_path, capsys) -> None:
    port = team_server.url.rsplit(":", 1)[1]
    assert a2net(["server", "--folder", str(tmp_path / "s"), "--port", port]) == 2
    assert capsys.readouterr().err == (
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use); choose another --port\n"
    )
    assert not (tmp_path / "s").exists()
