"""Before reading anything, the consumer proves it can read nothing raw."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql


class BoundaryError(Exception):
    """The role can read more than sanitized.*: the consumer refuses to run."""


# Relations the role can read now (schema usage and a SELECT privilege, also
# through membership or pg_read_all_data), outside the sanitized copies, the
# toolkit's own API (whose readable views are fake-value dictionaries) and the
# system catalogs.
READABLE_ELSEWHERE = """
SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('sanitized', 'veil', 'pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_%'
  AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
  AND pg_catalog.has_any_column_privilege(c.oid, 'SELECT')
ORDER BY 1
"""

PUBLIC_RELATIONS = """
SELECT c.relname FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
ORDER BY 1
"""


@dataclass
class Boundary:
    role: str
    refused: dict[str, str]  # public relation → the server's refusal


def check(conn: psycopg.Connection[Any]) -> Boundary:
    """Raise BoundaryError if the role can read anything raw; else say what was refused."""
    found = conn.execute(
        "SELECT current_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert found is not None
    role, is_super = found
    if is_super:
        raise BoundaryError(
            f"{role} is a superuser and can read every raw table; "
            "a consumer connects as a role that reads sanitized.* only (the demo's: consumer)"
        )
    readable = [r[0] for r in conn.execute(READABLE_ELSEWHERE)]
    if readable:
        shown = ", ".join(readable[:5]) + (f" and {len(readable) - 5} more" if len(readable) > 5 else "")
        raise BoundaryError(
            f"{role} can read {shown}; a consumer must read sanitized.* only — "
            "revoke those privileges (or the role membership that gives them)"
        )
    refused = {}
    for (name,) in conn.execute(PUBLIC_RELATIONS).fetchall():
        # Try it for real, too: the server must refuse.
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SELECT FROM {} LIMIT 0").format(sql.Identifier("public", name)))
        except psycopg.errors.InsufficientPrivilege as exc:
            refused[f"public.{name}"] = str(exc).strip().splitlines()[0]
        else:
            raise BoundaryError(f"{role} can read public.{name}; a consumer must read sanitized.* only")
    return Boundary(role, refused)
