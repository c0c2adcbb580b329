"""`pgveil view-fields` and `pgveil view-data`: review what a policy does, before and after a scan.

:func:`register` adds both commands to the `pgveil` application. They parse options,
call :mod:`pgveil.services.preview` and render its results (rich tables, or --json).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pgveil import preflight
from pgveil.cli_common import DatabaseUrl, err, out, reports_errors, target_url
from pgveil.errors import PgveilError
from pgveil.services import preview

RAW_VALUES_WARNING = (
    "warning: view-data shows RAW personal data beside its masked form. Do not paste this output"
    " into tickets, chats, issues or logs; share the masked column only."
)

PolicyOption = Annotated[str, typer.Option("--policy", help="The policy whose rules are shown.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def register(app: typer.Typer) -> None:
    """Add `view-fields` and `view-data` to the `pgveil` application."""
    app.command("view-fields")(view_fields_command)
    app.command("view-data")(view_data_command)


@reports_errors
def view_fields_command(
    policy: PolicyOption = "mask",
    only_sensitive: Annotated[
        bool,
        typer.Option("--only-sensitive", help="Only columns the policy masks or the scan judged sensitive."),
    ] = False,
    scan: Annotated[
        Path | None,
        typer.Option("--scan", help="A scan result (`pgveil scan --format json --output FILE`): its reasons."),
    ] = None,
    page: Annotated[int, typer.Option("--page", min=1, help="The page to show, from 1.")] = 1,
    page_size: Annotated[int, typer.Option("--page-size", min=1, help="Columns per page.")] = 50,
    as_json: JsonOption = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Every column of every user table: its type, its rule in the policy (or none), and the scan's reason."""
    scanned = preview.load_scan(scan) if scan is not None else None
    with preflight.connect(target_url(database_url)) as conn:
        rows = preview.view_fields(conn, policy, only_sensitive=only_sensitive, scan=scanned)
    pages = max(1, math.ceil(len(rows) / page_size))
    if page > pages:
        raise PgveilError(f"--page {page} is past the last page ({pages} of {page_size} columns)")
    shown = rows[(page - 1) * page_size : page * page_size]
    if as_json:
        print(
            json.dumps(
                {
                    "policy": policy,
                    "page": page,
                    "pages": pages,
                    "page_size": page_size,
                    "total": len(rows),
                    "columns": [r.as_dict() for r in shown],
                },
                indent=2,
            )
        )
        return
    table = Table(title=f"columns under policy {escape(policy)}", title_justify="left")
    for heading in ("schema", "table", "column", "type", "rule"):
        table.add_column(heading)
    if scanned is not None:
        table.add_column("scan")
        table.add_column("confidence", justify="right")
        table.add_column("reason")
    for r in shown:
        cells = [r.schema, r.table, r.column, r.type, r.rule if r.rule is not None else "(none)"]
        if scanned is not None:
            cells += [_scan_verdict(r), "" if r.confidence is None else f"{r.confidence:.2f}", r.reason or ""]
        table.add_row(*(escape(c) for c in cells))
    out.print(table)
    out.print(f"page {page} of {pages} ({len(rows)} columns)", highlight=False)


def _scan_verdict(row: preview.FieldRow) -> str:
    if row.sensitive is None:
        return "(not scanned)"
    if not row.sensitive:
        return "not sensitive"
    found = row.kind or "sensitive"
    inside = sorted(set(row.embedded) | {str(p.get("kind")) for p in row.paths if p.get("kind")})
    return f"{found} ({', '.join(inside)})" if inside else found


@reports_errors
def view_data_command(
    table: Annotated[str, typer.Argument(help="The table, e.g. public.customer.")],
    policy: PolicyOption = "mask",
    limit: Annotated[int, typer.Option("--limit", help="Rows to show, 1 to 1000.")] = 10,
    offset: Annotated[int, typer.Option("--offset", help="Rows to skip first, in primary-key order.")] = 0,
    as_json: JsonOption = False,
    database_url: DatabaseUrl = None,
) -> None:
    """A table's rows in primary-key order, original beside masked (toolkit owner only: shows raw values)."""
    err.print(f"[bold yellow]{escape(RAW_VALUES_WARNING)}[/bold yellow]", highlight=False, soft_wrap=True)
    with preflight.connect(target_url(database_url)) as conn:
        page = preview.view_data(conn, table, policy, limit, offset)
    if as_json:
        print(json.dumps(page.as_dict(), indent=2))
        return
    if not page.rows:
        out.print(f"{escape(page.table)}: no rows at offset {offset}", highlight=False)
        return
    for row in page.rows:
        shown = Table(
            title=f"{escape(page.table)} row {row.number} (policy {escape(page.policy)})", title_justify="left"
        )
        for heading in ("column", "original", "masked", "rule"):
            shown.add_column(heading, overflow="fold")
        for column, (original, masked) in zip(page.columns, row.values, strict=True):
            shown.add_row(escape(column.name), _value(original), _value(masked), escape(column.rule))
        out.print(shown)
    last = page.offset + len(page.rows)
    out.print(f"rows {page.offset + 1}–{last} of {escape(page.table)} in primary-key order", highlight=False)


def _value(value: str | None) -> str:
    return "[dim]NULL[/dim]" if value is None else escape(value)
