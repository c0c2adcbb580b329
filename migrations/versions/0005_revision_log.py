"""pgveil revision log: later revisions are undone from what the catalog showed them change.

Revision ID: 0005_revision_log
Revises: 0004_mask
"""

from pgveil import revision_log

revision = "0005_revision_log"
down_revision = "0004_mask"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_log.upgrade(revision)


def downgrade() -> None:
    revision_log.downgrade(revision)
