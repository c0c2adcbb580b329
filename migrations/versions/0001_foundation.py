"""pgveil foundation: schemas veil and veil_private, pgcrypto, version marker.

Revision ID: 0001_foundation
Revises:
"""

from pgveil.installer import run_directory, run_file

revision = "0001_foundation"
down_revision = None
branch_labels = ("pgveil",)
depends_on = None


def upgrade() -> None:
    run_directory("0001_foundation")


def downgrade() -> None:
    run_file("0001_foundation/downgrade.sql")
