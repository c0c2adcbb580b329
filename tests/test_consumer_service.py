"""The consumer program, run for real as a consumer role against live writes."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from consumer import boundary
from consumer.follow import Change, Follower, copies, fetch_query
from pgveil.cli import app
from tests.helpers import login, seed

RAW = ("Rawfirst", "Rawlast", "raw@example.com")


class Following:
    """A Follower in a thread, collecting what it hands over."""

    def __init__(self, connect, **options):
        self.changes: list[Change] = []
        self.arrived = threading.Condition()
        self.stop = threading.Event()
        self.follower = Follower(connect, self._collect, self.stop, **options)
        self.thread = threading.Thread(target=self.follower.run, daemon=True)

    def _collect(self, change: Change) -> None:
        with self.arrived:
            self.changes.append(change)
            self.arrived.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0) -> list[Change]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: predicate(self.changes), timeout), self.changes
            return list(self.changes)

    def __enter__(self):
        self.thread.start()
        assert self.follower.following.wait(10)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def rows_of(changes: list[Change], table: str) -> list[dict]:
    return [row for c in changes if c.table == table and c.op == "upsert" for row in c.rows]


def insert_customer(db, first: str = "Rawfirst", email: str = "raw@example.com") -> int:
    return db.scalar(
        "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
        " VALUES (1, %s, 'Rawlast', %s, 1) RETURNING customer_id",
        (first, email),
    )


@pytest.fixture
def consumer_url(demo):
    seed(demo, customers=20, payments=20)
    return login(demo, "consumer")


def test_changes_arrive_as_sanitized_rows_fetched_by_key(demo, consumer_url):
    with Following(lambda: psycopg.connect(consumer_url, autocommit=True)) as following:
        # Each change is awaited before the next: the follower fetches a row's
        # current state, and a row deleted before the fetch is not there to fetch.
        customer = insert_customer(demo)
        token = demo.scalar("SELECT veil.token(%s::text, 'customer')", (customer,))
        following.wait_for(lambda cs: len(rows_of(cs, "customer")) == 1)
        demo.execute("INSERT INTO payment (customer_id, amount) VALUES (%s, 9.99)", (customer,))
        following.wait_for(lambda cs: len(rows_of(cs, "payment")) == 1)
        demo.execute("UPDATE customer SET activebool = false WHERE customer_id = %s", (customer,))
        following.wait_for(lambda cs: len(rows_of(cs, "customer")) == 2)
        demo.execute("DELETE FROM customer WHERE customer_id = %s", (customer,))
        changes = following.wait_for(lambda cs: any(c.op == "delete" and c.table == "customer" for c in cs))
    customers = rows_of(changes, "customer")
    assert [r["customer_id"] for r in customers] == [token, token]
    assert [r["activebool"] for r in customers] == [True, False]
    assert rows_of(changes, "payment")[0]["customer_id"] == token
    deleted = [c for c in changes if c.op == "delete" and c.table == "customer"]
    assert deleted[0].keys == [{"customer_id": token}]
    for raw in RAW:
        assert raw not in repr(changes)


def test_a_big_statement_is_caught_up_by_timestamp(demo, consumer_url):
    """More than 100 rows: the notification carries no keys, the follower reads by last_update."""
    with Following(lambda: psycopg.connect(consumer_url, autocommit=True)) as following:
        demo.execute("UPDATE customer SET active = 7")
        changes = following.wait_for(lambda cs: len(rows_of(cs, "customer")) >= 20)
    assert {r["active"] for r in rows_of(changes, "customer")} == {7}


def test_after_a_dropped_connection_the_follower_catches_up(demo, consumer_url):
    allowed = threading.Event()
    allowed.set()

    def connect():
        allowed.wait()
        return psycopg.connect(consumer_url, autocommit=True, application_name="follower-under-test")

    with Following(connect) as following:
        allowed.clear()  # the next connection waits until the writes are done
        assert (
            demo.scalar(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'follower-under-test'"
            )
            == 1
        )
        missed = [insert_customer(demo, first=f"Away{i}", email=f"away{i}@example.com") for i in range(3)]
        demo.execute("UPDATE customer SET store_id = 2 WHERE customer_id = %s", (missed[0],))
        tokens = {demo.scalar("SELECT veil.token(%s::text, 'customer')", (c,)) for c in missed}
        time.sleep(0.3)
        allowed.set()
        changes = following.wait_for(lambda cs: tokens <= {r["customer_id"] for c in cs if c.catch_up for r in c.rows})
    assert following.follower.reconnects == 1
    caught = {r["customer_id"]: r for c in changes if c.catch_up for r in c.rows}
    first = demo.scalar("SELECT veil.token(%s::text, 'customer')", (missed[0],))
    assert caught[first]["store_id"] == 2


@pytest.mark.parametrize(
    "payload",
    [
        "not json at all",
        '{"table": "customer"}',
        '{"table": "no_such_copy", "op": "upsert", "rows": 1, "keys": null}',
        '{"table": "customer", "op": "explode", "rows": 1, "keys": null}',
        '{"table": "customer", "op": "upsert", "rows": 1, "keys": [{"customer_id": "x", "extra": 1}]}',
        '{"table": "customer", "op": "upsert", "rows": "many", "keys": null}',
        "[1, 2, 3]",
    ],
)
def test_a_malformed_notification_is_skipped_not_fatal(demo, consumer_url, payload, caplog):
    with Following(lambda: psycopg.connect(consumer_url, autocommit=True)) as following:
        demo.execute("SELECT pg_notify('veil_changes', %s)", (payload,))
        customer = insert_customer(demo, first="After")
        token = demo.scalar("SELECT veil.token(%s::text, 'customer')", (customer,))
        following.wait_for(lambda cs: token in {r["customer_id"] for r in rows_of(cs, "customer")})
    assert following.follower.skipped == 1
    assert "skipped a notification" in caplog.text


def test_a_silent_channel_costs_no_cpu(demo, consumer_url):
    with Following(lambda: psycopg.connect(consumer_url, autocommit=True), idle_timeout=0.5) as following:
        clock = time.pthread_getcpuclockid(following.thread.ident)
        before = time.clock_gettime(clock)
        time.sleep(2.0)
        used = time.clock_gettime(clock) - before
    assert used < 0.1, f"{used:.3f} s of CPU in 2 s of silence"


def test_changed_rows_are_fetched_by_primary_key(demo, consumer_url):
    seed(demo, customers=5000, payments=0)
    demo.execute("ANALYZE sanitized.customer")
    with psycopg.connect(consumer_url) as conn:
        copy = copies(conn)["customer"]
        plan = "\n".join(
            r[0]
            for r in conn.execute(sql.SQL("EXPLAIN ") + fetch_query(copy), (json.dumps([{"customer_id": "x"}] * 100),))
        )
    assert "Index" in plan and "customer_pkey" in plan, plan
    assert "Seq Scan on customer" not in plan, plan


def test_the_consumer_proves_its_boundary(consumer_url, demo):
    with psycopg.connect(consumer_url, autocommit=True) as conn:
        checked = boundary.check(conn)
    assert checked.role == "consumer"
    assert {"public.customer", "public.payment", "public.address"} <= set(checked.refused)
    assert all("permission denied" in why for why in checked.refused.values())


def test_a_role_that_can_read_raw_tables_is_refused(demo):
    nosy = demo.role("nosy")
    demo.execute(sql.SQL("GRANT USAGE ON SCHEMA sanitized TO {}").format(sql.Identifier(nosy.name)))
    demo.execute(sql.SQL("GRANT SELECT ON sanitized.customer, public.address TO {}").format(sql.Identifier(nosy.name)))
    result = CliRunner().invoke(app, ["consume", "--database-url", nosy.url, "--duration", "5"])
    assert result.exit_code == 1
    assert "refusing to run" in result.output and "public.address" in result.output


def test_a_member_of_a_raw_reader_is_refused(demo):
    reader, member = demo.role("reader"), demo.role("member")
    demo.execute(sql.SQL("GRANT SELECT ON public.customer TO {}").format(sql.Identifier(reader.name)))
    demo.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(reader.name), sql.Identifier(member.name)))
    result = CliRunner().invoke(app, ["consume", "--database-url", member.url, "--duration", "5"])
    assert result.exit_code == 1
    assert "public.customer" in result.output


def test_a_superuser_is_refused(demo):
    result = CliRunner().invoke(app, ["consume", "--database-url", demo.url, "--duration", "5"])
    assert result.exit_code == 1
    assert "superuser" in result.output


def test_the_command_prints_json_lines_without_raw_values(demo, consumer_url):
    timer = threading.Timer(2.0, lambda: insert_customer(demo))
    timer.start()
    result = CliRunner().invoke(app, ["consume", "--database-url", consumer_url, "--json", "--duration", "4"])
    timer.join()
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(line["table"], line["op"]) for line in lines] == [("customer", "upsert")]
    assert lines[0]["row"]["customer_id"].startswith("v1:")
    for raw in RAW:
        assert raw not in result.output
    assert "cannot read" in result.output  # the boundary report (on stderr)
