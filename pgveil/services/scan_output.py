"""A scan's proposals as files: a psql script, an Alembic revision, JSON.

Each proposal carries its reason and confidence as a comment; columns judged
not sensitive are listed (and, when asked, declared ``NOT MASKED`` so that the
next scan and the audit gate see them decided). Nothing here holds a value.
"""

from __future__ import annotations

import json
import secrets

from pgveil.pg_anon_dicts import dump_no_sens_dict, quote_literal
from pgveil.services.scan import ColumnFinding, ScanReport

FORMATS = ("sql", "alembic", "json")


def _comment(text: str) -> str:
    return " ".join(text.split())


def _chosen(report: ScanReport, not_masked: bool) -> list[tuple[ColumnFinding, str]]:
    rules = [(c, c.rule) for c in report.sensitive if c.rule]
    if not_masked:
        rules += [(c, "NOT MASKED") for c in report.not_sensitive if "not read" not in c.reason]
    return [(c, r) for c, r in rules if r is not None]


def sql_script(report: ScanReport, *, not_masked: bool = False) -> str:
    """A script that ``psql -v ON_ERROR_STOP=1 -f`` applies in one transaction."""
    lines = [
        f"-- Rules proposed by pgveil scan for policy {report.policy} ({report.mode} scan, {report.scanned_at}).",
        "-- Review each one: the reason and confidence are beside it. Applied in one transaction.",
        "BEGIN;",
    ]
    for column, rule in _chosen(report, not_masked):
        lines.append(f"-- {column.kind or 'not sensitive'} ({column.confidence:.2f}): {_comment(column.reason)}")
        lines.append(
            f"SELECT veil.security_label({quote_literal(report.policy)}, 'COLUMN', "
            f"{quote_literal(column.qualified)}, {quote_literal(rule)});"
        )
    lines.append("COMMIT;")
    if not not_masked:
        lines.append("")
        lines.append("-- Judged not sensitive (no rule written; --not-masked writes NOT MASKED rules):")
        lines += [f"--   {c.qualified}: {_comment(c.reason)}" for c in report.not_sensitive]
    return "\n".join(lines) + "\n"


def alembic_revision(
    report: ScanReport, *, down_revision: str | None, revision: str | None = None, not_masked: bool = False
) -> str:
    """An Alembic revision that sets the proposed rules (and removes them on downgrade)."""
    revision = revision or secrets.token_hex(6)
    chosen = _chosen(report, not_masked)
    upgrade = [
        f"    # {c.kind or 'not sensitive'} ({c.confidence:.2f}): {_comment(c.reason)}\n"
        f"    op.security_label({report.policy!r}, 'COLUMN', {c.qualified!r}, {rule!r})"
        for c, rule in chosen
    ]
    downgrade = [
        f"    op.security_label({report.policy!r}, 'COLUMN', {c.qualified!r}, None)" for c, _ in reversed(chosen)
    ]
    return (
        f'"""pgveil scan: rules for policy {report.policy} ({report.mode} scan, {report.scanned_at}).\n\n'
        f'Revision ID: {revision}\nRevises: {down_revision or ""}\n"""\n\n'
        "from alembic import op\n\n"
        "import pgveil.alembic_ops  # noqa: F401  (registers op.security_label)\n\n"
        f"revision = {revision!r}\ndown_revision = {down_revision!r}\n"
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n" + ("\n".join(upgrade) or "    pass") + "\n\n\n"
        "def downgrade() -> None:\n" + ("\n".join(downgrade) or "    pass") + "\n"
    )


def json_document(report: ScanReport) -> str:
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n"


def no_sens_dictionary(report: ScanReport) -> str:
    """The columns judged not sensitive, as pg_anon's non-sensitive dictionary."""
    return dump_no_sens_dict((c.schema, c.table, c.column) for c in report.not_sensitive if "not read" not in c.reason)
