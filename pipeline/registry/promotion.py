"""Model registry: promotion of versions between aliases behind a quality gate, and listing.

A version is promoted by moving an alias (``models:/a2net@staging``, ``@production``). The gate
refuses a version whose ``validation`` tag is not ``passed``, whose evaluation was made on other
data, split or views than the alias's current holder's (their recorded evaluation settings
differ: the metrics are not comparable), or whose ``promote.metric`` (as its evaluation recorded
it; higher is better) is worse than the holder's by more than ``promote.margin``.
``production`` only takes the version that holds ``staging``. ``force``
(with a reason) overrides the quality gate and records who and why as version tags. The version
an alias leaves keeps an alias ``previous_<alias>``; ``rollback`` moves the alias back to it,
past the metric gate but not past validation.

Every promotion appends an entry to the registered model's history (tags
``promotion.<alias>.<time>-<nonce>``, never overwritten) and rewrites the alias's readable summary
(tag ``current.<alias>``, ``current_line``). Promotions on the local SQLite store are
serialised by a file lock beside the database, so a second concurrent one names the first as its
predecessor; against a server, a re-read after the write detects a concurrent promotion of the
same alias and reports the race (``PromotionRaced``) instead of claiming success. A store error
while writing is a race only when the re-read shows another writer; a full disk, or any other
store failure, is one line of its own.

An alias moved past the gate (the MLflow UI's alias editor or "Promote model" button, or the
API) leaves no history entry; ``list_versions`` marks it (``set_outside_gate``) so that
``a2net promote --list`` shows which aliases no promotion vouches for.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipeline.core.errors import StageError
from pipeline.registry.version_tags import HEADLINE_METRICS, evaluation_setting, recorded_evaluation
from pipeline.tracking.store import full_disk_error, full_disk_is_one_line, store_lock

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

STAGES = ("staging", "production")
HISTORY_TAG = "promotion"  # registered-model tags promotion.<alias>.<time>-<nonce> = JSON entry
CURRENT_TAG = "current"  # registered-model tag current.<alias> = who holds it since when, in words


class PromotionRefused(StageError):
    """The gate refused a promotion; the message is the one-line reason."""


class PromotionRaced(PromotionRefused):
    """Another promotion of the same alias ran at the same time; the outcome must be checked."""


@dataclass(frozen=True)
class Comparison:
    """The two scores the gate compared, and the evaluation setting they were measured in."""

    candidate: float
    holder: float
    fingerprint: str
    rescored: bool = False  # both scored again on the candidate's data (their records differed)

    def record(self, metric: str) -> dict[str, str]:
        """Tags / history fields of a re-scored comparison (nothing for recorded metrics)."""
        if not self.rescored:
            return {}
        return {
            "gate.rescored_on": self.fingerprint,
            f"gate.candidate_{metric}": f"{self.candidate:.6g}",
            f"gate.holder_{metric}": f"{self.holder:.6g}",
        }


@dataclass(frozen=True)
class Promotion:
    """What a promotion did: ``previous`` is the version that held the alias before, if any."""

    name: str
    version: str
    alias: str
    previous: str | None
    forced: bool
    kind: str = "promote"  # promote | force | rollback
    comparison: Comparison | None = None  # how the gate compared it with the holder


def current_user() -> str:
    """Who is promoting: the login name (``$USER`` as fallback), for the audit tags."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "unknown")


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def promotion_lock(tracking_uri: str) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive lock beside a local SQLite store's database; nothing for other stores."""
    return store_lock(tracking_uri, "promote")


def promotion_history(client: MlflowClient, name: str, alias: str | None = None) -> list[dict]:
    """The promotions of ``name`` (of ``alias`` only, if given), oldest first."""
    return history_from_tags(client.get_registered_model(name).tags, alias)


def history_from_tags(tags: Mapping[str, str], alias: str | None = None) -> list[dict]:
    """The history entries among a registered model's ``tags`` (of ``alias`` only), oldest first.

    A tag under the prefix that is no entry (e.g. one typed in the UI) is skipped, not fatal.
    """
    prefix = f"{HISTORY_TAG}.{alias}." if alias else f"{HISTORY_TAG}."
    entries = []
    for key in sorted(tags):
        if not key.startswith(prefix):
            continue
        try:
            entry = json.loads(tags[key])
        except ValueError:
            continue
        if isinstance(entry, dict) and {"alias", "version"} <= entry.keys():
            entries.append(entry | {"key": key})
    return entries


