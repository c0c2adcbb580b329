"""The change feed: notifications on veil_changes while some session follows, and only then."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest

from tests.helpers import seed

INSERT_ONE = (
    "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
    " VALUES (1, 'Feed', 'Writer', 'feed@example.com', 1)"
)


def listener(db) -> psycopg.Connection:
    """A session that LISTENs without following: it hears only what followers make writers send."""
    conn = psycopg.connect(db.url, autocommit=True)
    conn.execute("LISTEN veil_changes")
    return conn


def heard(conn: psycopg.Connection, timeout: float = 0.5) -> list[dict]:
    return [json.loads(n.payload) for n in conn.notifies(timeout=timeout)]


def feed_locks(db) -> int:
    return db.scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = x'70677665'::int::oid AND objid = 1"
    )


def test_one_notification_per_statement_with_keys_only_for_small_statements(demo):
    with psycopg.connect(demo.url, autocommit=True) as conn:
        conn.execute("SELECT veil.follow_changes()")
        seed(demo, customers=300, payments=0)
        demo.execute("UPDATE customer SET email = 'changed@example.com' WHERE customer_id <= 3")
        demo.execute("DELETE FROM customer WHERE customer_id BETWEEN 101 AND 200")
        demo.execute("DELETE FROM customer WHERE customer_id > 200")
        notes = list(conn.notifies(timeout=2))
    assert {n.channel for n in notes} == {"veil_changes"}
    for note in notes:
        assert "example.com" not in note.payload and "first" not in note.payload
    # address insert is not streamed: one per customer statement.
    payloads = [json.loads(n.payload) for n in notes]
    assert [(p["table"], p["op"], p["rows"]) for p in payloads] == [
        ("customer", "upsert", 300),
        ("customer", "upsert", 3),
        ("customer", "delete", 100),
        ("customer", "delete", 100),
    ]
    # Keys travel with statements of at most 100 rows; bigger ones send none
    # (never the first 100 of them, which a consumer would take for all).
    tokens = {demo.scalar("SELECT veil.token(%s::text, 'customer')", (i,)) for i in range(1, 4)}
    assert payloads[0]["keys"] is None
    assert {k["customer_id"] for k in payloads[1]["keys"]} == tokens
    assert len(payloads[2]["keys"]) == len(payloads[3]["keys"]) == 100


def test_101_rows_send_no_keys(demo):
    seed(demo, customers=101, payments=0)
    with psycopg.connect(demo.url, autocommit=True) as conn:
        conn.execute("SELECT veil.follow_changes()")
        demo.execute("UPDATE customer SET active = 0")
        demo.execute("DELETE FROM customer")
        payloads = heard(conn, timeout=1)
    assert [(p["op"], p["rows"], p["keys"]) for p in payloads] == [("upsert", 101, None), ("delete", 101, None)]


def wait_until_no_feed_locks(db) -> None:
    """A closed session's backend lets go of its locks as it exits, a moment later."""
    deadline = time.monotonic() + 5
    while feed_locks(db) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert feed_locks(db) == 0


UNFOLLOWED_WRITES = (
    INSERT_ONE,
    "UPDATE customer SET email = 'new@example.com'",
    "DELETE FROM customer",
    "TRUNCATE customer CASCADE",
)


def test_writers_notify_only_while_a_session_follows(demo):
    seed(demo, customers=3, payments=0)
    with listener(demo) as plain:
        for statement in UNFOLLOWED_WRITES:
            demo.execute(statement)
        assert heard(plain) == []
        with psycopg.connect(demo.url, autocommit=True) as follower:
            follower.execute("SELECT veil.follow_changes()")
            for statement in UNFOLLOWED_WRITES:
                demo.execute(statement)
            assert [(p["table"], p["op"]) for p in heard(plain)] == [
                ("customer", "upsert"),
                ("customer", "upsert"),
                ("customer", "delete"),
                ("customer", "truncate"),
                ("payment", "truncate"),
            ]
        wait_until_no_feed_locks(demo)
        demo.execute(INSERT_ONE)
        assert heard(plain) == []


