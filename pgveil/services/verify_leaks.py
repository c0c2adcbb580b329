"""The exact-value leak scan of ``pgveil verify``: are the source's values of the
columns a policy changes anywhere in the searched side's text?

The source computes a fingerprint of each value (``veil.leak_fingerprint_query``,
sql/0011_verify/) with a seed drawn here for the run; the fingerprints stream from
the source's ``COPY … TO STDOUT`` into a temporary table of the searching session,
one buffer at a time, so the client holds neither values nor the fingerprint set.
The searching session then hashes every value of its text and JSON columns alike
(``veil.leak_search_query``) and joins: the search runs in the server, and what
comes back is counts and row places, never a value.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgveil.errors import PgveilError, server_message

FINGERPRINTS = "pgveil_leak_fingerprints"

SKIPPED_SCHEMAS = ("pg_catalog", "information_schema", "veil", "veil_private", "veil_ext", "pgveil_sync")
# A schema of the database's own data (n: its pg_namespace row; skipped: SKIPPED_SCHEMAS).
USER_SCHEMA = (
    "n.nspname <> ALL (%(skipped)s) AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'"
)

# The text and JSON columns of a database's own tables (leaf partitions hold the
# rows), skipping pgveil's schemas: domains are judged by their base type, and
# arrays of text are searched as their text. The key names a row in the report
# unless it holds searched text (then the row's place does).
SEARCHED_COLUMNS = f"""
WITH col AS (
    SELECT n.nspname, c.relname, c.oid AS relid, a.attnum, a.attname,
           coalesce(b.typname, t.typname) IN ('json', 'jsonb') AS is_json,
           coalesce(b.typcategory, t.typcategory) = 'S'
               OR coalesce(b.typname, t.typname) IN ('json', 'jsonb')
               OR (t.typcategory = 'A' AND e.typcategory = 'S') AS searched
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_catalog.pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
    LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
    WHERE c.relkind IN ('r', 'm') AND {USER_SCHEMA}
)
SELECT col.nspname, col.relname, col.attname, col.is_json,
       coalesce((SELECT pg_catalog.array_agg(k.attname ORDER BY x.n)
                 FROM pg_catalog.pg_index i
                 CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY AS x(attnum, n)
                 JOIN pg_catalog.pg_attribute k ON k.attrelid = i.indrelid AND k.attnum = x.attnum
                 WHERE i.indrelid = col.relid AND i.indisprimary
                   AND NOT EXISTS (SELECT FROM col s WHERE s.relid = i.indrelid AND s.searched
                                   AND s.attnum = ANY (i.indkey))), '{{}}')
FROM col WHERE col.searched
ORDER BY 1, 2, col.attnum
"""


@dataclass(frozen=True)
class LeakOptions:
    # Shorter source values are not looked for: they tell a leak from a coincidence no better than chance.
    min_length: int = 4
    # Source values of this many characters or more (and at most max_tokens words) are
    # also looked for inside the searched side's text.
    text_min_length: int = 8
    max_tokens: int = 3
    # Memory of the searching session's join (the fingerprints' hash table).
    work_mem: str = "256MB"

    def check(self) -> None:
        for name, value in (
            ("--min-length", self.min_length),
            ("--text-min-length", self.text_min_length),
            ("--max-words", self.max_tokens),
        ):
            if value < 1:
                raise PgveilError(f"{name} is at least 1 (got {value})")


@dataclass(frozen=True)
class SourceColumn:
    column_id: int
    schema: str
    table: str
    column: str
    kind: str  # "text" or "json"

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}.{self.column}"


@dataclass(frozen=True)
class SearchedTable:
    """A table whose text is searched: ``relation`` is what the searching session
    reads (the table itself, or an archive's rows loaded into a temporary table)."""

    schema: str
    table: str
    relation: sql.Composable
    columns: tuple[tuple[str, bool], ...]  # (name, is JSON)
    # Columns naming a row in the report; empty: its place (ctid) or its line in a data file.
    key: tuple[str, ...] = ()
    # For an archive's rows: the data file and the column numbering its lines.
    data_file: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class Leak:
    source: str  # schema.table.column of the source
    target: str  # schema.table.column of the copy or archive
    rows: int
    whole_rows: int  # rows holding the value as their whole value (the rest: inside text)
    keys: tuple[str, ...]  # a few rows, by key or place: never a value

    @property
    def how(self) -> str:
        if self.whole_rows == self.rows:
            return "whole value"
        if self.whole_rows == 0:
            return "inside text"
        return "whole value and inside text"

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "rows": self.rows,
            "whole_value_rows": self.whole_rows,
            "how": self.how,
            "keys": list(self.keys),
        }


@dataclass(frozen=True)
class LeakScan:
    source_columns: tuple[SourceColumn, ...]
    fingerprints: int
    searched_tables: int
    searched_columns: int
    leaks: tuple[Leak, ...]
    options: LeakOptions

    def as_dict(self) -> dict[str, Any]:
        return {
            "source_columns": [c.qualified for c in self.source_columns],
            "fingerprints": self.fingerprints,
            "searched_tables": self.searched_tables,
            "searched_columns": self.searched_columns,
            "min_length": self.options.min_length,
            "text_min_length": self.options.text_min_length,
            "max_words": self.options.max_tokens,
            "leaks": [leak.as_dict() for leak in self.leaks],
        }


def new_seed() -> int:
    """The run's fingerprint seed: 63 random bits, kept in this process only."""
    return secrets.randbits(63)