def gated_aliases(tags: Mapping[str, str]) -> dict[str, str]:
    """Alias -> the version ``a2net promote`` last moved it to, by the history in ``tags``.

    Includes ``previous_<alias>``: the holder a promotion replaced (when it was another version).
    """
    expected: dict[str, str] = {}
    for entry in history_from_tags(tags):  # one alias's entries sort by time
        expected[entry["alias"]] = str(entry["version"])
        if entry.get("previous") is not None and str(entry["previous"]) != str(entry["version"]):
            expected[f"previous_{entry['alias']}"] = str(entry["previous"])
    return expected


def set_outside_gate(aliases: Mapping[str, str], tags: Mapping[str, str]) -> set[str]:
    """The aliases whose version is not the one their last recorded promotion gave them.

    Such an alias was set past the gate: in the MLflow UI (its alias editor or "Promote model"
    button) or with ``MlflowClient.set_registered_model_alias``, which record nothing.
    """
    expected = gated_aliases(tags)
    return {alias for alias, version in aliases.items() if expected.get(alias) != str(version)}


def history_key(alias: str) -> str:
    """A new history entry's tag key: ``promotion.<alias>.<time>-<nonce>``, which no other promotion takes."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{HISTORY_TAG}.{alias}.{stamp}-{secrets.token_hex(4)}"


def _record(client: MlflowClient, name: str, entry: dict, key: str) -> str:
    """Append ``entry`` to the history under ``key``; return the key."""
    client.set_registered_model_tag(name, key, json.dumps(entry, sort_keys=True))
    return key


def _check_no_race(client: MlflowClient, name: str, alias: str, version: str, previous: str | None, key: str) -> None:
    """After the write: the alias is ours and our entry follows the promotion we read, or raise."""
    now = client.get_registered_model(name).aliases.get(alias)
    history = promotion_history(client, name, alias)
    mine = next(i for i, entry in enumerate(history) if entry["key"] == key)
    before = history[mine - 1]["version"] if mine else None
    if str(now) != version or mine != len(history) - 1 or (before is not None and before != previous):
        other = next((e for e in reversed(history) if e["key"] != key), {})
        raise PromotionRaced(
            f"another promotion of @{alias} (version {other.get('version')} by "
            f"{other.get('by')}) ran at the same time; @{alias} is now version {now}: "
            "check `a2net promote --list` and promote again if needed"
        )


# what a store says when two writers insert the same row (SQLAlchemy IntegrityError, SQLite, PostgreSQL)
DUPLICATE_KEY_SAYS = ("IntegrityError", "UNIQUE constraint failed", "duplicate key value violates unique constraint")


def _write_failure(
    client: MlflowClient, name: str, alias: str, version: str, previous: str | None, ours: set[str], err: Exception
) -> StageError:
    """What a store error while writing a promotion was, as one line: a full disk (naming it), a
    race (``PromotionRaced``: the re-read shows another writer), else the store's own failure.
    ``ours`` are the history keys read before the write and the one this promotion wrote."""
    full = full_disk_error(err, client.tracking_uri, "a2net promote")
    if full is not None:
        return full
    said = str(getattr(err, "message", err)).splitlines()[0][:120]
    other = _other_writer(client, name, alias, version, previous, ours)
    if other is None and any(says in str(err) for says in DUPLICATE_KEY_SAYS):
        other = "a write of the same alias or tag"  # two writers of one row: the store's unique key
    if other is not None:
        return PromotionRaced(
            f"another promotion of @{alias} ({other}) wrote at the same time ({said}); "
            "check `a2net promote --list` and promote again if needed"
        )
    return StageError(
        f"the MLflow store {client.tracking_uri} failed while promoting version {version} to @{alias} ({said}); "
        "the promotion may be partly written: check `a2net promote --list`, fix the store, then promote again"
    )


def _other_writer(
    client: MlflowClient, name: str, alias: str, version: str, previous: str | None, ours: set[str]
) -> str | None:
    """Who else wrote ``alias`` since this promotion read it: a history entry that is not ours, or
    the alias on a version that is neither the holder read nor ours; None when the re-read shows
    no one (or cannot be made)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return None
    theirs = [e for e in history_from_tags(model.tags, alias) if e["key"] not in ours]
    if theirs:
        return f"version {theirs[-1]['version']} by {theirs[-1].get('by')}"
    now = model.aliases.get(alias)
    if now is not None and str(now) not in {version, str(previous)}:
        return f"@{alias} is now version {now}"
    return None


