"""pgveil export: the queries an anonymized dump runs per table, checked
against the policy, and the search for the row a failing rule stops on.

Functions only: everything is logged and undone by the revision log.

Revision ID: 0009_export
Revises: 0008_scan
"""

from pgveil import revision_log

revision = "0009_export"
down_revision = "0008_scan"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_log.upgrade(revision)


def downgrade() -> None:
    revision_log.downgrade(revision)
