"""Follow the sanitized copies: follow the change feed, fetch the changed rows by key.

``veil.follow_changes()`` makes the session a follower and LISTENs. While
some session follows, every streamed statement sends one notification on
channel veil_changes with the copy's name, the operation and up to 100 keys
(tokens or NOT MASKED values, never a raw value). The follower fetches upserted rows by those keys
(primary-key lookups), and catches up by the copy's change timestamp when a
notification carries no keys (a statement of more than 100 rows) and after a
reconnect. Notifications are only delivered while listening, so after a
reconnect the follower re-reads every copy from a little before the newest
change timestamp it has seen: rows written while it was away arrive then,
some perhaps twice.

What a timestamp cannot show is a row deleted while the follower was away:
such deletions are not reported (the rows are gone from sanitized.*, as
erasure demands; a consumer that mirrors the copies must re-read them).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from consumer import boundary

CHANNEL = "veil_changes"
OPERATIONS = ("upsert", "delete", "truncate")
log = logging.getLogger("consumer")


@dataclass
class Copy:
    name: str
    key: list[str]
    watermark: str | None  # the change timestamp catch-up reads by; None: whole-table keyset pass


@dataclass
class Change:
    table: str
    op: str  # upsert, delete or truncate
    rows: list[dict[str, Any]] = field(default_factory=list)  # upserted rows as sanitized.* holds them now
    keys: list[dict[str, Any]] | None = None  # deleted keys (None: more than a notification carries)
    count: int = 0  # rows the statement changed
    catch_up: bool = False  # read by catch-up rather than announced by a notification
    fetched_at: float = field(default_factory=time.time)


class MalformedNotification(ValueError):
    pass


COPIES = """
SELECT c.relname,
       (SELECT array_agg(a.attname ORDER BY k.ord)
        FROM pg_catalog.pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_catalog.pg_attribute a ON a.attnum = k.attnum
        WHERE i.indrelid = c.oid AND i.indisprimary AND a.attrelid = c.oid) AS key,
       (SELECT a.attname FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          AND a.atttypid = 'timestamptz'::regtype
        ORDER BY a.attname <> 'last_update', a.attnum LIMIT 1) AS watermark
FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'sanitized'::regnamespace AND c.relkind = 'r'
  AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
ORDER BY 1
"""


def _one(conn: psycopg.Connection[Any], query: str) -> Any:
    """The single value of a query that always returns one row."""
    found = conn.execute(query).fetchone()
    assert found is not None, query
    return found[0]


def copies(conn: psycopg.Connection[Any]) -> dict[str, Copy]:
    """The sanitized copies this role may read, with their keys and change timestamps."""
    return {name: Copy(name, key, watermark) for name, key, watermark in conn.execute(COPIES) if key}


def parse(payload: str, known: dict[str, Copy]) -> tuple[Copy, str, int, list[dict[str, Any]] | None]:
    """A notification's (copy, operation, rows, keys); MalformedNotification if it is not one of ours."""
    try:
        message = json.loads(payload)
        table, op, rows, keys = message["table"], message["op"], message["rows"], message.get("keys")
    except (ValueError, TypeError, KeyError) as exc:
        raise MalformedNotification(f"not a change notification ({type(exc).__name__})") from None
    if table not in known:
        raise MalformedNotification(f"unknown table {str(table)[:64]!r}")
    if op not in OPERATIONS:
        raise MalformedNotification(f"unknown operation {str(op)[:32]!r}")
    if type(rows) is not int or rows < 0:
        raise MalformedNotification("rows is not a count")
    key_columns = set(known[table].key)
    if keys is not None and not (
        isinstance(keys, list) and all(isinstance(k, dict) and set(k) == key_columns for k in keys)
    ):
        raise MalformedNotification(f"keys are not {sorted(key_columns)} objects")
    return known[table], op, rows, keys


