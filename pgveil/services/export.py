"""The export engine: what an anonymized dump or a sync reads, and how.

One exported snapshot is held open by a coordinating transaction for the whole
export; ``pg_dump`` and every worker connection read through it, so the schema and
every table's rows are one consistent state of the database while the application
writes. A table's rows are computed in the database by the rule compiler
(``veil.export_tables``, sql/0009_export/) and leave it through
``COPY (SELECT …) TO STDOUT``: no raw value reaches the client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgveil import preflight
from pgveil.dump_manifest import ColumnRule
from pgveil.errors import PgveilError, server_message
from pgveil.resources import VERSION_TABLE
from pgveil.services import subset
from pgveil.services.scan import TOOLKIT_SCHEMAS

# pgveil's schemas: the fixed ones and every mask schema.
TOOLKIT_SCHEMA_NAMES = """
SELECT n.nspname FROM pg_catalog.pg_namespace n
WHERE n.nspname = ANY (%(fixed)s) OR n.oid IN (SELECT m.mask_nspid FROM veil_private.mask_schemas m)
ORDER BY n.nspname
"""

# Alembic's record of pgveil's revisions, in whichever schema it was installed from.
VERSION_TABLES = """
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = %(version_table)s AND c.relkind = 'r' AND EXISTS (
    SELECT FROM pg_catalog.pg_attribute v WHERE v.attrelid = c.oid AND v.attname = 'version_num' AND NOT v.attisdropped)
"""

# Extensions' configuration tables (pg_extension_config_dump), whose rows pg_dump
# dumps even though it does not dump the tables: rows no rule covers.
EXTENSION_CONFIG_TABLES = """
SELECT n.nspname, c.relname
FROM pg_catalog.pg_extension e
CROSS JOIN LATERAL pg_catalog.unnest(e.extconfig) AS t(relid)
JOIN pg_catalog.pg_class c ON c.oid = t.relid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
"""

# The objects of pgveil a schema dump would carry outside its schemas:
# whatever depends on an object in its schemas, directly or not (stream
# triggers, the DDL event triggers, pgcrypto when installed in veil_ext, a view
# of the application that calls a veil function, and the views built on that
# one), as the (catalog, oid) pairs pg_dump's table of contents names them by.
# A view depends on what it reads through its _RETURN rule: the rule's
# dependencies are the view's.
TOOLKIT_OBJECTS = """
WITH RECURSIVE ns AS (
    SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = ANY (%(schemas)s)
), owned(classid, objid) AS (
    SELECT 'pg_catalog.pg_namespace'::regclass::oid, ns.oid FROM ns
    UNION SELECT 'pg_catalog.pg_proc'::regclass::oid, p.oid FROM pg_catalog.pg_proc p WHERE p.pronamespace IN (SELECT oid FROM ns)
    UNION SELECT 'pg_catalog.pg_class'::regclass::oid, c.oid FROM pg_catalog.pg_class c WHERE c.relnamespace IN (SELECT oid FROM ns)
    UNION SELECT 'pg_catalog.pg_type'::regclass::oid, t.oid FROM pg_catalog.pg_type t WHERE t.typnamespace IN (SELECT oid FROM ns)
), edges(classid, objid, refclassid, refobjid) AS (
    SELECT d.classid, d.objid, d.refclassid, d.refobjid FROM pg_catalog.pg_depend d WHERE d.deptype IN ('n', 'a')
    UNION ALL
    SELECT 'pg_catalog.pg_class'::regclass::oid, r.ev_class, 'pg_catalog.pg_rewrite'::regclass::oid, r.oid
    FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class
    WHERE r.rulename = '_RETURN' AND c.relkind IN ('v', 'm')
), dependent(classid, objid) AS (
    SELECT e.classid, e.objid FROM edges e WHERE (e.refclassid, e.refobjid) IN (SELECT classid, objid FROM owned)
    UNION
    SELECT e.classid, e.objid FROM dependent x JOIN edges e ON e.refclassid = x.classid AND e.refobjid = x.objid
)
SELECT x.classid::bigint, x.objid::bigint FROM dependent x
WHERE (x.classid, x.objid) NOT IN (SELECT classid, objid FROM owned)
"""

RULES_OF_POLICY = """
SELECT r.relid::regclass::text, a.attname, r.label
FROM veil_private.column_rules r
JOIN pg_catalog.pg_attribute a ON a.attrelid = r.relid AND a.attnum = r.attnum
WHERE r.policy = %s
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class ExportTable:
    relid: int
    schema: str
    table: str
    estimated_rows: int
    # The size of the table's heap (pg_relation_size): what reading it costs.
    relation_bytes: int
    # The SELECT computing every row of the table under the policy (read as src).
    rule_query: str
    # pg_dump's statement loading them ("COPY s.t (a, b) FROM stdin;\n").
    copy_statement: str
    columns: tuple[ColumnRule, ...]
    # Only the rows a subset keeps; None: all.
    restriction: subset.Restriction | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def query(self) -> str:
        """The SELECT an export runs for the table."""
        return self.select()

    def select(self, *conditions: str, stored: bool = False) -> str:
        """The table's SELECT keeping only the rows that meet ``conditions`` (on src)
        too; a subset's rows by its stored places when ``stored`` (the session ran
        the restriction's store_places), else by evaluating the selection."""
        kept = self.restriction
        where = [*conditions]
        if kept is not None:
            where.insert(0, kept.stored_condition if stored else kept.condition)
        query = self.rule_query + (" WHERE " + " AND ".join(where) if where else "")
        return f"{kept.with_clause} {query}" if kept is not None and not stored else query


