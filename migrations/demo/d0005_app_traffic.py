"""Demo application: the application's own login role, and indexes the consumer catches up by.

The loader plays the application as role `app` (name from `-x app_role=…`):
it reads and writes the raw tables and uses their sequences, like any
application, and is neither a superuser nor the tables' owner. The consumer
catches up after a reconnect by each copy's change timestamp; the indexes keep
that catch-up a range scan.

Revision ID: d0005_app_traffic
Revises: d0004_mask_demo
"""

from alembic import op
from psycopg import sql

from demo.roles import drop_if_created, ensure_role, role_name
from pgveil.installer import driver_connection

revision = "d0005_app_traffic"
down_revision = "d0004_mask_demo"
branch_labels = None
depends_on = None

TABLES = ("address", "customer", "payment")
SEQUENCES = ("address_address_id_seq", "customer_customer_id_seq", "payment_payment_id_seq")
CATCH_UP_INDEXES = {"customer": "last_update", "payment": "payment_date"}


def app_role() -> str:
    return role_name("app_role", "app")


def upgrade() -> None:
    role = sql.Identifier(app_role())
    conn = driver_connection(op.get_bind())
    ensure_role(conn, app_role())
    for table in TABLES:
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(sql.Identifier("public", table), role)
        )
    for sequence in SEQUENCES:
        conn.execute(
            sql.SQL("GRANT USAGE, SELECT ON SEQUENCE {} TO {}").format(sql.Identifier("public", sequence), role)
        )
    for table, column in CATCH_UP_INDEXES.items():
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} ({})").format(
                sql.Identifier(f"{table}_{column}_idx"), sql.Identifier("sanitized", table), sql.Identifier(column)
            )
        )


def downgrade() -> None:
    role = sql.Identifier(app_role())
    conn = driver_connection(op.get_bind())
    for table, column in CATCH_UP_INDEXES.items():
        # IF EXISTS: unstreaming a table drops its copy, indexes and all.
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier("sanitized", f"{table}_{column}_idx")))
    for sequence in SEQUENCES:
        conn.execute(sql.SQL("REVOKE ALL ON SEQUENCE {} FROM {}").format(sql.Identifier("public", sequence), role))
    for table in TABLES:
        conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier("public", table), role))
    drop_if_created(conn, app_role())
