"""Workers that play the application: paced batches, one transaction each.

Each worker has its own connection and its own customers (those it inserted,
plus those there were when the run started, by customer_id modulo the number
of workers), so that workers never update or delete the same row and cannot
deadlock each other.

A batch is one transaction: it commits whole or not at all. When the
connection breaks, the worker reconnects and asks the server what became of
the batch's transaction (pg_xact_status): committed batches are counted,
aborted ones are run again (they left nothing behind, so nothing is inserted
twice), and a batch whose fate cannot be known is reported lost, never rerun.
An xid reported committed counts only if the batch's writes are there: after a
crash, the server may have handed the batch's xid to another transaction.
"""

from __future__ import annotations

import random
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg

from loader import statements
from loader.fakes import Fakes
from loader.mix import KINDS

_Row = TypeVar("_Row")

# One event's row of its statement's arguments: the columns differ by kind of event.
Arguments = tuple[Any, ...]


def _one_row(cursor: psycopg.Cursor[_Row]) -> _Row:
    """The row of an executed query that always returns one row."""
    row = cursor.fetchone()
    assert row is not None, "the query returned no row"
    return row


@dataclass
class Settings:
    url: str
    mix: dict[str, float]
    rate: float | None = None  # writes per second, None: as fast as possible
    duration: float | None = None  # seconds
    count: int | None = None  # writes
    connections: int = 2
    batch: int = 20  # writes per transaction
    seed: int = 0
    reconnect_timeout: float = 60.0


class Pacer:
    """Hands out writes: no more than ``count`` in all, none after the deadline,
    and spaced to ``rate`` per second.

    The rate is a ceiling: a grant of n writes starts n/rate seconds after the
    one before it at the earliest, so that no span of time gets more than rate
    writes a second (plus the batch in hand). Workers that keep up start their
    batches on that schedule, and the rate is met; a worker that falls behind
    starts at once, and the schedule restarts from then: writes missed while
    the server was slow are not made up in a burst."""

    def __init__(
        self, rate: float | None, count: int | None, duration: float | None, clock: Callable[[], float] = time.monotonic
    ):
        self._lock = threading.Lock()
        self.clock = clock
        self._rate = rate
        self._left = count
        now = clock()
        self._deadline = None if duration is None else now + duration
        # The schedule: grants start at origin + writes granted since origin / rate
        # (reckoned from the origin, not added up grant by grant, so that rounding
        # errors do not add up into a grant more before the deadline).
        self._origin = now
        self._scheduled = 0

    def reserve(self, wanted: int) -> tuple[int, float] | None:
        """(writes granted, time on ``clock`` to start them), or None when the run is over."""
        with self._lock:
            now = self.clock()
            due = self._origin + self._scheduled / self._rate if self._rate else now
            start = max(now, due)
            if self._deadline is not None and start >= self._deadline:
                return None
            granted = wanted if self._left is None else min(wanted, self._left)
            if granted <= 0:
                return None
            if self._left is not None:
                self._left -= granted
            if self._rate:
                if now > due:  # behind schedule: it restarts from now
                    self._origin, self._scheduled = now, 0
                self._scheduled += granted
            return granted, start

    def give_back(self, writes: int) -> None:
        with self._lock:
            if self._left is not None:
                self._left += writes


def percentiles(values: Iterable[float], *quantiles: float) -> list[float]:
    """Nearest-rank quantiles of a non-empty sequence, sorting it once."""
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in quantiles]


