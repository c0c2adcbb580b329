"""What `pgveil status` reports: policies, masked roles and tables, streams, problems."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

QUERIES = {
    "policies": "SELECT policy, delivery, pass_through_unlabeled, allow_keyed_functions"
                " FROM veil.policies ORDER BY policy",
    "masked_roles": "SELECT role_name, policy, withheld_privileges FROM veil.masked_roles ORDER BY role_name",
    "masked_tables": "SELECT policy, source::text AS source, view::text AS view, rules"
                     " FROM veil.mask_views ORDER BY 1, 2",
    "streams": "SELECT source::text AS source, target::text AS target, policy, needs_backfill"
               " FROM veil.streams ORDER BY 1",
    "problems": "SELECT policy, problem, object, detail FROM veil.masking_problems() ORDER BY 1, 2, 3",
}


def gather(conn: psycopg.Connection) -> dict[str, Any]:
    """Everything the status report shows, as plain data (the --json output)."""
    report: dict[str, Any] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        # Relation names print schema-qualified.
        cur.execute("SET search_path = pg_catalog")
        for section, query in QUERIES.items():
            report[section] = cur.execute(query).fetchall()
        cur.execute("SELECT EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'veil_refresh_masking') AS automatic")
        report["refresh_after_ddl"] = "automatic" if cur.fetchone()["automatic"] else "manual (pgveil refresh)"
    return report


def refresh(conn: psycopg.Connection, policy: str | None = None) -> dict[str, int]:
    """Rebuild the views of one policy, or of every policy delivered through views."""
    if policy is None:
        policies = [r[0] for r in conn.execute(
            "SELECT policy FROM veil.policies WHERE delivery = 'views' ORDER BY policy").fetchall()]
    else:
        policies = [policy]
    return {p: conn.execute("SELECT veil.refresh_masking(%s)", (p,)).fetchone()[0] for p in policies}