def test_a_session_that_follows_hears_its_own_writes(demo):
    seed(demo, customers=1, payments=0)
    with psycopg.connect(demo.url, autocommit=True) as conn:
        conn.execute("SELECT veil.follow_changes()")
        conn.execute(INSERT_ONE)
        assert [(p["op"], p["rows"]) for p in heard(conn)] == [("upsert", 1)]


def test_follow_waits_for_writes_that_did_not_notify(demo):
    """A write that found nobody following is committed before follow_changes returns, so the follower reads it."""
    seed(demo, customers=1, payments=0)
    with psycopg.connect(demo.url) as writer, psycopg.connect(demo.url, autocommit=True) as follower:
        writer.execute(INSERT_ONE)  # its trigger has run, unannounced; still uncommitted
        followed = threading.Event()
        thread = threading.Thread(target=lambda: (follower.execute("SELECT veil.follow_changes()"), followed.set()))
        thread.start()
        assert not followed.wait(1.0), "follow_changes returned while an unannounced write was in flight"
        writer.commit()
        assert followed.wait(5.0)
        thread.join()
        assert (
            follower.execute("SELECT count(*) FROM public.customer WHERE email = 'feed@example.com'").fetchone()[0] == 1
        )
        # Writes from now on are announced.
        demo.execute(INSERT_ONE)
        assert [p["op"] for p in heard(follower)] == ["upsert"]


def test_follow_gives_up_with_a_clear_error_and_lets_go_of_the_lock(demo):
    seed(demo, customers=1, payments=0)
    with psycopg.connect(demo.url) as writer, psycopg.connect(demo.url, autocommit=True) as follower:
        writer.execute(INSERT_ONE)
        with pytest.raises(
            psycopg.errors.LockNotAvailable,
            match=r"waited 00:00:00.3 for transactions that wrote streamed tables unannounced",
        ):
            follower.execute("SELECT veil.follow_changes('0.3 s')")
        writer.commit()
        assert feed_locks(demo) == 0
        assert follower.execute("SELECT pg_listening_channels()").fetchall() == []
        assert follower.execute("SHOW lock_timeout").fetchone()[0] == "0"
        # Nobody follows: writers do not notify.
        with listener(demo) as plain:
            demo.execute(INSERT_ONE)
            assert heard(plain) == []


@pytest.mark.parametrize("wait_for", ["NULL", "'0 s'", "'-1 s'"])
def test_follow_refuses_a_wait_that_is_not_positive(demo, wait_for):
    with psycopg.connect(demo.url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="wait_for must be a positive interval"):
            conn.execute(f"SELECT veil.follow_changes({wait_for})")
        assert conn.execute("SELECT veil.follows_changes()").fetchone()[0] is False
    assert feed_locks(demo) == 0


def test_follow_is_idempotent_and_unfollow_stops_the_feed(demo):
    seed(demo, customers=1, payments=0)
    with psycopg.connect(demo.url, autocommit=True) as follower, listener(demo) as plain:
        follower.execute("SELECT veil.follow_changes()")
        follower.execute("SELECT veil.follow_changes()")
        assert follower.execute("SELECT veil.follows_changes()").fetchone()[0] is True
        # Taken once: one release frees it.
        follower.execute("SELECT pg_advisory_unlock_shared(x'7067766500000001'::bigint)")
        assert feed_locks(demo) == 0
        follower.execute("SELECT veil.follow_changes()")
        follower.execute("SELECT veil.unfollow_changes()")
        assert feed_locks(demo) == 0
        assert follower.execute("SELECT veil.follows_changes()").fetchone()[0] is False
        assert follower.execute("SELECT pg_listening_channels()").fetchall() == []
        demo.execute(INSERT_ONE)
        assert heard(plain) == []
