"""op.security_label and op.rotate_key, and their reversal."""

from __future__ import annotations

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

import pgveil.alembic_ops
from pgveil.config import sqlalchemy_url

EMAIL = "public.customer.email"
PARTIAL = "MASKED WITH FUNCTION veil.partial_email(email)"
FAKE = "MASKED WITH FUNCTION veil.fake_email()"


def run(db, steps):
    engine = create_engine(sqlalchemy_url(db.url), poolclass=NullPool)
    with engine.begin() as connection:
        steps(Operations(MigrationContext.configure(connection)))


def current_label(db):
    return db.scalar("SELECT veil.current_label('mask', 'COLUMN', %s)", (EMAIL,))


def test_security_label_and_its_reverse_restore_the_previous_label(demo):
    run(demo, lambda op: op.security_label("mask", "COLUMN", EMAIL, PARTIAL))
    assert current_label(demo) == PARTIAL
    change = pgveil.alembic_ops.SecurityLabelOp("mask", "COLUMN", EMAIL, FAKE, previous_label=PARTIAL)
    run(demo, lambda op: op.invoke(change))
    assert current_label(demo) == FAKE
    run(demo, lambda op: op.invoke(change.reverse()))
    assert current_label(demo) == PARTIAL
    first = pgveil.alembic_ops.SecurityLabelOp("mask", "COLUMN", EMAIL, PARTIAL)
    run(demo, lambda op: op.invoke(first.reverse()))
    assert current_label(demo) is None


def test_rotate_key_and_its_reverse(demo):
    before = demo.scalar("SELECT veil.token('x')")
    run(demo, lambda op: op.rotate_key())
    assert demo.scalar("SELECT veil.token_key_version(veil.token('x'))") == 2
    run(demo, lambda op: op.invoke(pgveil.alembic_ops.RotateKeyOp().reverse()))
    assert demo.scalar("SELECT veil.token('x')") == before


def test_stream_table_backfill_table_and_reverse(demo):
    demo.execute("CREATE TABLE public.store (store_id int PRIMARY KEY, manager text)")
    demo.execute("INSERT INTO public.store SELECT g, 'manager ' || g FROM generate_series(1, 25) g")
    run(demo, lambda op: op.security_label("sanitized", "COLUMN", "public.store.store_id", "NOT MASKED"))
    run(demo, lambda op: op.stream_table("public.store"))
    assert demo.scalar("SELECT count(*) FROM sanitized.store") == 0
    # The backfill commits per batch: outside the migration's transaction.
    engine = create_engine(sqlalchemy_url(demo.url), poolclass=NullPool)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        Operations(MigrationContext.configure(connection)).backfill_table("public.store", batch_size=10)
    assert demo.scalar("SELECT count(*) FROM sanitized.store") == 25
    run(demo, lambda op: op.invoke(pgveil.alembic_ops.StreamTableOp("public.store").reverse()))
    assert demo.scalar("SELECT to_regclass('sanitized.store')") is None