@dataclass
class Stats:
    """What happened, for the live view and the summary (thread-safe)."""

    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    events: Counter[str] = field(default_factory=Counter)  # committed events by kind
    writes: Counter[str] = field(default_factory=Counter)  # committed rows written, by kind
    transactions: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # rolled back by an error, by SQLSTATE
    retried: int = 0  # known not committed after a lost connection, run again
    confirmed: int = 0  # committed, learnt after reconnecting
    lost: int = 0  # connection lost, fate unknown: not rerun
    lost_writes: int = 0
    reconnects: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))  # seconds per committed transaction
    fatal: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def committed(self, events: Counter[str], writes: Counter[str], latency: float | None) -> None:
        with self._lock:
            self.events.update(events)
            self.writes.update(writes)
            self.transactions += 1
            if latency is not None:
                self.latencies.append(latency)

    def note(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                setattr(self, name, getattr(self, name) + value)

    def failure(self, sqlstate: str) -> None:
        with self._lock:
            self.failed[sqlstate] += 1

    def total_writes(self) -> int:
        return sum(self.writes.values())

    def summary(self) -> dict[str, Any]:
        elapsed = self.elapsed()
        with self._lock:
            latencies = list(self.latencies)
        quantiles = (0.5, 0.95, 0.99)
        values = percentiles(latencies, *quantiles) if latencies else [None] * len(quantiles)
        ms = {
            f"p{int(q * 100)}": None if v is None else round(v * 1000, 2)
            for q, v in zip(quantiles, values, strict=True)
        }
        return {
            "elapsed_s": round(elapsed, 3),
            "writes": self.total_writes(),
            "writes_per_s": round(self.total_writes() / elapsed, 1) if elapsed else 0.0,
            "transactions": self.transactions,
            "latency_ms": ms,
            "events": dict(self.events),
            "writes_by_kind": dict(self.writes),
            "failed": dict(self.failed),
            "retried": self.retried,
            "confirmed_after_reconnect": self.confirmed,
            "lost": self.lost,
            "lost_writes": self.lost_writes,
            "reconnects": self.reconnects,
            "fatal": self.fatal,
        }


@dataclass
class Batch:
    """One transaction's events: per kind, each event's statement arguments and,
    for events on an existing customer, the customer's slot in the worker's list."""

    writes: int = 0
    events: Counter[str] = field(default_factory=Counter)
    arguments: dict[str, list[Arguments]] = field(default_factory=dict)
    slots: dict[str, list[int]] = field(default_factory=dict)
    xid: str | None = None


class Connector:
    """Connections as the application role, retried while the server is away."""

    def __init__(self, url: str, timeout: float, stop: threading.Event):
        self.url, self.timeout, self.stop = url, timeout, stop

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=5)

    def reconnect(self) -> psycopg.Connection[Any] | None:
        deadline = time.monotonic() + self.timeout
        delay = 0.2
        while not self.stop.is_set():
            try:
                return self.connect()
            except psycopg.OperationalError:
                if time.monotonic() + delay > deadline:
                    raise
                self.stop.wait(delay)
                delay = min(delay * 2, 2.0)
        return None


