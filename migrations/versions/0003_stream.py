"""pgveil streaming: the live sanitized copy, backfill, key rotation, consumers.

Revision ID: 0003_stream
Revises: 0002_core
"""

from pgveil.installer import run_directory, run_file

revision = "0003_stream"
down_revision = "0002_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_directory("0003_stream")


def downgrade() -> None:
    run_file("0003_stream/downgrade.sql")
