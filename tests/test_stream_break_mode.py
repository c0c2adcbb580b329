"""Streaming where pgveil's event triggers cannot be created: policies with on_ddl => 'break'.

pgveil is installed by a database owner who is not a superuser (the managed-service
case), so the DDL event triggers are absent. There, DDL on a streamed table must never
make an application write fail: the stream is marked broken (or is seen to be stale),
`pgveil status` and `pgveil audit` exit 1 naming it, and `pgveil refresh` rebuilds and
backfills it. Each DDL case of the event-trigger mode's tests
(tests/test_stream.py::test_ddl_on_a_streamed_table_never_breaks_writes,
test_dropping_a_streamed_table_drops_its_copy) is tried here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from typer.testing import CliRunner, Result

from pgveil import migrate
from pgveil.cli import app
from pgveil.services import masking
from tests.conftest import Database, Role

POLICY = "shop"
SECRET = "zz-raw-secret-4711@example.com"

SCHEMA = """
CREATE TABLE public.customer (
    customer_id serial PRIMARY KEY,
    store_id    smallint NOT NULL,
    first_name  text NOT NULL,
    last_name   text NOT NULL,
    email       text,
    activebool  boolean NOT NULL DEFAULT true,
    create_date date NOT NULL DEFAULT CURRENT_DATE,
    last_update timestamptz DEFAULT pg_catalog.now(),
    active      integer
);
CREATE TABLE public.payment (
    payment_id   serial PRIMARY KEY,
    customer_id  integer NOT NULL REFERENCES public.customer ON UPDATE CASCADE ON DELETE CASCADE,
    amount       numeric(5,2) NOT NULL,
    payment_date timestamptz NOT NULL DEFAULT pg_catalog.now()
);
"""

# The demo's sanitized rules, in a copy policy of this test's own.
TOKEN = "MASKED WITH FUNCTION veil.token({column}{cast}, '{purpose}')"
RULES = {
    "public.customer": {
        "customer_id": TOKEN.format(column="customer_id", cast="::text", purpose="customer"),
        "store_id": "NOT MASKED",
        "first_name": TOKEN.format(column="first_name", cast="", purpose="first_name"),
        "last_name": TOKEN.format(column="last_name", cast="", purpose="last_name"),
        "email": TOKEN.format(column="email", cast="", purpose="email"),
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

PAYMENT_PAIR = (
    "SELECT payment_id, veil.token(customer_id::text, 'customer') AS customer_id, amount, payment_date"
    " FROM public.payment",
    "SELECT payment_id, customer_id, amount, payment_date FROM sanitized.payment",
)


def customer_pair(table: str = "customer", email: str | None = "email") -> tuple[str, str]:
    """The customer copy's transform, and the copy, with the table and its email column
    as a DDL left them (``email`` None: dropped)."""
    transform_email = f"veil.token({email}, 'email') AS {email}, " if email else ""
    copy_email = f"{email}, " if email else ""
    return (
        "SELECT veil.token(customer_id::text, 'customer') AS customer_id, store_id,"
        " veil.token(first_name, 'first_name') AS first_name, veil.token(last_name, 'last_name') AS last_name,"
        f" {transform_email}activebool, create_date, last_update, active FROM public.{table}",
        f"SELECT customer_id, store_id, first_name, last_name, {copy_email}activebool, create_date,"
        " last_update, active FROM sanitized.customer",
    )


def assert_copy_equals_transform(conn: psycopg.Connection[Any], pair: tuple[str, str]) -> None:
    transform, copy = pair
    missing = conn.execute(f"({transform}) EXCEPT ALL ({copy})").fetchall()
    extra = conn.execute(f"({copy}) EXCEPT ALL ({transform})").fetchall()
    assert (missing, extra) == ([], []), transform


@dataclass
class Shop:
    """A database whose owner, not a superuser, installed pgveil and streams two tables
    under policy shop with on_ddl => 'break'; ``app`` writes them with DML privileges only."""

    db: Database
    owner: Role
    app: Role
    conn: psycopg.Connection[Any]  # the owner's, autocommit

    def scalar(self, query: str, params: Any = None) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    def stream(self, source: str) -> dict[str, Any]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("SELECT * FROM veil.streams WHERE target = %s::regclass", (source,)).fetchone()
        assert row is not None
        return row


def install_as_owner(bare: Database) -> Role:
    owner = bare.role("owner")
    bare.execute(f'ALTER DATABASE "{bare.name}" OWNER TO "{owner.name}"')
    bare.execute(f'ALTER SCHEMA public OWNER TO "{owner.name}"')
    migrate.upgrade(owner.url)
    assert bare.scalar("SELECT count(*) FROM pg_event_trigger") == 0
    assert bare.scalar(f"SELECT rolsuper FROM pg_roles WHERE rolname = '{owner.name}'") is False
    return owner


def label_tables(conn: psycopg.Connection[Any]) -> None:
    for table, columns in RULES.items():
        for column, rule in columns.items():
            conn.execute("SELECT veil.security_label(%s, 'COLUMN', %s, %s)", (POLICY, f"{table}.{column}", rule))


def seed(conn: psycopg.Connection[Any], customers: int = 20, payments: int = 30) -> None:
    conn.execute(
        "INSERT INTO customer (store_id, first_name, last_name, email, active)"
        " SELECT 1 + g %% 2, 'first' || g, 'last' || g, 'c' || g || '@example.com', g FROM generate_series(1, %s) g",
        (customers,),
    )
    conn.execute(
        "INSERT INTO payment (customer_id, amount) SELECT 1 + g %% %s, (g %% 100) + 0.99 FROM generate_series(1, %s) g",
        (customers, payments),
    )


@pytest.fixture
def shop(bare: Database) -> Iterator[Shop]:
    owner = install_as_owner(bare)
    app_role = bare.role("app")
    with owner.connect(autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{app_role.name}"')
        conn.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{app_role.name}"')
        conn.execute("SELECT veil.create_policy(%s, 'copy')", (POLICY,))
        yield Shop(bare, owner, app_role, conn)


@pytest.fixture
def streamed(shop: Shop) -> Shop:
    """shop's tables labeled, streamed with on_ddl => 'break', seeded and backfilled."""
    label_tables(shop.conn)
    shop.conn.execute("SELECT veil.alter_policy(%s, on_ddl => 'break')", (POLICY,))
    shop.conn.execute("SELECT veil.stream('public.customer', %s)", (POLICY,))
    shop.conn.execute("SELECT veil.stream('public.payment', %s)", (POLICY,))
    seed(shop.conn)
    shop.conn.execute("CALL veil.backfill('public.customer')")
    shop.conn.execute("CALL veil.backfill('public.payment')")
    assert_copy_equals_transform(shop.conn, customer_pair())
    assert_copy_equals_transform(shop.conn, PAYMENT_PAIR)
    return shop


