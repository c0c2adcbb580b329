"""pgveil verify: the leak scan's queries (pgveil verify) and re-identification risk
(veil.k_anonymity, pgveil report k-anonymity).

Functions only: everything is logged and undone by the revision log.

Revision ID: 0011_verify
Revises: 0010_subset
"""

from pgveil import revision_log

revision = "0011_verify"
down_revision = "0010_subset"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_log.upgrade(revision)


def downgrade() -> None:
    revision_log.downgrade(revision)
