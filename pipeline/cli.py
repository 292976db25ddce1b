"""``a2net``: the model registry from the command line — promote, predict, explain, serve, ui.

Exit codes: 0 done, 1 promotion refused by the gate (or lost a race), 2 bad input (unknown
version, file that is not a video, unloadable model). Errors are one line on stderr, never a
traceback. The help texts (``a2net [COMMAND] --help``) are the constants below: plain text,
laid out by hand (``RawDescriptionHelpFormatter``) so that examples keep their lines.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict
from pathlib import Path

from pipeline.core.config import load_config
from pipeline.core.errors import StageError
from pipeline.tracking.store import artifact_root, existing_tracking_uri, full_disk_is_one_line, sqlite_file

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2


def _client():
    """An MlflowClient on the project's store; quiet, as a command-line tool's stderr should be."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    mlflow.set_tracking_uri(existing_tracking_uri())
    return mlflow.MlflowClient()


def model_uri(args: argparse.Namespace) -> str:
    """``--model``, else the staging alias of ``register.model_name`` (predict, explain, serve)."""
    return args.model or f"models:/{load_config().register.model_name}@staging"


def cmd_promote(args: argparse.Namespace) -> int:
    """``a2net promote``: list versions or history, or move an alias through the gate."""
    from pipeline.registry.promotion import (
        PromotionRaced,
        PromotionRefused,
        format_table,
        list_versions,
        promote,
        promotion_history,
        promotion_lock,
        rollback_target,
    )

    cfg = load_config()
    name = args.model_name or cfg.register.model_name
    client = _client()
    if args.list:
        print(format_table(list_versions(client, name)))
        return 0
    if args.history:
        list_versions(client, name)  # one line when the model does not exist
        for entry in promotion_history(client, name, args.to):
            print(
                f"{entry['at']}  @{entry['alias']} -> {entry['version']} (was {entry['previous']}) "
                f"{entry['kind']} by {entry['by']}{': ' + entry['reason'] if entry['reason'] else ''}"
            )
        return 0
    if args.to is None or (args.version is None) == (not args.rollback):
        raise StageError(
            "give --version N --to staging|production, or --rollback --to staging|production (or --list, --history)"
        )
    try:
        uri = existing_tracking_uri()
        with full_disk_is_one_line(uri, "a2net promote"), promotion_lock(uri):
            version = rollback_target(client, name, args.to) if args.rollback else args.version
            done = promote(
                client,
                name,
                version,
                args.to,
                metric=cfg.promote.metric,
                margin=float(cfg.promote.margin),
                force=args.force,
                reason=args.reason,
                rollback=args.rollback,
            )
    except PromotionRaced as raced:
        print(f"lost the race: {raced}", file=sys.stderr)
        return EXIT_REFUSED
    except PromotionRefused as refused:
        print(f"refused: {refused}", file=sys.stderr)
        return EXIT_REFUSED
    moved = f" (was version {done.previous}, now @previous_{done.alias})" if done.previous else ""
    kind = {"promote": "", "force": " [forced]", "rollback": " [rollback]"}[done.kind]
    compared = done.comparison
    rescored = (
        f"; both scored on the candidate's evaluation data ({compared.fingerprint}): {cfg.promote.metric} "
        f"{compared.candidate:.4f} vs the holder's {compared.holder:.4f}"
        if compared is not None and compared.rescored
        else ""
    )
    print(f"models:/{done.name}@{done.alias} -> version {done.version}{moved}{kind}{rescored}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``a2net predict``: top-k labels for each video; a bad video is reported, the rest run."""
    from pipeline.registry.predict import format_prediction, format_source, load_model, predict
    from pipeline.serving.views import VideoError

    _client()
    model = load_model(model_uri(args))
    source = format_source(model)
    if source and not args.json:
        print(source, flush=True)
    results, failed = [], False
    for video in args.videos:
        try:
            results += predict(model, [Path(video)], top_k=args.top_k)
        except VideoError as err:
            print(f"error: {err}", file=sys.stderr)
            failed = True
            continue
        if not args.json:
            print(format_prediction(results[-1]))
    if args.json:
        predictions = [asdict(r) for r in results]
        print(json.dumps({"model": model.uri, "version": model.version, "predictions": predictions}, indent=2))
    return EXIT_BAD_INPUT if failed else 0


def cmd_explain(args: argparse.Namespace) -> int:
    """``a2net explain``: the A² blocks' gather maps on a video, as attention.png and attention.npz."""
    from pipeline.registry.explain import explain_video
    from pipeline.registry.predict import format_source, load_model

    _client()
    model = load_model(model_uri(args))
    source = format_source(model)
    if source:
        print(source)
    explained = explain_video(model, Path(args.video), Path(args.out))
    print(f"{args.video}: {explained.label} ({explained.probability:.1%}) on the central view")
    print(f"wrote {explained.figure} and {explained.arrays}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``a2net serve``: ``mlflow models serve`` of a registered model whose code was checked first."""
    from pipeline.registry.server import serve_verified

    _client()
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
    for name, link in experiment_links(uri, args.port):
        print(f"  {name}: {link}")
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


def experiment_links(uri: str, port: int) -> list[tuple[str, str]]:
    """(name, UI link) of the store's active experiments, opening in the "Model training" view.

    MLflow 3's UI opens in its GenAI view unless the link says ``workflowType=machine_learning``
    (or the browser remembers the toggle); the experiments' ``mlflow.experimentKind`` tag is not
    enough on its own.
    """
    db = sqlite_file(uri)
    if db is None or not db.is_file():
        return []
    with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
        rows = con.execute(
            "select experiment_id, name from experiments where lifecycle_stage = 'active' and name != 'Default' "
            "order by experiment_id"
        ).fetchall()
    return [(name, f"http://127.0.0.1:{port}/#/experiments/{eid}?workflowType=machine_learning") for eid, name in rows]


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse turns the error into one usage line, exit 2)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


EXIT_CODES = """\
exit codes:
  0  done
  1  promotion refused by the quality gate (or it lost a race with a
     concurrent promotion)
  2  bad input: bad arguments, unknown model or version, a file that is not
     a video, a model that cannot be loaded, no MLflow store; one line on
     stderr, never a traceback"""

DESCRIPTION = """\
The a2net model registry from the command line: move the staging and
production aliases of the registered model through a quality gate (promote),
predict the action in videos with a registered model (predict), show what its
double attention blocks look at (explain), serve it over HTTP (serve), open
the MLflow UI (ui); for a team, run a shared tracking server on PostgreSQL
(server) and move data and models through a DVC remote (push, pull).

Run it anywhere inside the project (it finds mlflow/mlflow.db), or point it at
a tracking server with MLFLOW_TRACKING_URI. Settings come from params.yaml."""

EPILOG = f"""\
examples:
  a2net promote --list
  a2net predict clip.mp4
  a2net explain clip.mp4 --out explain/
  a2net serve --port 5001
  a2net ui
  a2net server --host 0.0.0.0 --allowed-hosts mlflow.internal:5000
  a2net pull -r storage

{EXIT_CODES}

a2net COMMAND --help says more; docs/registry.md is the guide."""

PROMOTE_DESCRIPTION = """\
Move the alias staging or production of a registered model to a version,
through the quality gate; or list the versions (--list) or the promotions
(--history).

The gate (params.yaml, section promote) takes a version when
  - its validation tag is "passed" (its data passed the validate stage);
  - its promote.metric (default video_top1, read from the version's training
    run; higher is better) is not below the current alias holder's by more
    than promote.margin (default 0.01): within the margin it is taken,
    further below it is refused;
  - for production: it holds staging. Staging first: production only takes
    the staging version, even with --force.
--force --reason "why" skips the validation and metric checks (not staging
first) and records forced_by and force_reason on the version. The version an
alias leaves keeps the alias previous_<alias>; --rollback moves the alias back
to it, past the metric check but not past validation. Every promotion is
recorded in the model's history (--history). An alias set anywhere else (the
MLflow UI, the API) bypasses the gate; --list marks it."""

PROMOTE_EPILOG = """\
examples:
  a2net promote --list                       # versions, aliases, metrics
  a2net promote --version 7 --to staging
  a2net promote --version 7 --to production  # the staging version only
  a2net promote --version 8 --to staging --force --reason "new label set"
  a2net promote --rollback --to staging      # back to @previous_staging
  a2net promote --history --to staging

exit codes:
  0  the alias moved (or the list / history was printed)
  1  refused by the gate (one line on stderr: "refused: ..."), or lost a
     race with a concurrent promotion of the same alias ("lost the race: ...")
  2  bad input: unknown model or version, --force without --reason, nothing
     to roll back to, --version or --to missing"""

PREDICT_DESCRIPTION = """\
Print the top-k labels of each video with a registered model. Each video is
preprocessed as the evaluate stage does, with the parameters stored on the
model (fps, short side, JPEG round trip, clips x crops). The first line names
the version an alias URI resolved to ("models:/a2net@staging is version 3");
with --json it is the "version" field. A model is data: no pickle, no code."""

PREDICT_EPILOG = """\
examples:
  a2net predict video1.mp4 video2.webm         # models:/a2net@staging
  a2net predict clip.mp4 --model models:/a2net@production --json
  a2net predict clip.mp4 --model models:/a2net/3 --top-k 3

exit codes:
  0  every video predicted
  2  a video is missing or not a video (one line each on stderr; the others
     are still predicted), or the model cannot be loaded"""

EXPLAIN_DESCRIPTION = """\
Show what the double attention (A²) blocks of a registered model look at in a
video. The video is preprocessed as predict does; on its central view (middle
clip, centre crop) every A² block's gather maps (the softmax attention with
which it pools its global features) are ranked by share, the mean weight the
positions' distribution gives them (a block's shares sum to 1). Writes
  OUT/attention.png  the view's frames, then per block its 4 most used gather
                     maps as heat maps over the frames (block, map, share)
  OUT/attention.npz  per block gather_maps/<block> and distribution/<block>,
                     each (n, T', H', W'): every gather map sums to 1 over its
                     T'*H'*W' positions, the distribution sums to 1 over the n
                     maps at each position; frames (T, S, S, 3) and blocks
The net is rebuilt by name from the model's metadata and loaded with its pt2
weights: no pickle, no code from the model."""

EXPLAIN_EPILOG = """\
examples:
  a2net explain clip.mp4 --out explain/                  # models:/a2net@staging
  a2net explain clip.mp4 --model models:/a2net/3 --out explain/v3

exit codes:
  0  the figure and arrays were written
  2  the video is missing or not a video, the model cannot be loaded, or it
     has no A² block (a plain or non-local net)"""

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


class _OneLineParser(argparse.ArgumentParser):
    """Bad command-line arguments are one line and exit 2, like every other bad input."""

    def error(self, message: str) -> None:
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _sub_parser(
    sub: argparse._SubParsersAction, name: str, summary: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    """A sub-command whose hand-laid-out description and examples keep their lines."""
    return sub.add_parser(
        name, help=summary, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def _add_promote(sub: argparse._SubParsersAction) -> None:
    """The ``promote`` sub-command and its options."""
    p = _sub_parser(
        sub,
        "promote",
        "move models:/<name>@staging|production to a version, through the quality gate",
        PROMOTE_DESCRIPTION,
        PROMOTE_EPILOG,
    )
    p.add_argument("--version", metavar="N", help="the model version to promote (see --list)")
    p.add_argument(
        "--to", choices=("staging", "production"), help="the alias to move: staging, or production (after staging)"
    )
    p.add_argument("--list", action="store_true", help="print the versions table and exit")
    p.add_argument("--history", action="store_true", help="print every promotion (of --to, if given) and exit")
    p.add_argument(
        "--rollback",
        action="store_true",
        help="move --to back to its previous version (skips the metric gate, not validation)",
    )
    p.add_argument("--force", action="store_true", help="skip the validation and metric gate (needs --reason)")
    p.add_argument("--reason", help="why --force is needed (recorded as the version tag force_reason)")
    p.add_argument("--model-name", metavar="NAME", help="registered model (default: register.model_name, a2net)")
    p.set_defaults(func=cmd_promote)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    """The ``predict`` sub-command and its options."""
    p = _sub_parser(
        sub, "predict", "top-5 labels of videos with a registered model", PREDICT_DESCRIPTION, PREDICT_EPILOG
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (any format ffmpeg reads)")
    p.add_argument(
        "--model",
        metavar="URI",
        help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<run>/<path> or a local model "
        "folder (default: models:/<register.model_name>@staging)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--top-k", type=_positive_int, default=5, metavar="K", help="labels per video (default: 5)")
    p.set_defaults(func=cmd_predict)


def _add_explain(sub: argparse._SubParsersAction) -> None:
    """The ``explain`` sub-command and its options."""
    p = _sub_parser(
        sub,
        "explain",
        "attention maps of a registered A² model on a video (PNG and NPZ)",
        EXPLAIN_DESCRIPTION,
        EXPLAIN_EPILOG,
    )
    p.add_argument("video", metavar="VIDEO", help="a video file (any format ffmpeg reads)")
    p.add_argument("--model", metavar="URI", help="as for predict (default: models:/<register.model_name>@staging)")
    p.add_argument("--out", metavar="DIR", required=True, help="folder for attention.png and attention.npz")
    p.set_defaults(func=cmd_explain)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    """The ``serve`` sub-command and its options."""
    p = _sub_parser(
        sub,
        "serve",
        "serve a registered model over HTTP (base64 videos in, top-5 labels out)",
        SERVE_DESCRIPTION,
        SERVE_EPILOG,
    )
    p.add_argument("--model", metavar="URI", help="as for predict (default: models:/<register.model_name>@staging)")
    p.add_argument("--port", type=_positive_int, default=5001, help="port on 127.0.0.1 (default: 5001)")
    p.set_defaults(func=cmd_serve)


def _add_ui(sub: argparse._SubParsersAction) -> None:
    """The ``ui`` sub-command and its options."""
    p = _sub_parser(sub, "ui", "the MLflow UI over the project's store", UI_DESCRIPTION, UI_EPILOG)
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 to serve on (default: 5000)")
    p.set_defaults(func=cmd_ui)


def _add_team(sub: argparse._SubParsersAction) -> None:
    """The ``server``, ``push`` and ``pull`` sub-commands: working as a team."""
    p = _sub_parser(sub, "server", "a team's MLflow tracking server on PostgreSQL", SERVER_DESCRIPTION, SERVER_EPILOG)
    p.add_argument("--folder", default="mlflow-server", help="local cluster and artifacts (default: mlflow-server)")
    p.add_argument("--database", metavar="URI", help="postgresql://USER:PASSWORD@HOST:PORT/DB instead of a local one")
    p.add_argument("--database-port", type=_positive_int, help="the local cluster's port on 127.0.0.1 (default: free)")
    p.add_argument("--artifacts", metavar="DEST", help="artifact folder or s3:// gs:// URL (default: FOLDER/artifacts)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=_positive_int, default=5000, help="port (default: 5000)")
    p.add_argument("--workers", type=_positive_int, default=1, help="server worker processes (default: 1)")
    p.add_argument("--allowed-hosts", metavar="HOSTS", help="Host headers to accept beyond localhost (MLflow's)")
    p.set_defaults(func=cmd_server)
    for direction, does, example in (
        ("push", "uploads the cached outputs of the pipeline", "                               # after dvc repro"),
        ("pull", "downloads and checks out the outputs", " -r storage preprocess         # only the shards"),
    ):
        p = _sub_parser(
            sub,
            direction,
            f"dvc {direction} after checking the remote exists",
            TRANSFER_DESCRIPTION.format(direction=direction, does=does),
            TRANSFER_EPILOG.format(direction=direction, example=example),
        )
        p.add_argument("targets", nargs="*", metavar="TARGET", help="stages or outputs (default: all)")
        p.add_argument("-r", "--remote", metavar="NAME", help="the DVC remote (default: the default remote)")
        p.set_defaults(func=cmd_transfer)


def build_parser() -> argparse.ArgumentParser:
    """The ``a2net`` parser: plain-text description and examples, exit codes in every help."""
    parser = _OneLineParser(
        prog="a2net",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands", help="a2net COMMAND --help for its options"
    )
    for add in (_add_promote, _add_predict, _add_explain, _add_serve, _add_ui, _add_team):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
