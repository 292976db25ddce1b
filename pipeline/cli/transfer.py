"""``a2net push`` and ``a2net pull``: dvc push / pull through a remote that was checked first."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.common import add_command

DESCRIPTION = """\
dvc {direction} with a checked remote: the remote (-r NAME, default the
project's default remote) must be configured and its location must exist (a
local remote's folder, an object store's bucket), so that a typo is one line
and nothing is written. Then DVC {does}."""

EPILOG = """\
examples:
  dvc remote add -d storage /mnt/team/a2nets    # or s3://bucket/a2nets, gs://...
  a2net {direction}{example}

exit codes:
  0  done
  2  no such remote, its location does not exist or cannot be reached, or DVC
     failed (its message is printed above)"""

DIRECTIONS = (  # (command, what DVC then does, the example's arguments and comment)
    ("push", "uploads the cached outputs of the pipeline", "                               # after dvc repro"),
    ("pull", "downloads and checks out the outputs", " -r storage preprocess         # only the shards"),
)


def cmd_transfer(args: argparse.Namespace) -> int:
    """``a2net push`` / ``a2net pull``: dvc push / pull after checking the remote."""
    from pipeline.core.remote import transfer

    return transfer(Path.cwd(), args.command, args.remote, args.targets)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``push`` and ``pull`` sub-commands and their options."""
    for direction, does, example in DIRECTIONS:
        p = add_command(
            sub,
            direction,
            f"dvc {direction} after checking the remote exists",
            DESCRIPTION.format(direction=direction, does=does),
            EPILOG.format(direction=direction, example=example),
            cmd_transfer,
        )
        p.add_argument("targets", nargs="*", metavar="TARGET", help="stages or outputs (default: all)")
        p.add_argument("-r", "--remote", metavar="NAME", help="the DVC remote (default: the default remote)")
