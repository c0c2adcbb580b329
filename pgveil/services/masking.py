"""Masking: what is masked for whom, what is streamed, what is wrong; rebuilding mask views
and repairing streams that DDL broke (policies with ``on_ddl => 'break'``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgveil.services import streaming

QUERIES = {
    "policies": "SELECT policy, delivery, pass_through_unlabeled, allow_keyed_functions"
    " FROM veil.policies ORDER BY policy",
    "masked_roles": "SELECT role_name, policy, withheld_privileges FROM veil.masked_roles ORDER BY role_name",
    "masked_tables": "SELECT policy, source::text AS source, view::text AS view, rules"
    " FROM veil.mask_views ORDER BY 1, 2",
    # A dropped source has no name left (its regclass prints as an oid): named by its copy.
    "streams": "SELECT CASE WHEN source_exists THEN source::text"
    " ELSE format('(dropped; was streamed into %s)', target) END AS source,"
    " target::text AS target, policy, on_ddl,"
    " CASE WHEN NOT source_exists THEN 'source dropped' WHEN broken_at IS NOT NULL THEN 'broken'"
    " WHEN stale THEN 'stale' ELSE 'ok' END AS state,"
    " needs_backfill, broken_at, broken_sqlstate FROM veil.streams ORDER BY target::text",
    "problems": "SELECT policy, problem, object, detail FROM veil.masking_problems() ORDER BY 1, 2, 3",
}


# Streams that stopped following their source, as problems (policy, problem, object,
# detail): broken (a write failed in the generated trigger after DDL, with on_ddl =>
# 'break'), stale (the source's shape no longer matches the trigger; the next write
# breaks it), or streaming a table that was dropped (its copy still holds the rows).
# The object is the source as it is named now, or the copy for a dropped source.
# Parameter: policies (text[] or NULL: every policy). Never the error's message: only
# its SQLSTATE is kept, the message may hold a raw value.
STREAM_PROBLEMS = (
    "SELECT policy,"
    " CASE WHEN NOT source_exists THEN 'stream of a dropped table'"
    " WHEN broken_at IS NOT NULL THEN 'broken stream' ELSE 'stale stream' END AS problem,"
    " CASE WHEN source_exists THEN source::text ELSE target::text END AS object,"
    " CASE WHEN NOT source_exists THEN format('the source table of %%s was dropped, but the copy still holds its rows;"
    " pgveil refresh drops the copy (erasure)', target)"
    " WHEN broken_at IS NOT NULL THEN format('its sanitized copy %%s stopped applying changes at %%s (SQLSTATE %%s),"
    " after DDL on the source; pgveil refresh rebuilds and backfills it', target,"
    " date_trunc('second', broken_at), broken_sqlstate)"
    " ELSE format('the source changed since its stream trigger was generated (its next write will break the stream);"
    " pgveil refresh rebuilds and backfills %%s', target) END AS detail"
    " FROM veil.streams WHERE (broken_at IS NOT NULL OR stale OR NOT source_exists)"
    " AND (%(policies)s::text[] IS NULL OR policy = ANY (%(policies)s::text[])) ORDER BY 1, 3"
)


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
    """Policies, masked roles and tables, streams, and problems (read only). Broken and
    stale streams, and streams of dropped tables, are problems too."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # Relation names print schema-qualified (for this transaction only).
        cur.execute("SET LOCAL search_path = pg_catalog")
        sections = {section: cur.execute(query).fetchall() for section, query in QUERIES.items()}
        sections["problems"] += cur.execute(STREAM_PROBLEMS, {"policies": None}).fetchall()
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


Progress = Callable[[str, int], None]  # (the stream's source, rows of one backfill batch)


def _no_progress(source: str, rows: int) -> None:
    pass


