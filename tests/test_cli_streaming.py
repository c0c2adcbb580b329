"""`pgveil backfill` and `pgveil rotate-key` against a real database."""

from __future__ import annotations

from tests.helpers import assert_copies_equal_transform, pgveil, seed


def test_backfill_command(demo):
    demo.execute("ALTER TABLE customer DISABLE TRIGGER USER")
    seed(demo, customers=700, payments=0)
    demo.execute("ALTER TABLE customer ENABLE TRIGGER USER")
    demo.execute("ANALYZE customer")
    done = pgveil("backfill", "public.customer", "--batch-size", "100", "--database-url", demo.url)
    assert done.returncode == 0, done.stderr
    assert "700 rows copied" in done.stdout
    assert_copies_equal_transform(demo)
    assert demo.scalar("SELECT needs_backfill FROM veil.streams WHERE source = 'customer'::regclass") is False


def test_backfill_command_bad_input(demo):
    demo.execute("CREATE TABLE public.plain (id int PRIMARY KEY)")
    done = pgveil("backfill", "public.plain", "--database-url", demo.url)
    assert done.returncode == 1
    assert "is not streamed" in done.stderr and "Traceback" not in done.stderr
    done = pgveil("backfill", "public.customer", "--batch-size", "0", "--database-url", demo.url)
    assert done.returncode != 0 and "Traceback" not in done.stderr


def test_rotate_key_command(demo):
    seed(demo, customers=300, payments=100)
    done = pgveil("rotate-key", "--batch-size", "64", "--database-url", demo.url)
    assert done.returncode == 0, done.stderr
    assert "key version 2 is current" in done.stdout
    assert demo.scalar("SELECT count(*) FROM sanitized.customer WHERE veil.token_key_version(customer_id) = 1") == 0
    assert_copies_equal_transform(demo)
