"""`pgveil report`: measurements of re-identification risk (counts, never values)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pgveil.cli_common import DatabaseUrl, err, out, reports_errors, target_url
from pgveil.errors import PgveilError
from pgveil.services import k_anonymity as k_anonymity_service

report_app = typer.Typer(help="Measure re-identification risk: counts of rows, never values.", no_args_is_help=True)


def _columns(values: list[str]) -> list[str]:
    """--qi's columns: comma-separated, repeatable."""
    columns = [c.strip() for value in values for c in value.split(",")]
    if not columns or not all(columns):
        raise PgveilError(f"--qi names columns separated by commas (got {','.join(values)!r})")
    return columns


@report_app.command("k-anonymity")
@reports_errors
def k_anonymity_command(
    table: Annotated[str, typer.Argument(help="A table, view or sanitized copy, e.g. public.customer.")],
    qi: Annotated[
        list[str],
        typer.Option("--qi", help="The quasi-identifier columns, comma-separated (repeatable): e.g. zip,birth_date."),
    ],
    threshold: Annotated[int, typer.Option(help="Count the classes with fewer rows than this.")] = 5,
    sensitive: Annotated[
        str | None, typer.Option(help="A sensitive column: also measure l-diversity (distinct values per class).")
    ] = None,
    policy: Annotated[
        str | None, typer.Option(help="Measure the table's output under this policy, not the table (governors only).")
    ] = None,
    min_k: Annotated[
        int | None, typer.Option("--min-k", min=1, help="Exit 1 when k is below this (a gate for CI).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the measure as JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """k-anonymity of TABLE over the quasi-identifiers, and l-diversity of a sensitive column."""
    measure = k_anonymity_service.k_anonymity(
        target_url(database_url), table, _columns(qi), threshold=threshold, sensitive=sensitive, policy=policy
    )
    # An empty table has no one to single out: it passes any --min-k.
    below = min_k is not None and measure.k is not None and measure.k < min_k
    if as_json:
        data = measure.as_dict()
        if min_k is not None:
            data["min_k"] = min_k
            data["ok"] = not below
        print(json.dumps(data, indent=2))
    else:
        _render(measure)
    if below:
        err.print(f"k = {measure.k} is below --min-k {min_k}", highlight=False)
        raise typer.Exit(1)


def _render(m: k_anonymity_service.KAnonymity) -> None:
    over = ", ".join(m.quasi_identifiers)
    source = m.table if m.policy is None else f"{m.table} under policy {m.policy}"
    table = Table(title=f"k-anonymity of {escape(source)} over ({escape(over)})", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("k (smallest class)", "-" if m.k is None else str(m.k))
    table.add_row("rows", str(m.total_rows))
    table.add_row("classes", str(m.classes))
    table.add_row(f"classes smaller than {m.threshold}", str(m.classes_below_threshold))
    table.add_row(
        f"rows in classes smaller than {m.threshold}", f"{m.rows_below_threshold} ({m.share_below_threshold:.2%})"
    )
    table.add_row("smallest class sizes", ", ".join(map(str, m.smallest_classes)) or "-")
    if m.sensitive is not None:
        table.add_row(f"l-diversity of {escape(m.sensitive)}", "-" if m.l_diversity is None else str(m.l_diversity))
        table.add_row(f"classes with one value of {escape(m.sensitive)}", str(m.classes_not_diverse))
    out.print(table)
