"""pgveil core: keys and tokens, masking functions, fake dictionaries, rule catalog.

Revision ID: 0002_core
Revises: 0001_foundation
"""

from alembic import context, op

from pgveil import dictionaries
from pgveil.installer import driver_connection, run_directory, run_file

revision = "0002_core"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_directory("0002_core")
    locale = (
        context.config.attributes.get("locale")
        or context.get_x_argument(as_dictionary=True).get("locale")
        or dictionaries.DEFAULT_LOCALE
    )
    dictionaries.load(driver_connection(op.get_bind()), locale=locale)


def downgrade() -> None:
    run_file("0002_core/downgrade.sql")
