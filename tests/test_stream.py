"""The live sanitized copy: triggers, erasure, DDL safety, backfill, rotation."""

from __future__ import annotations

import random
import secrets
import threading
import time

import psycopg
import pytest
from psycopg import sql

from pgveil import migrate
from tests.helpers import assert_copies_equal_transform, seed


def test_a_mixed_workload_keeps_the_copy_equal_to_the_transformed_source(demo):
    seed(demo)
    assert_copies_equal_transform(demo)
    demo.execute("UPDATE customer SET email = 'new' || customer_id || '@example.org' WHERE customer_id % 3 = 0")
    demo.execute("UPDATE customer SET activebool = NOT activebool, first_name = upper(first_name) WHERE store_id = 2")
    # Key changes move rows (payments follow through ON UPDATE CASCADE).
    demo.execute("UPDATE customer SET customer_id = customer_id + 100000 WHERE customer_id % 7 = 0")
    demo.execute("DELETE FROM customer WHERE customer_id % 5 = 0")
    demo.execute(
        "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
        " VALUES (1, 'Zoë', 'O''Brien', NULL, 1)"
    )
    with demo.admin.transaction():
        demo.execute("UPDATE payment SET amount = amount + 1 WHERE payment_id % 4 = 0")
        demo.execute("DELETE FROM payment WHERE payment_id % 9 = 0")
    assert_copies_equal_transform(demo)
    assert demo.scalar("SELECT count(*) FROM sanitized.customer WHERE email IS NULL") == 1
    demo.execute("TRUNCATE customer CASCADE")
    assert demo.scalar("SELECT count(*) FROM sanitized.customer") == 0
    assert demo.scalar("SELECT count(*) FROM sanitized.payment") == 0


def test_the_sanitized_join_equals_the_raw_join(demo):
    seed(demo)
    raw = demo.execute(
        "SELECT count(*), sum(p.amount), count(DISTINCT c.customer_id) FROM payment p JOIN customer c USING (customer_id)"
    ).fetchone()
    sanitized = demo.execute(
        "SELECT count(*), sum(p.amount), count(DISTINCT c.customer_id)"
        " FROM sanitized.payment p JOIN sanitized.customer c USING (customer_id)"
    ).fetchone()
    assert raw == sanitized
    per_store_raw = demo.execute(
        "SELECT c.store_id, sum(p.amount) FROM payment p JOIN customer c USING (customer_id) GROUP BY 1 ORDER BY 1"
    ).fetchall()
    per_store_copy = demo.execute(
        "SELECT c.store_id, sum(p.amount) FROM sanitized.payment p JOIN sanitized.customer c USING (customer_id)"
        " GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert per_store_raw == per_store_copy


def test_erasure_is_in_the_writers_transaction(demo):
    seed(demo, customers=5, payments=5)
    with demo.admin.transaction():
        demo.execute("DELETE FROM customer WHERE customer_id = 1")
        assert (
            demo.scalar("SELECT count(*) FROM sanitized.customer WHERE customer_id = veil.token('1', 'customer')") == 0
        )
        assert (
            demo.scalar("SELECT count(*) FROM sanitized.payment WHERE customer_id = veil.token('1', 'customer')") == 0
        )


def test_unlabeled_columns_never_reach_the_copy(demo):
    demo.execute("ALTER TABLE customer ADD COLUMN ssn text")
    seed(demo, customers=3, payments=1)
    demo.execute("UPDATE customer SET ssn = '123-45-6789'")
    columns = {
        r[0]
        for r in demo.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'sanitized.customer'::regclass AND attnum > 0"
        )
    }
    assert "ssn" not in columns and "address_id" not in columns
    assert "123-45-6789" not in str(demo.execute("SELECT * FROM sanitized.customer").fetchall())


def test_streams_need_a_primary_key_with_a_deterministic_rule(demo):
    demo.execute("CREATE TABLE public.nokey (a text)")
    with pytest.raises(psycopg.errors.RaiseException, match="has no primary key"):
        demo.execute("SELECT veil.stream('public.nokey')")
    demo.execute("CREATE TABLE public.keyed (id int PRIMARY KEY, a text)")
    with pytest.raises(psycopg.errors.RaiseException, match="need a rule in policy sanitized"):
        demo.execute("SELECT veil.stream('public.keyed')")
    demo.execute(
        "SELECT veil.security_label('sanitized', 'COLUMN', 'public.keyed.id', 'MASKED WITH FUNCTION veil.random_int_between(1, 10)')"
    )
    with pytest.raises(psycopg.errors.RaiseException, match="NOT MASKED or a veil.token"):
        demo.execute("SELECT veil.stream('public.keyed')")
    assert demo.scalar("SELECT to_regclass('sanitized.keyed')") is None


