"""Demo application follows the toolkit's static anonymization revision (no demo changes).

Revision ID: d0007_merge_static
Revises: d0006_merge_rules, 0007_static
"""

revision = "d0007_merge_static"
down_revision = ("d0006_merge_rules", "0007_static")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
