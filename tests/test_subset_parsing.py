"""The subset options as written on the command line: parsed, or refused with one clear error."""

from __future__ import annotations

import pytest

from pgveil.errors import PgveilError
from pgveil.services import subset


def test_a_condition_keeps_everything_after_the_first_colon():
    assert subset.parse_condition("public.customer: store_id = 1") == ("public.customer", "store_id = 1")
    assert subset.parse_condition("\"My Schema\".t:  at > '12:30'::time") == (
        '"My Schema".t',
        "at > '12:30'::time",
    )


@pytest.mark.parametrize("text", ["public.customer", "public.customer:", "public.customer:   "])
def test_a_condition_without_table_or_expression_is_refused(text):
    with pytest.raises(PgveilError, match='--subset is "<schema>.<table>: <condition>"'):
        subset.parse_condition(text)


def test_a_percentage():
    assert subset.parse_percent("public.customer=10") == ("public.customer", 10.0)
    assert subset.parse_percent(" public.customer = 0.5 ") == ("public.customer", 0.5)
    for text in ("public.customer", "public.customer=ten", "public.customer=-1", "=5"):
        with pytest.raises(PgveilError, match="--subset-percent is"):
            subset.parse_percent(text)


def test_a_virtual_key_single_and_composite():
    assert subset.parse_virtual_key("public.audit(customer_ref) -> public.customer(customer_id)") == (
        subset.VirtualKey("public.audit", ("customer_ref",), "public.customer", ("customer_id",))
    )
    assert subset.parse_virtual_key('a.l(R, "N")->a.o( region , no )') == (
        subset.VirtualKey("a.l", ("r", "N"), "a.o", ("region", "no"))
    )


@pytest.mark.parametrize(
    "text",
    [
        "public.audit(customer_ref) public.customer(customer_id)",
        "public.audit -> public.customer(id)",
        "a(x,) -> b(y, z)",
    ],
)
def test_a_malformed_virtual_key_is_refused(text):
    with pytest.raises(PgveilError, match="--virtual-fk"):
        subset.parse_virtual_key(text)


def test_direction_and_a_virtual_key_without_a_subset_are_refused():
    with pytest.raises(PgveilError, match="--subset-direction is up, down or both"):
        subset.check(subset.Subset(conditions=(("t", "true"),), direction="sideways"))
    with pytest.raises(PgveilError, match="--virtual-fk only matters with --subset"):
        subset.check(subset.Subset(virtual_keys=(subset.VirtualKey("a", ("x",), "b", ("y",)),)))
