"""Demo application follows the toolkit's verify revision (no demo changes).

Revision ID: d0011_merge_verify
Revises: d0010_merge_subset, 0011_verify
"""

revision = "d0011_merge_verify"
down_revision = ("d0010_merge_subset", "0011_verify")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
