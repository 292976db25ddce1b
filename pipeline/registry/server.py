"""MLflow servers this project starts: a team's tracking server on PostgreSQL (``a2net server``),
the scoring server of a verified model (``a2net serve``), and waiting for one to answer."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import StageError, masked
from pipeline.core.object_store import s3_bucket, s3_bucket_problem
from pipeline.registry.local_postgres import LocalCluster
from pipeline.registry.predict import checked_mlmodel, model_folder, resolve_version
from pipeline.registry.scoring_app import MODEL_ENV
from pipeline.tracking.database import check_database

# What a server here does not need: MLflow's job runner (huey consumers for GenAI evaluation jobs,
# started with the server by default) and usage telemetry. The caller's environment wins, so
# MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true a2net ui brings the job runner back.
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


def ui_env(environ: Mapping[str, str]) -> dict[str, str]:
    """A server's environment: ``environ`` plus ``UI_ENV`` where ``environ`` does not set it."""
    return {**UI_ENV, **environ}


@dataclass(frozen=True)
class TrackingServer:
    """Where a team's tracking server keeps things and where it listens.

    ``database`` is a PostgreSQL URI, or None for a local cluster in ``folder/postgres`` (made on
    first start); ``artifacts`` a folder or object-store URL, or None for ``folder/artifacts``.
    """

    folder: Path
    database: str | None = None
    artifacts: str | None = None
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
    allowed_hosts: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def artifacts_destination(self) -> str:
        return self.artifacts or str((self.folder / "artifacts").resolve())

    def command(self) -> list[str]:
        """``mlflow server`` without the database URI (it goes in the environment, not in ps)."""
        command = [sys.executable, "-m", "mlflow", "server", "--artifacts-destination", self.artifacts_destination]
        command += ["--host", self.host, "--port", str(self.port), "--workers", str(self.workers)]
        return command + (["--allowed-hosts", self.allowed_hosts] if self.allowed_hosts else [])


def run_tracking_server(server: TrackingServer, free_port: int) -> int:
    """Run ``mlflow server`` on PostgreSQL until Ctrl-C or SIGTERM stops it (and the local cluster).

    The port, an S3 artifact destination and the database are checked first, so a wrong
    password, bucket or endpoint is one line before anything starts or is written. ``free_port``
    is where a local cluster listens (127.0.0.1 only). Returns the server's exit status, 0 when
    stopped by a signal.
    """
    check_port_free(server.host, server.port)
    check_artifacts(server.artifacts_destination)
    processes: list[subprocess.Popen] = []
    try:
        with stops_on_signals():
            database = server.database
            if database is None:
                cluster = LocalCluster(server.folder / "postgres")
                cluster.init()
                processes.append(cluster.start(free_port))
                database = cluster.uri(free_port)
            check_database(database)
            env = ui_env({**os.environ, "MLFLOW_BACKEND_STORE_URI": database})
            mlflow_server = subprocess.Popen(server.command(), env=env, start_new_session=True)
            processes.insert(0, mlflow_server)
            try:
                wait_healthy(server.url, mlflow_server, timeout=180)
            except RuntimeError as err:
                raise StageError(f"mlflow server on {server.url} did not start: {err} (its output is above)") from None
            print(f"MLflow tracking server on {server.url}: runs and registry in {masked(database)}", flush=True)
            print(f"artifacts in {masked(server.artifacts_destination)}, proxied by the server", flush=True)
            print(f"clients: export MLFLOW_TRACKING_URI={server.url}", flush=True)
            return mlflow_server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for process in processes:  # the MLflow server first, then the database it writes to
            stop_group(process)


def check_artifacts(destination: str) -> None:
    """StageError unless an S3 ``destination``'s bucket answers with the credentials and endpoint the
    server will use (the environment's; ``MLFLOW_S3_ENDPOINT_URL`` first, as MLflow reads it). A
    folder is made by MLflow itself; other stores are left to it."""
    if s3_bucket(destination) is None:
        return
    problem = s3_bucket_problem(destination, os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)
    if problem:
        raise StageError(f"cannot store artifacts in {masked(destination)}: {problem}")


def serve_command(host: str, port: int) -> list[str]:
    """uvicorn running MLflow's scoring app behind ``scoring_app.RequestGuard`` (one worker); the
    model folder goes in ``$A2NET_SERVE_MODEL``."""
    app = "pipeline.registry.scoring_app:create_app"
    return [sys.executable, "-m", "uvicorn", "--factory", app, "--host", host, "--port", str(port)]


def serve_verified(model_uri: str, host: str, port: int) -> int:
    """Serve ``model_uri`` from a local copy whose code was checked (``checked_mlmodel``) first,
    with MLflow's scoring app behind the request guard (``scoring_app``).

    The copy is the one served, so the code checked is the code that runs; it is removed when
    the server stops. The server runs in its own process group: Ctrl-C or SIGTERM to this
    process stops all of it (MLflow's uvicorn child included). Returns the server's exit
    status, 0 when stopped by a signal.
    """
    pinned, version = resolve_version(model_uri)
    with model_folder(pinned, shown=model_uri) as folder:
        checked_mlmodel(folder, model_uri)
        which = f"{model_uri} (version {version})" if version and not model_uri.endswith(f"/{version}") else model_uri
        print(f"serving {which} on http://{host}:{port}/invocations; its code is this checkout's", flush=True)
        env = {**os.environ, MODEL_ENV: str(folder)}
        process = subprocess.Popen(serve_command(host, port), env=env, start_new_session=True)
        try:
            with stops_on_signals():
                return process.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            stop_group(process)


def check_port_free(host: str, port: int) -> None:
    """StageError unless ``host:port`` can be listened on (another server there would answer
    our health checks in its place)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise StageError(f"cannot listen on {host}:{port} ({err.strerror}); choose another --port") from None


@contextlib.contextmanager
def stops_on_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt inside: our own handlers, even where SIGINT was
    inherited as ignored (a background job of a script); the previous ones are back after."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_group(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM ``process``'s process group (its own session), SIGKILL what outlives ``timeout``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Return once ``url/health`` answers 200; RuntimeError if ``process`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"no answer from {url}/health after {timeout} s")