def test_same_named_tables_of_other_schemas_do_not_collide(demo):
    demo.execute("CREATE SCHEMA crm")
    demo.execute("CREATE TABLE crm.customer (id int PRIMARY KEY, name text)")
    demo.execute("SELECT veil.security_label('sanitized', 'COLUMN', 'crm.customer.id', 'NOT MASKED')")
    demo.execute(
        "SELECT veil.security_label('sanitized', 'COLUMN', 'crm.customer.name', 'MASKED WITH FUNCTION veil.token(name)')"
    )
    assert demo.scalar("SELECT veil.stream('crm.customer')::text") == "sanitized.crm__customer"
    demo.execute("INSERT INTO crm.customer VALUES (1, 'x')")
    assert demo.scalar("SELECT name FROM sanitized.crm__customer") == demo.scalar("SELECT veil.token('x')")
    demo.execute("SELECT veil.unstream('crm.customer')")
    assert demo.scalar("SELECT to_regclass('sanitized.crm__customer')") is None
    assert demo.scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'crm.customer'::regclass") == 0
    demo.execute("INSERT INTO crm.customer VALUES (2, 'y')")


def test_a_composite_key_is_followed_through_every_statement(demo):
    """Key order, key moves, the out-of-step fallback and the backfill with a two-column key."""
    demo.execute("CREATE TABLE orders (region text, order_no int, note text, PRIMARY KEY (region, order_no))")
    demo.execute("INSERT INTO orders SELECT 'r' || g % 3, g, 'n' || g FROM generate_series(1, 50) g")
    for column, label in (
        ("region", "MASKED WITH FUNCTION veil.token(region, 'region')"),
        ("order_no", "NOT MASKED"),
        ("note", "MASKED WITH FUNCTION veil.token(note)"),
    ):
        demo.execute("SELECT veil.security_label('sanitized', 'COLUMN', %s, %s)", (f"public.orders.{column}", label))
    demo.execute("SELECT veil.stream('orders')")
    demo.execute("CALL veil.backfill('orders', 7)")
    demo.execute("INSERT INTO orders SELECT 'r' || g % 3, g, 'n' || g FROM generate_series(51, 60) g")
    demo.execute("UPDATE orders SET region = 'moved' WHERE order_no <= 5")
    demo.execute("DELETE FROM orders WHERE order_no BETWEEN 20 AND 29")
    demo.execute("SET session_replication_role = replica")
    demo.execute("DELETE FROM orders WHERE order_no = 60")
    demo.execute("RESET session_replication_role")
    demo.execute("INSERT INTO orders VALUES ('r0', 60, 'back')")
    assert_copies_equal_transform(
        demo,
        [
            (
                "SELECT veil.token(region, 'region'), order_no, veil.token(note) FROM orders",
                "SELECT region, order_no, note FROM sanitized.orders",
            )
        ],
    )
    assert demo.scalar("SELECT count(*) FROM sanitized.orders") == 50


@pytest.mark.parametrize(
    "ddl",
    [
        "ALTER TABLE customer RENAME COLUMN email TO mail",
        "ALTER TABLE customer DROP COLUMN email",
        "ALTER TABLE customer ALTER COLUMN store_id TYPE integer",
        "ALTER TABLE customer ALTER COLUMN active TYPE bigint",
        "ALTER TABLE customer RENAME TO client",
        "ALTER TABLE customer ADD COLUMN notes text",
    ],
)
def test_ddl_on_a_streamed_table_never_breaks_writes(demo, ddl):
    seed(demo, customers=5, payments=5)
    demo.execute(ddl)
    table = "client" if "RENAME TO" in ddl else "customer"
    email = "mail" if "mail" in ddl else "email"
    columns = "store_id, first_name, last_name, address_id" + ("" if "DROP" in ddl else f", {email}")
    values = "2, 'New', 'Person', 1" + ("" if "DROP" in ddl else ", 'new@example.com'")
    demo.execute(f"INSERT INTO {table} ({columns}) VALUES ({values})")
    demo.execute(f"UPDATE {table} SET first_name = 'Changed' WHERE customer_id = 1")
    demo.execute(f"DELETE FROM {table} WHERE customer_id = 2")
    copy_rows = demo.scalar("SELECT count(*) FROM sanitized.customer")
    assert copy_rows == demo.scalar(f"SELECT count(*) FROM {table}")
    assert demo.scalar(
        "SELECT first_name FROM sanitized.customer WHERE customer_id = veil.token('1', 'customer')"
    ) == demo.scalar("SELECT veil.token('Changed', 'first_name')")


