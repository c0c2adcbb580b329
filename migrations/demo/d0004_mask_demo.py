"""Demo application: mask customer and address for role analyst.

Analysts read the same table names and see fake names and addresses and
partial emails and phones; columns without a rule (address2, postal_code) are
hidden. The role's name comes from `-x analyst_role=…` (default analyst); it
is created if missing and dropped on downgrade only if this revision created
it.

Revision ID: d0004_mask_demo
Revises: d0003_stream_demo, 0004_mask
"""

from alembic import op

from demo.roles import drop_if_created, ensure_role, role_name
from pgveil.installer import driver_connection

revision = "d0004_mask_demo"
down_revision = ("d0003_stream_demo", "0004_mask")
branch_labels = None
depends_on = None

NOT_MASKED = "NOT MASKED"
RULES = {
    "public.customer": {
        "customer_id": NOT_MASKED,
        "store_id": NOT_MASKED,
        "first_name": "MASKED WITH FUNCTION veil.fake_first_name()",
        "last_name": "MASKED WITH FUNCTION veil.fake_last_name()",
        "email": "MASKED WITH FUNCTION veil.partial_email(email)",
        "address_id": NOT_MASKED,
        "activebool": NOT_MASKED,
        "create_date": NOT_MASKED,
        "last_update": NOT_MASKED,
        "active": NOT_MASKED,
    },
    "public.address": {
        "address_id": NOT_MASKED,
        "address": "MASKED WITH FUNCTION veil.fake_address()",
        "district": NOT_MASKED,
        "city": NOT_MASKED,
        "phone": "MASKED WITH FUNCTION veil.partial(phone, 3, '*****', 2)",
        "last_update": NOT_MASKED,
    },
    "public.payment": {
        "payment_id": NOT_MASKED,
        "customer_id": NOT_MASKED,
        "amount": NOT_MASKED,
        "payment_date": NOT_MASKED,
    },
}


def analyst_role() -> str:
    return role_name("analyst_role", "analyst")


def upgrade() -> None:
    role = analyst_role()
    ensure_role(driver_connection(op.get_bind()), role)
    for table, columns in RULES.items():
        for column, label in columns.items():
            op.security_label("mask", "COLUMN", f"{table}.{column}", label)
    op.mask_role(role)


def downgrade() -> None:
    role = analyst_role()
    op.unmask_role(role)
    for table, columns in RULES.items():
        for column in columns:
            op.security_label("mask", "COLUMN", f"{table}.{column}", None)
    drop_if_created(driver_connection(op.get_bind()), role)
