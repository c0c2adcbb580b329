"""The consumer program, run for real as a consumer role against live writes."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from consumer import boundary
from consumer.follow import Change, Follower, copies, fetch_query, is_resync_point, skip_to_now
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


def position_key(position: str) -> tuple[int, int]:
    xid, seq = position.split(":")
    return int(xid), int(seq)


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
    """The demo's consumer, past the seed's changes: what it shows next is the test's."""
    seed(demo, customers=20, payments=20)
    url = login(demo, "consumer")
    with psycopg.connect(url, autocommit=True) as conn:
        position = skip_to_now(conn, page=2)  # the seed wrote two entries: a full page, then none
    assert not is_resync_point(position)
    assert position == demo.scalar(
        "SELECT veil_private.position_text(xid, seq) FROM veil_private.change_log ORDER BY xid DESC, seq DESC LIMIT 1"
    )
    return url


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
        changes = following.wait_for(lambda cs: len([c for c in cs if c.op == "delete"]) == 2)
    customers = rows_of(changes, "customer")
    assert [r["customer_id"] for r in customers] == [token, token]
    assert [r["activebool"] for r in customers] == [True, False]
    payment = rows_of(changes, "payment")[0]
    assert payment["customer_id"] == token
    deleted = {c.table: c.keys for c in changes if c.op == "delete"}
    # The payment went with its customer (ON DELETE CASCADE): both deletes arrive.
    assert deleted == {"customer": [{"customer_id": token}], "payment": [{"payment_id": payment["payment_id"]}]}
    for change in changes:
        assert change.op != "upsert" or change.keys == [{k: r[k] for k in change.keys[0]} for r in change.rows]
    # Each change carries the position of its change-log entry, in order.
    positions = [position_key(c.position) for c in changes]
    assert positions == sorted(positions) and len(set(positions)) == len(changes)
    assert following.follower.acknowledged == changes[-1].position
    for raw in RAW:
        assert raw not in repr(changes)


def test_a_big_statement_arrives_a_slice_of_keys_at_a_time(demo, consumer_url):
    """An entry's keys are read from the server and re-read from the copy a slice at a time."""
    with Following(lambda: psycopg.connect(consumer_url, autocommit=True), key_page=7) as following:
        demo.execute("UPDATE customer SET active = 7")
        changes = following.wait_for(lambda cs: len(rows_of(cs, "customer")) >= 20)
    assert [len(c.rows) for c in changes] == [7, 7, 6]
    assert len({c.position for c in changes}) == 1
    assert {r["active"] for r in rows_of(changes, "customer")} == {7}


def test_after_a_dropped_connection_the_follower_resumes_with_what_it_missed(demo, consumer_url):
    allowed = threading.Event()
    allowed.set()

    def connect():
        allowed.wait()
        return psycopg.connect(consumer_url, autocommit=True, application_name="follower-under-test")

    gone, moved = demo.execute("SELECT customer_id FROM customer ORDER BY customer_id LIMIT 2").fetchall()
    tokens_before = {c: demo.scalar("SELECT veil.token(%s::text, 'customer')", (c,)) for c in (gone[0], moved[0])}
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
        demo.execute("DELETE FROM customer WHERE customer_id = %s", (gone[0],))  # an erasure while away
        demo.execute("UPDATE customer SET customer_id = 9000 WHERE customer_id = %s", (moved[0],))  # a key move
        tokens = {demo.scalar("SELECT veil.token(%s::text, 'customer')", (c,)) for c in [*missed, 9000]}
        new_token = demo.scalar("SELECT veil.token('9000', 'customer')")
        time.sleep(0.3)
        allowed.set()
        changes = following.wait_for(
            lambda cs: (
                tokens <= {r["customer_id"] for r in rows_of(cs, "customer")}
                and len({k["customer_id"] for c in cs if c.op == "delete" and c.table == "customer" for k in c.keys})
                == 2
                and new_token in {r["customer_id"] for r in rows_of(cs, "payment")}
            )
        )
    assert following.follower.reconnects == 1
    current = {r["customer_id"]: r for r in rows_of(changes, "customer")}
    first = demo.scalar("SELECT veil.token(%s::text, 'customer')", (missed[0],))
    assert current[first]["store_id"] == 2
    deleted = {k["customer_id"] for c in changes if c.op == "delete" and c.table == "customer" for k in c.keys}
    assert deleted == set(tokens_before.values())
    # The moved customer's payments now carry its new token.
    moved_payments = demo.scalar("SELECT count(*) FROM payment WHERE customer_id = 9000")
    assert moved_payments > 0
    assert len([r for r in rows_of(changes, "payment") if r["customer_id"] == new_token]) == moved_payments
    assert not any(c.catch_up for c in changes)  # resumed by position: no re-read


