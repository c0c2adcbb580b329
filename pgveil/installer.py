"""Apply pgveil's SQL files inside an Alembic migration's transaction."""

from __future__ import annotations

import psycopg

from pgveil.resources import read_sql, sql_dir

# SQL files write @pgcrypto@ where they call pgcrypto: its schema is wherever
# the database has it (pgveil creates it in veil_ext only when it is missing).
PGCRYPTO_PLACEHOLDER = "@pgcrypto@"


def driver_connection(bind) -> psycopg.Connection:
    """The psycopg connection under an Alembic/SQLAlchemy connection."""
    return bind.connection.driver_connection


def pgcrypto_schema(conn: psycopg.Connection) -> str:
    row = conn.execute(
        "SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension e"
        " JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto'"
    ).fetchone()
    if row is None:
        raise RuntimeError("pgcrypto is not installed; the foundation revision installs it")
    return row[0]


def execute_sql_file(conn: psycopg.Connection, relative: str) -> None:
    """Run one file of ``sql/`` as written (no client-side parameter parsing)."""
    text = read_sql(relative)
    if PGCRYPTO_PLACEHOLDER in text:
        text = text.replace(PGCRYPTO_PLACEHOLDER, pgcrypto_schema(conn))
    conn.execute(text.encode())


def run_file(relative: str) -> None:
    """From an Alembic revision: run ``sql/<relative>`` in the migration's transaction."""
    from alembic import op

    execute_sql_file(driver_connection(op.get_bind()), relative)


def sql_files(directory: str) -> list[str]:
    """The files of ``sql/<directory>/`` in install order (by name: 10_…, 20_…)."""
    return [f"{directory}/{p.name}" for p in sorted((sql_dir() / directory).glob("*.sql"))]
