"""A coverage gate for your own Alembic migrations.

In your project's ``env.py``::

    import pgveil.alembic_gate

    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            transaction_per_migration=True,  # optional: see below
            on_version_apply=pgveil.alembic_gate.coverage_gate(connection=connection),
        )
        with context.begin_transaction():
            context.run_migrations()

Alembic calls the gate after each revision's ``upgrade()`` (or ``downgrade()``)
and its version-table update, *inside* that revision's transaction. The gate
asks the database for the coverage problems (``veil.coverage_problems``) and
fails the revision when it leaves a problem that was not there before it: a
column without a rule in a table that has rules in a policy (``uncovered
column``), or a rule that no longer validates (``stale rule``). Raising there
rolls the revision back: with ``transaction_per_migration=True`` only the
failing revision is undone (the ones before it stay committed); with
Alembic's default (one transaction for the run) the whole run is undone. On
PostgreSQL either way leaves none of the failing revision's DDL, as long as
the migration runs in a transaction: DDL a revision runs in
``op.get_context().autocommit_block()`` is committed before the gate runs
and is not undone.

Problems that were there before are not blamed on the revision: the baseline
is taken when the gate is created with a ``connection`` (recommended), else at
its first call, where a problem counts as new only when its column's
definition was written by the current transaction. When pgveil is installed
by a revision of the same run, the baseline is taken right after that
revision. ``pgveil audit`` reports every problem, old or new: that is the CI
step; this gate keeps revisions from adding to the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection

# The problems a revision is blamed for (the rest of `pgveil audit` concerns
# roles, views and streams, which revisions of an application rarely change).
GATED_PROBLEMS = ("uncovered column", "stale rule")

INSTALLED = text("SELECT pg_catalog.to_regprocedure('veil.coverage_problems(text[])') IS NOT NULL")
FINDINGS = text(
    """
    SELECT p.policy, p.problem, p.object, p.detail, c.oid::bigint AS relid, a.attnum::integer AS attnum,
           coalesce(a.xmin = pg_catalog.pg_current_xact_id_if_assigned()::xid, false) AS written_now
    FROM veil.coverage_problems(CAST(:policies AS text[])) AS p
    CROSS JOIN LATERAL pg_catalog.parse_ident(p.object) AS n(parts)
    LEFT JOIN pg_catalog.pg_namespace ns ON ns.nspname = n.parts[1]
    LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid AND c.relname = n.parts[2]
    LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = n.parts[3]
                                       AND a.attnum > 0 AND NOT a.attisdropped
    WHERE p.problem = ANY (CAST(:gated AS text[]))
    ORDER BY p.policy, p.object
    """
)


@dataclass(frozen=True)
class Finding:
    """One coverage problem, keyed by the column's identity (a rename is not a new problem)."""

    policy: str
    problem: str
    object: str
    detail: str
    relid: int | None
    attnum: int | None
    written_now: bool = False

    @property
    def key(self) -> tuple[str, str, int | None, int | None, str | None]:
        # By oid and column number where the column resolves, else by name.
        name = self.object if self.relid is None else None
        return (self.policy, self.problem, self.relid, self.attnum, name)


class CoverageGateError(CommandError):
    """A revision left a covered table with a column without a rule, or a stale rule.
    A CommandError, so the ``alembic`` command prints it as one ``FAILED:`` message."""


def coverage_findings(connection: Connection, policies: Sequence[str] | None = None) -> list[Finding] | None:
    """The gated coverage problems now, in the connection's transaction; None when
    pgveil (revision 0008_scan or later) is not installed in this database."""
    if not connection.execute(INSTALLED).scalar():
        return None
    rows = connection.execute(
        FINDINGS,
        {"policies": None if policies is None else list(policies), "gated": list(GATED_PROBLEMS)},
    ).mappings()
    return [
        Finding(
            policy=r["policy"],
            problem=r["problem"],
            object=r["object"],
            detail=r["detail"],
            relid=None if r["relid"] is None else int(r["relid"]),
            attnum=None if r["attnum"] is None else int(r["attnum"]),
            written_now=bool(r["written_now"]),
        )
        for r in rows
    ]


class CoverageGate:
    """The ``on_version_apply`` callable: fails a revision that adds coverage problems."""

    def __init__(self, policies: Sequence[str] | None = None, connection: Connection | None = None) -> None:
        self.policies = None if policies is None else list(policies)
        self._baseline: set[tuple[str, str, int | None, int | None, str | None]] | None = None
        self._installed = False
        if connection is not None:
            self.take_baseline(connection)

    def take_baseline(self, connection: Connection) -> None:
        """Record the problems that exist now: later revisions are not blamed for them.

        A query begins a transaction on a SQLAlchemy connection; Alembic, configured
        with a connection already in a transaction, would take it for the caller's
        and commit nothing. So a transaction begun here for the baseline (which only
        reads) is rolled back here."""
        began_here = not connection.in_transaction()
        try:
            found = coverage_findings(connection, self.policies)
        finally:
            if began_here:
                connection.rollback()
        self._installed = found is not None
        self._baseline = {f.key for f in found or ()}

    def new_problems(self, connection: Connection) -> list[Finding]:
        """The problems that are not in the baseline. When there are none, the
        baseline moves to now; otherwise it stays (the revision is rolled back)."""
        found = coverage_findings(connection, self.policies)
        if found is None:
            # No pgveil (yet): nothing to check.
            self._installed = False
            self._baseline = set()
            return []
        if self._baseline is None:
            # First call without a baseline: only columns this transaction wrote are new.
            fresh = [f for f in found if f.written_now]
        elif not self._installed:
            # pgveil arrived with this revision: what it finds is not this revision's doing.
            fresh = []
        else:
            fresh = [f for f in found if f.key not in self._baseline]
        if not fresh:
            self._installed = True
            self._baseline = {f.key for f in found}
        return fresh

    def __call__(
        self, *, ctx: MigrationContext, step: MigrationInfo, heads: set[str], run_args: dict[str, Any], **_: Any
    ) -> None:
        if step.is_stamp or ctx.as_sql or ctx.connection is None:
            return  # a stamp runs no DDL; offline (--sql) mode has no database to ask
        fresh = self.new_problems(ctx.connection)
        if fresh:
            raise CoverageGateError(describe(step, fresh))


def describe(step: MigrationInfo, findings: Sequence[Finding]) -> str:
    """The gate's error: the revision, each column and its fix."""
    direction = "upgrade to" if step.is_upgrade else "downgrade from"
    revision = step.up_revision_id or "?"
    script = step.up_revision
    doc = getattr(script, "doc", None)
    title = f"{revision} ({doc})" if doc else revision
    lines = [
        f"pgveil coverage gate: the {direction} revision {title} leaves {len(findings)} coverage"
        " problem(s) that were not there before; the revision was rolled back:"
    ]
    for f in findings:
        lines.append(f"  - policy {f.policy}: {f.problem} {f.object}: {f.detail}")
    lines.append(
        'Add the rules in the same revision (op.security_label(...) or op.execute("SELECT veil.security_label(...)")).'
    )
    return "\n".join(lines)


def coverage_gate(policies: Sequence[str] | None = None, connection: Connection | None = None) -> CoverageGate:
    """The gate for ``context.configure(on_version_apply=...)``: only the named policies
    (None: every policy); pass the migration's ``connection`` to take the baseline now."""
    return CoverageGate(policies, connection)