def test_dropping_a_streamed_table_drops_its_copy(demo):
    demo.execute("DROP TABLE payment")
    assert demo.scalar("SELECT to_regclass('sanitized.payment')") is None
    assert demo.scalar("SELECT count(*) FROM veil.streams") == 1


def test_backfill_copies_existing_rows_and_is_idempotent(demo):
    demo.execute("ALTER TABLE customer DISABLE TRIGGER USER")
    demo.execute("ALTER TABLE payment DISABLE TRIGGER USER")
    seed(demo, customers=1000, payments=10)
    demo.execute("ALTER TABLE customer ENABLE TRIGGER USER")
    demo.execute("ALTER TABLE payment ENABLE TRIGGER USER")
    assert demo.scalar("SELECT count(*) FROM sanitized.customer") == 0
    demo.execute("CALL veil.backfill('public.customer', batch_size => 128)")
    demo.execute("CALL veil.backfill('public.payment')")
    assert_copies_equal_transform(demo)
    progress = demo.execute(
        "SELECT backfilled_rows, needs_backfill FROM veil.streams WHERE source = 'customer'::regclass"
    ).fetchone()
    assert progress == (1000, False)
    demo.execute("CALL veil.backfill('public.customer', batch_size => 1000)")
    assert_copies_equal_transform(demo)


def test_backfill_resumes_where_it_stopped(demo):
    demo.execute("ALTER TABLE customer DISABLE TRIGGER USER")
    seed(demo, customers=500, payments=0)
    demo.execute("ALTER TABLE customer ENABLE TRIGGER USER")
    # A backfill that copied three batches and then died.
    demo.execute("INSERT INTO veil_private.backfill_progress (source) VALUES ('public.customer'::regclass)")
    last = None
    for _ in range(3):
        last, copied = demo.execute(
            "SELECT last_key, copied FROM veil_private.backfill_batch('public.customer'::regclass, 50, %s::text[])",
            (last,),
        ).fetchone()
    assert demo.scalar("SELECT rows_copied FROM veil_private.backfill_progress") == 150
    demo.execute("CALL veil.backfill('public.customer', batch_size => 50)")
    assert demo.scalar("SELECT rows_copied FROM veil_private.backfill_progress") == 500
    assert_copies_equal_transform(demo)


def test_backfill_rejects_bad_input(demo):
    with pytest.raises(psycopg.errors.RaiseException, match="batch_size must be a positive"):
        demo.execute("CALL veil.backfill('public.customer', batch_size => 0)")
    demo.execute("CREATE TABLE public.unstreamed (id int PRIMARY KEY)")
    with pytest.raises(psycopg.errors.RaiseException, match="is not streamed"):
        demo.execute("CALL veil.backfill('public.unstreamed')")


class Writers:
    """Application traffic on other connections while a maintenance task runs."""

    def __init__(self, url: str, connections: int = 2):
        self.url = url
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.statements = 0
        self.threads = [threading.Thread(target=self.run, args=(seed,)) for seed in range(connections)]

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self.stop.is_set():
                    customer = rng.randint(1, 2000)
                    action = rng.random()
                    if action < 0.4:
                        conn.execute(
                            "UPDATE customer SET email = %s WHERE customer_id = %s",
                            (f"w{rng.random()}@example.com", customer),
                        )
                    elif action < 0.6:
                        conn.execute("DELETE FROM customer WHERE customer_id = %s", (customer,))
                    elif action < 0.7:
                        conn.execute(
                            "UPDATE customer SET customer_id = customer_id + 1000000 WHERE customer_id = %s",
                            (customer,),
                        )
                    else:
                        conn.execute(
                            "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
                            " VALUES (1, %s, 'w', 'w@example.com', 1)",
                            (f"w{rng.random()}",),
                        )
                    self.statements += 1
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)

    def __enter__(self):
        for t in self.threads:
            t.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()
        assert self.errors == []
        assert self.statements > 20


