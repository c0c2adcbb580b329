"""What several test modules share: demo data, the demo policy's transforms, roles, catalog views."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from demo.flow import login_urls
from tests.conftest import Database, Role

# The demo revision's sanitized policy, computed independently of the
# generated triggers (veil.token per row), to compare the copy against.
CUSTOMER_TRANSFORM = """
    SELECT veil.token(customer_id::text, 'customer') AS customer_id, store_id,
           veil.token(first_name, 'first_name') AS first_name, veil.token(last_name, 'last_name') AS last_name,
           veil.token(email, 'email') AS email, activebool, create_date, last_update, active
    FROM public.customer"""
PAYMENT_TRANSFORM = """
    SELECT payment_id, veil.token(customer_id::text, 'customer') AS customer_id, amount, payment_date
    FROM public.payment"""
CUSTOMER_COPY = (
    "SELECT customer_id, store_id, first_name, last_name, email, activebool, create_date,"
    " last_update, active FROM sanitized.customer"
)
PAYMENT_COPY = "SELECT payment_id, customer_id, amount, payment_date FROM sanitized.payment"


def assert_copies_equal_transform(
    db: Database,
    pairs: tuple[tuple[str, str], ...] = ((CUSTOMER_TRANSFORM, CUSTOMER_COPY), (PAYMENT_TRANSFORM, PAYMENT_COPY)),
) -> None:
    """Each copy holds exactly its transformed source, row by row."""
    for transform, copy in pairs:
        missing = db.execute(f"({transform}) EXCEPT ALL ({copy})").fetchall()
        extra = db.execute(f"({copy}) EXCEPT ALL ({transform})").fetchall()
        assert (missing, extra) == ([], []), transform


def seed(db: Database, customers: int = 200, payments: int = 400) -> None:
    """Demo rows: 10 addresses, customers, and payments spread over them."""
    db.execute("INSERT INTO address (address) SELECT 'street ' || g FROM generate_series(1, 10) g")
    db.execute(
        "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
        " SELECT 1 + g %% 2, 'first' || g, 'last' || g, 'c' || g || '@example.com', 1 + g %% 10"
        " FROM generate_series(1, %s) g",
        (customers,),
    )
    db.execute(
        "INSERT INTO payment (customer_id, amount) SELECT 1 + g %% %s, (g %% 100) + 0.99 FROM generate_series(1, %s) g",
        (customers, payments),
    )


def demo_analyst(demo: Database) -> Role:
    """The demo revision's masked role, with a password for this test."""
    password = secrets.token_urlsafe(12)
    demo.execute(f"ALTER ROLE analyst PASSWORD '{password}'")
    return Role("analyst", password, demo.server.url(demo.name, "analyst", password))


def label(db: Database, object_type: str, name: str, value: str | None, policy: str = "mask") -> None:
    db.execute("SELECT veil.security_label(%s, %s, %s, %s)", (policy, object_type, name, value))


# Everything a pgveil install could create or drop, by name, cluster- and
# database-wide.
CATALOG_QUERIES = {
    "schemas": "SELECT nspname FROM pg_namespace",
    "relations": "SELECT c.oid::regclass::text || ':' || relkind::text FROM pg_class c",
    "functions": "SELECT p.oid::regprocedure::text FROM pg_proc p",
    "types": "SELECT t.oid::regtype::text FROM pg_type t",
    "extensions": "SELECT extname || ' ' || extnamespace::regnamespace::text FROM pg_extension",
    "roles": "SELECT rolname FROM pg_roles",
    "event_triggers": "SELECT evtname FROM pg_event_trigger",
    "triggers": "SELECT tgrelid::regclass::text || '.' || tgname FROM pg_trigger",
    "default_acls": "SELECT defaclrole::regrole::text || defaclobjtype::text FROM pg_default_acl",
}


def catalog(db: Database, *, version_table: bool = False) -> dict[str, set[str]]:
    """The names of everything in the database and cluster that an install could touch.

    Alembic's own bookkeeping table (pgveil_version) stays after `alembic
    downgrade base`, as Alembic leaves it; it is counted only when asked for.
    """
    found = {name: {r[0] for r in db.execute(query).fetchall()} for name, query in CATALOG_QUERIES.items()}
    if not version_table:
        for name in ("relations", "types"):
            found[name] = {n for n in found[name] if not n.lstrip("_").startswith("pgveil_version")}
    return found


