"""`pgveil dump`: an anonymized dump that stock pg_restore or psql loads
(pgveil/services/dump.py does the work)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from pgveil.cli_common import INTERRUPTED, DatabaseUrl, err, out, report_error, reports_errors, target_url
from pgveil.cli_export import (
    ExcludeSchemaOption,
    ExcludeTableOption,
    NoLargeObjectsOption,
    NoOwnerOption,
    NoPrivilegesOption,
    SchemaOption,
    SubsetDirectionOption,
    SubsetOption,
    SubsetPercentOption,
    TableOption,
    UncoveredOption,
    VirtualFkOption,
    subset_of,
)
from pgveil.services import dump as dump_service


def register(app: typer.Typer) -> None:
    """Add `dump` to the `pgveil` application."""
    app.command("dump")(dump_command)


@reports_errors
def dump_command(
    policy: Annotated[str, typer.Option(help="The policy whose rules the data is written with.")],
    output: Annotated[Path, typer.Option("--file", "-f", help="The archive directory (or script) to write.")],
    archive_format: Annotated[
        str, typer.Option("--format", "-F", help="directory: for pg_restore; plain: a SQL script for psql.")
    ] = "directory",
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Tables dumped at once (one snapshot).")] = 1,
    compress: Annotated[
        int | None,
        typer.Option("--compress", "-Z", min=0, max=9, help="gzip level; default: pg_dump's (plain: none)."),
    ] = None,
    table: TableOption = None,
    exclude_table: ExcludeTableOption = None,
    schema: SchemaOption = None,
    exclude_schema: ExcludeSchemaOption = None,
    schema_only: Annotated[bool, typer.Option("--schema-only", "-s", help="No data.")] = False,
    data_only: Annotated[bool, typer.Option("--data-only", "-a", help="No schema.")] = False,
    uncovered: UncoveredOption = None,
    no_large_objects: NoLargeObjectsOption = False,
    no_owner: NoOwnerOption = False,
    no_privileges: NoPrivilegesOption = False,
    subset: SubsetOption = None,
    subset_percent: SubsetPercentOption = None,
    subset_direction: SubsetDirectionOption = "down",
    virtual_fk: VirtualFkOption = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print each table's query and rows (estimated, or a subset's); write nothing."),
    ] = False,
    validate: Annotated[
        bool, typer.Option("--validate", help="Run each table's query on a few rows; report errors, write nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Dump the database with the policy's rules applied, in pg_dump's directory format or as SQL."""
    options = dump_service.DumpOptions(
        policy=policy,
        output=output,
        archive_format=archive_format,
        jobs=jobs,
        compress=compress,
        tables=tuple(table or ()),
        exclude_tables=tuple(exclude_table or ()),
        schemas=tuple(schema or ()),
        exclude_schemas=tuple(exclude_schema or ()),
        schema_only=schema_only,
        data_only=data_only,
        uncovered=uncovered,
        no_large_objects=no_large_objects,
        no_owner=no_owner,
        no_privileges=no_privileges,
        subset=subset_of(subset, subset_percent, subset_direction, virtual_fk),
    )
    url = target_url(database_url)
    if dry_run:
        _print_plan(dump_service.plan(url, options), as_json)
        return
    if validate:
        _print_validation(dump_service.validate(url, options), as_json)
        return
    try:
        result = _dump_with_progress(url, options, show=not as_json)
    except KeyboardInterrupt:
        report_error(f"interrupted: the partial output beside {output} was removed")
        raise typer.Exit(INTERRUPTED) from None
    if as_json:
        print(json.dumps(_summary(result), indent=2))
        return
    tables = result.manifest.tables
    out.print(
        f"dumped {len(tables)} tables, {sum(t.rows for t in tables):,} rows, {result.bytes:,} bytes "
        f"under policy {escape(policy)} to {escape(str(output))} in {result.seconds:.1f} s",
        highlight=False,
    )
    if result.left_out:
        out.print(f"left out {len(result.left_out)} objects of pgveil (see --json)", highlight=False)


def _dump_with_progress(url: str, options: dump_service.DumpOptions, show: bool) -> dump_service.DumpResult:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[tables]} tables, {task.completed:,.0f} rows, {task.fields[size]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    lock = threading.Lock()
    state = {"tables": 0, "bytes": 0}
    with Progress(*columns, console=err, disable=not show) as bar:
        # The bar appears with the plan's first report: a refusal comes before any.
        tasks: list[TaskID] = []

        def advance(p: dump_service.Progress) -> None:
            if p.estimated_rows is not None:
                # Estimates come from the statistics: a never analyzed table counts 0.
                description = f"dump ({escape(options.policy)})"
                tasks.append(bar.add_task(description, total=p.estimated_rows or None, tables=0, size=decimal(0)))
                return
            with lock:
                state["tables"] += p.done
                state["bytes"] += p.bytes
                bar.update(tasks[0], advance=p.rows, tables=state["tables"], size=decimal(state["bytes"]))

        return dump_service.dump(url, options, advance)


def _summary(result: dump_service.DumpResult) -> dict[str, Any]:
    return {
        "output": str(result.output),
        "seconds": round(result.seconds, 3),
        "bytes": result.bytes,
        "left_out": result.left_out,
        "manifest": result.manifest.as_dict(),
    }


def _print_plan(found: dump_service.Plan, as_json: bool) -> None:
    if as_json:
        doc = {
            "tables": [
                {
                    "table": t.qualified,
                    "estimated_rows": t.estimated_rows,
                    "subset_rows": found.kept_rows.get(t.relid),
                    "query": t.query,
                }
                for t in found.tables
            ],
            "left_out": found.left_out,
        }
        print(json.dumps(doc, indent=2))
        return
    for t in found.tables:
        kept = found.kept_rows.get(t.relid)
        rows = f"about {t.estimated_rows:,} rows" if kept is None else f"{kept:,} rows of the subset"
        out.print(f"-- {escape(t.qualified)}: {rows}", highlight=False)
        out.print(escape(t.query) + ";", highlight=False, soft_wrap=True)


def _print_validation(results: list[dump_service.Validation], as_json: bool) -> None:
    failed = [r for r in results if r.error]
    if as_json:
        print(json.dumps([{"table": r.table, "error": r.error} for r in results], indent=2))
    else:
        table = Table(title=f"validated {len(results)} tables: {len(failed)} failed", title_justify="left")
        table.add_column("table")
        table.add_column("result", overflow="fold")
        for r in results:
            table.add_row(escape(r.table), escape(r.error or "ok"))
        out.print(table)
    if failed:
        raise typer.Exit(1)
