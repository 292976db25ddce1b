"""What every ``a2net`` command shares: the exit codes, the MLflow client, the model URI and the
parser pieces (one-line errors, sub-commands whose hand-laid description and examples keep their lines)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from pipeline.core.config import load_config
from pipeline.tracking.store import existing_tracking_uri

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
SAME_MODEL_HELP = "as for predict (default: models:/<register.model_name>@staging)"  # explain, serve


def client():
    """An MlflowClient on the project's store; quiet, as a command-line tool's stderr should be."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    mlflow.set_tracking_uri(existing_tracking_uri())
    return mlflow.MlflowClient()


def model_uri(args: argparse.Namespace) -> str:
    """``--model``, else the staging alias of ``register.model_name`` (predict, explain, serve)."""
    return args.model or f"models:/{load_config().register.model_name}@staging"


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse turns the error into one usage line, exit 2)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


class OneLineParser(argparse.ArgumentParser):
    """Bad command-line arguments are one line and exit 2, like every other bad input."""

    def error(self, message: str) -> None:
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    summary: str,
    description: str,
    epilog: str,
    handler: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """The sub-command ``name``, run by ``handler``; its description and examples keep their lines."""
    parser = sub.add_parser(
        name, help=summary, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(func=handler)
    return parser
