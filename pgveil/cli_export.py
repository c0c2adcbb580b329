"""The options `pgveil dump` and `pgveil sync` share: what is exported (pg_dump's
patterns, uncovered columns, large objects, ownership and grants) and subsets
(docs/subset.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from pgveil.services import subset

Patterns = list[str] | None

TableOption = Annotated[Patterns, typer.Option("--table", "-t", help="pg_dump table pattern (repeatable).")]
ExcludeTableOption = Annotated[Patterns, typer.Option("--exclude-table", "-T", help="Table pattern to leave out.")]
SchemaOption = Annotated[Patterns, typer.Option("--schema", "-n", help="pg_dump schema pattern (repeatable).")]
ExcludeSchemaOption = Annotated[Patterns, typer.Option("--exclude-schema", "-N", help="Schema pattern to leave out.")]
UncoveredOption = Annotated[
    str | None,
    typer.Option(help="Columns without a rule: refuse (list them), keep or null; default: the policy's option."),
]
NoLargeObjectsOption = Annotated[
    bool, typer.Option("--no-large-objects", help="Leave large objects out (no rule can mask them).")
]
NoOwnerOption = Annotated[
    bool, typer.Option("--no-owner", "-O", help="No ownership commands (a server without the source's roles).")
]
NoPrivilegesOption = Annotated[
    bool, typer.Option("--no-privileges", "-x", help="No grants (a server without the source's roles).")
]
SubsetOption = Annotated[
    Patterns,
    typer.Option(
        "--subset",
        help='Keep the rows of a table meeting a condition, and what they are linked to: "public.customer: store_id = 1" (repeatable).',
    ),
]
SubsetPercentOption = Annotated[
    Patterns,
    typer.Option(
        "--subset-percent",
        help='Keep a sample of a table\'s rows, and what they are linked to: "public.customer=10" (repeatable).',
    ),
]
SubsetDirectionOption = Annotated[
    str,
    typer.Option(
        "--subset-direction",
        help="up: the rows kept and what they reference; down: also what references them; both: all that is linked.",
    ),
]
VirtualFkOption = Annotated[
    Patterns,
    typer.Option(
        "--virtual-fk",
        help='A link no foreign key declares: "public.audit(customer_ref) -> public.customer(customer_id)" (repeatable).',
    ),
]


def subset_of(
    conditions: list[str] | None, percents: list[str] | None, direction: str, virtual_keys: list[str] | None
) -> subset.Subset:
    return subset.Subset(
        tuple(subset.parse_condition(c) for c in conditions or ()),
        tuple(subset.parse_percent(p) for p in percents or ()),
        direction,
        tuple(subset.parse_virtual_key(k) for k in virtual_keys or ()),
    )