def login(db: Database, role: str) -> str:
    """A URL for one of the demo's roles (cluster-wide; a fresh password each time)."""
    return login_urls(db.admin, db.url, [role])[role]


# The definitions of pgveil's own objects (not only their names): schemas,
# relations (columns with types, defaults and comments; constraints; indexes;
# options; view queries), routines (source), triggers and event triggers
# (with their enabled state), each with its owner, privileges (default ones
# written out) and comment. Stream trigger functions are named after their
# source's oid, which differs between databases: the oid is left out.
PGVEIL_SCHEMAS = ("veil", "veil_private", "veil_ext", "sanitized")
IN_PGVEIL_SCHEMA = "(n.nspname = ANY(%(schemas)s) OR obj_description(n.oid, 'pg_namespace') LIKE 'pgveil%%')"
DEFINITION_QUERIES = {
    "schemas": f"""
        SELECT concat_ws(' | ', n.nspname, n.nspowner::regrole, (SELECT array_agg(i ORDER BY i::text) FROM unnest(coalesce(n.nspacl, acldefault('n', n.nspowner))) AS i),
                         obj_description(n.oid, 'pg_namespace'))
        FROM pg_namespace n WHERE {IN_PGVEIL_SCHEMA}""",
    "relations": f"""
        SELECT concat_ws(' | ', c.oid::regclass, c.relkind, c.relowner::regrole,
               (SELECT array_agg(i ORDER BY i::text) FROM unnest(coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) AS i),
               c.reloptions, pg_get_viewdef(c.oid), obj_description(c.oid, 'pg_class'),
               CASE c.relkind WHEN 'i' THEN pg_get_indexdef(c.oid) END,
               (SELECT string_agg(concat_ws(' ', a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                                            a.attcollation, a.attacl, pg_get_expr(d.adbin, d.adrelid),
                                            col_description(c.oid, a.attnum)), ', ' ORDER BY a.attnum)
                FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
               (SELECT string_agg(k.conname || ' ' || pg_get_constraintdef(k.oid), ', ' ORDER BY k.conname)
                FROM pg_constraint k WHERE k.conrelid = c.oid))
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {IN_PGVEIL_SCHEMA}""",
    "routines": """
        SELECT regexp_replace(concat_ws(' | ', pg_get_functiondef(p.oid), p.proowner::regrole,
                                        (SELECT array_agg(i ORDER BY i::text) FROM unnest(coalesce(p.proacl, acldefault('f', p.proowner))) AS i),
                                        obj_description(p.oid, 'pg_proc')), 'stream_[0-9]+', 'stream_<oid>', 'g')
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY(%(schemas)s) AND p.prokind IN ('f', 'p')
          AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')""",
    "triggers": """
        SELECT regexp_replace(concat_ws(' | ', pg_get_triggerdef(g.oid), g.tgenabled,
                                        obj_description(g.oid, 'pg_trigger')), 'stream_[0-9]+', 'stream_<oid>', 'g')
        FROM pg_trigger g WHERE NOT g.tgisinternal""",
    "event_triggers": """
        SELECT concat_ws(' | ', evtname, evtevent, evttags, evtfoid::regproc, evtenabled, evtowner::regrole,
                         obj_description(oid, 'pg_event_trigger'))
        FROM pg_event_trigger""",
}


def definitions(db: Database) -> dict[str, list[str]]:
    """pgveil's objects with their definitions, sorted, for comparing two databases."""
    result: dict[str, list[str]] = {}
    with db.admin.transaction():
        db.execute("SET LOCAL search_path = pg_catalog")
        for name, query in DEFINITION_QUERIES.items():
            rows: list[Any] = db.execute(query, {"schemas": list(PGVEIL_SCHEMAS)}).fetchall()
            result[name] = sorted(r[0] for r in rows)
    return result


@contextmanager
def scratch_database(db: Database) -> Iterator[str]:
    """An empty database on ``db``'s server (a restore's target), dropped afterwards;
    yields its URL."""
    name = f"scratch_{secrets.token_hex(4)}"
    with psycopg.connect(db.server.url("postgres"), autocommit=True) as maintenance:
        maintenance.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield db.server.url(name)
        finally:
            maintenance.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def pgveil(*args: str) -> subprocess.CompletedProcess[str]:
    """The `pgveil` command as a user runs it (without $DATABASE_URL: tests pass --database-url)."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "pgveil", *args], env=env, capture_output=True, text=True, timeout=300)
