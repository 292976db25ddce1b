"""Run the checks of ``pipeline.quality.checks`` on their tables with Great Expectations.

One ephemeral GX context; one ValidationDefinition per table (a checkpoint would hand every
table the same dataframe), each table passed as its batch's dataframe; the Data Docs site is
built once at the end. Every expectation carries ``meta`` = {name, critical} and its name as
``description``, so the same name shows in the records, on stderr and in Data Docs.
GX is imported inside ``run_checks`` only: importing it takes seconds.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.quality.checks import Check
from pipeline.quality.tables import ROW

EXAMPLES = 5  # failing rows quoted per expectation


def _json_safe(value: Any) -> Any:
    """Numbers, strings, lists and dicts only (numpy scalars → Python, NaN → None)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def _error(result: Any) -> str | None:
    """The exception messages of an expectation GX could not evaluate, else None."""
    info = result.exception_info or {}
    infos = [info] if "raised_exception" in info else list(info.values())
    messages = [
        i.get("exception_message") or "unknown error"
        for i in infos
        if isinstance(i, dict) and i.get("raised_exception")
    ]
    return "; ".join(messages) or None


def _observed(result: Any) -> Any:
    """What an expectation saw: its observed value, or "N of M rows: row (value); ..."."""
    error = _error(result)
    if error:
        return f"error: {error}"
    outcome = result.result
    if "observed_value" in outcome:
        return _json_safe(outcome["observed_value"])
    count = outcome.get("unexpected_count", 0)
    total = outcome.get("element_count", 0) - (outcome.get("missing_count") or 0)  # nulls: not checked
    examples = []
    for item in outcome.get("partial_unexpected_index_list") or []:
        values = [f"{v!r}" for k, v in _json_safe(item).items() if k != ROW]
        examples.append(f"{item.get(ROW)} ({', '.join(values)})")
    text = f"{count} of {total} rows"
    return f"{text}: {'; '.join(examples)}" if examples else text


def _build_docs(context: Any, docs_dir: Path) -> None:
    """Build the Data Docs site of ``context``'s suites and validation results into ``docs_dir``."""
    context.add_data_docs_site(
        site_name="local",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    context.build_data_docs()


def run_checks(
    tables: dict[str, pd.DataFrame], checks: list[Check], docs_dir: Path | None = None
) -> list[dict[str, Any]]:
    """Validate each suite's table with its checks (one ValidationDefinition per table, each
    table passed as its batch's dataframe); build the Data Docs site into ``docs_dir`` if given.

    Returns one record per check, in the order of ``checks``.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("tables")
    result_format = {
        "result_format": "SUMMARY",
        "partial_unexpected_count": EXAMPLES,
        "unexpected_index_column_names": [ROW],
    }
    found = {}
    for suite_name, table in tables.items():
        suite = context.suites.add(gx.ExpectationSuite(name=suite_name))
        for check in checks:
            if check.suite == suite_name:
                suite.add_expectation(
                    getattr(gxe, check.expectation)(
                        **check.kwargs, description=check.name, meta={"name": check.name, "critical": check.critical}
                    )
                )
        batch = source.add_dataframe_asset(suite_name).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
        )
        outcome = definition.run(batch_parameters={"dataframe": table}, result_format=result_format)
        for result in outcome.results:
            found[(suite_name, result.expectation_config.meta["name"])] = result
    if docs_dir is not None:
        _build_docs(context, docs_dir)
    return [
        {
            "suite": c.suite,
            "name": c.name,
            "critical": c.critical,
            "passed": bool(found[(c.suite, c.name)].success),
            "observed": _observed(found[(c.suite, c.name)]),
            "threshold": c.threshold,
        }
        for c in checks
    ]