def pgveil(url: str, *args: str) -> Result:
    return CliRunner().invoke(app, [*args, "--database-url", url])


def status(shop: Shop) -> tuple[int, dict[str, Any]]:
    result = pgveil(shop.owner.url, "status", "--json")
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def audit(shop: Shop) -> tuple[int, set[tuple[str, str, str]], str]:
    result = pgveil(shop.owner.url, "audit", "--json")
    assert result.exit_code in (0, 1), result.output
    found = json.loads(result.stdout)["problems"]
    return result.exit_code, {(p["policy"], p["problem"], p["object"]) for p in found}, result.stdout


def stream_problems(report: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(p["policy"], p["problem"], p["object"]) for p in report["problems"] if "stream" in p["problem"]}


# --- the option ---


def test_without_event_triggers_stream_refuses_under_rebuild_and_streams_under_break(shop: Shop):
    label_tables(shop.conn)
    assert shop.scalar("SELECT count(*) FROM pg_event_trigger") == 0
    with pytest.raises(psycopg.errors.RaiseException, match="DDL event trigger") as refused:
        shop.conn.execute("SELECT veil.stream('public.customer', %s)", (POLICY,))
    hint = refused.value.diag.message_hint or ""
    assert "on_ddl" in hint and "break" in hint, hint
    assert shop.scalar("SELECT to_regclass('sanitized.customer')") is None
    assert shop.scalar("SELECT count(*) FROM veil.streams") == 0

    shop.conn.execute("SELECT veil.alter_policy(%s, on_ddl => 'break')", (POLICY,))
    assert shop.scalar("SELECT veil.stream('public.customer', %s)::text", (POLICY,)) == "sanitized.customer"
    row = shop.stream("sanitized.customer")
    assert (row["on_ddl"], row["broken_at"], row["stale"], row["source_exists"]) == ("break", None, False, True)
    with shop.app.connect(autocommit=True) as app_conn:
        app_conn.execute("INSERT INTO customer (store_id, first_name, last_name, email) VALUES (1, 'a', 'b', 'c')")
    assert_copy_equals_transform(shop.conn, customer_pair())
    code, report = status(shop)
    assert code == 0 and report["problems"] == [], report["problems"]
    assert [s["on_ddl"] for s in report["streams"]] == ["break"]


