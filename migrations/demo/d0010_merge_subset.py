"""Demo application follows the toolkit's subset revision (no demo changes).

Revision ID: d0010_merge_subset
Revises: d0009_merge_export, 0010_subset
"""

revision = "d0010_merge_subset"
down_revision = ("d0009_merge_export", "0010_subset")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
