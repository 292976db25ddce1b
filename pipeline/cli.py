"""``a2net``: the model registry from the command line — promote, predict, ui.

Exit codes: 0 done, 1 promotion refused by the gate, 2 bad input (unknown version, file that is
not a video, unloadable model). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from pipeline.core.config import load_config
from pipeline.core.errors import StageError
from pipeline.registry.tracking import existing_tracking_uri

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2


def _client():
    """An MlflowClient on the project's store; quiet, as a command-line tool's stderr should be."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    mlflow.set_tracking_uri(existing_tracking_uri())
    return mlflow.MlflowClient()


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
        with promotion_lock(existing_tracking_uri()):
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
    print(f"models:/{done.name}@{done.alias} -> version {done.version}{moved}{kind}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``a2net predict``: top-k labels for each video; a bad video is reported, the rest run."""
    from pipeline.registry.predict import VideoError, format_prediction, load_model, predict

    _client()
    model = load_model(args.model or f"models:/{load_config().register.model_name}@staging")
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
        print(json.dumps({"model": model.uri, "predictions": [asdict(r) for r in results]}, indent=2))
    return EXIT_BAD_INPUT if failed else 0


def ui_command(port: int, store: str, host: str = "127.0.0.1") -> list[str]:
    """The ``mlflow ui`` command line over the store ``store`` (a SQLite URI)."""
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
    ]


def cmd_ui(args: argparse.Namespace) -> int:
    """``a2net ui``: the MLflow UI over ``mlflow/mlflow.db`` (a remote server has its own UI)."""
    uri = existing_tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"MLFLOW_TRACKING_URI is a server; its UI is at {uri}")
        return 0
    command = ui_command(args.port, uri)
    print(f"MLflow UI on http://127.0.0.1:{args.port} ({' '.join(command[1:])})", flush=True)
    os.execv(command[0], command)


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse turns the error into one usage line, exit 2)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


class _OneLineParser(argparse.ArgumentParser):
    """Bad command-line arguments are one line and exit 2, like every other bad input."""

    def error(self, message: str) -> None:
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="a2net", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("promote", help="move models:/<name>@staging|production to a version")
    p.add_argument("--version", help="model version number to promote")
    p.add_argument("--to", choices=("staging", "production"), help="alias to move")
    p.add_argument("--list", action="store_true", help="print the versions table and exit")
    p.add_argument("--history", action="store_true", help="print every promotion (of --to, if given) and exit")
    p.add_argument(
        "--rollback",
        action="store_true",
        help="move --to back to its previous version (skips the metric gate, not validation)",
    )
    p.add_argument("--force", action="store_true", help="override the quality gate")
    p.add_argument("--reason", help="why --force is needed (recorded as a version tag)")
    p.add_argument("--model-name", help="registered model (default: register.model_name)")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("predict", help="top-5 labels of videos with a registered model")
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--model", help="model URI (default: models:/<register.model_name>@staging)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--top-k", type=_positive_int, default=5, help="labels per video (>= 1)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("ui", help="MLflow UI over the project's store")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)
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
