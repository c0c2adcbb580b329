"""pgveil foundation: schemas veil and veil_private, pgcrypto, version marker.

Revision ID: 0001_foundation
Revises:
"""

from pgveil.installer import run_file

revision = "0001_foundation"
down_revision = None
branch_labels = ("pgveil",)
depends_on = None


def upgrade() -> None:
    run_file("foundation.sql")


def downgrade() -> None:
    run_file("foundation_drop.sql")