def test_on_ddl_rejects_bad_values_and_changes_nothing(shop: Shop):
    with pytest.raises(psycopg.errors.RaiseException, match="on_ddl is 'rebuild' or 'break'"):
        shop.conn.execute("SELECT veil.alter_policy(%s, on_ddl => 'ignore')", (POLICY,))
    with pytest.raises(psycopg.errors.RaiseException, match="delivered as a copy"):
        shop.conn.execute("SELECT veil.alter_policy('mask', on_ddl => 'break')")
    label_tables(shop.conn)
    # Still the default: stream() still refuses.
    with pytest.raises(psycopg.errors.RaiseException, match="DDL event trigger"):
        shop.conn.execute("SELECT veil.stream('public.customer', %s)", (POLICY,))


# --- every DDL case of the event-trigger mode ---

# (DDL, the customer table's name after it, its email column after it (None: dropped),
#  what the stream is after the application's writes: 'broken', 'stale' or 'ok').
DDL_CASES = [
    ("ALTER TABLE customer RENAME COLUMN email TO mail", "customer", "mail", "broken"),
    ("ALTER TABLE customer DROP COLUMN email", "customer", None, "broken"),
    ("ALTER TABLE customer ALTER COLUMN store_id TYPE integer", "customer", "email", "stale"),
    ("ALTER TABLE customer ALTER COLUMN active TYPE bigint", "customer", "email", "stale"),
    ("ALTER TABLE customer RENAME TO client", "client", "email", "ok"),
    ("ALTER TABLE customer ADD COLUMN notes text", "customer", "email", "ok"),
]


def app_writes(shop: Shop, table: str, email: str | None, tag: str) -> None:
    """The application's insert, update and delete, as in the event-trigger mode's test;
    each must succeed."""
    columns = "store_id, first_name, last_name" + (f", {email}" if email else "")
    values = "2, 'New', 'Person'" + (", %s" if email else "")
    with shop.app.connect(autocommit=True) as conn:
        before = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({values})", (SECRET,) if email else None)
        conn.execute(f"UPDATE {table} SET first_name = %s WHERE customer_id = 1", (f"Changed{tag}",))
        conn.execute(
            f"DELETE FROM {table} WHERE customer_id = (SELECT min(customer_id) FROM {table} WHERE customer_id > 1)"
        )
        after = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert before == after
        assert conn.execute(f"SELECT first_name FROM {table} WHERE customer_id = 1").fetchone() == (f"Changed{tag}",)


def state(row: dict[str, Any]) -> str:
    if not row["source_exists"]:
        return "source dropped"
    if row["broken_at"] is not None:
        return "broken"
    return "stale" if row["stale"] else "ok"


def change_log(shop: Shop, copy: str, op: str) -> list[tuple[Any, ...]]:
    return shop.conn.execute(
        "SELECT op, rows, keys::text FROM veil_private.change_log WHERE copy = %s AND op = %s ORDER BY xid, seq",
        (copy, op),
    ).fetchall()


