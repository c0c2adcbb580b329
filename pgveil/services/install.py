"""Installing and removing the toolkit, checking a database first, and what is installed.

Install and uninstall run the toolkit's Alembic revisions (:mod:`pgveil.migrate`)
against a URL the caller has resolved; the Alembic environment runs the
preflight checks before it changes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgveil import migrate
from pgveil import preflight as checks

TOOLKIT_SCHEMAS = ("veil", "veil_private", "veil_ext", "sanitized")


@dataclass(frozen=True)
class SchemaObjects:
    """How many objects of one kind a toolkit schema holds."""

    schema: str
    kind: str
    count: int


@dataclass(frozen=True)
class Inventory:
    """What pgveil has installed in a database."""

    version: str
    objects: list[SchemaObjects]


def preflight(url: str) -> None:
    """Check that the toolkit can be installed at ``url``, changing nothing; the first
    problem found is a PgveilError naming the problem and its fix."""
    checks.run(url)


def install(url: str, *, locale: str | None = None, faker_providers: Sequence[str] = ()) -> Inventory:
    """Install or upgrade the toolkit (Alembic upgrade to the toolkit's head) and
    return what is then installed. ``locale``: Faker's, for the fake-value dictionaries;
    ``faker_providers``: extra Faker methods (e.g. ``ssn``) whose dictionaries are
    generated and loaded too, also into a database already at head."""
    migrate.upgrade(url, locale=locale, faker_providers=faker_providers)
    with checks.connect(url) as conn:
        installed = inventory(conn)
    assert installed is not None, "the toolkit's head revision installs schema veil"
    return installed


def uninstall(url: str) -> bool:
    """Remove everything the toolkit installed (Alembic downgrade to base), then
    Alembic's version table, which a downgrade leaves. False when the version table
    stays because it still records revisions that are not the toolkit's."""
    migrate.downgrade(url)
    with checks.connect(url) as conn, conn.transaction():
        return drop_version_table(conn)


def drop_version_table(conn: psycopg.Connection[Any]) -> bool:
    """Drop Alembic's ``pgveil_version`` (the one the migrations' connection sees)
    if it records no revision any more; True when it is gone."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = pg_catalog.to_regclass(%s)",
        (migrate.VERSION_TABLE,),
    ).fetchone()
    if row is None:
        return True
    table = sql.Identifier(row[0], migrate.VERSION_TABLE)
    conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
    recorded = conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(table)).fetchone()
    if recorded and recorded[0]:
        return False
    conn.execute(sql.SQL("DROP TABLE {}").format(table))
    return True


def installed_version(conn: psycopg.Connection[Any]) -> str | None:
    """The installed toolkit's version, None when it is not installed."""
    row = conn.execute("SELECT to_regnamespace('veil') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return None
    row = conn.execute("SELECT veil.version()").fetchone()
    return None if row is None else str(row[0])


def objects_by_schema(conn: psycopg.Connection[Any]) -> list[SchemaObjects]:
    """How many objects of each kind the toolkit's schemas hold."""
    rows = conn.execute(
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
    return [SchemaObjects(*row) for row in rows]


def inventory(conn: psycopg.Connection[Any]) -> Inventory | None:
    """The installed toolkit's version and objects; None when it is not installed."""
    version = installed_version(conn)
    if version is None:
        return None
    return Inventory(version, objects_by_schema(conn))
