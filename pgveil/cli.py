"""The `pgveil` command line: parses arguments, calls the services, renders their results.

The target database is resolved here, once (:func:`pgveil.cli_common.target_url`),
and passed down. The demo application's commands (`demo`, `load`, `consume`)
are attached by :mod:`pgveil.cli_demo` when the demo application is importable:
in a checkout, not from a wheel.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from pgveil import (
    cli_api,
    cli_audit,
    cli_change_log,
    cli_dump,
    cli_report,
    cli_restore,
    cli_review,
    cli_scan,
    cli_sync,
    cli_verify,
    preflight,
    sandbox,
)
from pgveil.cli_common import PROGRESS_COLUMNS, DatabaseUrl, err, out, reports_errors, target_url
from pgveil.errors import PgveilError
from pgveil.services import install as install_service
from pgveil.services import masking, static, streaming

app = typer.Typer(help="pgveil: in-database privacy toolkit for PostgreSQL.", no_args_is_help=True)
sandbox_app = typer.Typer(help="A throwaway local PostgreSQL cluster.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


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
    install_service.preflight(target_url(database_url))
    out.print("[green]ok[/green]: pgveil can be installed here")


@app.command("install")
@reports_errors
def install(
    database_url: DatabaseUrl = None,
    locale: Annotated[str, typer.Option(help="Faker locale of the fake-value dictionaries.")] = "en_US",
    faker_provider: Annotated[
        list[str] | None,
        typer.Option(
            help="An extra Faker method (e.g. ssn, license_plate) whose dictionary is loaded for"
            " veil.fake_value('<name>'); repeatable. List them with `faker -l <locale>`."
        ),
    ] = None,
) -> None:
    """Install or upgrade the toolkit (Alembic upgrade to the toolkit's head)."""
    installed = install_service.install(target_url(database_url), locale=locale, faker_providers=faker_provider or ())
    table = Table(title=f"pgveil {installed.version} installed")
    table.add_column("schema")
    table.add_column("objects")
    table.add_column("count", justify="right")
    for entry in installed.objects:
        table.add_row(entry.schema, entry.kind, str(entry.count))
    out.print(table)


@app.command("uninstall")
@reports_errors
def uninstall(database_url: DatabaseUrl = None) -> None:
    """Remove everything the toolkit installed (Alembic downgrade to base, and its version table)."""
    if not install_service.uninstall(target_url(database_url)):
        err.print("pgveil_version kept: it records revisions that are not pgveil's")
    out.print("pgveil removed")


@app.command("backfill")
@reports_errors
def backfill(
    table: Annotated[str, typer.Argument(help="The streamed source table, e.g. public.customer.")],
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per committed batch.")] = 10_000,
    database_url: DatabaseUrl = None,
) -> None:
    """Copy a streamed table's existing rows into its sanitized copy (resumable)."""
    with preflight.connect(target_url(database_url), autocommit=True) as conn:
        total = streaming.estimated_rows(conn, table)
        with Progress(*PROGRESS_COLUMNS, console=err) as bar:
            task = bar.add_task(f"backfill {table}", total=total)
            copied = streaming.backfill(conn, table, batch_size, lambda n: bar.advance(task, n))
        out.print(f"{table}: {copied:,} rows copied")


UNCOVERED = ("refuse", "keep", "null")


@app.command("anonymize")
@reports_errors
def anonymize_command(
    policy: Annotated[str | None, typer.Option(help="The static policy; default: the database's only one.")] = None,
    table: Annotated[
        list[str] | None, typer.Option("--table", "-t", help="A table to anonymize (repeatable); default: all.")
    ] = None,
    uncovered: Annotated[
        str | None,
        typer.Option(help="For this run, columns without a rule: refuse, keep or null; default: the policy's option."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be done; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Rewrite tables in place under a static policy, irreversibly; one transaction per unit, resumable."""
    if uncovered is not None and uncovered not in UNCOVERED:
        raise PgveilError(f"--uncovered is one of {', '.join(UNCOVERED)} (got {uncovered!r})")
    with preflight.connect(target_url(database_url), autocommit=True) as conn:
        chosen = policy or static.default_policy(conn)
        planned = static.plan(conn, chosen, table or (), uncovered)
        if dry_run:
            _print_plan(planned, as_json)
            return
        total = sum(p.estimated_rows for p in planned if p.statement is not None)
        with Progress(*PROGRESS_COLUMNS, console=err, disable=as_json) as bar:
            task = bar.add_task(f"anonymize ({chosen})", total=total or None)

            def unit_done(unit: list[static.AnonymizedTable]) -> None:
                for t in unit:
                    rate = f"{t.rows / t.seconds:,.0f} rows/s" if t.seconds > 0 else ""
                    state = f"{t.rows:,} rows rewritten ({rate})" if t.rewritten else "nothing to change"
                    bar.console.print(f"{escape(t.table)}: {state}", highlight=False)
                    bar.advance(task, t.rows)

            done = static.anonymize(conn, chosen, table or (), uncovered, unit_done)
    if as_json:
        print(json.dumps({"policy": chosen, "tables": [t.as_dict() for t in done]}, indent=2))
    else:
        rewritten = [t for t in done if t.rewritten]
        out.print(
            f"{len(rewritten)} tables anonymized under policy {escape(chosen)}, {sum(t.rows for t in rewritten):,} rows"
        )


def _print_plan(planned: list[static.PlannedTable], as_json: bool) -> None:
    if as_json:
        print(json.dumps([p.as_dict() for p in planned], indent=2))
        return
    for p in planned:
        rows = f"~{p.estimated_rows:,} rows"
        out.print(f"-- unit {p.unit}: {escape(p.table)} ({rows})", highlight=False)
        # Unwrapped: a line break inside a quoted literal would change the statement.
        out.print(
            escape(p.statement + ";") if p.statement else "-- nothing of it changes", highlight=False, soft_wrap=True
        )


@app.command("rotate-key")
@reports_errors
def rotate_key(
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per committed batch.")] = 10_000,
    database_url: DatabaseUrl = None,
) -> None:
    """Make a new token key current, re-tokenize every sanitized copy, destroy the old key."""
    with (
        preflight.connect(target_url(database_url), autocommit=True) as conn,
        err.status("re-tokenizing the sanitized copies…"),
    ):
        version = streaming.rekey(conn, batch_size)
    out.print(f"key version {version} is current; older keys are destroyed")


@app.command("status")
@reports_errors
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Policies, masked roles and tables, streams, and problems (exit 1 when there are any,
    a broken or stale stream included)."""
    with preflight.connect(target_url(database_url)) as conn:
        report = masking.status(conn)
    if as_json:
        print(json.dumps(report.as_dict(), default=str, indent=2))
    else:
        _print_status(report)
    if report.problems:
        raise typer.Exit(1)


SECTION_TITLES = {
    "policies": "policies",
    "masked_roles": "masked roles",
    "masked_tables": "masked tables",
    "streams": "streams",
    "problems": "problems",
}


def _print_status(report: masking.StatusReport) -> None:
    for section in report.sections():
        title = SECTION_TITLES.get(section, section.replace("_", " "))
        rows: list[dict[str, Any]] = report.rows(section)
        if not rows:
            out.print(f"{title}: none")
            continue
        table = Table(title=f"{title} ({len(rows)})", title_justify="left")
        for column in rows[0]:
            table.add_column(column.replace("_", " "), overflow="fold")
        for row in rows:
            table.add_row(*(escape("-" if v is None else str(v)) for v in row.values()))
        out.print(table)
    out.print(f"refresh after DDL: {report.refresh_after_ddl}")


@app.command("refresh")
@reports_errors
def refresh_command(
    policy: Annotated[
        str | None, typer.Option(help="One policy; default: every policy delivered through views or as a copy.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per committed batch of a stream's backfill.")] = 10_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was done as JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Rebuild mask views and re-apply masked roles (after DDL where pgveil has no event triggers);
    rebuild and backfill streams that DDL broke or left stale, and drop the copies of dropped tables.
    Exit 1 when a stream could not be repaired."""
    with (
        preflight.connect(target_url(database_url), autocommit=True) as conn,
        Progress(*PROGRESS_COLUMNS, console=err, disable=as_json, transient=True) as bar,
    ):
        tasks: dict[str, Any] = {}

        def backfilled(source: str, rows: int) -> None:
            if source not in tasks:
                tasks[source] = bar.add_task(f"backfill {escape(source)}", total=None)
            bar.advance(tasks[source], rows)

        report = masking.refresh_all(conn, policy, batch_size, backfilled)
    if as_json:
        print(json.dumps(report.as_dict(), default=str, indent=2))
    else:
        for name, count in report.views.items():
            out.print(f"{escape(name)}: {count} view(s) rebuilt")
        if report.views_error is not None:
            out.print(
                f"[red]mask views not rebuilt:[/red] {escape(report.views_error)}", highlight=False, soft_wrap=True
            )
        for stream in report.streams:
            if stream.action == "rebuilt":
                done = f"{stream.problem} stream rebuilt, {stream.rows:,} rows backfilled into {escape(stream.target)}"
            elif stream.action == "copy dropped":
                done = "its source table was dropped; the stream and the copy are gone"
            else:
                done = f"[red]{stream.problem} stream not repaired:[/red] {escape(stream.error or '')}"
            out.print(f"{escape(stream.source)}: {done}", highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


def _attach_demo_commands(cli: typer.Typer) -> bool:
    """Add `demo`, `load` and `consume` when the demo application is importable (a
    checkout); a wheel ships the toolkit only. True when they were added."""
    try:
        import pgveil.cli_demo as cli_demo
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in ("demo", "loader", "consumer") or exc.name == "pgveil.cli_demo":
            return False
        raise
    cli_demo.register(cli)
    return True


cli_scan.register(app)
cli_review.register(app)
cli_audit.register(app)
cli_dump.register(app)
cli_restore.register(app)
cli_sync.register(app)
cli_verify.register(app)
cli_api.register(app)
app.add_typer(cli_report.report_app, name="report")
app.add_typer(cli_change_log.change_log_app, name="change-log")
_attach_demo_commands(app)
