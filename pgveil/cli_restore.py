"""`pgveil restore`: a pgveil dump into a database, checked first (pgveil/services/restore.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pgveil.cli_common import err, out, reports_errors, target_url
from pgveil.services import restore as restore_service


def register(app: typer.Typer) -> None:
    """Add `restore` to the `pgveil` application."""
    app.command("restore")(restore_command)


@reports_errors
def restore_command(
    source: Annotated[
        Path, typer.Argument(help="A pgveil dump: a directory archive or a plain script (.sql, .sql.gz).")
    ],
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", "-d", help="The target: postgresql:// URL; default: $DATABASE_URL."),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="full: schema and data; schema: no rows; data: rows into an existing schema.")
    ] = "full",
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table", "-t", help="Only this table, with its indexes and constraints (schema.table; repeatable)."
        ),
    ] = None,
    exclude_table: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude-table", "-T", help="Not this table, nor what depends on it (schema.table; repeatable)."
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, help="Parallel pg_restore workers (directory archives).")
    ] = 1,
    clean: Annotated[
        bool, typer.Option("--clean", help="Drop the archive's objects first, where the target has them.")
    ] = False,
    create: Annotated[
        bool, typer.Option("--create", help="Create the target database (refused when it exists).")
    ] = False,
    pre_sql: Annotated[
        Path | None, typer.Option("--pre-sql", help="SQL run on the target before the restore, in one transaction.")
    ] = None,
    post_sql: Annotated[
        Path | None, typer.Option("--post-sql", help="SQL run on the target after the restore, in one transaction.")
    ] = None,
    no_owner: Annotated[
        bool, typer.Option("--no-owner", help="Do not set owners (else every owner role must exist on the target).")
    ] = False,
    no_privileges: Annotated[
        bool,
        typer.Option(
            "--no-privileges", help="Do not restore grants (else every granted role must exist on the target)."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Restore a pgveil dump with pg_restore or psql: checked before anything is written, undone if it fails."""
    options = restore_service.RestoreOptions(
        mode=mode,
        tables=tuple(table or ()),
        exclude_tables=tuple(exclude_table or ()),
        jobs=jobs,
        clean=clean,
        create=create,
        pre_sql=pre_sql,
        post_sql=post_sql,
        no_owner=no_owner,
        no_privileges=no_privileges,
    )
    url = target_url(database_url)
    if as_json:
        result = restore_service.restore(source, url, options)
        print(json.dumps(result.as_dict(), indent=2, sort_keys=True))
    else:
        with err.status("restore") as status:
            result = restore_service.restore(source, url, options, lambda step: status.update(f"restore: {step}"))
        _print(result)
    if not result.ok:
        if not as_json:
            names = ", ".join(f"{t.schema}.{t.table}" for t in result.mismatches)
            err.print(f"[red]error:[/red] row counts differ from the manifest: {escape(names)}", highlight=False)
        raise typer.Exit(1)


def _print(result: restore_service.RestoreResult) -> None:
    table = Table("table", "rows in the dump", "rows restored", "")
    for t in result.tables:
        restored = "missing" if t.restored is None else str(t.restored)
        table.add_row(
            escape(f"{t.schema}.{t.table}"), str(t.expected), restored, "ok" if t.ok else "[red]differs[/red]"
        )
    if result.tables:
        out.print(table)
    what = "created and restored" if result.created else "restored"
    out.print(
        f"{escape(result.database)} {what} from {escape(str(result.source))} ({result.mode}, policy "
        f"{escape(result.manifest.policy)}, {len(result.tables)} tables) in {result.seconds:.1f} s",
        highlight=False,
    )
