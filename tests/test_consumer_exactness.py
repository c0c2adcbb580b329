"""The consumer program ends exactly at the copies' state: killed at random points, across a
server restart, after falling behind the change log's retention; and what a consumer role
may not do with the log.

The consumer runs as the real program (`python -m consumer --json`, a subprocess) and as
the demo's consumer role. What it printed, applied line by line in order (upsert: put the
row under its key; delete: remove the key; truncate: empty the table), must equal
``sanitized.*`` row for row, and every key deleted (and never written again) must have
been printed as a delete.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from demo.flow import login_urls
from pgveil import sandbox
from tests.helpers import login, seed

REPO = Path(__file__).resolve().parents[1]
KEYS = {"customer": "customer_id", "payment": "payment_id"}
LAST_ENTRY = (
    "SELECT veil_private.position_text(xid, seq) FROM veil_private.change_log"
    " WHERE copy IN ('customer', 'payment') ORDER BY xid DESC, seq DESC LIMIT 1"
)


def position_key(position: str) -> tuple[int, int]:
    xid, seq = position.split(":")
    return int(xid), int(seq)


class ConsumerRuns:
    """`python -m consumer --json` started, killed and started again; each run prints to a
    file of its own (a run killed in the middle of a write leaves a partial last line,
    which that run never acknowledged)."""

    def __init__(self, url: str, directory: Path, *options: str):
        self.url, self.directory, self.options = url, directory, options
        self.runs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        assert not self.runs or self.runs[-1].poll() is not None
        n = len(self.runs)
        with (self.directory / f"run{n}.out").open("wb") as out, (self.directory / f"run{n}.err").open("wb") as err:
            self.runs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "consumer", "--json", *self.options],
                    cwd=REPO,
                    # Buffered as in production: the program must flush before it acknowledges.
                    env={
                        **{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
                        "DATABASE_URL": self.url,
                        "COLUMNS": "200",
                    },
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                )
            )

    def wait_started(self, timeout: float = 30) -> None:
        """Until the current run has connected and checked its boundary (it reads the log next)."""
        deadline = time.monotonic() + timeout
        while "boundary:" not in (self.directory / f"run{len(self.runs) - 1}.err").read_text():
            assert self.alive(), self.stderr()
            assert time.monotonic() < deadline, self.stderr()
            time.sleep(0.02)

    def wait_printed(self, position: str, timeout: float = 60) -> None:
        """Until the current run has printed a line of this entry."""
        deadline = time.monotonic() + timeout
        needle = f'"position": "{position}"'
        while needle not in (self.directory / f"run{len(self.runs) - 1}.out").read_text():
            assert self.alive(), self.stderr()
            assert time.monotonic() < deadline, self.stderr()
            time.sleep(0.005)

    def kill(self) -> None:
        process = self.runs[-1]
        process.send_signal(signal.SIGKILL)
        assert process.wait(10) == -signal.SIGKILL, self.stderr()

    def stop(self) -> None:
        process = self.runs[-1]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, self.stderr()

    def alive(self) -> bool:
        return bool(self.runs) and self.runs[-1].poll() is None

    def close(self) -> None:
        for process in self.runs:
            if process.poll() is None:
                process.kill()
                process.wait(10)

    def lines(self) -> list[list[dict[str, Any]]]:
        """Each run's complete lines, parsed."""
        found = []
        for n in range(len(self.runs)):
            text = (self.directory / f"run{n}.out").read_bytes().decode()
            complete = text[: text.rfind("\n") + 1]
            found.append([json.loads(line) for line in complete.splitlines()])
        return found

    def stderr(self) -> str:
        text = "".join((self.directory / f"run{n}.err").read_text() for n in range(len(self.runs)))
        return " ".join(text.split())  # rich wraps its log lines


@pytest.fixture
def runs_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pgveil-consumer-") as directory:
        yield Path(directory)


def canonical(value: Any) -> Any:
    """A value as a JSON line carries it."""
    return json.loads(json.dumps(value, default=str))


def key_of(table: str, key: dict[str, Any]) -> str:
    return json.dumps(canonical(key), sort_keys=True)


