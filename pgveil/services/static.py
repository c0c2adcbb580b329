"""Static anonymization: a static policy applied to the data in place, a unit of
tables per committed transaction (sql/0007_static/40_anonymize.sql does the work)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from pgveil.errors import PgveilError


@dataclass(frozen=True)
class PlannedTable:
    unit: int
    table: str
    estimated_rows: int
    # The SELECT the table's rows would be rewritten from; None: nothing of it changes.
    statement: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AnonymizedTable:
    table: str
    rows: int
    rewritten: bool
    # Of the whole unit the table was rewritten in.
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_policy(conn: psycopg.Connection[Any]) -> str:
    """The database's static policy, when it has exactly one."""
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM veil_private.policies WHERE delivery = 'static' ORDER BY name"
        ).fetchall()
    ]
    if len(names) != 1:
        found = ", ".join(names) if names else "none"
        raise PgveilError(f"name the static policy to apply (static policies: {found})")
    return str(names[0])


def plan(
    conn: psycopg.Connection[Any], policy: str, tables: Sequence[str] = (), uncovered: str | None = None
) -> list[PlannedTable]:
    """What :func:`anonymize` would do, per table; changes nothing. Refusals raise."""
    rows = conn.execute(
        "SELECT unit, table_name, estimated_rows, statement FROM veil_private.anonymize_plan(%s, %s, %s::regclass[])",
        (policy, uncovered, list(tables) or None),
    ).fetchall()
    return [PlannedTable(int(r[0]), str(r[1]), int(r[2]), r[3]) for r in rows]


def anonymize(
    conn: psycopg.Connection[Any],
    policy: str,
    tables: Sequence[str] = (),
    uncovered: str | None = None,
    on_unit: Callable[[list[AnonymizedTable]], None] | None = None,
) -> list[AnonymizedTable]:
    """Anonymize the tables (every table when none are named) under a static policy,
    one committed transaction per unit; resumes an interrupted run of the same policy
    and tables. ``conn`` must be in autocommit mode."""
    row = conn.execute(
        "SELECT veil_private.anonymize_start(%s, %s, %s::regclass[])", (policy, uncovered, list(tables) or None)
    ).fetchone()
    assert row is not None
    run = int(row[0])
    done: list[AnonymizedTable] = []
    while True:
        started = time.monotonic()
        with conn.transaction():
            rows = conn.execute(
                "SELECT table_name, rows, rewritten FROM veil_private.anonymize_next(%s)", (run,)
            ).fetchall()
        if not rows:
            return done
        seconds = time.monotonic() - started
        unit = [AnonymizedTable(str(r[0]), int(r[1]), bool(r[2]), seconds) for r in rows]
        done.extend(unit)
        if on_unit is not None:
            on_unit(unit)
