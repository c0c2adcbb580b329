"""Demo application follows the toolkit's discovery revision (no demo changes).

Revision ID: d0008_merge_scan
Revises: d0007_merge_static, 0008_scan
"""

revision = "d0008_merge_scan"
down_revision = ("d0007_merge_static", "0008_scan")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
