"""``a2net promote``: list the versions or the promotions, or move an alias through the quality gate."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from pipeline.cli.common import EXIT_REFUSED, add_command, client
from pipeline.core.config import load_config
from pipeline.core.errors import StageError
from pipeline.tracking.store import existing_tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipeline.registry.promotion import Promotion

DESCRIPTION = """\
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

EPILOG = """\
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


def cmd_promote(args: argparse.Namespace) -> int:
    """``a2net promote``: list versions or history, or move an alias through the gate."""
    from pipeline.registry.promotion import PromotionRaced, PromotionRefused, format_table, list_versions, promote_alias

    cfg = load_config()
    name = args.model_name or cfg.register.model_name
    registry = client()
    if args.list:
        print(format_table(list_versions(registry, name)))
        return 0
    if args.history:
        return print_history(registry, name, args.to)
    if args.to is None or (args.version is None) == (not args.rollback):
        raise StageError(
            "give --version N --to staging|production, or --rollback --to staging|production (or --list, --history)"
        )
    try:
        done = promote_alias(
            registry,
            existing_tracking_uri(),
            name,
            args.to,
            args.version,
            rollback=args.rollback,
            metric=cfg.promote.metric,
            margin=float(cfg.promote.margin),
            force=args.force,
            reason=args.reason,
        )
    except PromotionRaced as raced:
        print(f"lost the race: {raced}", file=sys.stderr)
        return EXIT_REFUSED
    except PromotionRefused as refused:
        print(f"refused: {refused}", file=sys.stderr)
        return EXIT_REFUSED
    print(promotion_line(done, cfg.promote.metric))
    return 0


def print_history(registry: MlflowClient, name: str, alias: str | None) -> int:
    """``--history``: one line per promotion (of ``alias``, if given), oldest first."""
    from pipeline.registry.promotion import list_versions, promotion_history

    list_versions(registry, name)  # one line when the model does not exist
    entries = promotion_history(registry, name, alias)
    if not entries:
        print(f"no promotions of {name}{f' to @{alias}' if alias else ''} yet (a2net promote --version N --to ALIAS)")
    for entry in entries:
        was = f"was version {entry['previous']}" if entry["previous"] else "first holder"
        print(
            f"{entry['at']}  @{entry['alias']} -> {entry['version']} ({was}) "
            f"{entry['kind']} by {entry['by']}{': ' + entry['reason'] if entry['reason'] else ''}"
        )
    return 0


def promotion_line(done: Promotion, metric: str) -> str:
    """What a promotion did, in one line: the alias's new version, the one it left, how it passed."""
    moved = f" (was version {done.previous}, now @previous_{done.alias})" if done.previous else ""
    kind = {"promote": "", "force": " [forced]", "rollback": " [rollback]"}[done.kind]
    compared = done.comparison
    rescored = (
        f"; both scored on the candidate's evaluation data ({compared.fingerprint}): {metric} "
        f"{compared.candidate:.4f} vs the holder's {compared.holder:.4f}"
        if compared is not None and compared.rescored
        else ""
    )
    return f"models:/{done.name}@{done.alias} -> version {done.version}{moved}{kind}{rescored}"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``promote`` sub-command and its options."""
    p = add_command(
        sub,
        "promote",
        "move models:/<name>@staging|production to a version, through the quality gate",
        DESCRIPTION,
        EPILOG,
        cmd_promote,
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