class Worker(threading.Thread):
    def __init__(
        self,
        index: int,
        settings: Settings,
        pacer: Pacer,
        stats: Stats,
        stop: threading.Event,
        fakes: Fakes,
        customers: array[int],
    ):
        super().__init__(name=f"loader-{index}", daemon=True)
        self.index, self.settings, self.pacer, self.stats, self.stop = index, settings, pacer, stats, stop
        self.fakes = fakes
        self.rng = random.Random(f"{settings.seed}/{index}")
        self.connector = Connector(settings.url, settings.reconnect_timeout, stop)
        self.customers = customers  # this worker's customer ids, its alone
        self.kinds = list(settings.mix)
        self.weights = [settings.mix[k] for k in self.kinds]

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a worker that dies must stop the run, not hang it
            self.stats.fatal = f"{self.name}: {type(exc).__name__}: {exc}"
            self.stop.set()

    def _run(self) -> None:
        conn = self.connector.connect()
        try:
            pending: Batch | None = None
            while not self.stop.is_set():
                if pending is None:
                    grant = self.pacer.reserve(self.settings.batch)
                    if grant is None:
                        return
                    writes, start = grant
                    if self.stop.wait(max(0.0, start - self.pacer.clock())):
                        self.pacer.give_back(writes)
                        return
                    pending = self._plan(writes)
                    if pending.writes < writes:
                        self.pacer.give_back(writes - pending.writes)
                    if not pending.writes:
                        pending = None
                        continue
                batch, pending = pending, None
                began = time.monotonic()
                try:
                    written = self._commit(conn, batch)
                    self.stats.committed(batch.events, written, time.monotonic() - began)
                except psycopg.Error as exc:
                    # The server may announce its going away as an error
                    # (57P01 on shutdown) after the COMMIT took effect: any
                    # operational error is settled by asking about the xid.
                    if not (conn.closed or conn.broken or isinstance(exc, psycopg.OperationalError)):
                        self._rolled_back(conn, exc)
                        continue
                    conn.close()
                    try:
                        reconnected = self.connector.reconnect()
                    except psycopg.OperationalError:
                        self._unresolved(batch)
                        raise
                    if reconnected is None:  # stopped while the server was away
                        self._unresolved(batch)
                        return
                    conn = reconnected
                    self.stats.note(reconnects=1)
                    pending = self._after_reconnect(conn, batch)
        finally:
            conn.close()  # a no-op if it is closed already

    def _plan(self, writes: int) -> Batch:
        """Events adding up to ``writes``; each customer is the target of one event at most."""
        batch = Batch()
        free = len(self.customers)
        taken: set[int] = set()
        while batch.writes < writes:
            room = writes - batch.writes
            kind = KINDS[self.rng.choices(self.kinds, self.weights)[0]]
            if kind.needs_customer and len(taken) >= free:
                kind = KINDS["insert_customer"]
            if kind.writes > room:
                fitting = [
                    k
                    for k in self.kinds
                    if KINDS[k].writes <= room and (not KINDS[k].needs_customer or len(taken) < free)
                ]
                if not fitting:
                    break
                kind = KINDS[self.rng.choice(fitting)]
            customer = None
            if kind.needs_customer:
                while True:
                    slot = self.rng.randrange(free)
                    if slot not in taken:
                        taken.add(slot)
                        break
                customer = self.customers[slot]
                batch.slots.setdefault(kind.name, []).append(slot)
            batch.arguments.setdefault(kind.name, []).append(self._arguments(kind.name, customer))
            batch.writes += kind.writes
            batch.events[kind.name] += 1
        return batch

    def _arguments(self, kind: str, customer: int | None) -> Arguments:
        """One event's row of its statement's arguments."""
        rng, fakes = self.rng, self.fakes
        if kind == "insert_customer":
            return fakes.customer(rng)
        if kind == "insert_payment":
            return customer, fakes.amount(rng)
        if kind == "update_email":
            return customer, fakes.email(rng, *fakes.name(rng))
        if kind == "update_name":
            return customer, *fakes.name(rng)
        return (customer,)  # update_active, change_key, delete_customer

    def _commit(self, conn: psycopg.Connection[Any], batch: Batch) -> Counter[str]:
        """Run the batch as one transaction (a round trip to learn its xid, one for the
        rest) and keep this worker's customers up to date; returns the rows written by kind."""
        with conn.pipeline() as pipeline:
            conn.execute("BEGIN")
            xid = conn.execute("SELECT pg_catalog.pg_current_xact_id()::text")
            pipeline.sync()
            batch.xid = _one_row(xid)[0]
            # One statement per kind, its arguments as arrays: one per column.
            cursors = {
                kind: conn.execute(statement, [list(column) for column in zip(*batch.arguments[kind], strict=True)])
                for kind, statement in statements.BY_KIND.items()
                if kind in batch.arguments
            }
            conn.execute("COMMIT")
        written: Counter[str] = Counter()
        for kind, cursor in cursors.items():
            if kind == "insert_customer":
                new_ids = [r[0] for r in cursor.fetchall()]
                written[kind] = 2 * len(new_ids)
                self.customers.extend(new_ids)
            elif kind == "change_key":
                moved: dict[int, int] = dict(cursor.fetchall())  # old customer_id: new
                written[kind] = len(moved)
                for slot, (old,) in zip(batch.slots[kind], batch.arguments[kind], strict=True):
                    if old in moved:
                        self.customers[slot] = moved[old]
            elif kind == "delete_customer":
                customers, addresses = _one_row(cursor)
                written[kind] = customers + addresses
            else:
                written[kind] = cursor.rowcount
        self._forget(batch.slots.get("delete_customer", []))
        return written

    def _forget(self, slots: Iterable[int]) -> None:
        """Drop customers by slot. Highest slot first, so that moving the last id
        into a freed slot never moves one that is still to be dropped."""
        for slot in sorted(slots, reverse=True):
            last = self.customers.pop()
            if slot < len(self.customers):
                self.customers[slot] = last

    def _rolled_back(self, conn: psycopg.Connection[Any], exc: psycopg.Error) -> None:
        """An error inside the transaction: it is rolled back, counted, and not rerun."""
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        self.stats.failure(getattr(exc, "sqlstate", None) or type(exc).__name__)

    def _after_reconnect(self, conn: psycopg.Connection[Any], batch: Batch) -> Batch | None:
        """What became of the batch the lost connection was running; returns it if it must run again."""
        if batch.xid is None:  # COMMIT is only sent once the xid is known: nothing committed
            self.stats.note(retried=1)
            return batch
        fate = self._fate(conn, batch)
        batch.xid = None
        if fate == "committed":
            # Which rows each statement touched is unknown: count the planned
            # ones; the new keys of moved customers are unknown too: drop them.
            self.stats.committed(batch.events, self._planned(batch), None)
            self.stats.note(confirmed=1)
            self._forget(batch.slots.get("delete_customer", []) + batch.slots.get("change_key", []))
            return None
        if fate == "aborted":
            self.stats.note(retried=1)
            return batch
        self._lost(batch)
        return None

    def _fate(self, conn: psycopg.Connection[Any], batch: Batch) -> str | None:
        """committed, aborted, or None when it cannot be known.

        pg_xact_status tells what became of the batch's xid, which is not always
        what became of the batch: a crash loses the WAL not yet written, and with
        it the xids of the transactions it caught before their COMMIT was durable;
        the server hands those xids out again. So the batch's xid may be another
        transaction's by now, and "committed" is believed only if the batch's
        writes are there. The other answers need no such check: an xid in the
        future, or another transaction's aborted or running, means the batch's
        own never committed."""
        deadline = time.monotonic() + 5
        while True:
            try:
                fate = _one_row(conn.execute(statements.XACT_STATUS, (batch.xid,)))[0]
            except psycopg.errors.InvalidParameterValue:
                # "in the future": after a crash the server has no record of
                # the transaction, so it never committed (asynchronous commit aside).
                return "aborted"
            if fate == "committed":
                return "committed" if self._written(conn, batch) else "aborted"
            if fate == "aborted":
                return "aborted"
            # "in progress": the old session's backend has not noticed yet that
            # its client left (it then commits if the COMMIT reached it, else
            # aborts), or, after a crash, another transaction has the xid.
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def _written(self, conn: psycopg.Connection[Any], batch: Batch) -> bool:
        """Whether the database holds the writes of the batch, whose xid the server
        reports committed. One event tells (a batch commits whole or not at all): it
        acts on this worker's customers, which nobody else writes, and the worker
        has written nothing since the batch."""
        kind = next(k for k in statements.EVIDENCE if k in batch.arguments)
        arguments = batch.arguments[kind][0]
        if kind == "insert_customer":
            values = dict(zip(statements.NEW_CUSTOMER_COLUMNS, arguments, strict=True))
        else:
            values = {"customer": arguments[0]}
        (row,) = conn.execute(statements.EVIDENCE[kind], {**values, "xid": batch.xid}).fetchall()
        return bool(row[0])

    def _planned(self, batch: Batch) -> Counter[str]:
        return Counter({k: n * KINDS[k].writes for k, n in batch.events.items()})

    def _unresolved(self, batch: Batch) -> None:
        """The run ends before the batch's fate is known."""
        if batch.xid is not None:
            self._lost(batch)

    def _lost(self, batch: Batch) -> None:
        self.stats.note(lost=1, lost_writes=batch.writes)


