"""The `pgveil` command line."""

from __future__ import annotations

import functools
import json
import os
from typing import Annotated, Optional

import psycopg
import typer
from alembic.util import CommandError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.exc import DBAPIError

from consumer.cli import consume
from loader.cli import load
from pgveil import config, demo as demo_flow, inventory, migrate, preflight, sandbox, status, streaming
from pgveil.errors import PgveilError

app = typer.Typer(help="pgveil: in-database privacy toolkit for PostgreSQL.", no_args_is_help=True)
sandbox_app = typer.Typer(help="A throwaway local PostgreSQL cluster.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")

out = Console()
err = Console(stderr=True)

DatabaseUrl = Annotated[
    Optional[str],
    typer.Option("--database-url", help="postgresql:// URL; default: $DATABASE_URL, else the sandbox."),
]


def reports_errors(fn):
    """Turn expected failures into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (PgveilError, CommandError) as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        except (psycopg.Error, DBAPIError) as exc:
            # A migration's database error reaches us wrapped by SQLAlchemy.
            cause = exc.orig if isinstance(exc, DBAPIError) else exc
            first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            err.print(f"[red]error:[/red] {escape(first_line)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)

    return wrapper


@sandbox_app.command("start")
@reports_errors
def sandbox_start() -> None:
    """Start the sandbox cluster (or reuse the running one) and print its URL."""
    print(sandbox.start().url)


@sandbox_app.command("url")
@reports_errors
def sandbox_url() -> None:
    """Print the running sandbox's URL; exit 1 when none is running."""
    state = sandbox.status()
    if state is None:
        raise PgveilError("no sandbox is running — start one with `pgveil sandbox start`")
    print(state.url)


@sandbox_app.command("stop")
@reports_errors
def sandbox_stop() -> None:
    """Stop the sandbox cluster and delete its data."""
    if sandbox.stop():
        err.print("sandbox stopped")


@app.command("preflight")
@reports_errors
def preflight_command(database_url: DatabaseUrl = None) -> None:
    """Check that pgveil can be installed into the target database (changes nothing)."""
    preflight.run(config.database_url(database_url))
    out.print("[green]ok[/green]: pgveil can be installed here")


@app.command("install")
@reports_errors
def install(
    database_url: DatabaseUrl = None,
    locale: Annotated[str, typer.Option(help="Faker locale of the fake-value dictionaries.")] = "en_US",
) -> None:
    """Install or upgrade the toolkit (Alembic upgrade to the toolkit's head)."""
    url = config.database_url(database_url)
    migrate.upgrade(url, locale=locale)
    _print_installed(url)


@app.command("uninstall")
@reports_errors
def uninstall(database_url: DatabaseUrl = None) -> None:
    """Remove everything the toolkit installed (Alembic downgrade to base)."""
    migrate.downgrade(config.database_url(database_url))
    out.print("pgveil removed")


@app.command("backfill")
@reports_errors
def backfill(
    table: Annotated[str, typer.Argument(help="The streamed source table, e.g. public.customer.")],
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per committed batch.")] = 10_000,
    database_url: DatabaseUrl = None,
) -> None:
    """Copy a streamed table's existing rows into its sanitized copy (resumable)."""
    with preflight.connect(config.database_url(database_url), autocommit=True) as conn:
        total = streaming.estimated_rows(conn, table)
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
        with Progress(*columns, console=err) as bar:
            task = bar.add_task(f"backfill {table}", total=total)
            copied = streaming.backfill(conn, table, batch_size, lambda n: bar.advance(task, n))
        out.print(f"{table}: {copied:,} rows copied")


@app.command("rotate-key")
@reports_errors
def rotate_key(
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per committed batch.")] = 10_000,
    database_url: DatabaseUrl = None,
) -> None:
    """Make a new token key current, re-tokenize every sanitized copy, destroy the old key."""
    with preflight.connect(config.database_url(database_url), autocommit=True) as conn:
        with err.status("re-tokenizing the sanitized copies…"):
            conn.execute("CALL veil.rekey(%s)", (batch_size,))
        version = conn.execute("SELECT version FROM veil.key_versions WHERE is_current").fetchone()[0]
    out.print(f"key version {version} is current; older keys are destroyed")


@app.command("status")
@reports_errors
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Policies, masked roles and tables, streams, and problems (exit 1 when there are any)."""
    with preflight.connect(config.database_url(database_url)) as conn:
        report = status.gather(conn)
    if as_json:
        print(json.dumps(report, default=str, indent=2))
    else:
        _print_status(report)
    if report["problems"]:
        raise typer.Exit(1)


def _print_status(report: dict) -> None:
    titles = {"policies": "policies", "masked_roles": "masked roles", "masked_tables": "masked tables",
              "streams": "streams", "problems": "problems"}
    for section, title in titles.items():
        rows = report[section]
        if not rows:
            out.print(f"{title}: none")
            continue
        table = Table(title=f"{title} ({len(rows)})", title_justify="left")
        for column in rows[0]:
            table.add_column(column.replace("_", " "))
        for row in rows:
            table.add_row(*(escape(str(v)) for v in row.values()))
        out.print(table)
    out.print(f"refresh after DDL: {report['refresh_after_ddl']}")


@app.command("refresh")
@reports_errors
def refresh_command(
    policy: Annotated[Optional[str], typer.Option(help="One policy; default: every policy delivered through views.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Rebuild mask views and re-apply masked roles (after DDL where pgveil has no event triggers)."""
    with preflight.connect(config.database_url(database_url)) as conn:
        rebuilt = status.refresh(conn, policy)
        conn.commit()
    for name, count in rebuilt.items():
        out.print(f"{name}: {count} view(s) rebuilt")


@app.command("demo")
@reports_errors
def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Leave the sandbox running afterwards.")] = False,
) -> None:
    """Install pgveil and the demo application, run live traffic, and show what each role sees."""
    started_here = False
    url = None
    try:
        if not _database_url_given():
            started_here = sandbox.status() is None
            url = sandbox.start().url
            err.print(f"sandbox: {url}", highlight=False)
        url = config.database_url(url)
        urls = demo_flow.run(url, out)
        if keep or not started_here:
            out.print("log in as the demo's roles (passwords are new each run):")
            for role, role_url in urls.items():
                out.print(f"  {role}: {role_url}", highlight=False, soft_wrap=True)
    finally:
        if started_here and not keep:
            sandbox.stop()
            err.print("sandbox stopped (use --keep to explore it)")


def _database_url_given() -> bool:
    return bool(os.environ.get("DATABASE_URL"))


# The demo application's two programs, also runnable as python -m loader / consumer.
app.command("load")(load)
app.command("consume")(consume)
def _print_installed(url: str) -> None:
    with preflight.connect(url) as conn:
        version = inventory.installed_version(conn)
        table = Table(title=f"pgveil {version} installed")
        table.add_column("schema")
        table.add_column("objects")
        table.add_column("count", justify="right")
        for schema, kind, count in inventory.objects_by_schema(conn):
            table.add_row(schema, kind, str(count))
        out.print(table)
