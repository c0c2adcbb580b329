"""pgveil change log: an exact, durable feed of the sanitized copies (positions,
acknowledgements, retention), streams that DDL stops instead of failing a write
where event triggers are missing (on_ddl => 'break'), and publications of the
sanitized copies for logical replication.

Stream triggers are regenerated (they write the change log). The catalog
tables' changes are made by hand (sql/0012_change_log/alter_tables.sql, undone
by downgrade_tables.sql); everything else is logged and undone by the revision log.

Revision ID: 0012_change_log
Revises: 0011_verify
"""

from pgveil import revision_log
from pgveil.installer import migration_connection, run_file

revision = "0012_change_log"
down_revision = "0011_verify"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_file("0012_change_log/alter_tables.sql")
    revision_log.upgrade(revision)
    revision_log.regenerate_delivered_objects()


def refuse_while(query: str, what: str, fix: str) -> None:
    """Refuse the downgrade while ``query`` names something below this revision would leave unguarded."""
    row = migration_connection().execute(query).fetchone()
    if row and row[0]:
        raise RuntimeError(f"pgveil: cannot downgrade below 0012_change_log while {what} ({row[0]}); {fix}")


def downgrade() -> None:
    # Below it, DDL on a stream without event triggers would fail application writes.
    refuse_while(
        "SELECT string_agg(name, ', ' ORDER BY name) FROM veil_private.policies WHERE on_ddl = 'break'",
        "policies use on_ddl => 'break'",
        "switch them back first (SELECT veil.alter_policy(name, on_ddl => 'rebuild')), which needs event triggers",
    )
    # Below it, nothing would keep a publication to sanitized copies only.
    refuse_while(
        "SELECT string_agg(p.pubname, ', ' ORDER BY p.pubname) FROM veil_private.publications vp"
        " JOIN pg_catalog.pg_publication p ON p.oid = vp.pubid",
        "pgveil publications exist",
        "SELECT veil.unpublish_sanitized(name) first",
    )
    revision_log.downgrade(revision)
    revision_log.regenerate_delivered_objects()
    run_file("0012_change_log/downgrade_tables.sql")
