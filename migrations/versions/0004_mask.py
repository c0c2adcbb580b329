"""pgveil dynamic masking: mask views, masked roles, refresh on rule and DDL changes.

Revision ID: 0004_mask
Revises: 0003_stream
"""

from pgveil.installer import run_file, sql_files

revision = "0004_mask"
down_revision = "0003_stream"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for relative in sql_files("mask"):
        run_file(relative)


def downgrade() -> None:
    run_file("mask_drop.sql")