@dataclass(frozen=True)
class Snapshot:
    """The coordinating transaction's exported snapshot, and what it saw."""

    name: str
    taken_at: str
    server_version: str
    server_version_num: int
    database: str
    encoding: str
    block_size: int


def toolkit_schemas(conn: psycopg.Connection[Any]) -> list[str]:
    return [str(r[0]) for r in conn.execute(TOOLKIT_SCHEMA_NAMES, {"fixed": list(TOOLKIT_SCHEMAS)}).fetchall()]


def version_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(str(s), str(t)) for s, t in conn.execute(VERSION_TABLES, {"version_table": VERSION_TABLE}).fetchall()]


def extension_config_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(str(s), str(t)) for s, t in conn.execute(EXTENSION_CONFIG_TABLES).fetchall()]


def toolkit_objects(conn: psycopg.Connection[Any], schemas: Sequence[str]) -> set[tuple[int, int]]:
    """(catalog oid, object oid) of pgveil's objects outside its schemas."""
    return {(int(c), int(o)) for c, o in conn.execute(TOOLKIT_OBJECTS, {"schemas": list(schemas)})}


def rules_hash(conn: psycopg.Connection[Any], policy: str, uncovered: str | None) -> str:
    """SHA-256 of a policy's rules (table, column, label) and the 'uncovered' choice."""
    digest = hashlib.sha256()
    for table, column, label in conn.execute(RULES_OF_POLICY, (policy,)):
        digest.update(f"{table}\0{column}\0{label}\n".encode())
    digest.update(f"uncovered\0{uncovered}\n".encode())
    return digest.hexdigest()


def resolved_uncovered(conn: psycopg.Connection[Any], policy: str, uncovered: str | None) -> str:
    try:
        row = conn.execute("SELECT veil_private.export_uncovered(%s, %s)", (policy, uncovered)).fetchone()
    except psycopg.Error as e:
        raise PgveilError(server_message(e)) from None
    assert row is not None
    return str(row[0])


def plan(
    conn: psycopg.Connection[Any],
    policy: str,
    relids: Sequence[int],
    uncovered: str | None,
    kept: subset.Subset | None = None,
) -> list[ExportTable]:
    """Each table's export under the policy, only the rows the subset keeps; refuses
    (every problem listed) when any table cannot be exported."""
    try:
        rows = conn.execute(
            "SELECT relid, schema_name, table_name, estimated_rows, relation_bytes, query, copy_statement, columns"
            " FROM veil.export_tables(%s, %s::oid[]::regclass[], %s)",
            (policy, list(relids), uncovered),
        ).fetchall()
    except psycopg.Error as e:
        message = server_message(e)
        if " has no rule in policy " in message:
            message += (
                "\nGive each a rule (NOT MASKED where it holds no personal data), or choose what columns"
                " without one become with --uncovered keep or null."
            )
        raise PgveilError(message) from None
    restricted = subset.restrictions(conn, relids, kept) if kept is not None else {}
    return [
        ExportTable(
            int(r[0]),
            str(r[1]),
            str(r[2]),
            int(r[3]),
            int(r[4]),
            str(r[5]),
            str(r[6]),
            tuple(ColumnRule(str(c["column"]), str(c["rule"]), bool(c["changes"])) for c in r[7]),
            restricted.get(int(r[0])),
        )
        for r in rows
    ]


