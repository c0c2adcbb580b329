"""Roles the demo application's revisions need: created when missing, and
dropped on downgrade only if a demo revision created them (recorded in
public.demo_created_roles).

`alembic -x demo_password=…` gives the roles a demo revision creates that
password (docker-compose uses it); `pgveil demo` sets a fresh one per run.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgveil.errors import PgveilError


def _true(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> bool:
    """The boolean a one-row, one-column query returns."""
    row = conn.execute(query, params).fetchone()
    return bool(row and row[0])


def role_name(option: str, default: str) -> str:
    """The role's name from `alembic -x <option>=…`, else the default."""
    from alembic import context  # in a migration only: the CLI that imports this module need not load Alembic

    return str(context.get_x_argument(as_dictionary=True).get(option, default))


def ensure_role(conn: psycopg.Connection[Any], role: str) -> None:
    if _true(conn, "SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = %s)", (role,)):
        from alembic import context

        password = context.get_x_argument(as_dictionary=True).get("demo_password")
        create = sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role))
        if password:
            create += sql.SQL(" PASSWORD {}").format(sql.Literal(password))
        conn.execute(create)
        conn.execute("INSERT INTO public.demo_created_roles VALUES (%s)", (role,))


def drop_if_created(conn: psycopg.Connection[Any], role: str) -> None:
    if conn.execute("DELETE FROM public.demo_created_roles WHERE role_name = %s RETURNING 1", (role,)).fetchone():
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def refuse_foreign(conn: psycopg.Connection[Any], role: str) -> None:
    """The demo sets its roles' passwords: refuse, before anything changes, if a role of
    that name exists that the demo did not create in this database."""
    if not _true(conn, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = %s)", (role,)):
        return
    recorded = _true(conn, "SELECT to_regclass('public.demo_created_roles') IS NOT NULL") and _true(
        conn, "SELECT EXISTS (SELECT FROM public.demo_created_roles WHERE role_name = %s)", (role,)
    )
    if not recorded:
        raise PgveilError(
            f"role {role!r} existed before the demo was installed; the demo will not change its "
            "password — run the demo on a server without that role, or in the sandbox (unset DATABASE_URL)"
        )


def set_password(conn: psycopg.Connection[Any], role: str, password: str) -> None:
    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
