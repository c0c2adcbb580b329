"""The audit: everything that should stop a deployment, as one list.

Coverage (``veil.coverage_problems``: columns of covered tables without a rule,
rules that no longer validate), masking (``veil.masking_problems``: stale views,
raw access, search_path, owner cannot read, consumer reads a source), streams
whose sanitized copy needs a backfill, and streams that stopped following their
source (broken or stale after DDL, or of a dropped table: ``veil.streams``;
``pgveil refresh`` repairs them), and pgveil publications that hold a table that is
not a sanitized copy, miss a copy, or do not publish erasures. Read only; the caller must be a governor (the
toolkit owner, a member, or a superuser).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgveil.services.masking import STREAM_PROBLEMS

COVERAGE = "SELECT policy, problem, object, detail FROM veil.coverage_problems(%(policies)s::text[])"
MASKING = (
    "SELECT policy, problem, object, detail FROM veil.masking_problems()"
    " WHERE policy IS NULL OR %(policies)s::text[] IS NULL OR policy = ANY (%(policies)s::text[])"
    " ORDER BY 1, 2, 3"
)
BACKFILL = (
    "SELECT policy, 'needs backfill' AS problem, source::text AS object,"
    " format('its sanitized copy %%s lacks rows or columns until it is backfilled;"
    " pgveil backfill %%s (or CALL veil.backfill(%%L)) fixes it', target, source, source::text) AS detail"
    " FROM veil.streams WHERE needs_backfill"
    # A broken or stale stream, or one of a dropped table, is reported once, with refresh as its fix.
    " AND source_exists AND broken_at IS NULL AND NOT stale"
    " AND (%(policies)s::text[] IS NULL OR policy = ANY (%(policies)s::text[])) ORDER BY 1, 3"
)
# pgveil publications that could carry a raw table to subscribers, or miss a copy or
# its erasures (where no event trigger refuses the ALTER PUBLICATION that did it).
PUBLICATIONS = (
    "SELECT NULL::text AS policy, 'publication: ' || problem AS problem,"
    " quote_ident(publication) || coalesce(' ' || \"table\", '') AS object,"
    " CASE problem"
    " WHEN 'not a sanitized copy' THEN 'a pgveil publication holds sanitized copies only, and its subscribers"
    " receive this one''s rows; SELECT veil_private.sync_publications() removes it'"
    " WHEN 'sanitized copy not published' THEN 'its subscribers miss this copy''s changes, erasures included;"
    " SELECT veil_private.sync_publications() adds it'"
    " ELSE 'erasure (deletes, truncates) does not reach its subscribers;"
    " SELECT veil_private.sync_publications() restores every kind of change' END AS detail"
    " FROM veil_private.publication_problems() ORDER BY 3, 2"
)
CHOSEN_POLICIES = (
    "SELECT policy FROM veil.policies WHERE %(policies)s::text[] IS NULL OR policy = ANY (%(policies)s::text[])"
    " ORDER BY policy"
)
COVERED = (
    "SELECT count(DISTINCT (policy, schema_name, table_name)) AS tables, count(*) AS columns"
    " FROM veil.rules WHERE object_type = 'COLUMN'"
    " AND (%(policies)s::text[] IS NULL OR policy = ANY (%(policies)s::text[]))"
)


@dataclass(frozen=True)
class AuditProblem:
    """One finding: its policy (None: not tied to one), kind, object and how to fix it."""

    policy: str | None
    problem: str
    object: str
    detail: str


@dataclass
class AuditReport:
    """What the audit found, and what it looked at."""

    policies: list[str]
    tables: int  # tables with at least one rule in the audited policies (per policy)
    columns: int  # column rules in the audited policies
    problems: list[AuditProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        data = asdict(self)
        data["ok"] = self.ok
        return data


def audit(conn: psycopg.Connection[Any], policies: Sequence[str] | None = None) -> AuditReport:
    """Audit the named policies (None: every policy). An unknown policy name raises
    the server's one error; a caller that is not a governor is refused."""
    chosen = None if policies is None else list(dict.fromkeys(policies))
    params = {"policies": chosen}
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # Relation names print schema-qualified (for this transaction only).
        cur.execute("SET LOCAL search_path = pg_catalog")
        rows: list[dict[str, Any]] = []
        for query in (COVERAGE, MASKING, BACKFILL, STREAM_PROBLEMS, PUBLICATIONS):
            rows.extend(cur.execute(query, params).fetchall())
        names = [r["policy"] for r in cur.execute(CHOSEN_POLICIES, params).fetchall()]
        counts = cur.execute(COVERED, params).fetchone()
    problems = [AuditProblem(r["policy"], r["problem"], r["object"], r["detail"]) for r in rows]
    return AuditReport(
        policies=names,
        tables=int(counts["tables"]) if counts else 0,
        columns=int(counts["columns"]) if counts else 0,
        problems=problems,
    )
