"""The change log: entries per streamed statement, positions that never skip, per-role
acknowledgements, retention."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import timedelta

import psycopg
import pytest

from pgveil import migrate
from tests.helpers import pgveil, seed

INSERT = (
    "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
    " VALUES (1, 'Log', 'Writer', %s, 1) RETURNING customer_id"
)


@pytest.fixture(autouse=True)
def addresses(demo):
    """Addresses and a customer for the demo's foreign keys (autouse: before the consumer registers)."""
    seed(demo, customers=1, payments=0)


@pytest.fixture
def consumer(demo):
    role = demo.role("log_reader")
    demo.execute("SELECT veil.grant_consumer(%s)", (role.name,))
    return role


def token(db, value, salt="customer") -> str:
    return db.scalar("SELECT veil.token(%s::text, %s)", (value, salt))


def entries(db, after: tuple[int, int] = (0, 0)) -> list[tuple]:
    return db.execute(
        "SELECT copy, op, rows, keys FROM veil_private.change_log WHERE (xid, seq) > (%s::text::xid8, %s)"
        " ORDER BY xid, seq",
        after,
    ).fetchall()


def log_end(db) -> tuple[int, int]:
    row = db.execute("SELECT xid::text::bigint, seq FROM veil_private.change_log ORDER BY xid DESC, seq DESC LIMIT 1")
    found = row.fetchone()
    return (int(found[0]), found[1]) if found else (0, 0)


def keys_of(entry) -> set[str]:
    return {k["customer_id"] for k in entry[3]}


def test_every_kind_of_statement_is_logged_with_copy_keys_only(demo):
    start = log_end(demo)
    new_id = demo.scalar(INSERT, ("log1@example.com",))
    demo.execute("UPDATE customer SET email = 'log2@example.com' WHERE customer_id = %s", (new_id,))
    demo.execute("UPDATE customer SET customer_id = 900001 WHERE customer_id = %s", (new_id,))
    demo.execute("DELETE FROM customer WHERE customer_id = 900001")
    demo.execute("UPDATE customer SET email = email WHERE false")  # changes nothing: no entry
    demo.execute("TRUNCATE payment")
    log = entries(demo, start)
    assert [(e[0], e[1], e[2]) for e in log] == [
        ("customer", "upsert", 1),
        ("customer", "upsert", 1),
        ("customer", "delete", 1),  # the key move: old key goes ...
        ("customer", "upsert", 1),  # ... new key comes
        ("customer", "delete", 1),
        ("payment", "truncate", 0),
    ]
    old, new = token(demo, new_id), token(demo, 900001)
    assert [keys_of(e) for e in log[:5]] == [{old}, {old}, {old}, {new}, {new}]
    assert log[5][3] is None
    text = demo.scalar("SELECT string_agg(keys::text, '') FROM veil_private.change_log")
    assert "example.com" not in text and "Writer" not in text


def test_a_bulk_statement_logs_every_key_in_one_entry(demo):
    start = log_end(demo)
    seed(demo, customers=1500, payments=0)
    first = demo.scalar("SELECT min(customer_id) + 500 FROM customer")
    demo.execute("DELETE FROM customer WHERE customer_id >= %s", (first,))
    log = [e for e in entries(demo, start) if e[0] == "customer"]
    assert [(e[1], e[2], len(e[3])) for e in log] == [("upsert", 1500, 1500), ("delete", 1001, 1001)]
    assert keys_of(log[1]) == {token(demo, i) for i in range(first, first + 1001)}


def test_backfill_and_rekey_are_logged(demo):
    seed(demo, customers=29, payments=0)
    demo.execute("TRUNCATE sanitized.customer")
    start = log_end(demo)
    demo.execute("CALL veil.backfill('customer', 20)")
    backfilled = [e for e in entries(demo, start) if e[0] == "customer"]
    assert [(e[1], e[2]) for e in backfilled] == [("upsert", 20), ("upsert", 10)]
    ids = [r[0] for r in demo.execute("SELECT customer_id FROM customer").fetchall()]
    assert set().union(*map(keys_of, backfilled)) == {token(demo, i) for i in ids}

    before = {r[0] for r in demo.execute("SELECT customer_id FROM sanitized.customer").fetchall()}
    start = log_end(demo)
    demo.execute("CALL veil.rekey(1000)")
    after = {r[0] for r in demo.execute("SELECT customer_id FROM sanitized.customer").fetchall()}
    log = [e for e in entries(demo, start) if e[0] == "customer"]
    upserted = set().union(*(keys_of(e) for e in log if e[1] == "upsert"))
    deleted = set().union(*(keys_of(e) for e in log if e[1] == "delete"))
    assert upserted == after and deleted == before and not before & after


