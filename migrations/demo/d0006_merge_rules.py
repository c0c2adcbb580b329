"""Demo application follows the toolkit's revision log and rule compiler (no demo changes).

Revision ID: d0006_merge_rules
Revises: d0005_app_traffic, 0006_rules
"""

revision = "d0006_merge_rules"
down_revision = ("d0005_app_traffic", "0006_rules")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
