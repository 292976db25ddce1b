"""The ``a2net`` commands for working as a team: a shared tracking server (``server``) and data
on a DVC remote (``push``, ``pull``). Registered on the parser by ``pipeline.cli``."""

from __future__ import annotations

import argparse
from pathlib import Path

SERVER_DESCRIPTION = """\
Run a team's MLflow tracking server: runs and the model registry in
PostgreSQL, artifacts in a folder or an object store, proxied by the server
(clients need no storage credentials). Without --database it runs a local
PostgreSQL cluster (pgserver's binaries) in FOLDER/postgres, made on first
start with a generated password in FOLDER/postgres/password (as root it runs
as nobody); artifacts default to FOLDER/artifacts. The database is checked
before anything starts. Prints the URL clients export as MLFLOW_TRACKING_URI.
Stop it with Ctrl-C (the local cluster stops with it)."""

SERVER_EPILOG = """\
examples:
  a2net server                                  # http://127.0.0.1:5000
  a2net server --host 0.0.0.0 --allowed-hosts mlflow.internal:5000
  a2net server --database postgresql://mlflow:PASSWORD@db.internal:5432/mlflow \\
    --artifacts s3://our-bucket/mlflow --host 0.0.0.0 --workers 4

exit codes:
  0  stopped with Ctrl-C; else mlflow server's own status
  2  the database cannot be used (unreachable, wrong password, no such
     database), or the local cluster or the server did not start"""

TRANSFER_DESCRIPTION = """\
dvc {direction} with a checked remote: the remote (-r NAME, default the
project's default remote) must be configured and its location must exist (a
local remote's folder, an object store's bucket), so that a typo is one line
and nothing is written. Then DVC {does}."""

TRANSFER_EPILOG = """\
examples:
  dvc remote add -d storage /mnt/team/a2nets    # or s3://bucket/a2nets, gs://...
  a2net {direction}{example}

exit codes:
  0  done
  2  no such remote, its location does not exist or cannot be reached, or DVC
     failed (its message is printed above)"""


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
    return run_tracking_server(server, free_port=args.database_port or _free_port())


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cmd_transfer(args: argparse.Namespace) -> int:
    """``a2net push`` / ``a2net pull``: dvc push / pull after checking the remote."""
    from pipeline.core.remote import transfer

    return transfer(Path.cwd(), args.command, args.remote, args.targets)


def add_team_commands(sub: argparse._SubParsersAction, sub_parser, positive_int) -> None:
    """Add ``server``, ``push`` and ``pull`` to the sub-commands ``sub`` (made with ``sub_parser``)."""
    p = sub_parser(sub, "server", "a team's MLflow tracking server on PostgreSQL", SERVER_DESCRIPTION, SERVER_EPILOG)
    p.add_argument("--folder", default="mlflow-server", help="local cluster and artifacts (default: mlflow-server)")
    p.add_argument("--database", metavar="URI", help="postgresql://USER:PASSWORD@HOST:PORT/DB instead of a local one")
    p.add_argument("--database-port", type=positive_int, help="the local cluster's port on 127.0.0.1 (default: free)")
    p.add_argument("--artifacts", metavar="DEST", help="artifact folder or s3:// gs:// URL (default: FOLDER/artifacts)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=positive_int, default=5000, help="port (default: 5000)")
    p.add_argument("--workers", type=positive_int, default=1, help="server worker processes (default: 1)")
    p.add_argument("--allowed-hosts", metavar="HOSTS", help="Host headers to accept beyond localhost (MLflow's)")
    p.set_defaults(func=cmd_server)
    for direction, does, example in (
        ("push", "uploads the cached outputs of the pipeline", "                               # after dvc repro"),
        ("pull", "downloads and checks out the outputs", " -r storage preprocess         # only the shards"),
    ):
        p = sub_parser(
            sub,
            direction,
            f"dvc {direction} after checking the remote exists",
            TRANSFER_DESCRIPTION.format(direction=direction, does=does),
            TRANSFER_EPILOG.format(direction=direction, example=example),
        )
        p.add_argument("targets", nargs="*", metavar="TARGET", help="stages or outputs (default: all)")
        p.add_argument("-r", "--remote", metavar="NAME", help="the DVC remote (default: the default remote)")
        p.set_defaults(func=cmd_transfer)
