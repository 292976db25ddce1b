"""DVC's remote and MLflow's artifacts on S3, for real: moto's S3 server over HTTP on loopback
(``s3_server.S3Server``), reached through ``AWS_ENDPOINT_URL`` as MinIO would be.

- DVC (dvc-s3): the round trip of ``test_pipeline_dvc`` (push, a fresh git clone, pull, a no-op
  ``dvc repro``) with the credentials and endpoint from the environment in the origin and from
  ``dvc remote modify --local`` in the clone; none of them lands in a committed file.
- MLflow: ``a2net server --artifacts-destination s3://…`` stores a registered model in the bucket,
  and ``a2net predict`` loads it over the server; the client holds no storage credentials.
- Bad input: an endpoint that does not answer, a wrong bucket, missing credentials are one line
  naming the URL (passwords masked), exit 2, and nothing written, for ``a2net push`` / ``pull``
  and ``a2net server``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from pipeline.cli import main as a2net

from helpers import (
    TeamServer,
    copy_project,
    free_port,
    pull_and_check,
    push_and_clone,
    register_stand_in,
    run_cmd,
    running_team_server,
)
from mlflow_server import CLASSES
from s3_server import KEY_ID, SECRET, S3Server

pytestmark = pytest.mark.scaleout
DVC_BUCKET, MLFLOW_BUCKET = "a2nets-dvc", "a2nets-mlflow"
# where boto3 would look for credentials besides the environment: nowhere, on any machine
NO_PROFILE = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"}
BAD_CASES = ["no-answer", "wrong-bucket", "no-credentials"]


@pytest.fixture(scope="module", autouse=True)
def no_aws_settings_of_this_machine() -> Iterator[None]:
    """No AWS setting of the machine running the tests reaches a client: each test gives its own."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [name for name in os.environ if name.startswith("AWS_")]:
            mp.delenv(name)
        for name, value in {**NO_PROFILE, "AWS_EC2_METADATA_DISABLED": "true"}.items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """The S3 server of the module, with the DVC and the MLflow bucket."""
    server = S3Server().start()
    try:
        for bucket in (DVC_BUCKET, MLFLOW_BUCKET):
            server.make_bucket(bucket)
        yield server
    finally:
        server.stop()


