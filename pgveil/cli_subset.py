"""The subset options `pgveil dump` and `pgveil sync` share (docs/subset.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from pgveil.services import subset

SubsetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--subset",
        help='Keep the rows of a table meeting a condition, and what they are linked to: "public.customer: store_id = 1" (repeatable).',
    ),
]
SubsetPercentOption = Annotated[
    list[str] | None,
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
    list[str] | None,
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
