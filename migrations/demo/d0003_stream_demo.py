"""Demo application: stream customer and payment into sanitized.*, for role consumer.

customer_id is a token with purpose 'customer' in both tables, so
sanitized.payment JOIN sanitized.customer USING (customer_id) matches the raw
join. The consumer role's name comes from `-x consumer_role=…` (default
consumer); it is created if missing and dropped on downgrade only if this
revision created it.

Revision ID: d0003_stream_demo
Revises: d0002_merge_core, 0003_stream
"""

from alembic import op

from demo.roles import drop_if_created, ensure_role, role_name
from pgveil.installer import driver_connection

revision = "d0003_stream_demo"
down_revision = ("d0002_merge_core", "0003_stream")
branch_labels = None
depends_on = None

TOKEN = "MASKED WITH FUNCTION veil.token({column}{cast}, '{purpose}')"
RULES = {
    "public.customer": {
        "customer_id": TOKEN.format(column="customer_id", cast="::text", purpose="customer"),
        "first_name": TOKEN.format(column="first_name", cast="", purpose="first_name"),
        "last_name": TOKEN.format(column="last_name", cast="", purpose="last_name"),
        "email": TOKEN.format(column="email", cast="", purpose="email"),
        "store_id": "NOT MASKED",
        "activebool": "NOT MASKED",
        "create_date": "NOT MASKED",
        "last_update": "NOT MASKED",
        "active": "NOT MASKED",
    },
    "public.payment": {
        "payment_id": "NOT MASKED",
        "customer_id": TOKEN.format(column="customer_id", cast="::text", purpose="customer"),
        "amount": "NOT MASKED",
        "payment_date": "NOT MASKED",
    },
}


def consumer_role() -> str:
    return role_name("consumer_role", "consumer")


def upgrade() -> None:
    role = consumer_role()
    conn = driver_connection(op.get_bind())
    conn.execute("CREATE TABLE public.demo_created_roles (role_name name PRIMARY KEY)")
    ensure_role(conn, role)
    for table, columns in RULES.items():
        for column, label in columns.items():
            op.security_label("sanitized", "COLUMN", f"{table}.{column}", label)
        op.stream_table(table)
    conn.execute("SELECT veil.grant_consumer(%s)", (role,))


def downgrade() -> None:
    conn = driver_connection(op.get_bind())
    conn.execute("SELECT veil.revoke_consumer(%s)", (consumer_role(),))
    for table, columns in RULES.items():
        op.unstream_table(table)
        for column in columns:
            op.security_label("sanitized", "COLUMN", f"{table}.{column}", None)
    drop_if_created(conn, consumer_role())
    conn.execute("DROP TABLE public.demo_created_roles")