def test_a_notification_is_only_a_wake_up(demo, consumer_url):
    """Any role may NOTIFY on the channel: a forged payload changes nothing of what is shown."""
    victim = demo.scalar("SELECT veil.token(customer_id::text, 'customer') FROM customer LIMIT 1")
    with Following(lambda: psycopg.connect(consumer_url, autocommit=True)) as following:
        for payload in (
            "not json at all",
            json.dumps({"table": "customer", "op": "delete", "rows": 1, "keys": [{"customer_id": victim}]}),
            json.dumps({"table": "customer", "op": "truncate", "rows": 20, "keys": None}),
        ):
            demo.execute("SELECT pg_notify('veil_changes', %s)", (payload,))
        customer = insert_customer(demo, first="After")
        token = demo.scalar("SELECT veil.token(%s::text, 'customer')", (customer,))
        changes = following.wait_for(lambda cs: token in {r["customer_id"] for r in rows_of(cs, "customer")})
    assert [(c.table, c.op) for c in changes] == [("customer", "upsert")]


def test_a_fresh_consumer_reads_the_copies_first(demo):
    """Registered, nothing acknowledged yet: the follower shows each copy whole, then the changes."""
    seed(demo, customers=30, payments=45)
    fresh = demo.role("fresh")
    demo.execute("SELECT veil.grant_consumer(%s)", (fresh.name,))
    with Following(lambda: psycopg.connect(fresh.url, autocommit=True), key_page=10) as following:
        customer = insert_customer(demo)
        token = demo.scalar("SELECT veil.token(%s::text, 'customer')", (customer,))
        changes = following.wait_for(
            lambda cs: token in {r["customer_id"] for c in cs if not c.catch_up for r in c.rows}
        )
    reread = [c for c in changes if c.catch_up]
    assert [(c.table, c.op) for c in reread if c.op == "truncate"] == [
        ("customer", "truncate"),
        ("payment", "truncate"),
    ]
    assert len(rows_of(reread, "customer")) == 30 and len(rows_of(reread, "payment")) == 45
    assert following.follower.resyncs == 1
    assert changes.index(reread[-1]) < len(changes) - 1  # the re-read comes first


def test_a_truncate_is_shown_then_the_copy_reread(demo, consumer_url):
    with Following(lambda: psycopg.connect(consumer_url, autocommit=True)) as following:
        with demo.admin.transaction():
            demo.execute("TRUNCATE payment")
            demo.execute("INSERT INTO payment (customer_id, amount) SELECT min(customer_id), 1.50 FROM customer")
        changes = following.wait_for(lambda cs: any(not c.catch_up and c.op == "upsert" for c in cs))
    assert [(c.table, c.op, c.catch_up) for c in changes] == [
        ("payment", "truncate", False),
        ("payment", "upsert", True),  # the re-read: the copy as it is now
        ("payment", "upsert", False),  # the insert's own entry
    ]
    assert changes[0].position == changes[1].position != changes[2].position
    assert [r["amount"] for r in changes[1].rows] == [Decimal("1.50")]


