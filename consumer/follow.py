"""Follow the sanitized copies through the change log: read by position, re-read by key.

Every streamed statement writes one entry to pgveil's change log in the
writer's transaction: the copy, the operation and the copy keys it wrote or
removed (tokens or NOT MASKED key values, never a raw value). A consumer role
reads the entries after its acknowledged position with ``veil.changes()``,
and acknowledges with ``veil.acknowledge(position)``; the position is kept by
the server, so this process keeps nothing: after a reconnect, a restart or a
crash it goes on from the last acknowledged entry (the entries of a page that
were shown but not yet acknowledged are shown again: at least once).

The log's order is the writers' transaction ids, not their commit order, so
an entry says only "these keys changed". For each entry the follower re-reads
its keys from ``sanitized.<copy>`` now: a key that is there is shown as an
upsert with its current row, a key that is gone as a delete. Applied in order,
what it shows gives the copy's state: an entry is readable only once every
transaction with a lower id has ended, so each key's last change has an entry
read after that change committed. A 'truncate' entry is shown as a truncate,
then the whole copy re-read as upserts.

``veil.follow_changes()`` (LISTEN on channel veil_changes) only wakes the
follower up; without a notification it looks again after ``idle_timeout``
(an older transaction that held the entries back may have ended quietly).

A consumer that fell behind the log's retention is told so (SQLSTATE 55000):
it calls ``veil.resync_consumer()``, which moves its position to now, and
re-reads every copy (a truncate and every row, per copy). So does a consumer
whose position is still where it was registered or resynced ('<xid>:0':
nothing acknowledged since), which also covers a re-read cut short by a crash.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from consumer import boundary

CHANNEL = "veil_changes"
RESYNC_SQLSTATE = "55000"
log = logging.getLogger("consumer")


@dataclass
class Copy:
    name: str
    key: list[str]


@dataclass
class Change:
    """What the follower shows: rows to upsert, keys to delete, or a truncate, of one copy."""

    table: str
    op: str  # upsert, delete or truncate
    rows: list[dict[str, Any]] = field(default_factory=list)  # upserted rows as sanitized.* holds them now
    keys: list[dict[str, Any]] = field(default_factory=list)  # each upserted row's key, or the deleted keys
    count: int = 0  # rows: upserted or deleted here; for a truncate, the rows the statement removed
    catch_up: bool = False  # part of a whole-copy re-read (after a truncate, a resync, a fresh start)
    position: str = ""  # the change-log entry (or, for a resync's re-read, the resync point) it comes from
    fetched_at: float = field(default_factory=time.time)


@dataclass
class Entry:
    position: str
    copy: str
    op: str
    rows: int


class _Stopped(Exception):
    """``stop`` was set in the middle of a page: leave it unacknowledged."""


COPIES = """
SELECT c.relname,
       (SELECT array_agg(a.attname ORDER BY k.ord)
        FROM pg_catalog.pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_catalog.pg_attribute a ON a.attnum = k.attnum
        WHERE i.indrelid = c.oid AND i.indisprimary AND a.attrelid = c.oid) AS key
FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'sanitized'::regnamespace AND c.relkind = 'r'
  AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
ORDER BY 1
"""

# A page of entries, one row per key (one row for an entry without keys), in
# position order. A server-side cursor reads it: an entry of 500,000 keys is
# fetched a slice at a time, never whole.
ENTRIES = """
SELECT e.pos, e.copy, e.op, e.rows, k.key::text
FROM veil.changes(%s) WITH ORDINALITY AS e(pos, copy, op, rows, keys, n)
LEFT JOIN LATERAL pg_catalog.json_array_elements(
    CASE WHEN e.op IN ('upsert', 'delete') THEN e.keys END) WITH ORDINALITY AS k(key, m) ON true