def get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    """A model version, or a StageError naming it when the model or version does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise StageError(f"model {name!r} has no version {version}; see `a2net promote --list`") from None


def alias_holder(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version that ``alias`` points at, or None."""
    version = client.get_registered_model(name).aliases.get(alias)
    return None if version is None else client.get_model_version(name, str(version))


def run_metric(client: MlflowClient, version: ModelVersion, metric: str) -> float:
    """``metric`` of the version: as its evaluation recorded it (tag ``evaluation``), else as
    logged on its training run (versions registered before evaluations were recorded)."""
    recorded = recorded_evaluation(version)
    value = recorded.get("metrics", {}).get(metric) if recorded else None
    if value is None and version.run_id:
        value = client.get_run(version.run_id).data.metrics.get(metric)
    if value is None:
        raise PromotionRefused(f"version {version.version} has no metric {metric!r} on its run {version.run_id}")
    return float(value)


def compare(client: MlflowClient, candidate: ModelVersion, holder: ModelVersion, alias: str, metric: str) -> Comparison:
    """``metric`` of both versions measured alike: their recorded values when their evaluation
    settings are equal; else both scored again on the candidate's evaluation data when it is on
    disk unchanged (``pipeline.registry.rescore``); else PromotionRefused naming what differs."""
    mine, theirs = evaluation_setting(candidate), evaluation_setting(holder)
    if mine is not None and mine == theirs:
        return Comparison(run_metric(client, candidate, metric), run_metric(client, holder, metric), mine.fingerprint)
    if mine is None or theirs is None:
        unknown = candidate.version if mine is None else holder.version
        why = f"version {unknown} records no evaluation setting (registered before they were recorded)"
    else:
        why = f"they were evaluated differently ({'; '.join(mine.differences(theirs))})"
    refusal = f"cannot compare {metric} of version {candidate.version} and {alias} version {holder.version}: {why}"
    if mine is None:
        raise PromotionRefused(f"{refusal}; evaluate both on the same data, split and views, or use --force --reason")
    from pipeline.registry.rescore import present_shards, rescore

    shards_dir = recorded_evaluation(candidate).get("shards_dir", "")
    shards = present_shards(shards_dir, mine)
    if shards is None:
        raise PromotionRefused(
            f"{refusal}, and the candidate's evaluation data ({shards_dir or 'not recorded'}) is not on disk as it "
            "was to score both on it; evaluate both on the same data, split and views, or use --force --reason"
        )
    scores = [rescore(f"models:/{v.name}/{v.version}", mine, shards)[metric] for v in (candidate, holder)]
    return Comparison(*scores, mine.fingerprint, rescored=True)


def check_validated(candidate: ModelVersion) -> None:
    """Raise PromotionRefused unless the version's data passed validation."""
    validation = candidate.tags.get("validation", "missing")
    if validation != "passed":
        raise PromotionRefused(
            f"version {candidate.version} has validation={validation}, not passed; fix the data or use --force --reason"
        )


def check_staged(client: MlflowClient, name: str, candidate: ModelVersion) -> None:
    """PromotionRefused unless ``candidate`` holds staging (production only takes the staged version)."""
    staging = alias_holder(client, name, "staging")
    if staging is None or staging.version != candidate.version:
        held = "no version" if staging is None else f"version {staging.version}"
        raise PromotionRefused(
            f"production only takes the staging version; {held} holds staging, not {candidate.version}"
        )


