"""What pgveil has installed in a database, for people to read."""

from __future__ import annotations

import psycopg

TOOLKIT_SCHEMAS = ("veil", "veil_private", "veil_ext", "sanitized")


def installed_version(conn: psycopg.Connection) -> str | None:
    has_veil = conn.execute("SELECT to_regnamespace('veil') IS NOT NULL").fetchone()[0]
    if not has_veil:
        return None
    return conn.execute("SELECT veil.version()").fetchone()[0]


def objects_by_schema(conn: psycopg.Connection) -> list[tuple[str, str, int]]:
    """(schema, kind, count) for every kind of object in the toolkit's schemas."""
    return conn.execute(
        """
        SELECT n.nspname, kind, count(*)::int
        FROM (
            SELECT relnamespace, CASE relkind WHEN 'r' THEN 'tables' WHEN 'v' THEN 'views'
                   WHEN 'S' THEN 'sequences' WHEN 'i' THEN 'indexes' ELSE 'relations' END
            FROM pg_catalog.pg_class
            UNION ALL
            SELECT pronamespace, CASE prokind WHEN 'p' THEN 'procedures' ELSE 'functions' END
            FROM pg_catalog.pg_proc
        ) AS o(nsp, kind)
        JOIN pg_catalog.pg_namespace n ON n.oid = o.nsp
        WHERE n.nspname = ANY(%s)
        GROUP BY 1, 2 ORDER BY 1, 2
        """,
        (list(TOOLKIT_SCHEMAS),),
    ).fetchall()