@pytest.mark.parametrize(("ddl", "table", "email", "expected"), DDL_CASES)
def test_ddl_on_a_streamed_table_never_fails_a_write_and_refresh_repairs_the_stream(
    streamed: Shop, ddl: str, table: str, email: str | None, expected: str
):
    shop = streamed
    source = f"public.{table}"
    # DDL that adds a column leaves it without a rule: the audit says so, whatever the stream.
    uncovered = {(POLICY, "uncovered column", "public.customer.notes")} if "ADD COLUMN" in ddl else set()
    shop.conn.execute(ddl)
    if expected == "broken":
        # Before any write the stream is already seen to be out of step.
        assert state(shop.stream("sanitized.customer")) == "stale"

    app_writes(shop, table, email, "1")
    row = shop.stream("sanitized.customer")
    assert state(row) == expected
    # The other stream never noticed.
    assert state(shop.stream("sanitized.payment")) == "ok"
    assert_copy_equals_transform(shop.conn, PAYMENT_PAIR)

    if expected == "broken":
        assert re.fullmatch(r"[0-9A-Z]{5}", row["broken_sqlstate"]), row["broken_sqlstate"]
        assert SECRET not in str(row)
        broken = change_log(shop, "customer", "broken")
        assert len(broken) == 1 and broken[0][2] is None, broken
        assert SECRET not in str(shop.conn.execute("SELECT * FROM veil_private.change_log").fetchall())
        # Broken: more writes still succeed, and the copy no longer follows.
        app_writes(shop, table, email, "2")
        assert len(change_log(shop, "customer", "broken")) == 1
        assert shop.scalar(
            "SELECT first_name FROM sanitized.customer WHERE customer_id = veil.token('1', 'customer')"
        ) != shop.scalar("SELECT veil.token('Changed2', 'first_name')")
    if expected == "ok":
        assert_copy_equals_transform(shop.conn, customer_pair(table, email))

    code, report = status(shop)
    audit_code, audit_problems, audit_text = audit(shop)
    if expected == "ok":
        assert code == 0 and stream_problems(report) == set(), report["problems"]
        assert audit_problems == uncovered and audit_code == (1 if uncovered else 0)
    else:
        problem = {"broken": "broken stream", "stale": "stale stream"}[expected]
        assert code == 1 and stream_problems(report) == {(POLICY, problem, source)}, report["problems"]
        assert audit_code == 1 and audit_problems == {(POLICY, problem, source)} | uncovered, audit_problems
        streams = {s["target"]: s for s in report["streams"]}
        assert streams["sanitized.customer"]["state"] == expected
        assert "pgveil refresh" in audit_text
        for text in (json.dumps(report, default=str), audit_text):
            assert SECRET not in text
        # The text report names it too.
        plain = pgveil(shop.owner.url, "status")
        assert plain.exit_code == 1 and problem in plain.stdout

    refreshed = pgveil(shop.owner.url, "refresh", "--json", "--batch-size", "7")
    assert refreshed.exit_code == 0, refreshed.output
    done = json.loads(refreshed.stdout)
    if expected == "ok":
        assert done["streams"] == []
    else:
        assert [(s["source"], s["problem"], s["action"]) for s in done["streams"]] == [(source, expected, "rebuilt")]
        assert done["streams"][0]["rows"] == shop.scalar(f"SELECT count(*) FROM {table}")
    row = shop.stream("sanitized.customer")
    assert (state(row), row["broken_at"], row["broken_sqlstate"], row["needs_backfill"]) == ("ok", None, None, False)
    assert_copy_equals_transform(shop.conn, customer_pair(table, email))
    assert_copy_equals_transform(shop.conn, PAYMENT_PAIR)

    code, report = status(shop)
    assert code == 0 and report["problems"] == [], report["problems"]
    audit_code, audit_problems, _ = audit(shop)
    assert audit_problems == uncovered and audit_code == (1 if uncovered else 0)
    # The stream follows the application again.
    app_writes(shop, table, email, "3")
    assert_copy_equals_transform(shop.conn, customer_pair(table, email))
    assert_copy_equals_transform(shop.conn, PAYMENT_PAIR)


