"""Demo application follows the toolkit's export revision (no demo changes).

Revision ID: d0009_merge_export
Revises: d0008_merge_scan, 0009_export
"""

revision = "d0009_merge_export"
down_revision = ("d0008_merge_scan", "0009_export")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