def check_gate(
    client: MlflowClient,
    candidate: ModelVersion,
    holder: ModelVersion | None,
    alias: str,
    metric: str,
    margin: float,
) -> Comparison | None:
    """Raise PromotionRefused unless ``candidate`` is validated and, measured like ``holder``
    (``compare``), not worse than it; the comparison made (None without a holder)."""
    check_validated(candidate)
    run_metric(client, candidate, metric)
    if holder is None or holder.version == candidate.version:
        return None
    comparison = compare(client, candidate, holder, alias, metric)
    if comparison.candidate < comparison.holder - margin:
        where = (
            f" (both scored on the candidate's evaluation data {comparison.fingerprint})" if comparison.rescored else ""
        )
        raise PromotionRefused(
            f"version {candidate.version} has {metric}={comparison.candidate:.4f}, worse than {alias} "
            f"version {holder.version} ({comparison.holder:.4f}){where} by more than the margin {margin}; "
            "use --force --reason to override"
        )
    return comparison


def rollback_target(client: MlflowClient, name: str, alias: str) -> str:
    """The version ``alias`` held before its current one (alias ``previous_<alias>``)."""
    if alias not in STAGES:
        raise StageError(f"cannot roll back {alias!r}; choose one of {', '.join(STAGES)}")
    version = client.get_registered_model(name).aliases.get(f"previous_{alias}")
    if version is None:
        raise StageError(f"@{alias} of {name!r} has no previous version to roll back to")
    return str(version)


def _write_promotion(
    client: MlflowClient,
    name: str,
    version: str,
    alias: str,
    previous: str | None,
    tags: dict[str, str],
    entry: dict,
    key: str,
) -> None:
    """Tag the version, keep the old holder as ``previous_<alias>``, move the alias, record under
    ``key``, verify."""
    for tag, value in tags.items():
        client.set_model_version_tag(name, version, tag, value)
    if previous is not None and previous != version:
        client.set_registered_model_alias(name, f"previous_{alias}", previous)
        client.set_model_version_tag(name, previous, f"previous_{alias}", tags["promoted_at"])
    client.set_registered_model_alias(name, alias, version)
    _check_no_race(client, name, alias, version, previous, _record(client, name, entry, key))
    client.set_registered_model_tag(name, f"{CURRENT_TAG}.{alias}", current_line(entry))


def current_line(entry: Mapping[str, str | None]) -> str:
    """The model page's readable summary of who holds an alias: ``version 3 since <time> (promote by alice)``."""
    reason = f": {entry['reason']}" if entry.get("reason") else ""
    return f"version {entry['version']} since {entry['at']} ({entry['kind']} by {entry['by']}{reason})"


def promote(
    client: MlflowClient,
    name: str,
    version: str,
    alias: str,
    *,
    metric: str,
    margin: float,
    force: bool = False,
    reason: str | None = None,
    user: str | None = None,
    rollback: bool = False,
) -> Promotion:
    """Move ``alias`` of model ``name`` to ``version`` if the gate lets it (see module doc).

    ``rollback`` skips the metric gate and the staging-first rule, not validation. Hold
    ``promotion_lock`` around it on a local store. Raises PromotionRefused with the reason
    (PromotionRaced for a concurrent promotion), or StageError for bad arguments.
    """
    if alias not in STAGES:
        raise StageError(f"cannot promote to {alias!r}; choose one of {', '.join(STAGES)}")
    if force and not (reason and reason.strip()):
        raise StageError('--force needs --reason "why" (it is recorded on the version)')
    candidate = get_version(client, name, version)
    if alias == "production" and not rollback:
        check_staged(client, name, candidate)
    holder = alias_holder(client, name, alias)
    comparison = None
    if rollback and not force:
        check_validated(candidate)
    elif not force:
        comparison = check_gate(client, candidate, holder, alias, metric, margin)
    from mlflow.exceptions import MlflowException

    previous = None if holder is None else str(holder.version)
    user = user or current_user()
    kind = "force" if force else "rollback" if rollback else "promote"
    tags = {"promoted_to": alias, "promoted_at": _utc_now(), "promoted_by": user}
    if force:
        tags |= {"forced_by": user, "force_reason": reason.strip()}
    rescored = comparison.record(metric) if comparison is not None else {}
    tags |= rescored
    entry = {
        "alias": alias,
        "version": str(candidate.version),
        "previous": previous,
        "kind": kind,
        "by": user,
        "at": tags["promoted_at"],
        "reason": (reason or "").strip(),
        **rescored,
    }
    seen = {e["key"] for e in promotion_history(client, name, alias)}
    key = history_key(alias)
    try:
        _write_promotion(client, name, str(candidate.version), alias, previous, tags, entry, key)
    except MlflowException as err:
        raise _write_failure(client, name, alias, str(candidate.version), previous, seen | {key}, err) from None
    moved = previous if previous != str(candidate.version) else None
    return Promotion(name, str(candidate.version), alias, moved, force, kind, comparison)