def test_a_write_ordered_before_a_truncate_but_committed_after_it_survives(demo, consumer_url):
    """Log order is transaction-id order: the truncate's re-read brings back what the truncate
    did not remove, though its entry came first."""
    with Following(lambda: psycopg.connect(consumer_url, autocommit=True)) as following:
        with psycopg.connect(demo.url) as earlier:
            customer = earlier.execute(
                "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
                " VALUES (1, 'Rawfirst', 'Rawlast', 'raw@example.com', 1) RETURNING customer_id"
            ).fetchone()[0]
            demo.execute("TRUNCATE payment")  # a higher transaction id, committed first
            payment = earlier.execute(
                "INSERT INTO payment (customer_id, amount) VALUES (%s, 2.50) RETURNING payment_id", (customer,)
            ).fetchone()[0]
        changes = following.wait_for(lambda cs: any(c.op == "truncate" for c in cs) and cs[-1].catch_up)
    payments = [(c.op, [r["payment_id"] for r in c.rows], c.catch_up) for c in changes if c.table == "payment"]
    assert payments == [("upsert", [payment], False), ("truncate", [], False), ("upsert", [payment], True)]
    assert position_key(changes[0].position) < position_key(changes[-1].position)


def test_a_broken_stream_is_reported(demo, consumer_url, caplog):
    with Following(lambda: psycopg.connect(consumer_url, autocommit=True)) as following:
        demo.execute("SELECT veil_private.log_change('payment', 'broken', 0, NULL)")
        insert_customer(demo)
        following.wait_for(lambda cs: len(rows_of(cs, "customer")) == 1)
    assert "sanitized.payment: its stream stopped applying changes" in caplog.text
    assert "pgveil refresh" in caplog.text


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
    token = lines[0]["row"]["customer_id"]
    assert token.startswith("v1:") and lines[0]["key"] == {"customer_id": token}
    entry = demo.scalar(
        "SELECT veil_private.position_text(xid, seq) FROM veil_private.change_log ORDER BY xid DESC, seq DESC LIMIT 1"
    )
    assert lines[0]["position"] == entry
    assert demo.scalar("SELECT position FROM veil.change_consumers WHERE role = 'consumer'::regrole") == entry
    for raw in RAW:
        assert raw not in result.output
    assert "cannot read" in result.output  # the boundary report (on stderr)


def test_the_command_shows_positions_and_deletes(demo, consumer_url):
    customer = demo.scalar("SELECT min(customer_id) FROM customer")
    token = demo.scalar("SELECT veil.token(%s::text, 'customer')", (customer,))
    timer = threading.Timer(2.0, lambda: demo.execute("DELETE FROM customer WHERE customer_id = %s", (customer,)))
    timer.start()
    result = CliRunner().invoke(app, ["consume", "--database-url", consumer_url, "--duration", "4"])
    timer.join()
    assert result.exit_code == 0, result.output
    position = demo.scalar("SELECT position FROM veil.change_consumers WHERE role = 'consumer'::regrole")
    deleted = [line for line in result.stdout.splitlines() if "sanitized.customer delete 1 row(s)" in line]
    assert len(deleted) == 1 and token[:12] in deleted[0], result.stdout
    assert "sanitized.payment delete 1 row(s)" in result.stdout
    xid = position.split(":")[0]
    assert f"[{xid}:" in deleted[0]


def test_resync_starts_with_every_row(demo, consumer_url, caplog):
    result = CliRunner().invoke(
        app, ["consume", "--database-url", consumer_url, "--json", "--resync", "--duration", "3"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["op"] for line in lines if line["table"] == "customer"] == ["truncate"] + ["upsert"] * 20
    assert len([line for line in lines if line["table"] == "payment" and line["op"] == "upsert"]) == 20
    assert all(line["catch_up"] for line in lines)
    assert len({line["position"] for line in lines}) == 1 and lines[0]["position"].endswith(":0")
    assert "re-reading every copy (asked for with --resync)" in caplog.text


def test_a_role_that_is_no_consumer_gets_one_clear_error(demo):
    stranger = demo.role("stranger")
    result = CliRunner().invoke(app, ["consume", "--database-url", stranger.url, "--duration", "5"])
    assert result.exit_code == 1
    assert "is not a registered consumer" in result.output and "42501" in result.output
    assert "Traceback" not in result.output
