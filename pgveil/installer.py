"""Apply pgveil's SQL files inside an Alembic migration's transaction.

Each toolkit revision owns one directory of ``sql/``, named after it
(``sql/0003_stream/``), whose numbered files it runs in order. A released
revision's directory never changes: a changed function ships in a new
revision's directory, which replaces it (see ``pgveil.revision_log`` for how
such a revision is undone).
"""

from __future__ import annotations

from typing import Any

import psycopg

from pgveil.resources import read_sql, sql_dir

# SQL files write @pgcrypto@ where they call pgcrypto: its schema is wherever
# the database has it (pgveil creates it in veil_ext only when it is missing).
PGCRYPTO_PLACEHOLDER = "@pgcrypto@"


def driver_connection(bind: Any) -> psycopg.Connection[Any]:
    """The psycopg connection under an Alembic/SQLAlchemy connection."""
    connection: psycopg.Connection[Any] = bind.connection.driver_connection
    return connection


def migration_connection() -> psycopg.Connection[Any]:
    """From an Alembic revision: the psycopg connection of the migration's transaction."""
    from alembic import op

    return driver_connection(op.get_bind())


def pgcrypto_schema(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension e"
        " JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto'"
    ).fetchone()
    if row is None:
        raise RuntimeError("pgcrypto is not installed; the foundation revision installs it")
    return str(row[0])


def execute_sql_file(conn: psycopg.Connection[Any], relative: str) -> None:
    """Run one file of ``sql/`` as written (no client-side parameter parsing)."""
    text = read_sql(relative)
    if PGCRYPTO_PLACEHOLDER in text:
        text = text.replace(PGCRYPTO_PLACEHOLDER, pgcrypto_schema(conn))
    conn.execute(text.encode())


def run_file(relative: str) -> None:
    """From an Alembic revision: run ``sql/<relative>`` in the migration's transaction."""
    execute_sql_file(migration_connection(), relative)


def sql_files(directory: str) -> list[str]:
    """The install files of ``sql/<directory>/`` in order (by name: 10_…, 20_…).

    Only numbered files: a released revision's hand-written ``downgrade.sql``
    sits beside them.
    """
    return [f"{directory}/{p.name}" for p in sorted((sql_dir() / directory).glob("[0-9]*.sql"))]


def run_directory(directory: str) -> None:
    """From an Alembic revision: run the install files of ``sql/<directory>/``."""
    conn = migration_connection()
    for relative in sql_files(directory):
        execute_sql_file(conn, relative)