def apply(runs: list[list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The copies as the printed lines, applied in order, build them."""
    mirror: dict[str, dict[str, Any]] = {table: {} for table in KEYS}
    for lines in runs:
        for line in lines:
            table = mirror.setdefault(line["table"], {})
            if line["op"] == "upsert":
                table[key_of(line["table"], line["key"])] = line["row"]
            elif line["op"] == "delete":
                table.pop(key_of(line["table"], line["key"]), None)
            else:
                assert line["op"] == "truncate", line
                table.clear()
    return mirror


def copies_now(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    state = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for table, key in KEYS.items():
            rows = cur.execute(f"SELECT * FROM sanitized.{table}").fetchall()
            state[table] = {key_of(table, {key: row[key]}): canonical(row) for row in rows}
    return state


def deletes(runs: list[list[dict[str, Any]]], table: str) -> set[str]:
    return {
        key_of(table, line["key"])
        for lines in runs
        for line in lines
        if line["table"] == table and line["op"] == "delete"
    }


def mark(conn: psycopg.Connection) -> str:
    """One more change, and its position: once it is acknowledged, everything before it was shown."""
    conn.execute(
        "UPDATE customer SET active = coalesce(active, 0) + 1 WHERE customer_id = (SELECT min(customer_id) FROM customer)"
    )
    return conn.execute(LAST_ENTRY).fetchone()[0]


def acknowledged(conn: psycopg.Connection) -> str:
    return conn.execute("SELECT position FROM veil.change_consumers WHERE role = 'consumer'::regrole").fetchone()[0]


def wait_acknowledged(conn: psycopg.Connection, consumer: ConsumerRuns, position: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while position_key(acknowledged(conn)) < position_key(position):
        assert consumer.alive(), consumer.stderr()
        assert time.monotonic() < deadline, f"not acknowledged: {position}; {consumer.stderr()[-2000:]}"
        time.sleep(0.2)


def assert_exact(
    conn: psycopg.Connection, consumer: ConsumerRuns, since: str, in_order: bool = True
) -> list[list[dict[str, Any]]]:
    """The printed lines rebuild the copies; every entry since ``since`` was printed (in order
    per run, unless a run reconnected: it then shows the unacknowledged page again)."""
    runs = consumer.lines()
    mirror, now = apply(runs), copies_now(conn)
    for table in KEYS:
        missing = {k: v for k, v in now[table].items() if mirror[table].get(k) != v}
        extra = {k: v for k, v in mirror[table].items() if k not in now[table]}
        assert (missing, extra) == ({}, {}), table
    printed = {line["position"] for lines in runs for line in lines}
    entries = {
        row[0]
        for row in conn.execute(
            "SELECT veil_private.position_text(xid, seq) FROM veil_private.change_log"
            " WHERE copy IN ('customer', 'payment')"
            "   AND (op = 'truncate' OR op IN ('upsert', 'delete') AND json_array_length(keys) > 0)"
        ).fetchall()
        if position_key(row[0]) > position_key(since)
    }
    assert entries and not (entries - printed), sorted(entries - printed)[:10]
    for lines in runs if in_order else []:
        positions = [position_key(line["position"]) for line in lines]
        assert positions == sorted(positions)
    return runs


# The workload: writers on customers and payments of their own, several
# statements per transaction, commits interleaved (sometimes one held open
# while the others commit), inserts, updates, key changes, deletes.
class Writer(threading.Thread):
    def __init__(self, url: str, number: int, transactions: int):
        super().__init__(daemon=True)
        self.url, self.number, self.transactions = url, number, transactions
        self.rng = random.Random(1000 + number)
        self.next_id = 1_000_000 * (number + 1)
        self.customers: list[int] = []
        self.payments: dict[int, int] = {}  # payment → customer
        self.deleted_customers: set[int] = set()
        self.deleted_payments: set[int] = set()
        self.done = 0
        self.error: BaseException | None = None

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                for _ in range(self.transactions):
                    held = self.rng.random() < 0.05
                    with conn.transaction():
                        for _ in range(self.rng.randint(1, 4)):
                            self.operation(conn)
                        time.sleep(self.rng.uniform(0.3, 0.8) if held else self.rng.uniform(0, 0.02))
                    self.done += 1
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            self.error = exc

    def operation(self, conn: psycopg.Connection) -> None:
        rng = self.rng
        op = rng.choices(
            ["insert", "update", "move", "delete", "pay", "repay", "move_payment", "refund", "bulk"],
            [3, 3, 1, 1, 3, 2, 1, 1, 0.3],
        )[0]
        if op == "insert" or not self.customers:
            new = self.new_id()
            conn.execute(
                "INSERT INTO customer (customer_id, store_id, first_name, last_name, email, address_id)"
                " VALUES (%s, 1, %s, 'Rawlast', %s, 1 + %s %% 10)",
                (new, f"Rawfirst{new}", f"raw{new}@example.com", new),
            )
            self.customers.append(new)
            return
        customer = rng.choice(self.customers)
        if op == "update":
            conn.execute(
                "UPDATE customer SET active = %s, first_name = %s WHERE customer_id = %s",
                (rng.randint(0, 9), f"Rawfirst{rng.random()}", customer),
            )
        elif op == "move":  # a key change: the payments follow (ON UPDATE CASCADE)
            new = self.new_id()
            conn.execute("UPDATE customer SET customer_id = %s WHERE customer_id = %s", (new, customer))
            self.customers[self.customers.index(customer)] = new
            self.deleted_customers.add(customer)
            self.payments = {p: (new if c == customer else c) for p, c in self.payments.items()}
        elif op == "delete":
            gone = conn.execute("DELETE FROM payment WHERE customer_id = %s RETURNING payment_id", (customer,))
            self.deleted_payments |= {p for (p,) in gone.fetchall()}
            conn.execute("DELETE FROM customer WHERE customer_id = %s", (customer,))
            self.customers.remove(customer)
            self.deleted_customers.add(customer)
            self.payments = {p: c for p, c in self.payments.items() if c != customer}
        elif op == "pay" or not self.payments:
            payment = self.new_id()
            conn.execute(
                "INSERT INTO payment (payment_id, customer_id, amount) VALUES (%s, %s, %s)",
                (payment, customer, rng.randint(100, 9999) / 100),
            )
            self.payments[payment] = customer
        elif op == "bulk":
            conn.execute(
                "UPDATE customer SET active = %s WHERE customer_id > %s AND customer_id < %s",
                (rng.randint(0, 9), 1_000_000 * (self.number + 1), 1_000_000 * (self.number + 2)),
            )
        else:
            payment = rng.choice(sorted(self.payments))
            if op == "repay":
                conn.execute(
                    "UPDATE payment SET amount = %s WHERE payment_id = %s", (rng.randint(100, 9999) / 100, payment)
                )
            elif op == "move_payment":
                new = self.new_id()
                moved = conn.execute(
                    "UPDATE payment SET payment_id = %s WHERE payment_id = %s RETURNING payment_id", (new, payment)
                ).fetchall()
                customer = self.payments.pop(payment)
                if moved:  # not if a truncate took it
                    self.payments[new] = customer
                    self.deleted_payments.add(payment)
            else:
                gone = conn.execute("DELETE FROM payment WHERE payment_id = %s RETURNING payment_id", (payment,))
                if gone.fetchall():
                    self.deleted_payments.add(payment)
                del self.payments[payment]


def big_statement(demo) -> str:
    """20,000 customers in one statement; its entry's position."""
    demo.execute(
        "INSERT INTO customer (customer_id, store_id, first_name, last_name, email, address_id)"
        " SELECT 9000000 + g, 2, 'Rawfirst', 'Rawlast', 'raw' || g || '@example.com', 1 + g % 10"
        " FROM generate_series(1, 20000) g"
    )
    return demo.scalar(
        "SELECT veil_private.position_text(xid, seq) FROM veil_private.change_log"
        " WHERE copy = 'customer' AND rows = 20000 ORDER BY xid DESC, seq DESC LIMIT 1"
    )


def token_keys(conn: psycopg.Connection, customers: set[int]) -> set[str]:
    tokens = conn.execute("SELECT veil.token(c::text, 'customer') FROM unnest(%s::int[]) AS c", (sorted(customers),))
    return {key_of("customer", {"customer_id": t}) for (t,) in tokens.fetchall()}


def assert_deletes_printed(conn, runs, customers: set[int], payments: set[int]) -> None:
    """Every key deleted and never written again was printed as a delete."""
    now = copies_now(conn)
    customer_keys = token_keys(conn, customers)
    payment_keys = {key_of("payment", {"payment_id": p}) for p in payments}
    assert customer_keys
    assert not (customer_keys & now["customer"].keys()) and not (payment_keys & now["payment"].keys())
    assert not (customer_keys - deletes(runs, "customer"))
    assert not (payment_keys - deletes(runs, "payment"))


@pytest.mark.slow
def test_a_consumer_killed_at_random_points_ends_exact(demo, runs_dir):
    seed(demo, customers=100, payments=200)
    url = login(demo, "consumer")
    since = acknowledged(demo.admin)
    consumer = ConsumerRuns(url, runs_dir)
    writers = [Writer(demo.url, n, transactions=150) for n in range(3)]
    truncated = threading.Event()

    def truncate_halfway() -> None:
        while sum(w.done for w in writers) < 225 and any(w.is_alive() for w in writers):
            time.sleep(0.05)
        # A transaction with a lower id than the truncate's, committed after it:
        # its entry comes first, its payment outlives the truncate.
        with psycopg.connect(demo.url) as earlier:
            earlier.execute(
                "INSERT INTO customer (customer_id, store_id, first_name, last_name, email, address_id)"
                " VALUES (999999, 1, 'Rawfirst', 'Rawlast', 'raw@example.com', 1)"
            )
            demo.execute("TRUNCATE payment")
            earlier.execute("INSERT INTO payment (payment_id, customer_id, amount) VALUES (999999, 999999, 1.23)")
        truncated.set()

    rng = random.Random(22)
    kills = 0
    try:
        consumer.start()
        for writer in writers:
            writer.start()
        truncator = threading.Thread(target=truncate_halfway, daemon=True)
        truncator.start()
        while any(w.is_alive() for w in writers) or kills < 6:
            consumer.wait_started()
            if kills == 2:
                # Once for certain in the middle of an entry: 20,000 keys, shown a
                # slice at a time; killed at its first line, long before its acknowledgement.
                big = big_statement(demo)
                consumer.wait_printed(big)
            else:
                time.sleep(rng.uniform(0.05, 1.2))
            consumer.kill()
            kills += 1
            time.sleep(rng.choice([0.0, rng.uniform(0.1, 0.6)]))
            consumer.start()
        truncator.join(30)
        assert truncated.is_set()
        for writer in writers:
            writer.join()
            assert writer.error is None, repr(writer.error)
        # Killed once more while catching up, then left to finish.
        consumer.wait_started()
        time.sleep(rng.uniform(0.05, 0.5))
        consumer.kill()
        consumer.start()
        wait_acknowledged(demo.admin, consumer, mark(demo.admin))
        consumer.stop()
    finally:
        consumer.close()
    assert len(consumer.runs) == kills + 2 >= 8
    runs = assert_exact(demo.admin, consumer, since)
    assert_deletes_printed(
        demo.admin,
        runs,
        set().union(*(w.deleted_customers for w in writers)),
        set().union(*(w.deleted_payments for w in writers)),
    )
    assert any(line["op"] == "truncate" and not line.get("catch_up") for lines in runs for line in lines)
    # The entry cut short was shown again, whole, by the next run.
    showing = [sum(line["position"] == big for line in lines) for lines in runs]
    assert 0 < showing[2] < 20_000 and max(showing[3:]) == 20_000, showing  # run 2 was killed
    printed = "".join((runs_dir / f"run{n}.out").read_text() for n in range(len(consumer.runs)))
    for raw in ("Rawfirst", "Rawlast", "@example.com"):
        assert raw not in printed and raw not in consumer.stderr()


def write_through_restarts(
    url: str, operations: int, written: dict[str, set[int]], errors: list[BaseException]
) -> None:
    """Single statements, each retried until it has happened (the server may be restarting)."""
    rng = random.Random(7)
    customers: list[int] = []
    next_id = 5_000_000
    conn: psycopg.Connection | None = None
    try:
        for _ in range(operations):
            op = rng.choices(["insert", "update", "delete", "move"], [5, 3, 1, 1])[0]
            if op == "insert" or not customers:
                next_id += 1
                statement, params = (
                    "INSERT INTO customer (customer_id, store_id, first_name, last_name, email, address_id)"
                    " VALUES (%s, 1, 'Rawfirst', 'Rawlast', 'raw@example.com', 1) ON CONFLICT DO NOTHING",
                    (next_id,),
                )
                customers.append(next_id)
                written["inserted"].add(next_id)
            elif op == "update":
                statement, params = (
                    "UPDATE customer SET active = %s WHERE customer_id = %s",
                    (rng.randint(0, 9), rng.choice(customers)),
                )
            elif op == "delete":
                customer = customers.pop(rng.randrange(len(customers)))
                statement, params = "DELETE FROM customer WHERE customer_id = %s", (customer,)
                written["deleted"].add(customer)
            else:
                customer = customers.pop(rng.randrange(len(customers)))
                next_id += 1
                statement, params = "UPDATE customer SET customer_id = %s WHERE customer_id = %s", (next_id, customer)
                customers.append(next_id)
                written["inserted"].add(next_id)
                written["deleted"].add(customer)
            while True:
                try:
                    if conn is None:
                        conn = psycopg.connect(url, autocommit=True, connect_timeout=2)
                    # Again after a lost connection: each statement is idempotent.
                    conn.execute(statement, params)
                    break
                except psycopg.OperationalError:
                    if conn is not None:
                        conn.close()
                    conn = None
                    time.sleep(0.2)
            time.sleep(0.005)
    except BaseException as exc:  # noqa: BLE001 - the test reports it
        errors.append(exc)
    finally:
        if conn is not None:
            conn.close()


def seed_demo(admin: psycopg.Connection) -> None:
    admin.execute("INSERT INTO address (address) SELECT 'street ' || g FROM generate_series(1, 10) g")
    admin.execute(
        "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
        " SELECT 1, 'first' || g, 'last' || g, 'c' || g || '@example.com', 1 FROM generate_series(1, 50) g"
    )
    admin.execute("INSERT INTO payment (customer_id, amount) SELECT 1 + g % 50, 1.99 FROM generate_series(1, 50) g")


@pytest.mark.slow
def test_a_server_restart_mid_stream_loses_no_change(own_server, runs_dir):
    root, url = own_server
    with psycopg.connect(url, autocommit=True) as admin:
        consumer_url = login_urls(admin, url, ["consumer"])["consumer"]
        seed_demo(admin)
        since = acknowledged(admin)
    consumer = ConsumerRuns(consumer_url, runs_dir)
    written: dict[str, set[int]] = {"inserted": set(), "deleted": set()}
    errors: list[BaseException] = []
    writer = threading.Thread(target=write_through_restarts, args=(url, 800, written, errors), daemon=True)
    try:
        consumer.start()
        writer.start()
        time.sleep(2.0)
        sandbox.restart(root, "fast")
        time.sleep(2.0)
        sandbox.restart(root, "immediate")  # as in a crash
        writer.join(120)
        assert not writer.is_alive() and not errors, errors
        with psycopg.connect(url, autocommit=True) as admin:
            wait_acknowledged(admin, consumer, mark(admin))
            consumer.stop()
            runs = assert_exact(admin, consumer, since, in_order=False)
            # Counting every change: each customer written was printed (as an
            # upsert, or as a delete if it was gone when read), each one deleted
            # or moved away as a delete.
            printed = {
                key_of("customer", line["key"])
                for lines in runs
                for line in lines
                if line["table"] == "customer" and "key" in line
            }
            assert not (token_keys(admin, written["inserted"]) - printed)
            assert_deletes_printed(admin, runs, written["deleted"], set())
    finally:
        consumer.close()
    assert len(consumer.runs) == 1  # the same process throughout: it reconnected by itself
    assert consumer.stderr().count("connection lost") >= 2
    assert consumer.stderr().count("reconnected") >= 2


def test_a_consumer_behind_retention_resyncs_and_ends_exact(demo, runs_dir):
    seed(demo, customers=60, payments=60)
    url = login(demo, "consumer")
    consumer = ConsumerRuns(url, runs_dir)
    try:
        consumer.start()
        demo.execute("UPDATE customer SET active = 1 WHERE customer_id <= 10")
        wait_acknowledged(demo.admin, consumer, mark(demo.admin))
        consumer.stop()
        # While it is away: writes, an erasure, and retention trims what it had not read.
        away = demo.execute("SELECT min(customer_id), max(customer_id) FROM customer").fetchone()
        demo.execute("DELETE FROM customer WHERE customer_id IN (%s, %s)", away)
        demo.execute("UPDATE customer SET customer_id = 7777 WHERE customer_id = 20")
        demo.execute(
            "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
            " VALUES (1, 'Rawfirst', 'Rawlast', 'raw@example.com', 1)"
        )
        demo.execute("SELECT veil.set_change_log_retention('1 millisecond')")
        time.sleep(0.05)
        demo.execute("CALL veil.trim_change_log()")
        demo.execute("SELECT veil.set_change_log_retention(NULL)")
        assert demo.scalar("SELECT behind_retention FROM veil.change_consumers WHERE role = 'consumer'::regrole")
        consumer.start()
        demo.execute("UPDATE customer SET active = 2 WHERE customer_id = 7777")
        wait_acknowledged(demo.admin, consumer, mark(demo.admin))
        consumer.stop()
    finally:
        consumer.close()
    assert "fell behind the change log" in consumer.stderr()
    assert "re-reading every copy" in consumer.stderr()
    runs = consumer.lines()
    reread = [(line["table"], line["op"]) for line in runs[1] if line.get("catch_up") and line["op"] == "truncate"]
    assert reread == [("customer", "truncate"), ("payment", "truncate")]
    mirror, now = apply(runs), copies_now(demo.admin)
    assert mirror == now
    assert not demo.scalar("SELECT behind_retention FROM veil.change_consumers WHERE role = 'consumer'::regrole")


# What a consumer role may not do with the change log.


@pytest.fixture
def consumer_conn(demo) -> Iterator[psycopg.Connection]:
    seed(demo, customers=5, payments=5)
    with psycopg.connect(login(demo, "consumer"), autocommit=True) as conn:
        yield conn


def position_of(conn: psycopg.Connection) -> str:
    return conn.execute("SELECT veil.consumer_position()").fetchone()[0]


@pytest.mark.parametrize("position", ["999999999:1", "1:1", "0:0", "abc", "12:", "-1:1", "1:1; DROP TABLE x", ""])
def test_a_position_never_received_is_refused(demo, consumer_conn, position):
    before = position_of(consumer_conn)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
        consumer_conn.execute("SELECT veil.acknowledge(%s)", (position,))
    assert (
        "never received" in str(refused.value)
        or "not a change-log position" in str(refused.value)
        or ("lies before" in str(refused.value))
    )
    assert position_of(consumer_conn) == before == acknowledged(demo.admin)


def test_an_entry_still_in_flight_cannot_be_acknowledged(demo, consumer_conn):
    """A position above the horizon has not been received by anyone: refused, and not shown."""
    with psycopg.connect(demo.url) as writer:
        writer.execute("UPDATE customer SET active = 3 WHERE customer_id = 1")
        in_flight = writer.execute(
            "SELECT veil_private.position_text(xid, seq) FROM veil_private.change_log"
            " WHERE xid = pg_current_xact_id() ORDER BY seq DESC LIMIT 1"
        ).fetchone()[0]
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="never received"):
            consumer_conn.execute("SELECT veil.acknowledge(%s)", (in_flight,))
        shown = [r[0] for r in consumer_conn.execute("SELECT position FROM veil.changes(100000)").fetchall()]
        assert in_flight not in shown
        writer.commit()
    shown = [r[0] for r in consumer_conn.execute("SELECT position FROM veil.changes(100000)").fetchall()]
    assert in_flight in shown
    consumer_conn.execute("SELECT veil.acknowledge(%s)", (in_flight,))
    assert position_of(consumer_conn) == in_flight
    # Going back is refused too.
    earlier = shown[0]
    if earlier != in_flight:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="lies before"):
            consumer_conn.execute("SELECT veil.acknowledge(%s)", (earlier,))
        assert position_of(consumer_conn) == in_flight


