"""``a2net serve``, ``a2net ui`` and ``a2net server``: a registered model over HTTP, the MLflow UI
over the project's store, and a team's tracking server on PostgreSQL."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.cli.common import SAME_MODEL_HELP, add_command, client, model_uri, positive_int
from pipeline.tracking.store import active_experiments, artifact_root, existing_tracking_uri, sqlite_file

SERVE_DESCRIPTION = """\
Serve a registered model with MLflow's scoring server (mlflow models serve
--env-manager local, one worker, 127.0.0.1), after checking that the code it
carries is byte for byte this checkout's register-stage code: the checked
local copy is the one served, and it is removed when the server stops. POST
base64 video files to /invocations, one per row of a "video" column; each row
gets the top-5 labels and probabilities (docs/registry.md#serving). Stop it
with Ctrl-C. `mlflow models serve -m URI --env-manager local` serves the same
model without the check."""

SERVE_EPILOG = """\
examples:
  a2net serve                                  # models:/a2net@staging on :5001
  a2net serve --model models:/a2net@production --port 8080
  curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
    -d '{"dataframe_split": {"columns": ["video"], "data": [["'"$(base64 -w0 clip.mp4)"'"]]}}'

exit codes:
  0  stopped with Ctrl-C; else the server's own status
  2  the model cannot be loaded or carries code that is not this checkout's"""

UI_DESCRIPTION = """\
Start the MLflow UI over the project's store, mlflow/mlflow.db, on 127.0.0.1,
with one worker and without MLflow's job runner (export
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true to get the runner back). With
MLFLOW_TRACKING_URI pointing at a server, it only prints that server's URL (the
server has its own UI). Stop it with Ctrl-C."""

UI_EPILOG = """\
examples:
  a2net ui                    # then open http://127.0.0.1:5000
  a2net ui --port 5001

exit codes:
  0  the store is a server (its URL is printed); else mlflow's own status
  2  no MLflow store here (run it inside the project or set
     MLFLOW_TRACKING_URI)"""

SERVER_DESCRIPTION = """\
Run a team's MLflow tracking server: runs and the model registry in
PostgreSQL, artifacts in a folder or an object store, proxied by the server
(clients need no storage credentials). Without --database it runs a local
PostgreSQL cluster (pgserver's binaries) in FOLDER/postgres, made on first
start with a generated password in FOLDER/postgres/password (as root it runs
as nobody); artifacts default to FOLDER/artifacts. An s3:// destination is
reached with the server's AWS_* environment (AWS_ENDPOINT_URL for MinIO and
other S3-compatible stores). The database and an S3 bucket are checked
before anything starts. Prints the URL clients export as MLFLOW_TRACKING_URI.
Stop it with Ctrl-C (the local cluster stops with it)."""

SERVER_EPILOG = """\
examples:
  a2net server                                  # http://127.0.0.1:5000
  a2net server --host 0.0.0.0 --allowed-hosts mlflow.internal:5000
  a2net server --database postgresql://mlflow:PASSWORD@db.internal:5432/mlflow \\
    --artifacts-destination s3://our-bucket/mlflow --host 0.0.0.0 --workers 4

exit codes:
  0  stopped with Ctrl-C; else mlflow server's own status
  2  the database cannot be used (unreachable, wrong password, no such
     database), the S3 bucket cannot (no answer, no such bucket, no
     credentials), or the local cluster or the server did not start"""


def cmd_serve(args: argparse.Namespace) -> int:
    """``a2net serve``: ``mlflow models serve`` of a registered model whose code was checked first."""
    from pipeline.registry.server import serve_verified

    client()
    return serve_verified(model_uri(args), "127.0.0.1", args.port)


def ui_command(port: int, store: str, host: str = "127.0.0.1") -> list[str]:
    """The ``mlflow ui`` command line over the store ``store`` (a SQLite URI), with one worker;
    experiments made in the UI keep their artifacts beside the database too.

    Run it with ``ui_env``: MLflow's default is 4 workers plus a job runner, ~10 processes.
    """
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        store,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        *(["--default-artifact-root", artifact_root(db)] if (db := sqlite_file(store)) else []),
    ]


def experiment_link(experiment_id: str, port: int) -> str:
    """The UI's link to an experiment, opening in the "Model training" view.

    MLflow 3's UI opens in its GenAI view unless the link says ``workflowType=machine_learning``
    (or the browser remembers the toggle); the experiments' ``mlflow.experimentKind`` tag is not
    enough on its own.
    """
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}?workflowType=machine_learning"


def cmd_ui(args: argparse.Namespace) -> int:
    """``a2net ui``: the MLflow UI over ``mlflow/mlflow.db`` (a remote server has its own UI)."""
    uri = existing_tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"MLFLOW_TRACKING_URI is a server; its UI is at {uri}")
        return 0
    from pipeline.registry.server import ui_env

    command = ui_command(args.port, uri)
    env = ui_env(os.environ)
    jobs = "job runner on" if env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"].lower() in ("true", "1") else "no job runner"
    print(f"MLflow UI on http://127.0.0.1:{args.port} ({' '.join(command[1:])}; {jobs})")
    for experiment_id, name in active_experiments(uri):
        print(f"  {name}: {experiment_link(experiment_id, args.port)}")
    sys.stdout.flush()
    os.execve(command[0], command, env)


def cmd_server(args: argparse.Namespace) -> int:
    """``a2net server``: mlflow server on PostgreSQL (a local cluster unless --database)."""
    from pipeline.registry.server import TrackingServer, run_tracking_server

    server = TrackingServer(
        folder=Path(args.folder),
        database=args.database,
        artifacts=args.artifacts,
        host=args.host,
        port=args.port,
        workers=args.workers,
        allowed_hosts=args.allowed_hosts,
    )
    return run_tracking_server(server, free_port=args.database_port or free_port())


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (the local cluster's, unless --database-port)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``serve`` and ``ui`` sub-commands and their options."""
    summary = "serve a registered model over HTTP (base64 videos in, top-5 labels out)"
    p = add_command(sub, "serve", summary, SERVE_DESCRIPTION, SERVE_EPILOG, cmd_serve)
    p.add_argument("--model", metavar="URI", help=SAME_MODEL_HELP)
    p.add_argument("--port", type=positive_int, default=5001, help="port on 127.0.0.1 (default: 5001)")

    p = add_command(sub, "ui", "the MLflow UI over the project's store", UI_DESCRIPTION, UI_EPILOG, cmd_ui)
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 to serve on (default: 5000)")


def add_server_parser(sub: argparse._SubParsersAction) -> None:
    """The ``server`` sub-command and its options: working as a team."""
    summary = "a team's MLflow tracking server on PostgreSQL"
    p = add_command(sub, "server", summary, SERVER_DESCRIPTION, SERVER_EPILOG, cmd_server)
    p.add_argument("--folder", default="mlflow-server", help="local cluster and artifacts (default: mlflow-server)")
    p.add_argument("--database", metavar="URI", help="postgresql://USER:PASSWORD@HOST:PORT/DB instead of a local one")
    p.add_argument("--database-port", type=positive_int, help="the local cluster's port on 127.0.0.1 (default: free)")
    p.add_argument(
        "--artifacts-destination",
        "--artifacts",
        dest="artifacts",
        metavar="DEST",
        help="artifact folder or s3:// gs:// URL (default: FOLDER/artifacts)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=positive_int, default=5000, help="port (default: 5000)")
    p.add_argument("--workers", type=positive_int, default=1, help="server worker processes (default: 1)")
    p.add_argument("--allowed-hosts", metavar="HOSTS", help="Host headers to accept beyond localhost (MLflow's)")
