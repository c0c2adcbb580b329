"""`pgveil sync`: a database copied into another with a policy's rules applied
(pgveil/services/sync.py does the work)."""

from __future__ import annotations

import json
import threading
from typing import Annotated, Any

import typer
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from pgveil.cli_common import INTERRUPTED, err, out, report_error, reports_errors, target_url
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
from pgveil.services import sync as sync_service


def register(app: typer.Typer) -> None:
    """Add `sync` to the `pgveil` application."""
    app.command("sync")(sync_command)


@reports_errors
def sync_command(
    policy: Annotated[str, typer.Option(help="The policy whose rules the rows are written with.")],
    target: Annotated[
        str | None,
        typer.Option("--target", help="postgresql:// URL of the database written to (required but for --dry-run)."),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", help="postgresql:// URL of the database read (read only); default: $DATABASE_URL."),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Units copied at once (one snapshot).")] = 1,
    table: TableOption = None,
    exclude_table: ExcludeTableOption = None,
    schema: SchemaOption = None,
    exclude_schema: ExcludeSchemaOption = None,
    schema_only: Annotated[bool, typer.Option("--schema-only", "-s", help="No rows.")] = False,
    data_only: Annotated[
        bool, typer.Option("--data-only", "-a", help="Rows into the target's existing tables, parents first.")
    ] = False,
    truncate: Annotated[
        bool, typer.Option("--truncate", help="--data-only: empty the target's tables first (no CASCADE).")
    ] = False,
    clean: Annotated[
        bool, typer.Option("--clean", help="Drop the source's objects in the target first (a non-empty target).")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted sync recorded in the target.")
    ] = False,
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
        typer.Option("--dry-run", help="Per table: rows, rules and units that would be copied; write nothing."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Copy a database into another with the policy's rules applied: schema, masked rows, sequences, constraints."""
    options = sync_service.SyncOptions(
        policy=policy,
        jobs=jobs,
        tables=tuple(table or ()),
        exclude_tables=tuple(exclude_table or ()),
        schemas=tuple(schema or ()),
        exclude_schemas=tuple(exclude_schema or ()),
        schema_only=schema_only,
        data_only=data_only,
        truncate=truncate,
        clean=clean,
        resume=resume,
        uncovered=uncovered,
        no_large_objects=no_large_objects,
        no_owner=no_owner,
        no_privileges=no_privileges,
        subset=subset_of(subset, subset_percent, subset_direction, virtual_fk),
    )
    if target is None and not dry_run:
        raise typer.BadParameter("the database to write to is required", param_hint="--target")
    source_url = target_url(source)
    if dry_run or target is None:
        _print_plan(sync_service.plan(source_url, options), as_json)
        return
    try:
        result = _sync_with_progress(source_url, target, options, show=not as_json)
    except KeyboardInterrupt:
        report_error("interrupted: the units already done are kept in the target; continue with --resume")
        raise typer.Exit(INTERRUPTED) from None
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        _print_result(result)
    if not result.ok:
        raise typer.Exit(1)


def _sync_with_progress(
    source: str, target: str, options: sync_service.SyncOptions, show: bool
) -> sync_service.SyncResult:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[units]} units, {task.completed:,.0f} rows, {task.fields[size]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    lock = threading.Lock()
    state = {"units": 0, "of": 0, "bytes": 0}
    with Progress(*columns, console=err, disable=not show) as bar:
        task = bar.add_task(f"sync ({escape(options.policy)})", total=None, units="0", size=decimal(0))

        def advance(p: sync_service.Progress) -> None:
            with lock:
                if p.phase:
                    if p.units is not None:
                        state["units"], state["of"] = p.units_done_before or 0, p.units
                        if p.units_done_before:
                            err.print(
                                f"resuming: {p.units_done_before} of {p.units} units were done before the "
                                "interruption (their rows come from that run's snapshot); the rest are copied "
                                "on a new snapshot",
                                highlight=False,
                            )
                        bar.update(task, total=p.estimated_rows or None)
                    bar.update(task, description=f"sync ({escape(options.policy)}): {p.phase}")
                    bar.update(task, units=f"{state['units']}/{state['of']}")
                    return
                state["units"] += p.unit_done
                state["bytes"] += p.bytes
                bar.update(
                    task,
                    advance=p.rows,
                    units=f"{state['units']}/{state['of']}",
                    size=decimal(state["bytes"]),
                )

        return sync_service.sync(source, target, options, advance)


def _print_result(result: sync_service.SyncResult) -> None:
    resumed = f" ({result.units_resumed} done before the interruption)" if result.units_resumed else ""
    out.print(
        f"synced {len(result.tables)} tables, {result.rows:,} rows in {result.units} units{resumed} under policy "
        f"{escape(result.policy)} in {result.seconds:.1f} s",
        highlight=False,
    )
    for t in result.count_mismatches:
        report_error(f"{t.qualified}: {t.rows_sent:,} rows sent, {t.rows_in_target:,} in the target")
    if result.invalid_constraints:
        report_error("constraints not valid in the target: " + ", ".join(result.invalid_constraints))
    if result.ok:
        out.print("checked: row counts match, every constraint is valid", highlight=False)
    if result.left_out:
        out.print(f"left out {len(result.left_out)} objects of pgveil (see --json)", highlight=False)


def _print_plan(found: sync_service.SyncPlan, as_json: bool) -> None:
    if as_json:
        doc: dict[str, Any] = {
            "tables": [
                {
                    "table": t.table.qualified,
                    "estimated_rows": t.table.estimated_rows,
                    "subset_rows": t.kept_rows,
                    "columns": [{"column": c.column, "rule": c.rule} for c in t.table.columns],
                    "units": [p.describe() for p in t.parts],
                }
                for t in found.tables
            ],
            "left_out": found.left_out,
        }
        print(json.dumps(doc, indent=2))
        return
    for t in found.tables:
        rows = (
            f"about {t.table.estimated_rows:,} rows" if t.kept_rows is None else f"{t.kept_rows:,} rows of the subset"
        )
        units = "1 unit" if len(t.parts) == 1 else f"{len(t.parts)} units (key ranges on {t.parts[0].key})"
        out.print(f"{escape(t.table.qualified)}: {rows}, {units}", highlight=False)
        grid = Table(show_header=True)
        grid.add_column("column")
        grid.add_column("rule", overflow="fold")
        for c in t.table.columns:
            grid.add_row(escape(c.column), escape(c.rule))
        out.print(grid)