def _objects(s3: S3Server) -> set[tuple[str, str]]:
    """(bucket, key) of every object on the server."""
    client = s3.client()
    pages = (
        page
        for bucket in client.list_buckets()["Buckets"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"])
    )
    return {(page["Name"], item["Key"]) for page in pages for item in page.get("Contents", [])}


def _without_credentials(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


def _bad_location(case: str, s3: S3Server, bucket: str) -> tuple[str, dict[str, str], str]:
    """(URL, environment, the reason a message gives) of a bad S3 location: a server that does not
    answer (one never started), a bucket that does not exist, no credentials."""
    if case == "no-answer":
        stopped = S3Server()  # its port is free: nothing answers there
        reason = f"the endpoint {stopped.url} does not answer; start it or fix the endpoint URL (AWS_ENDPOINT_URL)"
        return f"s3://{bucket}/a2nets", stopped.env, reason
    if case == "wrong-bucket":
        return (
            "s3://a2nets-no-such-bucket/a2nets",
            s3.env,
            f"there is no bucket 'a2nets-no-such-bucket' at {s3.url}; create it or fix the URL",
        )
    reason = f"no credentials for {s3.url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
    return f"s3://{bucket}/a2nets", _without_credentials(s3.env), reason


# ------------------------------------------------- DVC: a remote on S3


def test_a_dvc_remote_on_s3_carries_data_shards_and_model_to_a_fresh_clone(
    reproduced: Path, s3: S3Server, tmp_path: Path
) -> None:
    url = f"s3://{DVC_BUCKET}/a2nets"
    trip = push_and_clone(reproduced, tmp_path, url, env=s3.env)  # the origin: all from the environment
    assert any(key.startswith("a2nets/files/md5/") for bucket, key in _objects(s3) if bucket == DVC_BUCKET)
    committed = (trip.clone / ".dvc/config").read_text()
    assert url in committed and not {KEY_ID, SECRET, "127.0.0.1", "endpointurl"} & set(committed.split()), committed

    # the clone: endpoint, then credentials in .dvc/config.local (git-ignored); none in its environment
    run_cmd(["dvc", "remote", "modify", "--local", "storage", "endpointurl", s3.url], trip.clone)
    nothing = run_cmd(["a2net", "pull"], trip.clone, expect=2)
    assert nothing.stderr == (
        f"error: DVC remote 'storage' ({url}) cannot be used: no credentials for {s3.url}: "
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)\n"
    )
    assert not (trip.clone / "data/shards").exists()  # nothing written
    for option, value in (("access_key_id", KEY_ID), ("secret_access_key", SECRET)):
        run_cmd(["dvc", "remote", "modify", "--local", "storage", option, value], trip.clone)
    pull_and_check(trip)  # git status stays clean: config.local is ignored
    assert run_cmd(["git", "grep", "-l", SECRET], trip.clone, expect=1).stdout == ""


@pytest.fixture(scope="module")
def project(reproduced: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the reproduced project, with outputs in its cache to push."""
    return copy_project(reproduced, tmp_path_factory.mktemp("s3-push") / "project")


@pytest.mark.parametrize("case", BAD_CASES)
def test_a2net_push_to_a_bad_s3_remote_is_one_line_and_writes_nothing(case: str, s3: S3Server, project: Path) -> None:
    url, env, reason = _bad_location(case, s3, DVC_BUCKET)
    run_cmd(["dvc", "remote", "add", "--local", "-f", "bad", url], project)
    before = _objects(s3)
    failed = run_cmd(["a2net", "push", "-r", "bad"], project, expect=2, env=env)
    assert failed.stderr == f"error: DVC remote 'bad' ({url}) cannot be used: {reason}\n"
    assert _objects(s3) == before


# ------------------------------------------------- MLflow: a2net server's artifacts on S3


@pytest.fixture(scope="module")
def team_server(s3: S3Server) -> Iterator[TeamServer]:
    """``a2net server`` storing artifacts in the MLflow bucket, with the S3 credentials in its
    environment only."""
    with running_team_server("--artifacts-destination", f"s3://{MLFLOW_BUCKET}/mlartifacts", env=s3.env) as server:
        yield server


def test_a_model_registered_over_the_server_is_in_the_bucket_and_predict_loads_it(
    team_server: TeamServer, s3: S3Server, noise_video: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from pipeline.tracking.store import setup_mlflow

    assert f"artifacts in s3://{MLFLOW_BUCKET}/mlartifacts, proxied by the server" in team_server.log.read_text()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server.url)  # and no AWS_* here: the server proxies
    mlflow.set_tracking_uri(team_server.url)
    try:
        registered = register_stand_in(setup_mlflow("s3-artifacts"), "a2net-s3")
        stored = {key.rsplit("/", 1)[-1] for bucket, key in _objects(s3) if bucket == MLFLOW_BUCKET}
        assert {"model.pt2", "MLmodel", "classes.txt", "entry.py"} <= stored, stored
        assert not (team_server.folder / "artifacts").exists()
        capsys.readouterr()
        assert a2net(["predict", str(noise_video), "--model", registered.model_uri, "--json"]) == 0
    finally:
        mlflow.set_tracking_uri(None)
    predicted = json.loads(capsys.readouterr().out)
    assert predicted["version"] == registered.version
    [prediction] = predicted["predictions"]
    assert len(prediction["labels"]) == 5 and set(prediction["labels"]) <= set(CLASSES)


def _server(tmp_path: Path, destination: str) -> list[str]:
    """``a2net server`` arguments with a folder of its own (which must not appear) and a free port."""
    return [
        "server",
        "--folder",
        str(tmp_path / "server"),
        "--port",
        str(free_port()),
        "--artifacts-destination",
        destination,
    ]


@pytest.mark.parametrize("case", BAD_CASES)
def test_a2net_server_with_a_bad_s3_destination_is_one_line_before_anything_starts(
    case: str, s3: S3Server, tmp_path: Path, monkeypatch, capsys
) -> None:
    url, env, reason = _bad_location(case, s3, MLFLOW_BUCKET)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = _objects(s3)
    assert a2net(_server(tmp_path, url)) == 2
    assert capsys.readouterr() == ("", f"error: cannot store artifacts in {url}: {reason}\n")
    assert not (tmp_path / "server").exists() and _objects(s3) == before


def test_a_password_in_the_endpoint_is_masked_in_every_message(
    s3: S3Server, project: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    stopped = S3Server()
    env = {**stopped.env, "AWS_ENDPOINT_URL": stopped.url.replace("//", "//admin:hunter2@")}
    shown = stopped.url.replace("//", "//admin:***@")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert a2net(_server(tmp_path, f"s3://{MLFLOW_BUCKET}/x")) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: cannot store artifacts in s3://{MLFLOW_BUCKET}/x: the endpoint {shown} does not answer; "
        "start it or fix the endpoint URL (AWS_ENDPOINT_URL)\n"
    )
    run_cmd(["dvc", "remote", "add", "--local", "-f", "bad", f"s3://{DVC_BUCKET}/x"], project)
    failed = run_cmd(["a2net", "push", "-r", "bad"], project, expect=2, env=env)
    assert failed.stderr.count("\n") == 1 and shown in failed.stderr and "hunter2" not in failed.stderr, failed.stderr
