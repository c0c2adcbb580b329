"""`pgveil change-log`: the change log's size and consumers, its retention, and trimming."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pgveil import preflight
from pgveil.cli_common import DatabaseUrl, err, out, reports_errors, target_url
from pgveil.errors import PgveilError
from pgveil.services import change_log

change_log_app = typer.Typer(
    help="The change log of the sanitized copies: consumers' positions, retention, trimming.", no_args_is_help=True
)

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_age(text: str) -> timedelta | None:
    """'none', or a number with s, m, h or d: 90m, 7d."""
    if text.strip().lower() == "none":
        return None
    found = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if not found or int(found[1]) == 0:
        raise PgveilError(f"--max-age is a positive number with s, m, h or d (e.g. 7d), or none (got {text!r})")
    return timedelta(**{UNITS[found[2]]: int(found[1])})


@change_log_app.command("status")
@reports_errors
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Entries, retention and every consumer's acknowledged position (exit 1 when a
    consumer fell behind retention)."""
    with preflight.connect(target_url(database_url)) as conn:
        report = change_log.status(conn)
    if as_json:
        print(json.dumps(report.as_dict(), default=str, indent=2))
    else:
        age = "none" if report.max_age is None else str(report.max_age)
        out.print(
            f"{report.entries:,} entries (oldest {report.oldest or '-'}); readable below {report.horizon};"
            f" trimmed through {report.trimmed_through}; maximum age {age}",
            highlight=False,
        )
        table = Table(title=f"consumers ({len(report.consumers)})", title_justify="left")
        for column in ("role", "position", "acknowledged at", "behind retention"):
            table.add_column(column)
        for c in report.consumers:
            table.add_row(
                escape(c.role),
                c.position,
                str(c.acknowledged_at or "-"),
                "[red]yes[/red]" if c.behind_retention else "no",
            )
        out.print(table)
    if report.behind:
        err.print(f"behind retention (must resync): {escape(', '.join(report.behind))}", highlight=False)
        raise typer.Exit(1)


@change_log_app.command("trim")
@reports_errors
def trim_command(
    batch_size: Annotated[int, typer.Option(min=1, help="Entries per committed batch.")] = 10_000,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete the entries every consumer has acknowledged, and those older than the maximum age."""
    with preflight.connect(target_url(database_url), autocommit=True) as conn:
        trimmed = change_log.trim(conn, batch_size)
    out.print(f"{trimmed:,} entries trimmed")


@change_log_app.command("retention")
@reports_errors
def retention_command(
    max_age: Annotated[
        str, typer.Option("--max-age", help="Trim entries older than this even if unacknowledged: 7d, 12h, or none.")
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Set the maximum age of change-log entries (a consumer that falls behind it must resync)."""
    age = parse_age(max_age)
    with preflight.connect(target_url(database_url)) as conn:
        change_log.set_retention(conn, age)
    out.print(f"maximum age: {'none' if age is None else age}")