def test_a_policy_can_turn_the_log_off(demo):
    demo.execute("SELECT veil.alter_policy('sanitized', change_log => false)")
    start = log_end(demo)
    demo.scalar(INSERT, ("off@example.com",))
    assert entries(demo, start) == []
    assert demo.scalar("SELECT count(*) FROM sanitized.customer") == demo.scalar("SELECT count(*) FROM customer")
    demo.execute("SELECT veil.alter_policy('sanitized', change_log => true)")
    demo.scalar(INSERT, ("on@example.com",))
    assert len(entries(demo, start)) == 1


@pytest.mark.parametrize(
    "options, error",
    [
        ("on_ddl => 'sometimes'", "on_ddl is 'rebuild' or 'break'"),
        ("change_log => NULL, on_ddl => ''", "on_ddl is 'rebuild' or 'break'"),
    ],
)
def test_bad_policy_options_are_refused(demo, options, error):
    before = demo.execute("SELECT * FROM veil_private.policies ORDER BY name").fetchall()
    with pytest.raises(psycopg.errors.RaiseException, match=error):
        demo.execute(f"SELECT veil.alter_policy('sanitized', {options})")
    assert demo.execute("SELECT * FROM veil_private.policies ORDER BY name").fetchall() == before


def test_log_options_apply_to_copy_policies_only(demo):
    with pytest.raises(psycopg.errors.RaiseException, match="apply to policies delivered as a copy"):
        demo.execute("SELECT veil.alter_policy('mask', change_log => false)")


def read_all(conn, page: int = 1000) -> list[tuple]:
    return conn.execute("SELECT * FROM veil.changes(%s)", (page,)).fetchall()


def test_an_entry_is_held_back_while_a_lower_transaction_is_in_flight(demo, consumer):
    """T1 takes the lower transaction ID, T2 commits first: T2's entry waits for T1."""
    with (
        psycopg.connect(demo.url) as t1,
        psycopg.connect(demo.url) as t2,
        consumer.connect(autocommit=True) as reader,
    ):
        t1.execute("SELECT pg_current_xact_id()")  # T1 has the lower ID, and writes later
        t2.execute(INSERT, ("second@example.com",))
        t2.commit()
        assert read_all(reader) == []  # T1 may still write below T2's entry
        t1.execute(INSERT, ("first@example.com",))
        assert read_all(reader) == []
        t1.commit()
        got = read_all(reader)
    assert [e[2] for e in got] == ["upsert", "upsert"]
    # xid order: T1's entry first although it committed last.
    t1_key = token(demo, demo.scalar("SELECT customer_id FROM customer WHERE email = 'first@example.com'"))
    assert {k["customer_id"] for k in got[0][4]} == {t1_key}