@pytest.mark.parametrize(
    "attempt",
    [
        "SELECT * FROM veil.changes(consumer => 'consumer')",
        "SELECT veil.acknowledge(%(position)s, consumer => 'consumer')",
        "SELECT veil.consumer_position('consumer')",
        "SELECT veil.resync_consumer('consumer')",
    ],
)
def test_one_consumer_cannot_read_or_acknowledge_for_another(demo, consumer_conn, attempt):
    other = demo.role("other")
    demo.execute("SELECT veil.grant_consumer(%s)", (other.name,))
    entries = consumer_conn.execute("SELECT position FROM veil.changes(100000)").fetchall()
    assert entries  # there is something the other could have read or acknowledged
    before = acknowledged(demo.admin)
    with other.connect(autocommit=True) as conn:
        assert conn.execute("SELECT veil.consumer_position()").fetchone()[0]  # its own: fine
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not read or acknowledge"):
            conn.execute(attempt, {"position": entries[-1][0]})
    assert acknowledged(demo.admin) == before


@pytest.mark.parametrize(
    "attempt",
    [
        "SELECT * FROM veil_private.change_log",
        "SELECT * FROM veil_private.consumers",
        "SELECT * FROM veil.change_consumers",
        "SELECT * FROM veil.change_log_status()",
        "SELECT veil.set_change_log_retention('1 second')",
        "CALL veil.trim_change_log()",
        "SELECT veil.grant_consumer(current_user)",
        "SELECT veil_private.log_change('public.customer', 'truncate', 0, NULL)",
    ],
)
def test_a_consumer_cannot_reach_the_log_itself(consumer_conn, attempt):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        consumer_conn.execute(attempt)