@dataclass
class RepairedStream:
    """One stream that ``repair_streams`` took on: what was wrong and what it did."""

    source: str  # the source table as it is named now; for a dropped one, its copy
    target: str
    policy: str
    problem: str  # 'broken', 'stale' or 'source dropped'
    action: str  # 'rebuilt', 'copy dropped' or 'failed'
    rows: int = 0  # rows backfilled after the rebuild
    error: str | None = None  # why it failed (the server's message)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RefreshReport:
    """What ``refresh_all`` did: mask views rebuilt per policy, and streams repaired."""

    views: dict[str, int] = field(default_factory=dict)
    streams: list[RepairedStream] = field(default_factory=list)
    views_error: str | None = None  # why the views could not be rebuilt (the server's message)

    @property
    def ok(self) -> bool:
        return self.views_error is None and all(s.action != "failed" for s in self.streams)

    def as_dict(self) -> dict[str, Any]:
        return {
            "views": self.views,
            "views_error": self.views_error,
            "streams": [s.as_dict() for s in self.streams],
            "ok": self.ok,
        }


REPAIRS = (
    "SELECT source::oid AS oid,"
    " CASE WHEN source_exists THEN source::text ELSE target::text END AS source,"
    " target::text AS target, policy,"
    " CASE WHEN NOT source_exists THEN 'source dropped' WHEN broken_at IS NOT NULL THEN 'broken'"
    " ELSE 'stale' END AS problem"
    " FROM veil.streams WHERE (broken_at IS NOT NULL OR stale OR NOT source_exists)"
    " AND (%(policy)s::text IS NULL OR policy = %(policy)s) ORDER BY target::text"
)


def repair_streams(
    conn: psycopg.Connection[Any],
    policy: str | None = None,
    batch_size: int = 10_000,
    progress: Progress = _no_progress,
) -> list[RepairedStream]:
    """Repair every broken or stale stream (of one policy, or of all): rebuild its trigger
    and copy columns and empty the copy (``veil_private.rebuild_broken_stream``), then
    backfill it in committed batches. A stream whose source table was dropped goes, copy
    and all (erasure). A stream that cannot be repaired is reported as failed, with the
    server's message, and the others are still repaired.

    ``conn`` must be in autocommit mode (the backfill commits per batch).
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # Relation names print schema-qualified (for this transaction only).
        cur.execute("SET LOCAL search_path = pg_catalog")
        todo = cur.execute(REPAIRS, {"policy": policy}).fetchall()
    repaired: list[RepairedStream] = []
    for row in todo:
        done = RepairedStream(row["source"], row["target"], row["policy"], row["problem"], "rebuilt")
        try:
            with conn.transaction():
                outcome = conn.execute("SELECT veil_private.rebuild_broken_stream(%s)", (row["oid"],)).fetchone()
            if outcome and outcome[0] == "dropped":
                done.action = "copy dropped"
            else:
                done.rows = streaming.backfill(
                    conn, str(row["oid"]), batch_size, functools.partial(progress, done.source)
                )
        except psycopg.Error as exc:
            if conn.closed:
                raise
            done.action = "failed"
            done.error = exc.diag.message_primary or type(exc).__name__
        repaired.append(done)
    return repaired


def refresh_all(
    conn: psycopg.Connection[Any],
    policy: str | None = None,
    batch_size: int = 10_000,
    progress: Progress = _no_progress,
) -> RefreshReport:
    """``pgveil refresh``: rebuild the mask views of one policy delivered through views (or of
    every such policy) and repair the broken or stale streams of one policy delivered as a
    copy (or of every one). ``conn`` must be in autocommit mode. An unknown policy raises
    the server's one error."""
    delivery = None
    if policy is not None:
        row = conn.execute("SELECT delivery FROM veil.policies WHERE policy = %s", (policy,)).fetchone()
        delivery = row[0] if row else None
    report = RefreshReport()
    # Streams first: a stream of a dropped table must be gone before the views' refresh
    # sweeps that table's rules (which rebuilds the streams of the tables swept).
    if policy is None or delivery == "copy":
        report.streams = repair_streams(conn, policy, batch_size, progress)
    if delivery != "copy":
        try:
            report.views = refresh(conn, policy)
        except psycopg.Error as exc:
            # One policy's error (an unknown one's too) is the command's error; with every
            # policy, the streams' report must not be lost to it.
            if policy is not None or conn.closed:
                raise
            report.views_error = exc.diag.message_primary or type(exc).__name__
    return report