def test_a_consumer_polling_during_interleaved_commits_misses_nothing_and_repeats_nothing(demo, consumer):
    """Writers whose commits interleave at random; the consumer reads and acknowledges all along."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def writer(seed_value: int) -> None:
        rng = random.Random(seed_value)
        try:
            with psycopg.connect(demo.url) as conn:
                while not stop.is_set():
                    conn.execute("SELECT pg_current_xact_id()")
                    for _ in range(rng.randint(1, 3)):
                        conn.execute(INSERT, (f"w{seed_value}-{rng.random()}@example.com",))
                    time.sleep(rng.random() * 0.02)
                    conn.commit()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            failures.append(exc)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    received: list[str] = []
    deadline = time.monotonic() + 4
    with consumer.connect(autocommit=True) as reader:
        while time.monotonic() < deadline:
            batch = read_all(reader, page=7)
            if batch:
                received += [e[0] for e in batch]
                reader.execute("SELECT veil.acknowledge(%s)", (batch[-1][0],))
        stop.set()
        for thread in writers:
            thread.join()
        while batch := read_all(reader, page=50):
            received += [e[0] for e in batch]
            reader.execute("SELECT veil.acknowledge(%s)", (batch[-1][0],))
    assert not failures
    registered = demo.scalar("SELECT registered_at FROM veil.change_consumers WHERE role::text = %s", (consumer.name,))
    logged = [
        r[0]
        for r in demo.execute(
            "SELECT xid || ':' || seq FROM veil_private.change_log WHERE copy = 'customer' AND logged_at >= %s"
            " ORDER BY xid, seq",
            (registered,),
        ).fetchall()
    ]
    assert len(logged) > 50
    assert received == logged  # every entry, once, in position order


def acknowledged(db, role) -> str:
    return db.scalar("SELECT position FROM veil.change_consumers WHERE role::text = %s", (role.name,))


@pytest.mark.parametrize(
    "position, error",
    [
        ("999999999:1", "never received"),
        ("1:999999999", "lies before"),
        ("{next}", "never received"),  # a real entry's xid with a made-up sequence
        ("12", "is not a change-log position"),
        ("12:-1", "is not a change-log position"),
        ("", "is not a change-log position"),
    ],
)
def test_acknowledging_a_position_never_received_is_refused(demo, consumer, position, error):
    demo.scalar(INSERT, ("ack@example.com",))
    with consumer.connect(autocommit=True) as conn:
        real = read_all(conn)[0][0]
        before = acknowledged(demo, consumer)
        xid, seq = real.split(":")
        bad = position.format(next=f"{xid}:{int(seq) + 1000}")
        with pytest.raises(psycopg.errors.DatabaseError, match=error):
            conn.execute("SELECT veil.acknowledge(%s)", (bad,))
        assert acknowledged(demo, consumer) == before
        conn.execute("SELECT veil.acknowledge(%s)", (real,))
        conn.execute("SELECT veil.acknowledge(%s)", (real,))  # again after a reconnect: fine
        assert acknowledged(demo, consumer) == real
        assert conn.execute("SELECT veil.consumer_position()").fetchone()[0] == real
        assert read_all(conn) == []


def test_an_entry_of_a_copy_the_role_may_not_read_is_neither_shown_nor_acknowledgeable(demo, consumer):
    demo.execute(f"REVOKE SELECT ON sanitized.payment FROM {consumer.name}")
    start = log_end(demo)
    demo.execute("DELETE FROM payment WHERE payment_id IN (SELECT payment_id FROM payment LIMIT 1)")
    seed(demo, customers=1, payments=1)
    hidden = demo.scalar(
        "SELECT xid || ':' || seq FROM veil_private.change_log WHERE copy = 'payment' AND (xid, seq) > (%s::text::xid8, %s)"
        " ORDER BY xid DESC, seq DESC LIMIT 1",
        start,
    )
    with consumer.connect(autocommit=True) as conn:
        assert {e[1] for e in read_all(conn)} == {"customer"}
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="never received"):
            conn.execute("SELECT veil.acknowledge(%s)", (hidden,))


def test_one_consumer_cannot_read_or_move_anothers_position(demo, consumer):
    other = demo.role("other_reader")
    demo.execute("SELECT veil.grant_consumer(%s)", (other.name,))
    demo.scalar(INSERT, ("mine@example.com",))
    before = acknowledged(demo, other)
    with consumer.connect(autocommit=True) as conn:
        for attack in (
            "SELECT * FROM veil.changes(10, %s)",
            "SELECT veil.consumer_position(%s)",
            "SELECT veil.resync_consumer(%s)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not read or acknowledge"):
                conn.execute(attack, (other.name,))
        position = read_all(conn)[0][0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT veil.acknowledge(%s, %s)", (position, other.name))
        for table in ("veil_private.consumers", "veil_private.change_log", "veil.change_consumers"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM {table}")
    assert acknowledged(demo, other) == before


def test_a_role_that_is_not_a_consumer_is_refused(demo):
    stranger = demo.role("stranger")
    with stranger.connect(autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not a registered consumer"):
            conn.execute("SELECT * FROM veil.changes()")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="max_entries"):
            conn.execute("SELECT * FROM veil.changes(0)")
        with pytest.raises(psycopg.errors.UndefinedObject, match="there is no role"):
            conn.execute("SELECT * FROM veil.changes(1, 'no_such_role')")


def only(demo, *consumers) -> None:
    """Unregister every other consumer (the demo's own holds retention too)."""
    names = [c.name for c in consumers]
    demo.execute(
        "SELECT veil.revoke_consumer(rolname) FROM veil_private.consumers JOIN pg_roles r ON r.oid = roleid"
        " WHERE rolname <> ALL (%s)",
        (names,),
    )


def test_trimming_keeps_what_a_consumer_has_not_acknowledged(demo, consumer):
    only(demo, consumer)
    seed(demo, customers=5, payments=0)
    with consumer.connect(autocommit=True) as conn:
        first = read_all(conn)
        conn.execute("SELECT veil.acknowledge(%s)", (first[0][0],))
        demo.execute("CALL veil.trim_change_log(2)")
        # Everything after the acknowledged position is still there, and only that.
        assert [e[0] for e in read_all(conn)] == [e[0] for e in first[1:]]
        assert demo.scalar("SELECT count(*) FROM veil_private.change_log") == len(first) - 1
        conn.execute("SELECT veil.acknowledge(%s)", (first[-1][0],))
    demo.execute("CALL veil.trim_change_log()")
    assert demo.scalar("SELECT count(*) FROM veil_private.change_log") == 0


def test_a_dropped_consumer_role_releases_its_retention(demo):
    gone = demo.role("gone_reader")
    only(demo)
    demo.execute("SELECT veil.grant_consumer(%s)", (gone.name,))
    seed(demo, customers=3, payments=0)
    demo.execute("CALL veil.trim_change_log()")
    assert demo.scalar("SELECT count(*) FROM veil_private.change_log") > 0  # held for gone_reader
    demo.execute(f"DROP OWNED BY {gone.name}")
    demo.execute(f"DROP ROLE {gone.name}")
    demo.execute("CALL veil.trim_change_log()")
    assert demo.scalar("SELECT count(*) FROM veil_private.change_log") == 0
    assert demo.scalar("SELECT count(*) FROM veil_private.consumers WHERE roleid::regrole::text ~ '^[0-9]+$'") == 0


def test_a_consumer_behind_the_maximum_age_is_told_and_resyncs(demo, consumer):
    seed(demo, customers=3, payments=0)
    demo.execute("SELECT veil.set_change_log_retention('1 millisecond')")
    time.sleep(0.01)
    demo.execute("CALL veil.trim_change_log()")
    assert demo.scalar("SELECT behind_retention FROM veil.change_consumers WHERE role::text = %s", (consumer.name,))
    with consumer.connect(autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="fell behind") as behind:
            read_all(conn)
        assert "veil.resync_consumer()" in (behind.value.diag.message_hint or "")
        restart = conn.execute("SELECT veil.resync_consumer()").fetchone()[0]
        assert restart.endswith(":0")
        assert read_all(conn) == []
        demo.execute("SELECT veil.set_change_log_retention(NULL)")
        demo.scalar(INSERT, ("after@example.com",))
        assert [e[2] for e in read_all(conn)] == ["upsert"]


@pytest.mark.parametrize("call", ["CALL veil.trim_change_log(0)", "SELECT veil.set_change_log_retention('-1 day')"])
def test_bad_retention_input_is_refused(demo, call):
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        demo.execute(call)
    assert demo.scalar("SELECT max_age FROM veil.change_log_status()") is None


def test_governor_functions_are_refused_to_consumers(consumer):
    with consumer.connect(autocommit=True) as conn:
        for call in (
            "CALL veil.trim_change_log()",
            "SELECT veil.set_change_log_retention('1 day')",
            "SELECT * FROM veil.change_log_status()",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(call)


def test_the_change_log_commands(demo, consumer):
    only(demo, consumer)
    seed(demo, customers=3, payments=0)
    shown = pgveil("change-log", "status", "--json", "--database-url", demo.url)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["entries"] == demo.scalar("SELECT count(*) FROM veil_private.change_log") > 0
    assert [c["role"] for c in report["consumers"]] == [consumer.name]
    assert report["max_age"] is None

    set_age = pgveil("change-log", "retention", "--max-age", "7d", "--database-url", demo.url)
    assert set_age.returncode == 0, set_age.stderr
    assert demo.scalar("SELECT max_age FROM veil.change_log_status()") == timedelta(days=7)
    for bad in ("0d", "7 weeks", "-1h", ""):
        refused = pgveil("change-log", "retention", "--max-age", bad, "--database-url", demo.url)
        assert refused.returncode == 1 and "--max-age is a positive number" in refused.stderr
        assert demo.scalar("SELECT max_age FROM veil.change_log_status()") == timedelta(days=7)

    with consumer.connect(autocommit=True) as conn:
        got = read_all(conn)
        conn.execute("SELECT veil.acknowledge(%s)", (got[-1][0],))
    trimmed = pgveil("change-log", "trim", "--batch-size", "1", "--database-url", demo.url)
    assert trimmed.returncode == 0, trimmed.stderr
    assert f"{report['entries']:,} entries trimmed" in trimmed.stdout
    assert demo.scalar("SELECT count(*) FROM veil_private.change_log") == 0

    demo.execute("SELECT veil.set_change_log_retention('1 millisecond')")
    demo.scalar(INSERT, ("late@example.com",))
    time.sleep(0.01)
    demo.execute("CALL veil.trim_change_log()")
    behind = pgveil("change-log", "status", "--database-url", demo.url)
    assert behind.returncode == 1 and consumer.name in behind.stderr and "must resync" in behind.stderr


@pytest.mark.parametrize(
    "setup, refusal",
    [
        ("SELECT veil.publish_sanitized()", "while pgveil publications exist"),
        ("SELECT veil.alter_policy('sanitized', on_ddl => 'break')", "on_ddl => 'break'"),
    ],
)
def test_a_downgrade_that_would_drop_a_guard_is_refused(demo, setup, refusal):
    demo.execute(setup)
    versions = f"SELECT version_num FROM public.{migrate.VERSION_TABLE} ORDER BY 1"
    heads = demo.execute(versions).fetchall()
    with pytest.raises(RuntimeError, match=refusal):
        migrate.downgrade(demo.url, with_demo=True, target="0011_verify")
    assert demo.execute(versions).fetchall() == heads
    assert demo.scalar("SELECT to_regclass('veil_private.change_log')") is not None