def promote_alias(
    client: MlflowClient,
    tracking_uri: str,
    name: str,
    alias: str,
    version: str | None = None,
    *,
    rollback: bool = False,
    metric: str,
    margin: float,
    force: bool = False,
    reason: str | None = None,
) -> Promotion:
    """``a2net promote``'s move: ``promote`` ``alias`` to ``version`` (with ``rollback``, to the
    version it held before, ``rollback_target``) under ``promotion_lock``; a full disk met on the
    way is one line (``full_disk_is_one_line``). Raises as ``promote`` does."""
    with full_disk_is_one_line(tracking_uri, "a2net promote"), promotion_lock(tracking_uri):
        target = rollback_target(client, name, alias) if rollback else version
        return promote(
            client, name, target, alias, metric=metric, margin=margin, force=force, reason=reason, rollback=rollback
        )


@dataclass(frozen=True)
class VersionRow:
    """One line of ``a2net promote --list``."""

    version: str
    aliases: list[str]
    validation: str
    metrics: dict[str, float]
    run_id: str
    git_commit: str
    shards_md5: str
    created: str
    outside_gate: tuple[str, ...] = ()  # aliases of this version set past ``a2net promote``


OUTSIDE_MARK = "(set outside a2net promote)"


def list_versions(client: MlflowClient, name: str) -> list[VersionRow]:
    """Every version of ``name``, newest first, with its aliases, lineage and run metrics."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        raise StageError(f"no registered model {name!r}; run the register stage first") from None
    aliases = model.aliases
    outside = set_outside_gate(aliases, model.tags)
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        run_metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
        created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC)
        rows.append(
            VersionRow(
                version=str(mv.version),
                aliases=by_version.get(str(mv.version), []),
                validation=mv.tags.get("validation", "missing"),
                metrics={m: run_metrics[m] for m in HEADLINE_METRICS if m in run_metrics},
                run_id=mv.run_id or "",
                git_commit=mv.tags.get("git_commit", "unknown"),
                shards_md5=mv.tags.get("shards_md5", "unknown"),
                created=created.strftime("%Y-%m-%d %H:%M"),
                outside_gate=tuple(a for a in by_version.get(str(mv.version), []) if a in outside),
            )
        )
    return sorted(rows, key=lambda row: int(row.version), reverse=True)


def format_table(rows: list[VersionRow]) -> str:
    """``rows`` as a Markdown table (readable in a terminal, pasteable into a PR).

    An alias set past the gate is marked ``OUTSIDE_MARK``, with a note under the table.
    """
    header = ["version", "aliases", "validation", *HEADLINE_METRICS, "run id", "git commit", "shards md5", "created"]
    lines = [header, ["---"] * len(header)]
    for row in rows:
        metrics = [f"{row.metrics[m]:.4f}" if m in row.metrics else "-" for m in HEADLINE_METRICS]
        aliases = [f"{a} {OUTSIDE_MARK}" if a in row.outside_gate else a for a in row.aliases]
        lines.append(
            [
                row.version,
                ", ".join(aliases) or "-",
                row.validation,
                *metrics,
                row.run_id,
                row.git_commit[:12],
                row.shards_md5[:12],
                row.created,
            ]
        )
    table = "\n".join("| " + " | ".join(cells) + " |" for cells in lines)
    if any(row.outside_gate for row in rows):
        table += (
            f"\n\n{OUTSIDE_MARK}: the alias was moved past the quality gate (the MLflow UI's alias editor "
            'or "Promote model" button, or the API) and no promotion records it; '
            "`a2net promote --version N --to ALIAS` checks and records it"
        )
    return table
