"""pgveil streaming: the live sanitized copy, backfill, key rotation, consumers.

Revision ID: 0003_stream
Revises: 0002_core
"""

from pgveil.installer import run_file, sql_files

revision = "0003_stream"
down_revision = "0002_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for relative in sql_files("stream"):
        run_file(relative)


def downgrade() -> None:
    run_file("stream_drop.sql")
