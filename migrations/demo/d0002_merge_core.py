"""Demo application follows the toolkit's core revision (no demo changes).

Revision ID: d0002_merge_core
Revises: d0001_retail_schema, 0002_core
"""

revision = "d0002_merge_core"
down_revision = ("d0001_retail_schema", "0002_core")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
