"""Checks run before pgveil touches a database.

Each failure is one line that names the problem and its fix. Nothing here
changes the database: every check is a read.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgveil.errors import PgveilError

MIN_SERVER_VERSION_NUM = 150000
REQUIRED_EXTENSION = "pgcrypto"
# Comment pgveil puts on its own schemas; anything else named veil* is foreign.
SCHEMA_MARK = "pgveil"


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """Connect, turning connection failures into one-line errors with the fix."""
    # A URL or a key=value string (the API builds those): libpq's parser reads both.
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise PgveilError("the database URL is not a valid connection string") from None
    where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    try:
        return psycopg.connect(url, connect_timeout=10, **kwargs)
    except UnicodeError:
        # The resolver cannot even encode the host name.
        raise PgveilError(f"cannot reach PostgreSQL at {where} — the host name is not valid") from None
    except psycopg.OperationalError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        detail = detail or type(exc).__name__
        lowered = detail.lower()
        if "password authentication failed" in lowered or "no password supplied" in lowered:
            fix = f"check the user and password in the database URL ({detail})"
            raise PgveilError(f"cannot log in to {where} as {params.get('user')!r} — {fix}") from None
        if "does not exist" in lowered:
            raise PgveilError(f"{detail} — create it or fix the database URL") from None
        raise PgveilError(
            f"cannot reach PostgreSQL at {where} — start the server or fix the database URL ({detail})"
        ) from None


def row(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """The one row a catalog query always returns."""
    found: tuple[Any, ...] | None = conn.execute(query, params).fetchone()
    assert found is not None, query
    return found


def check(
    conn: psycopg.Connection[Any],
    *,
    min_version_num: int = MIN_SERVER_VERSION_NUM,
    extension: str = REQUIRED_EXTENSION,
    version_table_schema: str = "public",
) -> None:
    """Raise PgveilError on the first problem that would stop an install."""
    version_num = int(row(conn, "SHOW server_version_num")[0])
    if version_num < min_version_num:
        have = row(conn, "SHOW server_version")[0]
        need = f"{min_version_num // 10000}"
        raise PgveilError(f"PostgreSQL {have} is too old — pgveil needs PostgreSQL {need} or newer")

    available, installed = row(
        conn,
        "SELECT count(*) > 0, bool_or(installed_version IS NOT NULL)"
        " FROM pg_catalog.pg_available_extensions WHERE name = %s",
        (extension,),
    )
    if not available:
        raise PgveilError(
            f"extension {extension} is not available on the server — install PostgreSQL's "
            "contrib package there (Debian: postgresql-contrib; managed services: enable it)"
        )

    role, database, can_create = row(
        conn, "SELECT current_user, current_database(), pg_catalog.has_database_privilege(current_database(), 'CREATE')"
    )
    if not can_create:
        raise PgveilError(
            f"role {role} may not create schemas in database {database} — "
            f'GRANT CREATE ON DATABASE "{database}" TO "{role}" (or install as the database owner)'
        )
    if not installed and not _can_create_extension(conn, extension):
        raise PgveilError(
            f"role {role} may not create extension {extension} — "
            f"CREATE EXTENSION {extension} as a superuser first, then install pgveil"
        )
    has_version_table = row(
        conn,
        "SELECT pg_catalog.to_regclass(pg_catalog.format('%%I.pgveil_version', %s::text)) IS NOT NULL",
        (version_table_schema,),
    )[0]
    if not has_version_table:
        schema_ok = row(conn, "SELECT pg_catalog.has_schema_privilege(%s, 'CREATE')", (version_table_schema,))[0]
        if not schema_ok:
            raise PgveilError(
                f"role {role} may not create tables in schema {version_table_schema}, where "
                f'pgveil keeps its migration version — GRANT CREATE ON SCHEMA "{version_table_schema}" '
                f'TO "{role}"'
            )

    foreign = conn.execute(
        "SELECT n.nspname FROM pg_catalog.pg_namespace n"
        " WHERE n.nspname IN ('veil', 'veil_private')"
        " AND pg_catalog.obj_description(n.oid, 'pg_namespace') IS DISTINCT FROM %s"
        " ORDER BY 1 LIMIT 1",
        (SCHEMA_MARK,),
    ).fetchone()
    if foreign:
        raise PgveilError(
            f"schema {foreign[0]} exists and was not created by pgveil — rename or drop it, "
            "or install pgveil into another database"
        )


def _can_create_extension(conn: psycopg.Connection[Any], extension: str) -> bool:
    """Superusers may; others only for trusted extensions (pgcrypto is one)."""
    is_super = row(conn, "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user")[0]
    if is_super:
        return True
    trusted = row(
        conn, "SELECT bool_or(trusted) FROM pg_catalog.pg_available_extension_versions WHERE name = %s", (extension,)
    )[0]
    return bool(trusted)


def run(url: str, **kwargs: Any) -> None:
    """Connect to ``url`` and run every check."""
    with connect(url, autocommit=True) as conn:
        check(conn, **kwargs)
