"""Demo application follows the toolkit's change-log revision (no demo changes).

Revision ID: d0012_merge_change_log
Revises: d0011_merge_verify, 0012_change_log
"""

revision = "d0012_merge_change_log"
down_revision = ("d0011_merge_verify", "0012_change_log")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
