"""``a2net``: the model registry from the command line — promote, predict, explain, serve, ui.

Exit codes: 0 done, 1 promotion refused by the gate (or lost a race), 2 bad input (unknown
version, file that is not a video, unloadable model). Errors are one line on stderr, never a
traceback. One module per command group builds its sub-commands (``help=`` on every option, the
description and the examples as plain text laid out by hand beside them) and handles them: parse,
call the library, format the result. ``promote``; ``predict`` (predict, explain); ``serve``
(serve, ui, server); ``transfer`` (push, pull); ``data`` (import); ``common``: what they share.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.cli import data, predict, promote, serve, transfer
from pipeline.cli.common import EXIT_BAD_INPUT, OneLineParser
from pipeline.cli.serve import ui_command
from pipeline.core.errors import StageError

__all__ = ["build_parser", "main", "ui_command"]

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
(server) and move data and models through a DVC remote (push, pull); bring
UCF-101 or HMDB-51 in as a Kinetics root (import).

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
  a2net import ucf101 /data/UCF101 data/ucf101 --split 1

{EXIT_CODES}

a2net COMMAND --help says more; docs/registry.md is the guide."""

SUB_COMMANDS = (  # in the order of a2net --help
    promote.add_parser,  # promote
    predict.add_parsers,  # predict, explain
    serve.add_parsers,  # serve, ui
    serve.add_server_parser,  # server
    transfer.add_parsers,  # push, pull
    data.add_parsers,  # import
)


def build_parser() -> argparse.ArgumentParser:
    """The ``a2net`` parser: plain-text description and examples, exit codes in every help."""
    parser = OneLineParser(
        prog="a2net",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands", help="a2net COMMAND --help for its options"
    )
    for add in SUB_COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``a2net``: run the command; a StageError is one line on stderr and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