def test_dropping_a_streamed_table_leaves_its_copy_until_refresh_drops_it(streamed: Shop):
    shop = streamed
    payment_fn = shop.scalar("SELECT trigger_fn FROM veil_private.streams WHERE target = 'sanitized.payment'::regclass")
    shop.conn.execute("DROP TABLE payment")
    row = shop.stream("sanitized.payment")
    assert state(row) == "source dropped"
    # Writes to the other table go on.
    app_writes(shop, "customer", "email", "1")
    assert_copy_equals_transform(shop.conn, customer_pair())

    code, report = status(shop)
    assert code == 1 and stream_problems(report) == {(POLICY, "stream of a dropped table", "sanitized.payment")}
    audit_code, audit_problems, _ = audit(shop)
    assert audit_code == 1 and audit_problems == {(POLICY, "stream of a dropped table", "sanitized.payment")}

    refreshed = pgveil(shop.owner.url, "refresh", "--json")
    assert refreshed.exit_code == 0, refreshed.output
    done = json.loads(refreshed.stdout)
    assert [(s["source"], s["action"]) for s in done["streams"]] == [("sanitized.payment", "copy dropped")]
    # Erasure: the copy, its stream and its trigger function are gone.
    assert shop.scalar("SELECT to_regclass('sanitized.payment')") is None
    assert shop.scalar("SELECT count(*) FROM veil.streams") == 1
    assert shop.scalar("SELECT count(*) FROM pg_proc WHERE oid = %s", (payment_fn,)) == 0
    assert status(shop)[0] == 0 and audit(shop)[0] == 0


# --- the edges of a repair ---


def test_a_rolled_back_write_leaves_the_stream_stale_and_refresh_repairs_it(streamed: Shop):
    """A failing write whose transaction rolls back also rolls back the broken mark: the
    stream must still be reported (stale), not taken for healthy."""
    shop = streamed
    shop.conn.execute("ALTER TABLE customer RENAME COLUMN email TO mail")
    with shop.app.connect() as conn:
        conn.execute("INSERT INTO customer (store_id, first_name, last_name) VALUES (1, 'x', 'y')")
        conn.rollback()
    row = shop.stream("sanitized.customer")
    assert (state(row), row["broken_at"]) == ("stale", None)
    assert status(shop)[0] == 1 and audit(shop)[0] == 1
    assert pgveil(shop.owner.url, "refresh").exit_code == 0
    assert_copy_equals_transform(shop.conn, customer_pair(email="mail"))
    assert status(shop)[0] == 0


def test_a_backfill_interrupted_before_the_break_is_redone_from_the_start(shop: Shop):
    label_tables(shop.conn)
    shop.conn.execute("SELECT veil.alter_policy(%s, on_ddl => 'break')", (POLICY,))
    seed(shop.conn, customers=60, payments=0)
    shop.conn.execute("SELECT veil.stream('public.customer', %s)", (POLICY,))
    shop.conn.execute("SELECT veil.stream('public.payment', %s)", (POLICY,))
    # A backfill that copied two batches of 10 and then died.
    shop.conn.execute("INSERT INTO veil_private.backfill_progress (source) VALUES ('public.customer'::regclass)")
    last = None
    for _ in range(2):
        last = shop.scalar(
            "SELECT last_key FROM veil_private.backfill_batch('public.customer'::regclass, 10, %s::text[])", (last,)
        )
    shop.conn.execute("ALTER TABLE customer DROP COLUMN email")
    app_writes(shop, "customer", None, "1")
    assert state(shop.stream("sanitized.customer")) == "broken"
    refreshed = pgveil(shop.owner.url, "refresh", "--batch-size", "10")
    assert refreshed.exit_code == 0, refreshed.output
    assert "broken stream rebuilt" in refreshed.stdout
    assert_copy_equals_transform(shop.conn, customer_pair(email=None))
    assert shop.scalar("SELECT needs_backfill FROM veil.streams WHERE source = 'customer'::regclass") is False


