"""pgveil static anonymization: policies delivered 'static', the 'uncovered' option,
JSON masking, unique-safe generators and the peers' masking vocabulary.

Mask views are regenerated: the compiler now also removes an unused
volatile json/jsonb column from a query (sql/0007_static/15_compile_rule.sql).
The policy table's change is made by hand (sql/0007_static/alter_tables.sql,
undone by downgrade_tables.sql); everything else is logged and undone by the
revision log.

Revision ID: 0007_static
Revises: 0006_rules
"""

from pgveil import revision_log
from pgveil.installer import migration_connection, run_file

revision = "0007_static"
down_revision = "0006_rules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_file("0007_static/alter_tables.sql")
    revision_log.upgrade(revision)
    revision_log.regenerate_delivered_objects()


def refuse_while_static_policies_exist() -> None:
    """Below this revision a policy cannot be static: its rules would have nowhere to go."""
    row = (
        migration_connection()
        .execute("SELECT string_agg(name, ', ' ORDER BY name) FROM veil_private.policies WHERE delivery = 'static'")
        .fetchone()
    )
    if row and row[0]:
        raise RuntimeError(
            f"pgveil: cannot downgrade below 0007_static while static policies exist ({row[0]}); "
            "drop them first (DELETE FROM veil_private.policies WHERE name = ...)"
        )


def downgrade() -> None:
    refuse_while_static_policies_exist()
    revision_log.downgrade(revision)
    revision_log.regenerate_delivered_objects()
    run_file("0007_static/downgrade_tables.sql")
