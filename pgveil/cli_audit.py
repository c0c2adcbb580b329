"""`pgveil audit`: the coverage gate for CI (exit 1 and a list of problems, else exit 0)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pgveil import preflight
from pgveil.cli_common import DatabaseUrl, out, reports_errors, target_url
from pgveil.services import audit as audit_service


def register(app: typer.Typer) -> None:
    """Add the `audit` command to ``app``."""

    @app.command("audit")
    @reports_errors
    def audit_command(
        policy: Annotated[
            list[str] | None,
            typer.Option("--policy", help="A policy to audit (repeatable); default: every policy."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
        database_url: DatabaseUrl = None,
    ) -> None:
        """Exit 1 with a list when a covered table has a column without a rule, a rule no longer
        validates, a masked role or consumer can read raw data, or a stream needs a backfill, is
        broken or stale after DDL (pgveil refresh repairs it) or streams a dropped table."""
        with preflight.connect(target_url(database_url)) as conn:
            report = audit_service.audit(conn, policy or None)
        if as_json:
            print(json.dumps(report.as_dict(), default=str, indent=2))
        else:
            render(report)
        if not report.ok:
            raise typer.Exit(1)


def render(report: audit_service.AuditReport) -> None:
    """The report as a table of problems, or one line when there are none."""
    if report.ok:
        out.print(
            f"audit passed: {len(report.policies)} policies, {report.tables} tables, {report.columns} columns covered"
        )
        return
    table = Table(title=f"audit failed: {len(report.problems)} problems", title_justify="left")
    for column in ("policy", "problem", "object", "how to fix"):
        table.add_column(column, overflow="fold")
    for problem in report.problems:
        table.add_row(
            escape(problem.policy or "-"), escape(problem.problem), escape(problem.object), escape(problem.detail)
        )
    out.print(table)
