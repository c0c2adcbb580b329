"""`pgveil verify --html FILE`: the report as one standalone HTML page an auditor
can keep — what was checked, under which policy and rules, when, and the result,
then the details per table. Every text from the database is escaped; no value of
the data is in a report to begin with."""

from __future__ import annotations

from collections import defaultdict
from html import escape

from pgveil.services.verify import VerifyReport
from pgveil.services.verify_role import RoleReport

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.pass, .ok, .refused, .masked { color: #106b21; font-weight: bold; }
.fail, .leaked { color: #b00020; font-weight: bold; }
.warn { color: #8a5a00; font-weight: bold; }
"""


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """A table of already-escaped cells."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    lines = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{lines}</table>"


def _status(status: str) -> str:
    return f'<span class="{escape(status)}">{escape(status)}</span>'


def copy_report(report: VerifyReport) -> str:
    scan = report.leak_scan
    result = "pass" if report.passed else "fail"
    body = [
        f"<h1>pgveil verify: {_status(result)}</h1>",
        _table(
            ["what", ""],
            [
                ["checked", escape(report.searched)],
                ["against the source", escape(report.source)],
                ["policy", escape(report.policy)],
                ["rules (SHA-256)", f"<code>{escape(report.rules_hash)}</code>"],
                ["columns without a rule", escape(report.uncovered)],
                ["when (UTC)", escape(report.checked_at)],
                ["leaks", str(len(scan.leaks))],
                ["failed checks", str(len(report.failures))],
                ["warnings", str(len(report.warnings))],
            ],
        ),
        "<h2>Leak scan</h2>",
        f"<p>The values of {len(scan.source_columns)} source columns ({scan.fingerprints} distinct values, compared by"
        f" keyed fingerprint) were looked for in {scan.searched_columns} text and JSON columns of"
        f" {scan.searched_tables} tables: as whole values (case-insensitive, {scan.options.min_length} characters or"
        f" more) and inside text (runs of up to {scan.options.max_tokens} words, {scan.options.text_min_length}"
        " characters or more).</p>",
        _table(["source columns looked for"], [[escape(c.qualified)] for c in scan.source_columns]),
    ]
    if scan.leaks:
        body.append(
            _table(
                ["source column", "found in", "rows", "how", "rows (by key or place)"],
                [
                    [escape(x.source), escape(x.target), str(x.rows), escape(x.how), escape(", ".join(x.keys))]
                    for x in scan.leaks
                ],
            )
        )
    else:
        body.append(f"<p>{_status('ok')}: no source value was found.</p>")
    body.append("<h2>Checks per table</h2>")
    by_table: dict[str, list[list[str]]] = defaultdict(list)
    for check in report.checks:
        table = check.subject.split(" ")[0]
        by_table[table].append([escape(check.kind), escape(check.subject), _status(check.status), escape(check.detail)])
    for table in sorted(by_table):
        body.append(f"<h3>{escape(table)}</h3>")
        body.append(_table(["check", "subject", "result", "detail"], by_table[table]))
    body.append("<h2>Timings</h2>")
    body.append(_table(["step", "seconds"], [[escape(k), f"{v:.2f}"] for k, v in report.timings.items()]))
    return _page(f"pgveil verify: {result}", body)


def role_report(report: RoleReport) -> str:
    result = "fail" if report.leaked else "pass"
    body = [
        f"<h1>pgveil verify --role {escape(report.role)}: {_status(result)}</h1>",
        f"<p>A {escape(report.kind)} role. Markers were planted in: {escape(', '.join(report.planted) or 'none')}.</p>",
        _table(
            ["route", "outcome", "detail"],
            [[escape(r.route), _status(r.outcome), escape(r.detail)] for r in report.routes],
        ),
    ]
    if report.not_planted:
        body.append(f"<p>No marker possible in: {escape(', '.join(report.not_planted))}.</p>")
    return _page(f"pgveil verify --role {report.role}: {result}", body)