@contextmanager
def exported_snapshot(url: str) -> Iterator[tuple[psycopg.Connection[Any], Snapshot]]:
    """A read-only repeatable-read transaction and its exported snapshot, held
    until the block ends (an exported snapshot lives as long as its transaction)."""
    with preflight.connect(url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute(
            "SELECT pg_catalog.pg_export_snapshot(),"
            " pg_catalog.to_char(pg_catalog.now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
            " pg_catalog.current_setting('server_version'),"
            " pg_catalog.current_setting('server_version_num')::integer, pg_catalog.current_database(),"
            " pg_catalog.pg_encoding_to_char(d.encoding), pg_catalog.current_setting('block_size')::integer"
            " FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()"
        ).fetchone()
        assert row is not None
        yield conn, Snapshot(str(row[0]), str(row[1]), str(row[2]), int(row[3]), str(row[4]), str(row[5]), int(row[6]))


def lock_tables(conn: psycopg.Connection[Any], tables: Sequence[ExportTable]) -> None:
    """ACCESS SHARE on every exported table for the rest of the export, as pg_dump
    takes: no table is dropped or altered before its rows are read."""
    for t in tables:
        try:
            conn.execute(
                sql.SQL("LOCK TABLE ONLY {}.{} IN ACCESS SHARE MODE").format(
                    sql.Identifier(t.schema), sql.Identifier(t.table)
                )
            )
        except psycopg.Error as e:
            raise PgveilError(f"could not lock {t.qualified} for the export: {server_message(e)}") from None


def reader_statements(snapshot: Snapshot) -> list[sql.Composed]:
    """What a reading session runs first: the snapshot, and pg_dump's session
    settings (ISO dates, exact floats, no row security filtering: an error rather
    than rows silently missing)."""
    statements = [
        sql.SQL("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").format(),
        sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot.name)),
    ]
    for setting, value in (
        ("client_encoding", snapshot.encoding),
        ("datestyle", "ISO"),
        ("intervalstyle", "postgres"),
        ("extra_float_digits", "3"),
        ("row_security", "off"),
        ("statement_timeout", "0"),
        ("lock_timeout", "0"),
        ("idle_in_transaction_session_timeout", "0"),
        ("synchronize_seqscans", "off"),
        # Export queries are schema-qualified; a subset condition is read alike.
        ("search_path", "pg_catalog, pg_temp"),
        # Compiling a policy's long expressions costs more than it saves.
        ("jit", "off"),
    ):
        statements.append(sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(setting), sql.Literal(value)))
    return statements


def open_reader(url: str, snapshot: Snapshot) -> psycopg.Connection[Any]:
    """A connection reading through the snapshot (:func:`reader_statements`)."""
    conn = preflight.connect(url, autocommit=True)
    try:
        for statement in reader_statements(snapshot):
            conn.execute(statement)
    except BaseException:
        conn.close()
        raise
    return conn


def failure(url: str, snapshot: Snapshot, policy: str, table: ExportTable, sqlstate: str, uncovered: str) -> str:
    """Why a table's export failed, with the row and column whose rule fails,
    without their values (the database's own message may quote a value)."""
    with open_reader(url, snapshot) as conn:
        try:
            conn.execute(
                "SELECT veil.raise_export_failure(%s, %s::oid::regclass, %s, %s)",
                (policy, table.relid, sqlstate, uncovered),
            )
        except psycopg.Error as e:
            # Written for a rewrite, which changes nothing when it fails; so does an export.
            return server_message(e).removeprefix("pgveil: ").replace("; nothing was changed", "")
    return f"exporting {table.qualified} failed (SQLSTATE {sqlstate})"
