"""pgveil discovery: PII detectors for the scan, the preview of a policy's
output beside the raw rows, and the coverage checks of the audit gate.

Functions only: everything is logged and undone by the revision log.

Revision ID: 0008_scan
Revises: 0007_static
"""

from pgveil import revision_log

revision = "0008_scan"
down_revision = "0007_static"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revision_log.upgrade(revision)


def downgrade() -> None:
    revision_log.downgrade(revision)
