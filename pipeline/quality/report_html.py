"""The validation report as one offline page: ``summary.html``, made from summary.json's records.

The GX Data Docs site loads its scripts and styles from CDNs and shows a blank page without a
network; this page has inline CSS only (no scripts, no links off the machine) and no run time,
so the same records give the same bytes and it can be a DVC out beside ``summary.json``.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

COLUMNS = ("suite", "expectation", "critical", "passed", "observed", "threshold")

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; }
.outcome { font-weight: bold; padding: 0.2em 0.6em; border-radius: 4px; }
.outcome.passed { background: #d4f4dd; }
.outcome.failed { background: #f8d0d0; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.observed { font-family: monospace; white-space: pre-wrap; word-break: break-word; }
tr.failed-critical td { background: #fbe3e3; }
tr.failed-warning td { background: #fff4d6; }
"""


def cell_text(value: Any) -> str:
    """A record value as page text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def row_html(record: dict[str, Any]) -> str:
    """One ``<tr>`` of the expectations table; failed rows are marked critical or warning."""
    state = "passed" if record["passed"] else "failed-critical" if record["critical"] else "failed-warning"
    cells = [
        record["suite"],
        record["name"],
        "yes" if record["critical"] else "no (warns)",
        "yes" if record["passed"] else "NO",
        cell_text(record["observed"]),
        cell_text(record["threshold"]),
    ]
    tds = "".join(
        f'<td class="{column}">{escape(text, quote=False)}</td>' for column, text in zip(COLUMNS, cells, strict=True)
    )
    return f'<tr class="{state}">{tds}</tr>'


def summary_html(success: bool, records: list[dict[str, Any]]) -> str:
    """The whole page: the verdict, the counts, one table row per expectation (records' order)."""
    failed = [r for r in records if not r["passed"]]
    critical = sum(r["critical"] for r in failed)
    outcome = "passed" if success else "failed"
    counts = (
        f"{len(records) - len(failed)} of {len(records)} expectations passed; "
        f"{critical} critical failed, {len(failed) - critical} non-critical failed (warnings)"
    )
    header = "".join(f"<th>{name}</th>" for name in COLUMNS)
    rows = "\n".join(row_html(r) for r in records)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Data validation: {outcome}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>Data validation: <span class="outcome {outcome}">{outcome.upper()}</span></h1>
<p>{escape(counts)}. The same records as <code>summary.json</code> beside this page; the Great
Expectations Data Docs (<code>data_docs/index.html</code>) show more but need a network.</p>
<table>
<thead><tr>{header}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""