def use_seed(conn: psycopg.Connection[Any], seed: int) -> None:
    """Give a session the seed, by bind parameter: in no statement's text."""
    conn.execute("SELECT pg_catalog.set_config('pgveil.verify_seed', %s, false)", (str(seed),))


def source_columns(conn: psycopg.Connection[Any], policy: str, uncovered: str | None) -> list[SourceColumn]:
    rows = conn.execute(
        "SELECT column_id, schema_name, table_name, column_name, kind FROM veil.leak_columns(%s, NULL, %s)"
        " ORDER BY column_id",
        (policy, uncovered),
    ).fetchall()
    return [SourceColumn(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]


def searched_tables(conn: psycopg.Connection[Any]) -> list[SearchedTable]:
    """Every table of a database whose text the scan searches."""
    tables: dict[tuple[str, str], SearchedTable] = {}
    for schema, table, column, is_json, key in conn.execute(SEARCHED_COLUMNS, {"skipped": list(SKIPPED_SCHEMAS)}):
        found = tables.get((schema, table))
        columns = (found.columns if found else ()) + ((str(column), bool(is_json)),)
        tables[(schema, table)] = SearchedTable(
            schema, table, sql.Identifier(schema, table), columns, tuple(str(k) for k in key)
        )
    return list(tables.values())


def create_fingerprint_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        sql.SQL(
            "CREATE TEMPORARY TABLE {} (column_id integer NOT NULL, fingerprint bigint NOT NULL,"
            " in_text boolean NOT NULL)"
        ).format(sql.Identifier(FINGERPRINTS))
    )


def load_fingerprints(
    source: psycopg.Connection[Any],
    searching: psycopg.Connection[Any],
    policy: str,
    uncovered: str | None,
    options: LeakOptions,
) -> int:
    """Stream the source's fingerprints into the searching session's temporary
    table; their number."""
    query = source.execute(
        "SELECT veil.leak_fingerprint_query(%s, NULL, %s, %s, %s, %s)",
        (policy, uncovered, options.min_length, options.text_min_length, options.max_tokens),
    ).fetchone()
    if query is None or query[0] is None:
        return 0
    loaded = copy_into(source, query[0], searching, sql.Identifier("pg_temp", FINGERPRINTS))
    searching.execute(sql.SQL("ANALYZE {}").format(sql.Identifier("pg_temp", FINGERPRINTS)))
    return loaded


def copy_into(
    source: psycopg.Connection[Any], query: str, searching: psycopg.Connection[Any], table: sql.Identifier
) -> int:
    """The rows of ``query`` on the source, streamed into ``table`` of the searching
    session one buffer at a time (binary COPY out and in); their number."""
    copy_out = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(sql.SQL(query))
    copy_in = sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(table)
    with source.cursor() as out_cur, searching.cursor() as in_cur:
        with in_cur.copy(copy_in) as sink, out_cur.copy(copy_out) as stream:
            for chunk in stream:
                sink.write(chunk)
        return max(in_cur.rowcount, 0)


def search(
    source: psycopg.Connection[Any],
    searching: psycopg.Connection[Any],
    tables: Sequence[SearchedTable],
    columns: Sequence[SourceColumn],
    options: LeakOptions,
) -> list[Leak]:
    """The leaks the searching session finds among ``tables``' text (the
    fingerprints loaded)."""
    described = [
        {"table": t_no, "relation": table.relation.as_string(searching), "column": c_no, "name": name, "json": is_json}
        for t_no, table in enumerate(tables, 1)
        for c_no, (name, is_json) in enumerate(table.columns, 1)
    ]
    if not described or not columns:
        return []
    found = source.execute(
        "SELECT veil.leak_search_query(%s::jsonb, %s, %s, %s)",
        (json.dumps(described), options.max_tokens, options.min_length, options.text_min_length),
    )
    query = found.fetchone()
    assert query is not None and query[0] is not None
    by_id = {c.column_id: c for c in columns}
    searching.execute(sql.SQL("SET work_mem = {}").format(sql.Literal(options.work_mem)))
    try:
        rows = searching.execute(query[0].encode()).fetchall()
    except psycopg.Error as e:
        raise PgveilError(f"the leak scan failed on the searched side: {server_message(e)}") from None
    leaks = []
    for table_no, column_no, column_id, total, whole, sample in rows:
        table = tables[table_no - 1]
        leaks.append(
            Leak(
                source=by_id[column_id].qualified,
                target=f"{table.qualified}.{table.columns[column_no - 1][0]}",
                rows=int(total),
                whole_rows=int(whole),
                keys=row_keys(searching, table, sample),
            )
        )
    return sorted(leaks, key=lambda leak: (leak.source, leak.target))


def row_keys(conn: psycopg.Connection[Any], table: SearchedTable, places: Sequence[Any]) -> tuple[str, ...]:
    """How the report names a few rows: by key, by line of the data file, or by place."""
    if table.data_file:
        found = conn.execute(
            sql.SQL("SELECT pgveil_line FROM {} WHERE ctid = ANY (%s::tid[]) ORDER BY 1").format(table.relation),
            (list(places),),
        )
        return tuple(f"line {line} of {table.data_file}" for (line,) in found)
    if not table.key:
        return tuple(f"ctid {place}" for place in places)
    names = ", ".join(table.key)
    found = conn.execute(
        sql.SQL("SELECT {} FROM {} WHERE ctid = ANY (%s::tid[]) ORDER BY 1").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in table.key), table.relation
        ),
        (list(places),),
    )
    return tuple(f"({names})=({', '.join('NULL' if v is None else v for v in row)})" for row in found)
