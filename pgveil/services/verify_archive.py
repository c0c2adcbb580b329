"""An archive's rows, for ``pgveil verify --archive``: each data file of a pgveil
directory dump loaded into a temporary table of a session on the source server,
columns as text, each row numbered by its line.

A temporary table is the set-based way to search files with the server's own
join, and the source's server is the one place where the archive's rows tell
nothing new: if they hold a leaked value, the source holds it already. They live
as long as the verifying session, in no WAL and no other session.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgveil import pg_archive
from pgveil.dump_manifest import DumpedTable, Manifest
from pgveil.errors import PgveilError, server_message
from pgveil.services.verify_leaks import SearchedTable

CHUNK = 1 << 20
# A sequence's value in the archive: pg_dump's SEQUENCE SET statement.
SETVAL = re.compile(r"setval\('(?P<name>(?:[^']|'')+)', (?P<value>-?\d+), (?P<called>true|false)\)")


@dataclass(frozen=True)
class LoadedTable:
    table: DumpedTable
    relation: sql.Identifier
    rows: int


def temp_name(number: int) -> sql.Identifier:
    return sql.Identifier("pg_temp", f"pgveil_archive_{number}")


def load(conn: psycopg.Connection[Any], archive: Path, manifest: Manifest) -> list[LoadedTable]:
    """Every data file of the archive in its own temporary table."""
    loaded = []
    for number, table in enumerate(manifest.tables, 1):
        if not table.file:
            continue
        relation = temp_name(number)
        columns = [sql.Identifier(c.column) for c in table.columns]
        conn.execute(
            sql.SQL("CREATE TEMPORARY TABLE {} ({}, pgveil_line bigint GENERATED ALWAYS AS IDENTITY)").format(
                relation, sql.SQL(", ").join(sql.SQL("{} text").format(c) for c in columns)
            )
        )
        copy = sql.SQL("COPY {} ({}) FROM STDIN").format(relation, sql.SQL(", ").join(columns))
        try:
            with conn.cursor() as cur:
                with cur.copy(copy) as sink:
                    for chunk in _chunks(archive / table.file):
                        sink.write(chunk)
                rows = cur.rowcount
        except psycopg.Error as e:
            raise PgveilError(
                f"{archive}: the data file {table.file} of {table.qualified} cannot be read as COPY data"
                f" ({server_message(e).splitlines()[0][:120]})"
            ) from None
        conn.execute(sql.SQL("ANALYZE {}").format(relation))
        loaded.append(LoadedTable(table, relation, rows))
    return loaded


def _chunks(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def searched(loaded: list[LoadedTable], text_columns: dict[tuple[str, str, str], bool]) -> list[SearchedTable]:
    """The loaded tables' columns to search: those of text or JSON type in the
    source (``text_columns``: (schema, table, column) → is JSON); every column of
    a table the source no longer has."""
    tables = []
    for t in loaded:
        schema, name = t.table.schema, t.table.table
        known = any(key[:2] == (schema, name) for key in text_columns)
        columns = tuple(
            (c.column, text_columns.get((schema, name, c.column), False))
            for c in t.table.columns
            if not known or (schema, name, c.column) in text_columns
        )
        if columns:
            tables.append(SearchedTable(schema, name, t.relation, columns, data_file=t.table.file))
    return tables


def sequence_values(toc: pg_archive.Toc) -> dict[str, int]:
    """The values the archive sets its sequences to (its SEQUENCE SET entries: the
    last value handed out; one below the start when never used), by the
    sequence's name as setval quotes it."""
    values = {}
    for entry in toc.entries:
        match = SETVAL.search(entry.defn or "") if entry.desc == "SEQUENCE SET" else None
        if match:
            value = int(match["value"])
            values[match["name"].replace("''", "'")] = value if match["called"] == "true" else value - 1
    return values
