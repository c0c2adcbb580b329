"""Subsets closed under foreign keys (docs/subset.md): which rows of the exported
tables a dump or a sync keeps.

The selection is computed in the database on the export's snapshot by
``veil.subset`` (sql/0010_subset/): one recursive query, carried by the export query
of every table it restricts, so each reader computes the same rows set-based, and no
key reaches Python.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from pgveil.errors import PgveilError, server_message

DIRECTIONS = ("up", "down", "both")

_CONDITION = re.compile(r"^\s*(?P<table>[^:]+?)\s*:(?P<condition>.*)$", re.S)
_PERCENT = re.compile(r"^\s*(?P<table>[^=]+?)\s*=\s*(?P<percent>[0-9]+(?:\.[0-9]+)?)\s*$")
_SIDE = r"\s*(?P<{0}>[^()]+?)\s*\((?P<{0}_columns>[^()]*)\)\s*"
_VIRTUAL_KEY = re.compile("^" + _SIDE.format("child") + "->" + _SIDE.format("parent") + "$")


@dataclass(frozen=True)
class VirtualKey:
    """A relationship no foreign key declares: child(columns) references parent(columns)."""

    child: str
    child_columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "child": self.child,
            "child_columns": list(self.child_columns),
            "parent": self.parent,
            "parent_columns": list(self.parent_columns),
        }


@dataclass(frozen=True)
class Subset:
    """Seeds (rows matching a table's condition; a sample of a table's rows, in
    percent), which way the closure follows foreign keys, and virtual keys."""

    conditions: tuple[tuple[str, str], ...] = ()
    percents: tuple[tuple[str, float], ...] = ()
    direction: str = "down"
    virtual_keys: tuple[VirtualKey, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.conditions or self.percents)

    def shape(self) -> dict[str, Any] | None:
        """What a manifest records of the subset: not the conditions' text, which
        may quote a value."""
        if not self.active:
            return None
        return {
            "direction": self.direction,
            "seeds": [{"table": t, "condition": True} for t, _ in self.conditions]
            + [{"table": t, "percent": p} for t, p in self.percents],
            "virtual_keys": [k.as_dict() for k in self.virtual_keys],
        }

    def seeds(self) -> list[dict[str, Any]]:
        return [{"table": t, "condition": c} for t, c in self.conditions] + [
            {"table": t, "percent": p} for t, p in self.percents
        ]


@dataclass(frozen=True)
class Restriction:
    """How the export query of a table keeps only the subset's rows (on its alias
    ``src``): self-contained, a WITH clause (the same for every table) and a
    condition, the selection evaluated by the query itself; or stored, after
    ``store_places`` ran once in the reading transaction (the same for every table:
    it keeps every table's places in transaction-local settings), a condition
    reading them."""

    with_clause: str
    condition: str
    store_places: str
    stored_condition: str


def parse_condition(text: str) -> tuple[str, str]:
    """``"public.customer: store_id = 1"`` → (table, condition)."""
    match = _CONDITION.match(text)
    if match is None or not match["condition"].strip():
        raise PgveilError(f'--subset is "<schema>.<table>: <condition>" (got {text!r})')
    return match["table"], match["condition"].strip()


def parse_percent(text: str) -> tuple[str, float]:
    """``"public.customer=10"`` → (table, 10.0)."""
    match = _PERCENT.match(text)
    if match is None:
        raise PgveilError(f'--subset-percent is "<schema>.<table>=<percent>" (got {text!r})')
    return match["table"], float(match["percent"])


def parse_virtual_key(text: str) -> VirtualKey:
    """``"public.audit(customer_ref) -> public.customer(customer_id)"``."""
    match = _VIRTUAL_KEY.match(text)
    if match is None:
        raise PgveilError(
            f'--virtual-fk is "<schema>.<table>(<columns>) -> <schema>.<table>(<columns>)" (got {text!r})'
        )

    def columns(listed: str) -> tuple[str, ...]:
        found = tuple(_column_name(c.strip()) for c in listed.split(","))
        if not all(found):
            raise PgveilError(f"--virtual-fk names an empty column (got {text!r})")
        return found

    return VirtualKey(
        match["child"], columns(match["child_columns"]), match["parent"], columns(match["parent_columns"])
    )


def _column_name(written: str) -> str:
    """A column's name as SQL reads it: quoted verbatim, unquoted folded to lower case."""
    if len(written) > 1 and written[0] == written[-1] == '"':
        return written[1:-1].replace('""', '"')
    return written.lower()


def check(subset: Subset) -> None:
    if subset.direction not in DIRECTIONS:
        raise PgveilError(f"--subset-direction is up, down or both (got {subset.direction!r})")
    if subset.virtual_keys and not subset.active:
        raise PgveilError("--virtual-fk only matters with --subset or --subset-percent")


def restrictions(conn: psycopg.Connection[Any], relids: Sequence[int], subset: Subset) -> dict[int, Restriction]:
    """The tables the subset restricts, and how; refuses a subset that cannot be
    computed before anything is read."""
    if not subset.active:
        return {}
    try:
        rows = conn.execute(
            "SELECT relid, with_clause, condition, store_places, stored_condition"
            " FROM veil.subset(%s::oid[]::regclass[], %s::jsonb, %s, %s::jsonb)",
            (
                list(relids),
                json.dumps(subset.seeds()),
                subset.direction,
                json.dumps([k.as_dict() for k in subset.virtual_keys]),
            ),
        ).fetchall()
    except psycopg.Error as e:
        raise PgveilError(server_message(e)) from None
    return {int(r[0]): Restriction(str(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows}


def kept_rows(conn: psycopg.Connection[Any], restricted: dict[int, Restriction]) -> dict[int, int]:
    """How many rows the subset keeps in each table it restricts (one evaluation)."""
    if not restricted:
        return {}
    with_clause = next(iter(restricted.values())).with_clause
    counted = conn.execute(
        with_clause + " SELECT k.rel::bigint, pg_catalog.count(*) FROM veil_kept AS k GROUP BY k.rel"
    )
    found = {int(rel): int(n) for rel, n in counted}
    return {relid: found.get(relid, 0) for relid in restricted}