def test_backfill_under_concurrent_writes(demo):
    demo.execute("ALTER TABLE customer DISABLE TRIGGER USER")
    seed(demo, customers=2000, payments=0)
    demo.execute("ALTER TABLE customer ENABLE TRIGGER USER")
    with Writers(demo.url):
        demo.execute("CALL veil.backfill('public.customer', batch_size => 50)")
    assert_copies_equal_transform(demo)


def test_rekey_under_concurrent_writes_leaves_no_old_token(demo):
    seed(demo, customers=2000, payments=500)
    old = demo.scalar("SELECT veil.token('1', 'customer')")
    with Writers(demo.url):
        demo.execute("CALL veil.rekey(batch_size => 100)")
    assert demo.scalar("SELECT array_agg(version) FROM veil.key_versions") == [2]
    for column in ("customer_id", "first_name", "email"):
        assert demo.scalar(f"SELECT count(*) FROM sanitized.customer WHERE veil.token_key_version({column}) <> 2") == 0
    assert demo.scalar("SELECT count(*) FROM sanitized.payment WHERE veil.token_key_version(customer_id) <> 2") == 0
    assert demo.scalar("SELECT veil.token('1', 'customer')") != old
    assert_copies_equal_transform(demo)


@pytest.mark.parametrize(
    "out_of_step",
    [
        "ALTER TABLE customer DISABLE TRIGGER veil_stream_delete",
        "SET session_replication_role = replica",
    ],
)
def test_a_copy_out_of_step_does_not_make_inserts_fail(demo, out_of_step):
    """A copy row left behind while the triggers were off must not break the application's next insert."""
    seed(demo, customers=3, payments=0)
    demo.execute(out_of_step)
    demo.execute("DELETE FROM customer WHERE customer_id = 2")
    demo.execute("RESET session_replication_role")
    demo.execute("ALTER TABLE customer ENABLE TRIGGER veil_stream_delete")
    assert demo.scalar("SELECT count(*) FROM sanitized.customer WHERE customer_id = veil.token('2', 'customer')") == 1
    demo.execute(
        "INSERT INTO customer (customer_id, store_id, first_name, last_name, email, address_id)"
        " VALUES (2, 2, 'Again', 'Back', 'again@example.com', 1)"
    )
    assert_copies_equal_transform(demo)
    assert demo.scalar(
        "SELECT first_name FROM sanitized.customer WHERE customer_id = veil.token('2', 'customer')"
    ) == demo.scalar("SELECT veil.token('Again', 'first_name')")


def test_labeling_another_column_adds_it_to_the_copy_until_the_next_backfill(demo):
    seed(demo, customers=20, payments=0)
    demo.execute("CALL veil.backfill('public.customer')")
    demo.execute("SELECT veil.security_label('sanitized', 'COLUMN', 'public.customer.address_id', 'NOT MASKED')")
    assert demo.scalar("SELECT needs_backfill FROM veil.streams WHERE source = 'customer'::regclass") is True
    assert demo.scalar("SELECT count(address_id) FROM sanitized.customer") == 0
    demo.execute("UPDATE customer SET address_id = 2 WHERE customer_id = 1")
    assert demo.scalar("SELECT count(address_id) FROM sanitized.customer") == 1
    demo.execute("CALL veil.backfill('public.customer')")
    assert demo.scalar("SELECT count(address_id) FROM sanitized.customer") == 20
    # Removing the rule takes the column out of the copy again.
    demo.execute("SELECT veil.security_label('sanitized', 'COLUMN', 'public.customer.address_id', NULL)")
    assert (
        demo.scalar(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'sanitized.customer'::regclass"
            " AND attname = 'address_id' AND NOT attisdropped"
        )
        == 0
    )


def test_the_key_column_keeps_its_rule_while_streamed(demo):
    with pytest.raises(psycopg.errors.RaiseException, match="must keep its rules"):
        demo.execute("SELECT veil.security_label('sanitized', 'COLUMN', 'public.customer.customer_id', NULL)")
    assert (
        demo.scalar("SELECT count(*) FROM veil.rules WHERE column_name = 'customer_id' AND policy = 'sanitized'") == 2
    )


