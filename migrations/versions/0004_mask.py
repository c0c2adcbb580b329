"""pgveil dynamic masking: mask views, masked roles, refresh on rule and DDL changes.

Revision ID: 0004_mask
Revises: 0003_stream
"""

from pgveil.installer import run_directory, run_file

revision = "0004_mask"
down_revision = "0003_stream"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_directory("0004_mask")


def downgrade() -> None:
    run_file("0004_mask/downgrade.sql")
