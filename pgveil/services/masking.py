"""Masking: what is masked for whom, what is streamed, what is wrong; rebuilding mask views."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
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


@dataclass
class StatusReport:
    """The status report: one list of rows (column name → value) per section."""

    policies: list[dict[str, Any]]
    masked_roles: list[dict[str, Any]]
    masked_tables: list[dict[str, Any]]
    streams: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    refresh_after_ddl: str  # "automatic", or how to refresh by hand

    @classmethod
    def sections(cls) -> tuple[str, ...]:
        """The names of the sections that hold rows, in report order."""
        return tuple(f.name for f in fields(cls) if f.name != "refresh_after_ddl")

    def rows(self, section: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = getattr(self, section)
        return rows

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (values that JSON lacks print with ``str``)."""
        return asdict(self)


def status(conn: psycopg.Connection[Any]) -> StatusReport:
    """Policies, masked roles and tables, streams, and problems (read only)."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # Relation names print schema-qualified (for this transaction only).
        cur.execute("SET LOCAL search_path = pg_catalog")
        sections = {section: cur.execute(query).fetchall() for section, query in QUERIES.items()}
        cur.execute("SELECT EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'veil_refresh_masking') AS automatic")
        row = cur.fetchone()
    automatic = bool(row and row["automatic"])
    return StatusReport(**sections, refresh_after_ddl="automatic" if automatic else "manual (pgveil refresh)")


def view_policies(conn: psycopg.Connection[Any]) -> list[str]:
    """The policies delivered through views, by name."""
    return [
        r[0]
        for r in conn.execute("SELECT policy FROM veil.policies WHERE delivery = 'views' ORDER BY policy").fetchall()
    ]


def refresh(conn: psycopg.Connection[Any], policy: str | None = None) -> dict[str, int]:
    """Rebuild the mask views and re-apply the masked roles of one policy, or of every
    policy delivered through views, in one committed transaction; views rebuilt per policy."""
    with conn.transaction():
        policies = view_policies(conn) if policy is None else [policy]
        rebuilt: dict[str, int] = {}
        for name in policies:
            row = conn.execute("SELECT veil.refresh_masking(%s)", (name,)).fetchone()
            rebuilt[name] = int(row[0]) if row and row[0] is not None else 0
    return rebuilt