def text_collations(db, relation):
    return dict(
        db.execute(
            "SELECT attname, attcollation::regcollation::text FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped AND attcollation <> 0",
            (relation,),
        ).fetchall()
    )


def test_token_columns_collate_c_and_not_masked_columns_keep_their_collation(demo):
    demo.execute('CREATE TABLE tagged (id int PRIMARY KEY, label text COLLATE "POSIX", secret text)')
    for column, label in (
        ("id", "NOT MASKED"),
        ("label", "NOT MASKED"),
        ("secret", "MASKED WITH FUNCTION veil.token(secret)"),
    ):
        demo.execute("SELECT veil.security_label('sanitized', 'COLUMN', %s, %s)", (f"public.tagged.{column}", label))
    demo.execute("SELECT veil.stream('tagged')")
    demo.execute("INSERT INTO tagged VALUES (1, 'b', 'Zoë'), (2, 'a', 'x')")
    assert text_collations(demo, "sanitized.tagged") == {"label": '"POSIX"', "secret": '"C"'}
    # The rules swap: each copy column follows its new rule's collation.
    demo.execute(
        "SELECT veil.security_label('sanitized', 'COLUMN', 'public.tagged.label', 'MASKED WITH FUNCTION veil.token(label)')"
    )
    demo.execute("SELECT veil.security_label('sanitized', 'COLUMN', 'public.tagged.secret', 'NOT MASKED')")
    assert text_collations(demo, "sanitized.tagged") == {"label": '"C"', "secret": '"default"'}
    demo.execute("CALL veil.backfill('tagged')")
    demo.execute("UPDATE tagged SET label = label || '!'")
    assert_copies_equal_transform(
        demo,
        (
            # veil.token(label) inherits "POSIX" from label: comparing it with a "C"
            # column takes an explicit COLLATE (the one case docs/streaming.md names).
            (
                'SELECT id, veil.token(label) COLLATE "C" AS label, secret FROM tagged',
                "SELECT id, label, secret FROM sanitized.tagged",
            ),
        ),
    )


def test_tokens_join_and_index_lookups_with_default_collation_text(demo):
    """A consumer's own text column (default collation) joins a "C" token column,
    and a lookup by a token given as plain text uses the copy's index."""
    seed(demo, customers=50, payments=0)
    demo.execute("CREATE TABLE crm_ids (customer_id text)")
    demo.execute(
        "INSERT INTO crm_ids SELECT veil.token(customer_id::text, 'customer') FROM customer WHERE customer_id <= 10"
    )
    assert demo.scalar("SELECT count(*) FROM crm_ids JOIN sanitized.customer USING (customer_id)") == 10
    token = demo.scalar("SELECT veil.token('3', 'customer')")
    with demo.admin.transaction():
        demo.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in demo.execute("EXPLAIN SELECT email FROM sanitized.customer WHERE customer_id = %s::text", (token,))
        )
    assert "Index Scan using customer_pkey" in plan, plan
    assert demo.scalar("SELECT count(*) FROM sanitized.customer WHERE customer_id = %s::text", (token,)) == 1


def test_tokens_in_a_database_that_is_not_utf8_equal_veil_token(pg_server):
    """The generated triggers of a LATIN1 database convert to UTF-8 as veil.token does."""
    name = f"pgveil_latin1_{secrets.token_hex(3)}"
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as maintenance:
        maintenance.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'").format(
                sql.Identifier(name)
            )
        )
        try:
            migrate.upgrade(pg_server.url(name))
            with psycopg.connect(pg_server.url(name), autocommit=True) as db:
                db.execute("CREATE TABLE people (name text PRIMARY KEY)")
                db.execute(
                    "SELECT veil.security_label('sanitized', 'COLUMN', 'public.people.name',"
                    " 'MASKED WITH FUNCTION veil.token(name)')"
                )
                db.execute("SELECT veil.stream('people')")
                db.execute("INSERT INTO people VALUES ('Zoë'), ('Müller'), ('plain')")
                copied = db.execute("SELECT name FROM sanitized.people ORDER BY 1").fetchall()
                expected = db.execute("SELECT veil.token(name) FROM people ORDER BY 1").fetchall()
                assert len(copied) == 3 and copied == expected
        finally:
            maintenance.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