ORDER BY e.n, k.m
"""


def _one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    """The single value of a query that always returns one row."""
    found = conn.execute(query, params).fetchone()
    assert found is not None, query
    return found[0]


def copies(conn: psycopg.Connection[Any]) -> dict[str, Copy]:
    """The sanitized copies this role may read, with their keys."""
    return {name: Copy(name, key) for name, key in conn.execute(COPIES) if key}


def fetch_query(copy: Copy) -> sql.Composed:
    """For each of the given keys (a JSON array of key objects): the key, typed as the
    copy's key columns, then the copy's row with that key, or NULLs if it has none.

    One primary-key lookup per key: LIMIT 1 (keys are unique) keeps the
    planner from turning it into a hash join over the whole copy.
    """
    table = sql.Identifier("sanitized", copy.name)
    return sql.SQL(
        "SELECT {keys}, t.* FROM pg_catalog.json_populate_recordset(NULL::{table}, %s) AS k"
        " LEFT JOIN LATERAL (SELECT * FROM {table} AS c WHERE {match} LIMIT 1) AS t ON true"
    ).format(
        table=table,
        keys=_columns("k", copy.key),
        match=sql.SQL(" AND ").join(sql.SQL("c.{0} = k.{0}").format(sql.Identifier(c)) for c in copy.key),
    )


def skip_to_now(conn: psycopg.Connection[Any], page: int = 1000) -> str:
    """Acknowledge, unshown, every entry this role can read now; its position after.

    For a follower that wants only what happens from now on (a benchmark's lag,
    a running commentary), not the copies' state. A role with nothing to skip
    stays at its resync point, where a Follower re-reads the copies first.
    """
    while True:
        entries = conn.execute("SELECT position FROM veil.changes(%s)", (page,)).fetchall()
        if entries:
            conn.execute("SELECT veil.acknowledge(%s)", (entries[-1][0],))
        if len(entries) < page:
            return str(_one(conn, "SELECT veil.consumer_position()"))


def is_resync_point(position: str | None) -> bool:
    """A position at which nothing has been acknowledged since registration or a resync."""
    return position is not None and position.endswith(":0")


class Follower:
    """Calls ``on_change`` with each change, in order, until ``stop`` is set.

    ``connect`` returns a new autocommit connection as the consumer role.
    Connection failures are retried forever (with backoff); a role that can
    read raw tables raises BoundaryError and ends the run. ``on_change`` must
    have delivered a change (written it out) when it returns: the entries are
    acknowledged after it has been called for all of a page's changes.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        on_change: Callable[[Change], None],
        stop: threading.Event,
        on_boundary: Callable[[boundary.Boundary], None] = lambda b: None,
        page: int = 1000,
        key_page: int = 1000,
        idle_timeout: float = 1.0,
        resync: bool = False,
    ):
        self.connect, self.on_change, self.stop, self.on_boundary = connect, on_change, stop, on_boundary
        self.page = page  # entries per veil.changes() call (and per acknowledgement)
        self.key_page = key_page  # keys (and re-read rows) per query
        self.idle_timeout = idle_timeout
        self.resync_first = resync
        self.known: dict[str, Copy] = {}
        self.reconnects = 0
        self.resyncs = 0  # full re-reads: asked for, after falling behind, or from a resync point
        self.acknowledged: str | None = None  # the last position this process acknowledged
        self.following = threading.Event()  # set once the first session reads the log

    def run(self) -> None:
        delay = 0.2
        first = True
        while not self.stop.is_set():
            try:
                conn = self.connect()
            except psycopg.OperationalError as exc:
                log.warning("cannot connect (%s); retrying in %.1f s", first_line(exc), delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            if not first:
                self.reconnects += 1
                log.warning("reconnected; resuming after the acknowledged position")
            began = time.monotonic()
            try:
                with conn:
                    self._session(conn, resync=first and self.resync_first)
            except psycopg.OperationalError as exc:
                if time.monotonic() - began > 10.0:
                    delay = 0.2  # it had been working: back off from the start again
                log.warning("connection lost (%s); reconnecting in %.1f s", first_line(exc), delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 5.0)
            except _Stopped:
                return
            first = False

    def _session(self, conn: psycopg.Connection[Any], resync: bool) -> None:
        self.on_boundary(boundary.check(conn))
        self.known = copies(conn)
        try:
            # LISTEN, for wake-ups only: the log, not the notifications, says what changed.
            conn.execute("SELECT veil.follow_changes(wait_for => interval '5 seconds')")
        except psycopg.errors.LockNotAvailable as exc:
            log.warning("no wake-ups (%s); looking for changes every %.1f s", first_line(exc), self.idle_timeout)
        if resync:
            self._resync(conn, "asked for with --resync")
        else:
            position = _one(conn, "SELECT veil.consumer_position()")
            if is_resync_point(position):
                # Registered or resynced, nothing acknowledged since: this
                # consumer has not read the copies yet, or was cut short.
                self._reread_all(conn, position, f"starting at {position}, nothing acknowledged since")
        self.following.set()
        while not self.stop.is_set():
            try:
                entries = self._page(conn)
            except psycopg.errors.ObjectNotInPrerequisiteState as exc:
                if "fell behind the change log" not in str(exc):
                    raise
                log.warning("%s: re-reading every copy", first_line(exc))
                self._resync(conn, "fell behind the change log's retention")
                continue
            if entries == 0:
                # Nothing readable yet: wait for a notification, or look again
                # after idle_timeout. Waiting blocks in the socket: no busy loop.
                for _ in conn.notifies(timeout=self.idle_timeout, stop_after=1):
                    pass

    def _page(self, conn: psycopg.Connection[Any]) -> int:
        """Show the next page of entries, then acknowledge it; the number of entries."""
        entries = 0
        entry: Entry | None = None
        keys: list[str] = []
        with conn.transaction():
            with conn.cursor(name="veil_changes_page") as cur:
                cur.itersize = self.key_page
                cur.execute(ENTRIES, (self.page,))
                for position, copy, op, rows, key in cur:
                    if entry is None or position != entry.position:
                        if entry is not None:
                            self._keys(conn, entry, keys)
                            keys = []
                        entry = Entry(position, copy, op, rows)
                        entries += 1
                        self._begin(conn, entry)
                    if key is not None:
                        keys.append(key)
                        if len(keys) >= self.key_page:
                            self._keys(conn, entry, keys)
                            keys = []
                if entry is not None:
                    self._keys(conn, entry, keys)
            if entry is not None:
                # Everything of the page has been shown: acknowledge, in the same commit.
                conn.execute("SELECT veil.acknowledge(%s)", (entry.position,))
        if entry is not None:
            self.acknowledged = entry.position
        return entries

    def _begin(self, conn: psycopg.Connection[Any], entry: Entry) -> None:
        if self.stop.is_set():
            raise _Stopped
        if entry.op == "truncate":
            copy = self._copy(conn, entry.copy)
            if copy is not None:
                self.on_change(Change(copy.name, "truncate", count=entry.rows, position=entry.position))
                self._reread(conn, copy, entry.position)
        elif entry.op == "broken":
            log.warning(
                "sanitized.%s: its stream stopped applying changes (entry %s); the copy stays as it was"
                " until `pgveil refresh` on its source rebuilds it",
                entry.copy,
                entry.position,
            )
        elif entry.op not in ("upsert", "delete"):
            log.warning("skipped entry %s: unknown operation %r", entry.position, entry.op[:32])

    def _keys(self, conn: psycopg.Connection[Any], entry: Entry, keys: list[str]) -> None:
        """Re-read these keys of the entry's copy: present ones are upserts, absent ones deletes."""
        if not keys:
            return
        if self.stop.is_set():
            raise _Stopped
        copy = self._copy(conn, entry.copy)
        if copy is None:
            return
        width = len(copy.key)
        rows: list[dict[str, Any]] = []
        present: list[dict[str, Any]] = []
        gone: list[dict[str, Any]] = []
        with conn.cursor() as cur:
            cur.execute(fetch_query(copy), ("[" + ",".join(keys) + "]",))
            assert cur.description is not None
            names = [d.name for d in cur.description[width:]]
            first_key = width + names.index(copy.key[0])  # never NULL in a row of the copy
            for record in cur:
                key = dict(zip(copy.key, record[:width], strict=True))
                if record[first_key] is None:
                    gone.append(key)
                else:
                    present.append(key)
                    rows.append(dict(zip(names, record[width:], strict=True)))
        if rows:
            self.on_change(Change(copy.name, "upsert", rows, present, len(rows), position=entry.position))
        if gone:
            self.on_change(Change(copy.name, "delete", keys=gone, count=len(gone), position=entry.position))

    def _copy(self, conn: psycopg.Connection[Any], name: str) -> Copy | None:
        if name not in self.known:
            self.known = copies(conn)  # a copy streamed since this session began
        if name not in self.known:
            log.warning("skipped changes of sanitized.%s: this role cannot read it (or it has no key)", name)
            return None
        return self.known[name]

    def _resync(self, conn: psycopg.Connection[Any], why: str) -> None:
        """Move this role's position to now, then re-read every copy (begun after that)."""
        position = _one(conn, "SELECT veil.resync_consumer()")
        self._reread_all(conn, position, why)

    def _reread_all(self, conn: psycopg.Connection[Any], position: str, why: str) -> None:
        self.resyncs += 1
        log.warning("re-reading every copy (%s)", why)
        self.known = copies(conn)
        for copy in self.known.values():
            self.on_change(Change(copy.name, "truncate", position=position, catch_up=True))
            self._reread(conn, copy, position)

    def _reread(self, conn: psycopg.Connection[Any], copy: Copy, position: str) -> None:
        """Every row of the copy, a page at a time (keyset), as upserts."""
        table = sql.Identifier("sanitized", copy.name)
        key = _columns("t", copy.key)
        first = sql.SQL("SELECT t.* FROM {} AS t ORDER BY {} LIMIT %s").format(table, key)
        after = sql.SQL("SELECT t.* FROM {} AS t WHERE ({}) > ({}) ORDER BY {} LIMIT %s").format(
            table, key, sql.SQL(", ").join(sql.Placeholder() * len(copy.key)), key
        )
        query, params = first, ()
        with conn.cursor(row_factory=dict_row) as cur:
            while True:
                if self.stop.is_set():
                    raise _Stopped
                rows = cur.execute(query, (*params, self.key_page)).fetchall()
                if rows:
                    keys = [{c: r[c] for c in copy.key} for r in rows]
                    self.on_change(Change(copy.name, "upsert", rows, keys, len(rows), catch_up=True, position=position))
                if len(rows) < self.key_page:
                    return
                query, params = after, tuple(rows[-1][c] for c in copy.key)


def _columns(alias: str, names: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(n)) for n in names)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