class LoaderError(Exception):
    pass


def check_role(conn: psycopg.Connection[Any]) -> str:
    """The loader plays the application: refuse a superuser, and a role that cannot write."""
    row: tuple[str, bool, bool] = _one_row(
        conn.execute(
            "SELECT current_user, r.rolsuper,"
            " pg_catalog.has_table_privilege('public.customer', 'INSERT, UPDATE, DELETE')"
            " FROM pg_catalog.pg_roles r WHERE r.rolname = current_user"
        )
    )
    role, is_super, writes = row
    if is_super:
        raise LoaderError(
            f"{role} is a superuser; the loader plays the application and connects as the "
            "application's role (the demo's is app: postgresql://app:…@host/db)"
        )
    if not writes:
        raise LoaderError(
            f"{role} may not insert, update and delete in public.customer; "
            "connect as the application's role (the demo's is app)"
        )
    return role


def run(
    settings: Settings,
    fakes: Fakes,
    stop: threading.Event,
    on_tick: Callable[[Stats], None] = lambda stats: None,
    tick: float = 0.5,
) -> Stats:
    """Run the workers until the duration or count is reached, a worker fails, or
    ``stop`` is set (Ctrl-C sets it: batches in flight finish or roll back)."""
    stats = Stats()
    shares: list[array[int]] = [array("l") for _ in range(settings.connections)]
    try:
        with Connector(settings.url, settings.reconnect_timeout, stop).connect() as conn:
            for (customer,) in conn.execute(statements.CUSTOMERS):
                shares[customer % settings.connections].append(customer)
    except psycopg.Error as exc:
        stats.fatal = f"reading the customers: {type(exc).__name__}: {exc}"
        stats.finished = time.monotonic()
        return stats
    pacer = Pacer(settings.rate, settings.count, settings.duration)
    workers = [Worker(i, settings, pacer, stats, stop, fakes, shares[i]) for i in range(settings.connections)]
    for worker in workers:
        worker.start()
    try:
        while alive := [w for w in workers if w.is_alive()]:
            alive[0].join(tick)
            on_tick(stats)
    except KeyboardInterrupt:
        stop.set()
    for worker in workers:
        worker.join()
    stats.finished = time.monotonic()
    return stats
