"""Demo application: retail schema modeled on Pagila (address, customer, payment).

Not part of the toolkit: `pgveil install` never applies it. Each toolkit
revision that follows gets a demo revision merging it in, so a checkout's
`alembic upgrade head` has exactly one head.

Revision ID: d0001_retail_schema
Revises: 0001_foundation
"""

from pgveil.installer import run_file

revision = "d0001_retail_schema"
down_revision = "0001_foundation"
branch_labels = ("demo",)
depends_on = None


def upgrade() -> None:
    run_file("demo/retail.sql")


def downgrade() -> None:
    run_file("demo/retail_drop.sql")
