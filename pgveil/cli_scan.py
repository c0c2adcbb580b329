"""`pgveil scan`: find the personal data and propose rules (pgveil/services/scan.py decides)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress

from pgveil import preflight
from pgveil.cli_common import PROGRESS_COLUMNS, DatabaseUrl, err, out, reports_errors, target_url
from pgveil.errors import PgveilError
from pgveil.pg_anon_dicts import load_meta_dict, load_no_sens_dict, load_sens_dict
from pgveil.services import preview, scan, scan_output


def register(app: typer.Typer) -> None:
    """Add `scan` to the `pgveil` application."""
    app.command("scan")(scan_command)


def _rules(pairs: list[str] | None) -> dict[str, str]:
    rules: dict[str, str] = {}
    for pair in pairs or ():
        kind, sep, template = pair.partition("=")
        if not sep or not template.strip():
            raise PgveilError(f"--rule is KIND=RULE, e.g. email='veil.email_keep_domain(%s)' (got {pair!r})")
        rules[kind.strip()] = template.strip()
    return rules


def _write(path: Path, text: str) -> None:
    """Write whole or not at all: a reader never finds half a script."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


@reports_errors
def scan_command(
    policy: Annotated[str, typer.Option(help="The policy the proposed rules are for.")] = "mask",
    mode: Annotated[str, typer.Option(help="partial: a sample of each table; full: every row.")] = "partial",
    sample: Annotated[int, typer.Option(min=1, help="Rows sampled per table in partial mode.")] = 10_000,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Tables read at once.")] = 1,
    schema: Annotated[list[str] | None, typer.Option("--schema", "-n", help="Only this schema (repeatable).")] = None,
    table: Annotated[list[str] | None, typer.Option("--table", "-t", help="Only this table (repeatable).")] = None,
    meta_dict: Annotated[
        list[Path] | None, typer.Option("--meta-dict", help="A pg_anon meta-dictionary (repeatable; read as data).")
    ] = None,
    sens_dict: Annotated[
        Path | None, typer.Option("--sens-dict", help="A pg_anon sensitive dictionary: its columns are decided.")
    ] = None,
    no_sens_dict: Annotated[
        Path | None, typer.Option("--no-sens-dict", help="A pg_anon non-sensitive dictionary: its columns are skipped.")
    ] = None,
    previous: Annotated[
        Path | None, typer.Option("--previous", help="An earlier scan's JSON: only new or changed columns are read.")
    ] = None,
    rule: Annotated[
        list[str] | None,
        typer.Option("--rule", help="KIND=RULE: the rule for a kind, %s for the column (repeatable)."),
    ] = None,
    check: Annotated[
        list[str] | None,
        typer.Option(
            "--check",
            help="A function f(value, schema, table, column) → boolean that finds personal values (repeatable).",
        ),
    ] = None,
    not_masked: Annotated[
        bool, typer.Option("--not-masked", help="Also write NOT MASKED rules for columns judged not sensitive.")
    ] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the proposals to this file.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="sql, alembic or json.")] = "sql",
    down_revision: Annotated[
        str | None, typer.Option(help="With --format alembic: the revision the new one follows.")
    ] = None,
    no_sens_output: Annotated[
        Path | None,
        typer.Option(
            "--output-no-sens-dict", help="Also write the columns judged not sensitive as pg_anon's dictionary."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Find columns that hold personal data (by name and by validated values) and propose rules."""
    if output_format not in scan_output.FORMATS:
        raise PgveilError(f"--format is one of {', '.join(scan_output.FORMATS)} (got {output_format!r})")
    options = scan.ScanOptions(
        policy=policy,
        mode=mode,
        sample=sample,
        jobs=jobs,
        schemas=tuple(schema or ()),
        tables=tuple(table or ()),
        meta_dicts=tuple(load_meta_dict(p) for p in meta_dict or ()),
        sens_dict=load_sens_dict(sens_dict) if sens_dict else None,
        no_sens_dict=load_no_sens_dict(no_sens_dict) if no_sens_dict else None,
        previous=preview.load_scan(previous) if previous else None,
        rules=_rules(rule),
        checks=tuple(check or ()),
    )
    url = target_url(database_url)
    with (
        preflight.connect(url, autocommit=True) as conn,
        Progress(*PROGRESS_COLUMNS, console=err, disable=as_json) as bar,
    ):
        task = bar.add_task(f"scan ({mode})", total=None)

        def table_done(name: str, rows: int, tables: int) -> None:
            bar.update(task, total=tables, advance=1, description=f"scan ({mode}): {escape(name)}")

        report = scan.scan(conn, options, table_done, url=url)
    if output is not None:
        if output_format == "sql":
            text = scan_output.sql_script(report, not_masked=not_masked)
        elif output_format == "alembic":
            text = scan_output.alembic_revision(report, down_revision=down_revision, not_masked=not_masked)
        else:
            text = scan_output.json_document(report)
        _write(output, text)
    if no_sens_output is not None:
        _write(no_sens_output, scan_output.no_sens_dictionary(report))
    if as_json:
        print(scan_output.json_document(report), end="")
        return
    _print_report(report)
    if output is not None:
        out.print(f"{len(report.sensitive)} rules proposed for policy {escape(policy)} in {escape(str(output))}")


def _print_report(report: scan.ScanReport) -> None:
    # One line per column and its reason below: a table squeezes rules and reasons
    # into unreadable slivers on a narrow terminal.
    out.print(f"personal data in {len(report.sensitive)} of {len(report.columns)} columns", highlight=False)
    for c in report.sensitive:
        kind = c.kind if not c.embedded else f"{c.kind} ({', '.join(c.embedded)})"
        out.print(f"{escape(c.qualified)}: {escape(str(kind))}, {c.confidence:.2f}", highlight=False, soft_wrap=True)
        out.print(f"    {escape(c.reason)}", highlight=False)
        out.print(
            f"    rule: {escape(c.rule or '- (none the policy accepts: write one)')}", highlight=False, soft_wrap=True
        )
    for s in report.skipped:
        err.print(f"skipped {escape(s.schema)}.{escape(s.table)}: {escape(s.reason)}", highlight=False)
    for u in report.unmapped:
        err.print(f"not mapped from pg_anon: {escape(u)}", highlight=False)
