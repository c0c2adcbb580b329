"""pgveil rule compiler: one compiler for every delivery; stream triggers from a template.

Mask views and stream triggers are regenerated with it (unchanged in what
they do); the downgrade restores the compilers it replaced and regenerates
them again.

Revision ID: 0006_rules
Revises: 0005_revision_log
"""

from pgveil import revision_log
from pgveil.installer import migration_connection

revision = "0006_rules"
down_revision = "0005_revision_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_log.upgrade(revision)
    revision_log.regenerate_delivered_objects()


def refuse_rules_the_old_trigger_cannot_quote() -> None:
    """The stream trigger generator this revision replaced wrote the trigger's body
    between $body$ quotes: a streamed rule holding that text would break it."""
    found = (
        migration_connection()
        .execute(
            "SELECT string_agg(format('%I.%I.%I', n.nspname, c.relname, a.attname), ', ')"
            " FROM veil_private.column_rules r JOIN veil_private.streams s ON s.source = r.relid AND s.policy = r.policy"
            " JOIN pg_class c ON c.oid = r.relid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = r.relid AND a.attnum = r.attnum"
            " WHERE strpos(r.expression, '$body$') > 0"
        )
        .fetchone()
    )
    if found and found[0]:
        raise RuntimeError(
            f"pgveil: cannot downgrade below 0006_rules while streamed rules contain '$body$' ({found[0]}): "
            "the earlier stream trigger generator cannot quote them; change those rules first"
        )


def downgrade() -> None:
    refuse_rules_the_old_trigger_cannot_quote()
    revision_log.downgrade(revision)
    revision_log.regenerate_delivered_objects()
