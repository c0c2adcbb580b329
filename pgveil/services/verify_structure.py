"""The structural checks of ``pgveil verify``: is the copy whole and consistent?

Every foreign key is checked against the rows (an anti-join), not only its
``convalidated`` flag: a load with triggers off (``session_replication_role =
replica``) keeps a constraint marked valid over rows that break it. Every
primary key and unique constraint is checked alike (a GROUP BY), every sequence
owned by a column against the column's largest value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgveil.services.verify_leaks import USER_SCHEMA


@dataclass(frozen=True)
class Check:
    kind: str  # "row count", "foreign key", "unique", "sequence", "policy", "pattern"
    subject: str
    status: str  # "ok", "warn" or "fail"
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "status": self.status, "detail": self.detail}


# A table by (schema, name).
TableName = tuple[str, str]


def shown(table: TableName) -> str:
    return f"{table[0]}.{table[1]}"


@dataclass(frozen=True)
class ForeignKey:
    name: str
    child: TableName
    child_columns: tuple[str, ...]
    parent: TableName
    parent_columns: tuple[str, ...]
    validated: bool = True


@dataclass(frozen=True)
class UniqueKey:
    name: str
    table: TableName
    columns: tuple[str, ...]


@dataclass(frozen=True)
class OwnedSequence:
    sequence: str  # as pg_dump's setval names it (regclass text)
    table: TableName
    column: str
    # The value the sequence stands at (None: never used), and the column's type.
    last_value: int | None
    column_type: str = ""


FOREIGN_KEYS = f"""
SELECT k.conname, n.nspname, c.relname, k.convalidated,
       ARRAY(SELECT a.attname FROM pg_catalog.unnest(k.conkey) WITH ORDINALITY AS x(attnum, i)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = x.attnum ORDER BY x.i),
       pn.nspname, p.relname,
       ARRAY(SELECT a.attname FROM pg_catalog.unnest(k.confkey) WITH ORDINALITY AS x(attnum, i)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = x.attnum ORDER BY x.i)
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_class p ON p.oid = k.confrelid
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
WHERE k.contype = 'f' AND k.conparentid = 0 AND {USER_SCHEMA}
ORDER BY 2, 3, 1
"""

UNIQUE_KEYS = f"""
SELECT k.conname, n.nspname, c.relname,
       ARRAY(SELECT a.attname FROM pg_catalog.unnest(k.conkey) WITH ORDINALITY AS x(attnum, i)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = x.attnum ORDER BY x.i)
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE k.contype IN ('p', 'u') AND k.conparentid = 0 AND {USER_SCHEMA}
ORDER BY 2, 3, 1
"""

OWNED_SEQUENCES = f"""
SELECT s.oid::pg_catalog.regclass::text, n.nspname, c.relname, a.attname, q.last_value,
       pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_depend d
JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_catalog.pg_class c ON c.oid = d.refobjid AND c.relkind IN ('r', 'p')
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
LEFT JOIN pg_catalog.pg_sequences q ON q.schemaname = sn.nspname AND q.sequencename = s.relname
WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i') AND {USER_SCHEMA}
ORDER BY 1
"""


def _identifier(table: TableName) -> sql.Composable:
    return sql.Identifier(*table)


# What a session reads for a table: the table itself, or an archive's rows.
Relation = Callable[[TableName], sql.Composable]


def foreign_keys(conn: psycopg.Connection[Any], skipped: Sequence[str]) -> list[ForeignKey]:
    return [
        ForeignKey(str(r[0]), (str(r[1]), str(r[2])), tuple(r[4]), (str(r[5]), str(r[6])), tuple(r[7]), bool(r[3]))
        for r in conn.execute(FOREIGN_KEYS, {"skipped": list(skipped)})
    ]


def unique_keys(conn: psycopg.Connection[Any], skipped: Sequence[str]) -> list[UniqueKey]:
    return [
        UniqueKey(str(r[0]), (str(r[1]), str(r[2])), tuple(r[3]))
        for r in conn.execute(UNIQUE_KEYS, {"skipped": list(skipped)})
    ]


def owned_sequences(conn: psycopg.Connection[Any], skipped: Sequence[str]) -> list[OwnedSequence]:
    return [
        OwnedSequence(str(r[0]), (str(r[1]), str(r[2])), str(r[3]), None if r[4] is None else int(r[4]), str(r[5]))
        for r in conn.execute(OWNED_SEQUENCES, {"skipped": list(skipped)})
    ]


def _scalar(conn: psycopg.Connection[Any], query: sql.Composed) -> Any:
    found = conn.execute(query).fetchone()
    assert found is not None
    return found[0]


def check_foreign_keys(
    conn: psycopg.Connection[Any], keys: Iterable[ForeignKey], relation: Relation = _identifier
) -> list[Check]:
    """Each key's orphans: child rows whose (non-null) columns match no parent row.
    ``relation`` maps a table's name to what the session reads for it."""
    checks = []
    for key in keys:
        subject = f"{shown(key.child)} {key.name}"
        if not key.validated:
            checks.append(Check("foreign key", subject, "fail", "NOT VALID: PostgreSQL has not checked its rows"))
            continue
        query = sql.SQL(
            "SELECT pg_catalog.count(*) FROM {child} AS c WHERE {not_null}"
            " AND NOT EXISTS (SELECT FROM {parent} AS p WHERE {match})"
        ).format(
            child=relation(key.child),
            parent=relation(key.parent),
            not_null=sql.SQL(" AND ").join(
                sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c)) for c in key.child_columns
            ),
            match=sql.SQL(" AND ").join(
                sql.SQL("p.{} = c.{}").format(sql.Identifier(p), sql.Identifier(c))
                for c, p in zip(key.child_columns, key.parent_columns, strict=True)
            ),
        )
        orphans = _count(conn, query)
        if orphans is None:
            checks.append(Check("foreign key", subject, "fail", "could not be checked"))
        elif orphans:
            checks.append(
                Check("foreign key", subject, "fail", f"{orphans} rows reference no row of {shown(key.parent)}")
            )
        else:
            checks.append(Check("foreign key", subject, "ok", f"every row references a row of {shown(key.parent)}"))
    return checks


def check_unique_keys(
    conn: psycopg.Connection[Any], keys: Iterable[UniqueKey], relation: Relation = _identifier
) -> list[Check]:
    """Each key's duplicated (non-null) values, counted."""
    checks = []
    for key in keys:
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in key.columns)
        query = sql.SQL(
            "SELECT pg_catalog.count(*) FROM (SELECT FROM {table} WHERE {not_null} GROUP BY {columns}"
            " HAVING pg_catalog.count(*) > 1) AS d"
        ).format(
            table=relation(key.table),
            columns=columns,
            not_null=sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in key.columns),
        )
        duplicated = _count(conn, query)
        subject = f"{shown(key.table)} {key.name}"
        if duplicated is None:
            checks.append(Check("unique", subject, "fail", "could not be checked"))
        elif duplicated:
            checks.append(Check("unique", subject, "fail", f"{duplicated} values occur more than once"))
        else:
            checks.append(Check("unique", subject, "ok", f"({', '.join(key.columns)}) unique"))
    return checks


def check_sequences(
    conn: psycopg.Connection[Any],
    sequences: Iterable[OwnedSequence],
    relation: Relation = _identifier,
    as_text: bool = False,
) -> list[Check]:
    """Each sequence owned by a column stands at or above the column's largest
    value, so the copy's next insert takes a free number. ``as_text``: the
    session reads the column as text (an archive's rows), cast back to its type
    (format_type's name, from the catalog)."""
    checks = []
    for seq in sequences:
        column = sql.Identifier(seq.column)
        value = sql.SQL("{}::{}").format(column, sql.SQL(seq.column_type)) if as_text else column
        highest = _count(conn, sql.SQL("SELECT pg_catalog.max({}) FROM {}").format(value, relation(seq.table)))
        subject = f"{seq.sequence} ({shown(seq.table)}.{seq.column})"
        if highest is None:
            checks.append(Check("sequence", subject, "ok", "the column holds no value"))
        elif seq.last_value is None or seq.last_value < highest:
            checks.append(
                Check(
                    "sequence",
                    subject,
                    "fail",
                    f"stands at {seq.last_value}, below the column's largest value {highest}",
                )
            )
        else:
            checks.append(Check("sequence", subject, "ok", f"stands at {seq.last_value} ≥ {highest}"))
    return checks


def _count(conn: psycopg.Connection[Any], query: sql.Composed) -> Any:
    try:
        with conn.transaction():
            return _scalar(conn, query)
    except psycopg.Error:
        # Reported as "could not be checked": the server's message may quote a value.
        return None