class Follower:
    """Calls ``on_change`` with each change, until ``stop`` is set.

    ``connect`` returns a new autocommit connection as the consumer role.
    Connection failures are retried forever (with backoff); a role that can
    read raw tables raises BoundaryError and ends the run.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        on_change: Callable[[Change], None],
        stop: threading.Event,
        on_boundary: Callable[[boundary.Boundary], None] = lambda b: None,
        margin: float = 5.0,
        page: int = 500,
        idle_timeout: float = 1.0,
    ):
        self.connect, self.on_change, self.stop, self.on_boundary = connect, on_change, stop, on_boundary
        self.margin = timedelta(seconds=margin)
        self.page = page
        self.idle_timeout = idle_timeout
        self.watermarks: dict[str, datetime] = {}
        self.reconnects = 0
        self.skipped = 0  # malformed notifications
        self.following = threading.Event()  # set once the first session follows the feed

    def run(self) -> None:
        delay = 0.2
        first = True
        while not self.stop.is_set():
            try:
                conn = self.connect()
            except psycopg.OperationalError as exc:
                log.warning("cannot connect (%s); retrying in %.1f s", _first_line(exc), delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            if not first:
                self.reconnects += 1
                log.warning("reconnected; catching up")
            try:
                with conn:
                    self._session(conn, catch_up=not first)
            except psycopg.OperationalError as exc:
                log.warning("connection lost (%s)", _first_line(exc))
            first = False

    def _session(self, conn: psycopg.Connection[Any], catch_up: bool) -> None:
        self.on_boundary(boundary.check(conn))
        known = copies(conn)
        # Its own transaction (autocommit): it returns once the writes that
        # may not have been announced have ended, with LISTEN in effect. If it
        # gives up (lock_not_available, an OperationalError), run() retries.
        conn.execute("SELECT veil.follow_changes()")
        self.following.set()
        # Following first, then reading where to start: nothing falls between.
        now = _one(conn, "SELECT pg_catalog.now()")
        for copy in known.values():
            self.watermarks.setdefault(copy.name, now)
            if catch_up:
                self._catch_up(conn, copy)
        while not self.stop.is_set():
            # notifies() holds the connection while it runs: take what has
            # arrived, then query. Waiting blocks in the socket, no busy loop.
            for notice in list(conn.notifies(timeout=self.idle_timeout, stop_after=1)):
                self._handle(conn, known, notice.payload)

    def _handle(self, conn: psycopg.Connection[Any], known: dict[str, Copy], payload: str) -> None:
        try:
            copy, op, rows, keys = parse(payload, known)
        except MalformedNotification as exc:
            self.skipped += 1
            log.warning("skipped a notification on %s: %s", CHANNEL, exc)
            return
        if op == "upsert":
            if keys is None:
                self._catch_up(conn, copy)
            else:
                self._emit(copy, Change(copy.name, op, self._fetch(conn, copy, keys), count=rows))
        else:
            self.on_change(Change(copy.name, op, keys=keys, count=rows))

    def _fetch(self, conn: psycopg.Connection[Any], copy: Copy, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(fetch_query(copy), (json.dumps(keys),)).fetchall()

    def _catch_up(self, conn: psycopg.Connection[Any], copy: Copy) -> None:
        """Re-read the copy from a little before its watermark, a page at a time (keyset)."""
        order = ([copy.watermark] if copy.watermark else []) + copy.key
        table = sql.Identifier("sanitized", copy.name)
        if copy.watermark:
            first = sql.SQL("SELECT t.* FROM {} AS t WHERE t.{} >= %s ORDER BY {} LIMIT %s").format(
                table, sql.Identifier(copy.watermark), _columns("t", order)
            )
            params: tuple[Any, ...] = (self.watermarks[copy.name] - self.margin,)
        else:
            first = sql.SQL("SELECT t.* FROM {} AS t ORDER BY {} LIMIT %s").format(table, _columns("t", order))
            params = ()
        after = sql.SQL("SELECT t.* FROM {} AS t WHERE ({}) > ({}) ORDER BY {} LIMIT %s").format(
            table, _columns("t", order), sql.SQL(", ").join(sql.Placeholder() * len(order)), _columns("t", order)
        )
        query = first
        with conn.cursor(row_factory=dict_row) as cur:
            while not self.stop.is_set():
                rows = cur.execute(query, (*params, self.page)).fetchall()
                if rows:
                    self._emit(copy, Change(copy.name, "upsert", rows, count=len(rows), catch_up=True))
                if len(rows) < self.page:
                    return
                query, params = after, tuple(rows[-1][c] for c in order)

    def _emit(self, copy: Copy, change: Change) -> None:
        if copy.watermark and change.rows:
            stamps = [r[copy.watermark] for r in change.rows if r[copy.watermark] is not None]
            self.watermarks[copy.name] = max([self.watermarks[copy.name], *stamps])
        if change.rows:
            self.on_change(change)


def fetch_query(copy: Copy) -> sql.Composed:
    """The copy's rows with the given keys (a JSON array of key objects).

    One primary-key lookup per key: LIMIT 1 (keys are unique) keeps the
    planner from turning it into a hash join over the whole copy.
    """
    return sql.SQL(
        "SELECT t.* FROM json_populate_recordset(NULL::{table}, %s) AS k,"
        " LATERAL (SELECT * FROM {table} AS c WHERE {match} LIMIT 1) AS t"
    ).format(
        table=sql.Identifier("sanitized", copy.name),
        match=sql.SQL(" AND ").join(sql.SQL("c.{0} = k.{0}").format(sql.Identifier(c)) for c in copy.key),
    )


def _columns(alias: str, names: list[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(n)) for n in names)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