def test_a_stream_that_cannot_be_rebuilt_is_reported_and_the_others_are_repaired(streamed: Shop):
    """Dropping the key column leaves a stream with no key: refresh says so, exits 1, and
    still repairs the other broken stream."""
    shop = streamed
    shop.conn.execute("ALTER TABLE payment RENAME COLUMN amount TO total")
    shop.conn.execute("ALTER TABLE customer DROP COLUMN customer_id CASCADE")
    with shop.app.connect(autocommit=True) as conn:
        conn.execute("INSERT INTO customer (store_id, first_name, last_name) VALUES (1, 'x', 'y')")
        conn.execute("UPDATE payment SET total = total + 1")
    refreshed = pgveil(shop.owner.url, "refresh", "--json")
    assert refreshed.exit_code == 1 and refreshed.stdout, refreshed.stderr
    report = json.loads(refreshed.stdout)
    assert report["ok"] is False
    done = {s["target"]: s for s in report["streams"]}
    assert done["sanitized.customer"]["action"] == "failed" and done["sanitized.customer"]["error"]
    assert done["sanitized.payment"]["action"] == "rebuilt"
    assert_copy_equals_transform(
        shop.conn,
        (
            "SELECT payment_id, veil.token(customer_id::text, 'customer') AS customer_id, total, payment_date"
            " FROM public.payment",
            "SELECT payment_id, customer_id, total, payment_date FROM sanitized.payment",
        ),
    )
    assert status(shop)[0] == 1


def test_only_a_governor_may_rebuild_a_broken_stream(streamed: Shop):
    shop = streamed
    shop.conn.execute("ALTER TABLE customer RENAME COLUMN email TO mail")
    app_writes(shop, "customer", "mail", "1")
    source = shop.scalar("SELECT 'public.customer'::regclass::oid")
    with shop.app.connect() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT veil_private.rebuild_broken_stream(%s)", (source,))
    refused = pgveil(shop.app.url, "refresh")
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert state(shop.stream("sanitized.customer")) == "broken"


def test_status_and_refresh_services_return_plain_data(streamed: Shop):
    shop = streamed
    shop.conn.execute("ALTER TABLE customer DROP COLUMN email")
    app_writes(shop, "customer", None, "1")
    with shop.owner.connect() as conn:
        report = masking.status(conn)
    (customer,) = [s for s in report.streams if s["target"] == "sanitized.customer"]
    assert customer["state"] == "broken" and customer["on_ddl"] == "break"
    assert [p["problem"] for p in report.problems] == ["broken stream"]
    seen: list[tuple[str, int]] = []
    with shop.owner.connect(autocommit=True) as conn:
        done = masking.refresh_all(conn, POLICY, batch_size=5, progress=lambda s, n: seen.append((s, n)))
    assert done.views == {} and done.ok
    assert [(s.source, s.action) for s in done.streams] == [("public.customer", "rebuilt")]
    assert sum(n for _, n in seen) == done.streams[0].rows == shop.scalar("SELECT count(*) FROM customer")
    assert {s for s, _ in seen} == {"public.customer"}


def test_rule_changes_elsewhere_still_work_while_a_stream_is_broken_or_its_table_dropped(streamed: Shop):
    """Without event triggers every rule change first sweeps the rules of dropped columns
    and tables, which rebuilds their streams: a stream that cannot be rebuilt as things
    are (its table dropped, its key column dropped) must not make that fail."""
    shop = streamed
    shop.conn.execute("CREATE TABLE public.other (id int PRIMARY KEY, note text)")
    shop.conn.execute("DROP TABLE payment")
    shop.conn.execute("SELECT veil.security_label('mask', 'COLUMN', 'public.other.note', 'MASKED WITH VALUE NULL')")
    shop.conn.execute("SELECT veil.refresh_masking()")
    shop.conn.execute("ALTER TABLE customer DROP COLUMN customer_id")
    with shop.app.connect(autocommit=True) as conn:
        conn.execute("INSERT INTO customer (store_id, first_name, last_name) VALUES (1, 'x', 'y')")
    assert state(shop.stream("sanitized.customer")) == "broken"
    shop.conn.execute("SELECT veil.security_label('mask', 'COLUMN', 'public.other.id', 'NOT MASKED')")
    shop.conn.execute("SELECT veil.refresh_masking()")
    assert state(shop.stream("sanitized.payment")) == "source dropped"
