"""`pgveil verify`: prove that a copy, a dump or a role shows no personal data.

Two checks under one command, chosen by the options given:
`--source URL --target URL | --archive DIR` judges a copy (services/verify.py);
`--role NAME` judges what a role can reach (services/verify_role.py).
Exit 0 when it passes, 1 when anything leaked or failed (and on an error).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from psycopg.conninfo import make_conninfo
from rich.markup import escape
from rich.table import Table

from pgveil import cli_verify_html
from pgveil.cli_common import DatabaseUrl, err, out, reports_errors, target_url
from pgveil.cli_export import UncoveredOption
from pgveil.errors import PgveilError
from pgveil.services import verify as verify_service
from pgveil.services import verify_role as verify_role_service
from pgveil.services.verify_leaks import LeakOptions

STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "refused": "green", "masked": "green", "leaked": "red"}


def register(app: typer.Typer) -> None:
    """Add `verify` to the `pgveil` application."""
    app.command("verify")(verify_command)


@reports_errors
def verify_command(
    source: Annotated[
        str | None,
        typer.Option("--source", help="postgresql:// URL of the source database (read); default: $DATABASE_URL."),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="postgresql:// URL of the copy to verify (a database).")
    ] = None,
    archive: Annotated[
        Path | None, typer.Option("--archive", help="A pgveil directory dump to verify instead of a database.")
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            help="The policy the copy was made under (an archive's manifest names it); default: the only one."
        ),
    ] = None,
    uncovered: UncoveredOption = None,
    min_length: Annotated[
        int, typer.Option("--min-length", help="Source values shorter than this are not looked for.")
    ] = LeakOptions.min_length,
    text_min_length: Annotated[
        int,
        typer.Option("--text-min-length", help="Source values this long or longer are also looked for inside text."),
    ] = LeakOptions.text_min_length,
    max_words: Annotated[
        int, typer.Option("--max-words", help="…when they have at most this many words.")
    ] = LeakOptions.max_tokens,
    work_mem: Annotated[
        str, typer.Option("--work-mem", help="work_mem of the searching session (the fingerprints' hash table).")
    ] = LeakOptions.work_mem,
    pattern_rows: Annotated[
        int, typer.Option("--pattern-rows", help="Rows per table the pattern checks read (0: none).")
    ] = 10_000,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the report as a standalone HTML file.")
    ] = None,
    role: Annotated[
        str | None, typer.Option("--role", help="Check what this role can reach instead of a copy.")
    ] = None,
    role_url: Annotated[
        str | None,
        typer.Option(
            "--role-url",
            help="How --role logs in; default: the database URL with its user, password from $PGVEIL_ROLE_PASSWORD.",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify that an anonymized copy or dump holds none of the source's values and is whole, or that a role cannot reach raw data."""
    if role is not None:
        if target is not None or archive is not None:
            raise PgveilError("--role checks a role in the source database: it does not go with --target or --archive")
        _verify_role(target_url(source or database_url), role, role_url, as_json, html)
        return
    options = verify_service.VerifyOptions(
        source=target_url(source or database_url),
        target=target,
        archive=archive,
        policy=policy,
        uncovered=uncovered,
        leaks=LeakOptions(
            min_length=min_length, text_min_length=text_min_length, max_tokens=max_words, work_mem=work_mem
        ),
        pattern_rows=pattern_rows,
    )
    report = verify_service.verify(options)
    if html is not None:
        html.write_text(cli_verify_html.copy_report(report))
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print_copy_report(report)
    if not report.passed:
        raise typer.Exit(1)


def _print_copy_report(report: verify_service.VerifyReport) -> None:
    scan = report.leak_scan
    out.print(
        f"verified {escape(report.searched)} against {escape(report.source)} under policy {escape(report.policy)}"
        f" (rules {report.rules_hash[:12]}…), {report.checked_at}"
    )
    out.print(
        f"leak scan: {len(scan.source_columns)} source columns ({scan.fingerprints} values) looked for in"
        f" {scan.searched_columns} columns of {scan.searched_tables} tables"
    )
    if scan.leaks:
        table = Table(title="[red]leaks[/red]: source values found in the copy")
        for column in ("source column", "found in", "rows", "how", "rows (by key, never a value)"):
            table.add_column(column)
        for leak in scan.leaks:
            table.add_row(
                escape(leak.source), escape(leak.target), str(leak.rows), leak.how, escape(", ".join(leak.keys))
            )
        out.print(table)
    else:
        out.print("[green]no source value found in the copy[/green]")
    checks = Table(title="checks")
    for column in ("check", "subject", "result", "detail"):
        checks.add_column(column)
    for check in sorted(report.checks, key=lambda c: ({"fail": 0, "warn": 1, "ok": 2}[c.status], c.kind, c.subject)):
        style = STATUS_STYLE[check.status]
        checks.add_row(check.kind, escape(check.subject), f"[{style}]{check.status}[/{style}]", escape(check.detail))
    out.print(checks)
    verdict = "[green]pass[/green]" if report.passed else "[red]FAIL[/red]"
    out.print(
        f"{verdict}: {len(scan.leaks)} leaks, {len(report.failures)} failed checks, {len(report.warnings)} warnings"
    )


def _role_url(database_url: str, role: str, role_url: str | None) -> str:
    """How the role logs in: --role-url, else the database URL with the role as its
    user and the password from $PGVEIL_ROLE_PASSWORD (libpq's ~/.pgpass otherwise)."""
    if role_url is not None:
        return role_url
    # Never the database URL's own password: an empty one makes libpq look in ~/.pgpass.
    return make_conninfo(database_url, user=role, password=os.environ.get("PGVEIL_ROLE_PASSWORD", ""))


def _verify_role(database_url: str, role: str, role_url: str | None, as_json: bool, html: Path | None) -> None:
    report = verify_role_service.verify_role(database_url, role, _role_url(database_url, role, role_url))
    if html is not None:
        html.write_text(cli_verify_html.role_report(report))
    if as_json:
        print(json.dumps({**dataclasses.asdict(report), "leaked": report.leaked}, indent=2))
    else:
        table = Table(title=f"routes to raw data tried as {escape(role)} ({report.kind} role)")
        for column in ("route", "outcome", "detail"):
            table.add_column(column)
        for route in report.routes:
            style = STATUS_STYLE.get(route.outcome, "white")
            table.add_row(escape(route.route), f"[{style}]{route.outcome}[/{style}]", escape(route.detail))
        out.print(table)
        if report.planted:
            out.print(f"markers in: {escape(', '.join(report.planted))}")
        if report.not_planted:
            err.print(f"no marker possible in: {escape(', '.join(report.not_planted))}")
        leaked = [r for r in report.routes if r.outcome == "leaked"]
        verdict = "[red]FAIL[/red]" if leaked else "[green]pass[/green]"
        out.print(f"{verdict}: {len(leaked)} of {len(report.routes)} routes reached raw data")
    if report.leaked:
        raise typer.Exit(1)
