"""Roles the demo application's revisions need: created when missing, and
dropped on downgrade only if a demo revision created them (recorded in
public.demo_created_roles)."""

from __future__ import annotations

import psycopg
from alembic import context
from psycopg import sql


def role_name(option: str, default: str) -> str:
    """The role's name from `alembic -x <option>=…`, else the default."""
    return context.get_x_argument(as_dictionary=True).get(option, default)


def ensure_role(conn: psycopg.Connection, role: str) -> None:
    if conn.execute("SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = %s)", (role,)).fetchone()[0]:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute("INSERT INTO public.demo_created_roles VALUES (%s)", (role,))


def drop_if_created(conn: psycopg.Connection, role: str) -> None:
    if conn.execute("DELETE FROM public.demo_created_roles WHERE role_name = %s RETURNING 1", (role,)).fetchone():
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
