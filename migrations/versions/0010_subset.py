"""pgveil subsets: which rows of the exported tables a subset keeps, closed
under foreign keys (pgveil dump/sync --subset).

Functions only: everything is logged and undone by the revision log.

Revision ID: 0010_subset
Revises: 0009_export
"""

from pgveil import revision_log

revision = "0010_subset"
down_revision = "0009_export"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_log.upgrade(revision)


def downgrade() -> None:
    revision_log.downgrade(revision)
