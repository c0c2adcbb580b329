"""pgveil rule compiler: one compiler for every delivery; stream triggers from a template.

Mask views and stream triggers are regenerated with it (unchanged in what
they do); the downgrade restores the compilers it replaced and regenerates
them again.

Revision ID: 0006_rules
Revises: 0005_revision_log
"""

from pgveil import revision_log

revision = "0006_rules"
down_revision = "0005_revision_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_log.upgrade(revision)
    revision_log.regenerate_delivered_objects()


def downgrade() -> None:
    revision_log.downgrade(revision)
    revision_log.regenerate_delivered_objects()