def test_a_role_that_is_no_consumer_reads_nothing(demo):
    stranger = demo.role("stranger")
    seed(demo, customers=3, payments=3)
    with stranger.connect(autocommit=True) as conn:
        for attempt in (
            "SELECT * FROM veil.changes()",
            "SELECT veil.consumer_position()",
            "SELECT veil.resync_consumer()",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not a registered consumer"):
                conn.execute(attempt)


def test_a_consumer_sees_no_entry_of_a_copy_it_may_not_read(demo, consumer_conn):
    """Entries name keys: of a copy the role may not SELECT, it gets none, and may acknowledge none."""
    limited = demo.role("limited")
    demo.execute("SELECT veil.grant_consumer(%s)", (limited.name,))
    demo.execute(f'REVOKE SELECT ON sanitized.payment FROM "{limited.name}"')
    demo.execute("INSERT INTO payment (customer_id, amount) VALUES (1, 5.55)")
    demo.execute("UPDATE customer SET active = 4 WHERE customer_id = 1")
    payment_entry = demo.scalar(
        "SELECT veil_private.position_text(xid, seq) FROM veil_private.change_log WHERE copy = 'payment'"
        " ORDER BY xid DESC, seq DESC LIMIT 1"
    )
    with limited.connect(autocommit=True) as conn:
        copies = {r[0] for r in conn.execute("SELECT copy FROM veil.changes(100000)").fetchall()}
        assert copies == {"customer"}
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="never received"):
            conn.execute("SELECT veil.acknowledge(%s)", (payment_entry,))


def test_the_log_carries_no_raw_value(demo):
    seed(demo, customers=3, payments=3)
    demo.execute(
        "INSERT INTO customer (store_id, first_name, last_name, email, address_id) VALUES (1, 'Rawfirst', 'Rawlast', 'raw@example.com', 1)"
    )
    demo.execute("UPDATE customer SET customer_id = 4242 WHERE first_name = 'Rawfirst'")
    demo.execute("DELETE FROM customer WHERE customer_id = 4242")
    logged = demo.scalar("SELECT string_agg(copy || op || coalesce(keys::text, ''), ' ') FROM veil_private.change_log")
    assert "v1:" in logged
    for raw in ("Rawfirst", "Rawlast", "raw@example.com"):
        assert raw not in logged
