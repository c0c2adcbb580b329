"""Benchmark: the live sanitized copy against its baselines, in one run.

In a database of its own (bench/harness.py), on a server with PostgreSQL's
durable defaults (fsync, synchronous_commit and full_page_writes on; the
settings in force are printed), it builds its tables and measures:

1. bulk: INSERT ... SELECT of 500,000 rows into a table streamed with three
   tokens (best of 3 rounds, each into emptied tables after a checkpoint):
   - against its floor, measured in the same round: the same insert into an
     unstreamed table plus one INSERT ... SELECT of the stream's compiled
     token expressions from it into a table like the copy (its key
     included), no trigger. Target: streamed (change log on, the default)
     <= 1.15x the floor;
   - against the same stream under a policy with the change log off
     (policy 'nolog'). Target: <= 1.1x;
   - for information, each measured, where the time over the floor goes: a
     minimal statement trigger (the transition table and the floor's
     INSERT ... SELECT from it, nothing else), and the floor writing the
     change-log entry a streamed insert writes (all its keys, as the copy's
     insert returns them); the common row-level pattern (AFTER INSERT FOR
     EACH ROW, HMAC with the key from a setting, INSERT ... ON CONFLICT DO
     UPDATE); streamed / unstreamed;
2. OLTP: single-row inserts over 2 connections with pgbench, 20 s each in
   alternating slices: unstreamed, streamed with the change log (target >=
   0.80x unstreamed tps), streamed without it, and streamed with it while a
   consumer follows the change feed (writers then notify, which serializes
   their commits); and the floor of a streamed insert with the change log:
   the same three writes (source row, copy row by the stream's compiled
   expressions, the entry with its key) in one statement, no trigger;
3. backfill of 1,000,000 rows (its batches write the change log) against one
   INSERT ... SELECT computing the same tokens (target <= 1.3x);
4. trim: 10,000,000 single-key entries as a single-row insert writes them,
   written straight into the change log (transactions of 100,000; then
   VACUUM ANALYZE, as autovacuum would have long before), no consumer
   registered (so all may go); CALL veil.trim_change_log(10000) while 2
   sessions insert single rows into a streamed table: its duration and
   entries/s, the writers' per-statement latency (p99, max) against the same
   writers for as long without a trim, and pg_locks and the writers' wait
   events sampled every 10 ms. Target: the trim never blocks a writer for
   more than one short lock: the longest lock wait seen <= 10 ms (the
   writers' latency beside it, for information: the trim's deletes write
   WAL, whose flushes the writers' commits then share). Also
   the log's size filled, trimmed, vacuumed, and after a tenth as many
   entries again (a trim frees no space; VACUUM makes it reusable).

Every size can be made small for a quick check:

    uv run python bench/streaming.py [--bulk-rows N] [--bulk-rounds N] [--oltp-seconds S]
                                     [--backfill-rows N] [--trim-entries N]
    uv run python bench/streaming.py --bulk-rows 20000 --backfill-rows 20000 --oltp-seconds 4 --trim-entries 200000
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from harness import bench_database, report
from psycopg.abc import Params

from pgveil import sandbox

TABLE = "(id bigint PRIMARY KEY, email text, name text, phone text, amount numeric)"
ROWS = (
    "SELECT g, 'user' || g || '@example.com', 'name ' || g, '+1 555 ' || g, g %% 1000"
    " FROM generate_series(%s::int, %s::int) g"
)
RULES = {
    "id": "MASKED WITH FUNCTION veil.token(id::text, 'id')",
    "email": "MASKED WITH FUNCTION veil.token(email, 'email')",
    "name": "MASKED WITH FUNCTION veil.token(name, 'name')",
    "amount": "NOT MASKED",
}
# Streams and their policies: 'sanitized' writes the change log (the
# default), 'nolog' is the same delivery with the change log off.
STREAMS = {
    "streamed": "sanitized",
    "streamed_nolog": "nolog",
    "backfilled": "sanitized",
    "oltp_streamed": "sanitized",
    "oltp_nolog": "nolog",
}
ROW_LEVEL_TRIGGER = """
CREATE FUNCTION bench.row_level_copy() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    k bytea := decode(current_setting('bench.key'), 'hex');
BEGIN
    INSERT INTO bench.row_level_copy (id, email, name, amount)
    VALUES (encode(veil_ext.hmac(NEW.id::text, k::text, 'sha256'), 'hex'),
            encode(veil_ext.hmac(NEW.email, k::text, 'sha256'), 'hex'),
            encode(veil_ext.hmac(NEW.name, k::text, 'sha256'), 'hex'), NEW.amount)
    ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name, amount = EXCLUDED.amount;
    RETURN NULL;
END $$;
CREATE TRIGGER row_level_copy AFTER INSERT OR UPDATE ON bench.row_level
    FOR EACH ROW EXECUTE FUNCTION bench.row_level_copy();
"""
# What any trigger-fed copy pays at least: the statement's transition table
# and the floor's INSERT ... SELECT from it, nothing else (no log, no feed).
MINIMAL_TRIGGER = """
CREATE FUNCTION bench.minimal_copy() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    INSERT INTO bench.minimal_copy SELECT {exprs} FROM new_rows AS src, {key_join};
    RETURN NULL;
END $body$;
CREATE TRIGGER minimal_copy AFTER INSERT ON bench.minimal
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bench.minimal_copy();
"""
PGBENCH_SCRIPT = """\\set n random(1, 2000000000)
INSERT INTO bench.{table} (id, email, name, phone, amount)
VALUES (:n, 'u' || :n || '@example.com', 'name ' || :n, '+1 555 ' || :n, :n % 1000)
ON CONFLICT DO NOTHING;
"""
# The OLTP floor: the same work as a streamed single-row insert with the change
# log, done by the statement itself (no trigger, no transition table, no
# change-feed check): the source row, its copy row computed with the stream's
# own compiled expressions, and the entry with its key, in one statement.
OLTP_FLOOR_SCRIPT = """\\set n random(1, 2000000000)
WITH src AS (SELECT :n::bigint AS id, 'u' || :n || '@example.com' AS email, 'name ' || :n AS name,
                    '+1 555 ' || :n AS phone, (:n % 1000)::numeric AS amount),
s AS (INSERT INTO bench.oltp_floor SELECT * FROM src ON CONFLICT DO NOTHING RETURNING *),
w AS (INSERT INTO bench.oltp_floor_copy AS t SELECT {exprs} FROM s AS src, {key_join} RETURNING t.id)
INSERT INTO bench.oltp_floor_log (copy, op, rows, keys) SELECT 'oltp', 'upsert', count(*), json_agg(w) FROM w
HAVING count(*) > 0;
"""
WRITE = (
    "INSERT INTO bench.oltp_streamed (id, email, name, phone, amount)"
    " VALUES (%(n)s, 'u' || %(n)s || '@example.com', 'name ' || %(n)s, '+1 555 ' || %(n)s, %(n)s %% 1000)"
    " ON CONFLICT DO NOTHING"
)
# Change-log entries as a single-row insert into oltp_streamed writes them:
# one key, a token of the same length ('v1:' and 43 base64 characters).
FILL_LOG = """
INSERT INTO veil_private.change_log (copy, op, rows, keys)
SELECT 'bench__oltp_streamed', 'upsert', 1,
       ('[{"id":"v1:' || substr(md5(g::text) || md5((-g)::text), 1, 43) || '"}]')::json
FROM generate_series(%s::bigint, %s::bigint) g
"""
# The floor's copy insert writing the entry a streamed insert writes (the keys
# its insert returns, in one JSON array): what the entry itself costs.
FLOOR_LOGGED = """
WITH w AS (INSERT INTO bench.floor_copy SELECT {exprs} FROM bench.plain AS src, {key_join} RETURNING id)
INSERT INTO veil_private.change_log (copy, op, rows, keys) SELECT 'floor_copy', 'upsert', count(*), json_agg(w) FROM w
"""
FILL_BATCH = 100_000
WRITER = "pgveil_bench_writer"
# Waits for heavyweight locks, and what the writers' sessions wait for (CPU: running).
SAMPLE = """
SELECT (SELECT extract(epoch FROM max(clock_timestamp() - waitstart))::float8 FROM pg_locks WHERE NOT granted),
       (SELECT count(*) FROM pg_locks WHERE NOT granted),
       (SELECT coalesce(json_agg(coalesce(wait_event_type || ':' || wait_event, 'CPU')), '[]')
        FROM pg_stat_activity WHERE application_name = %s AND state = 'active')
"""
AUTOVACUUM_COUNT = "SELECT autovacuum_count FROM pg_stat_all_tables WHERE relid = 'veil_private.change_log'::regclass"
TRIM_BATCH = 10_000


def one(conn: psycopg.Connection, query: str, params: Params | None = None) -> tuple[Any, ...]:
    """The single row a query returns."""
    found = conn.execute(query, params).fetchone()
    assert found is not None
    return found


def timed(conn: psycopg.Connection, query: str, params: Params | None = None) -> float:
    started = time.perf_counter()
    conn.execute(query, params)
    return time.perf_counter() - started


def token_expressions(conn: psycopg.Connection, source: str) -> str:
    """The stream's compiled rules for `source` (rows aliased src), as a select list."""
    exprs: str = one(
        conn,
        "SELECT string_agg(expression, ', ' ORDER BY attnum) FROM veil_private.copy_columns(%s::regclass, 'sanitized')",
        (source,),
    )[0]
    return exprs


def setup(conn: psycopg.Connection) -> None:
    conn.execute("DROP SCHEMA IF EXISTS bench CASCADE")
    conn.execute("CREATE SCHEMA bench")
    for name in ("plain", "row_level", "minimal", "oltp_plain", "oltp_floor", *STREAMS):
        conn.execute(f"CREATE TABLE bench.{name} {TABLE}")
    conn.execute("CREATE TABLE bench.row_level_copy (id text PRIMARY KEY, email text, name text, amount numeric)")
    conn.execute("SELECT veil.create_policy('nolog', 'copy')")
    conn.execute("SELECT veil.alter_policy('nolog', change_log => false)")
    for table, policy in STREAMS.items():
        for column, label in RULES.items():
            conn.execute("SELECT veil.security_label(%s, 'COLUMN', %s, %s)", (policy, f"bench.{table}.{column}", label))
        conn.execute("SELECT veil.stream(%s, %s)", (f"bench.{table}", policy))
    # The floor's, the minimal trigger's and the backfill's baselines write
    # into tables like the copy (columns, collations, key).
    for table, like in (
        ("floor_copy", "streamed"),
        ("minimal_copy", "streamed"),
        ("tokens_once", "backfilled"),
        ("oltp_floor_copy", "oltp_streamed"),
    ):
        conn.execute(f"CREATE TABLE bench.{table} (LIKE sanitized.bench__{like} INCLUDING ALL)")
    conn.execute("CREATE TABLE bench.oltp_floor_log (LIKE veil_private.change_log INCLUDING ALL)")
    key_join = one(conn, "SELECT veil_private.key_join()")[0]
    conn.execute(MINIMAL_TRIGGER.format(exprs=token_expressions(conn, "bench.streamed"), key_join=key_join))
    conn.execute(ROW_LEVEL_TRIGGER)


def bulk(conn: psycopg.Connection, rows: int, rounds: int) -> list[bool]:
    """Best of `rounds` per measure, each insert into emptied tables after a checkpoint.
    The floor is the unstreamed insert plus the copy's INSERT ... SELECT from it,
    after one checkpoint, as a streamed insert does both after one."""
    conn.execute("SELECT set_config('bench.key', encode(veil_ext.gen_random_bytes(32), 'hex'), false)")
    exprs = token_expressions(conn, "bench.streamed")
    key_join = one(conn, "SELECT veil_private.key_join()")[0]
    best: dict[str, float] = {}

    def keep(name: str, elapsed: float) -> float:
        best[name] = min(best.get(name, elapsed), elapsed)
        return elapsed

    def fresh(*tables: str) -> None:
        conn.execute("TRUNCATE " + ", ".join(f"bench.{table}" for table in tables))
        conn.execute("CHECKPOINT")

    for _ in range(rounds):
        fresh("plain", "floor_copy")
        source = keep("plain", timed(conn, "INSERT INTO bench.plain " + ROWS, (1, rows)))
        copy = timed(conn, f"INSERT INTO bench.floor_copy SELECT {exprs} FROM bench.plain AS src, {key_join}")
        keep("floor", source + copy)
        # The same, writing the change-log entry a streamed insert writes (its keys, as
        # returned by the copy's insert): what the log costs in itself.
        fresh("plain", "floor_copy")
        source = timed(conn, "INSERT INTO bench.plain " + ROWS, (1, rows))
        copy = timed(conn, FLOOR_LOGGED.format(exprs=exprs, key_join=key_join))
        keep("floor_logged", source + copy)
        for table, copy_table in (
            ("streamed", None),
            ("streamed_nolog", None),
            ("minimal", "minimal_copy"),
            ("row_level", "row_level_copy"),
        ):
            fresh(table, *([copy_table] if copy_table else []))
            keep(table, timed(conn, f"INSERT INTO bench.{table} " + ROWS, (1, rows)))
    for copy_table in ("sanitized.bench__streamed", "sanitized.bench__streamed_nolog", "bench.minimal_copy"):
        assert one(conn, f"SELECT count(*) FROM {copy_table}")[0] == rows
    logged: dict[str, int] = dict(conn.execute("SELECT copy, count(*) FROM veil_private.change_log GROUP BY copy"))
    assert logged.get("bench__streamed") and not logged.get("bench__streamed_nolog"), logged
    plain, floor, floor_logged = best["plain"], best["floor"], best["floor_logged"]
    streamed, nolog, minimal, row_level = best["streamed"], best["streamed_nolog"], best["minimal"], best["row_level"]
    print(
        f"bulk INSERT ... SELECT of {rows:,} rows (best of {rounds}): unstreamed {plain:.2f} s,"
        f" floor (unstreamed + the copy's INSERT ... SELECT) {floor:.2f} s, the floor writing the change-log"
        f" entry too {floor_logged:.2f} s, minimal statement trigger {minimal:.2f} s,"
        f" streamed with the change log {streamed:.2f} s, without it {nolog:.2f} s, row-level trigger {row_level:.2f} s"
    )
    # Where the time over the floor goes, each measured: the trigger's transition
    # table (minimal trigger), the log entry's own writing (floor with the entry).
    report("  minimal statement trigger / floor", minimal / floor, "x", "(info)", True)
    report("  floor writing the change-log entry / floor", floor_logged / floor, "x", "(info)", True)
    report("  streamed without the change log / floor", nolog / floor, "x", "(info)", True)
    report("  streamed with the change log / its floor with the entry", streamed / floor_logged, "x", "(info)", True)
    report("  streamed (3 tokens) / unstreamed", streamed / plain, "x", "(info)", True)
    report("  row-level trigger baseline / unstreamed", row_level / plain, "x", "(~7.5x)", True)
    report("  streamed / row-level trigger baseline", streamed / row_level, "x", "(info)", True)
    return [
        report("  streamed with the change log / floor", streamed / floor, "x", "<= 1.15x", streamed / floor <= 1.15),
        report("  streamed, change log on / off", streamed / nolog, "x", "<= 1.1x", streamed / nolog <= 1.1),
    ]


def pgbench_tps(url: str, bindir: Path, table: str, seconds: int, workdir: Path, text: str | None = None) -> float:
    """tps of single-row inserts into bench.<table> (or of the script ``text``)."""
    script = workdir / f"{table}.sql"
    script.write_text(text if text is not None else PGBENCH_SCRIPT.format(table=table))
    done = subprocess.run(
        [
            str(bindir / "pgbench"),
            "-n",
            "-M",
            "prepared",
            "-c",
            "2",
            "-j",
            "2",
            "-T",
            str(seconds),
            "-f",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    tps = re.search(r"tps = ([\d.]+)", done.stdout)
    assert tps is not None, done.stdout
    return float(tps.group(1))


def durability(conn: psycopg.Connection) -> str:
    return ", ".join(
        f"{name}={one(conn, f'SHOW {name}')[0]}"
        for name in ("fsync", "synchronous_commit", "full_page_writes", "max_wal_size", "autovacuum")
    )


@contextmanager
def follower(url: str) -> Iterator[None]:
    """A session following the change feed, reading its notifications, for the duration."""
    stop = threading.Event()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT veil.follow_changes()")

        def drain() -> None:
            while not stop.is_set():
                for _ in conn.notifies(timeout=0.5):
                    pass

        thread = threading.Thread(target=drain)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def oltp(url: str, seconds: int, slices: int = 4) -> list[bool]:
    """Each side runs `seconds` in all, in alternating slices, so that drift in
    the disk's flush latency falls on all sides alike. Streamed inserts notify
    only while a session follows the change feed: measured without and with one."""
    tps = {"plain": 0.0, "floor": 0.0, "logged": 0.0, "nolog": 0.0, "followed": 0.0}
    with psycopg.connect(url) as conn:
        floor_script = OLTP_FLOOR_SCRIPT.format(
            exprs=token_expressions(conn, "bench.oltp_streamed"),
            key_join=one(conn, "SELECT veil_private.key_join()")[0],
        )
    with tempfile.TemporaryDirectory() as workdir:
        bindir = sandbox.find_bindir()
        slice_seconds = max(1, seconds // slices)
        for _ in range(slices):
            tps["plain"] += pgbench_tps(url, bindir, "oltp_plain", slice_seconds, Path(workdir)) / slices
            tps["floor"] += pgbench_tps(url, bindir, "oltp_floor", slice_seconds, Path(workdir), floor_script) / slices
            tps["logged"] += pgbench_tps(url, bindir, "oltp_streamed", slice_seconds, Path(workdir)) / slices
            tps["nolog"] += pgbench_tps(url, bindir, "oltp_nolog", slice_seconds, Path(workdir)) / slices
            with follower(url):
                tps["followed"] += pgbench_tps(url, bindir, "oltp_streamed", slice_seconds, Path(workdir)) / slices
    plain, floor, logged, nolog, followed = tps["plain"], tps["floor"], tps["logged"], tps["nolog"], tps["followed"]
    print(
        f"OLTP single-row inserts, 2 connections, {slice_seconds * slices} s each in {slices} alternating slices:"
        f" unstreamed {plain:.0f} tps, floor (the same three writes in one statement, no trigger) {floor:.0f} tps,"
        f" streamed with the change log {logged:.0f} tps, without it {nolog:.0f} tps,"
        f" with it while a consumer follows the change feed {followed:.0f} tps"
    )
    report("  floor / unstreamed tps", floor / plain, "x", "(info)", True)
    report("  streamed with the change log / floor tps", logged / floor, "x", "(info)", True)
    report("  streamed without the change log / unstreamed tps", nolog / plain, "x", "(info)", True)
    report("  streamed, change log on / off tps", logged / nolog, "x", "(info)", True)
    report("  streamed, feed followed / unstreamed tps", followed / plain, "x", "(info)", True)
    return [
        report(
            "  streamed with the change log / unstreamed tps", logged / plain, "x", ">= 0.80x", logged / plain >= 0.80
        )
    ]


@contextmanager
def writers(url: str, count: int = 2) -> Iterator[list[float]]:
    """`count` sessions inserting single rows into a streamed table (change log on)
    as fast as they can, for the duration; yields their per-statement latencies (s)."""
    stop = threading.Event()
    latencies: list[float] = []
    conns = [psycopg.connect(url, autocommit=True, application_name=WRITER) for _ in range(count)]

    def write(conn: psycopg.Connection, seed: int) -> None:
        ids = random.Random(seed)
        while not stop.is_set():
            started = time.perf_counter()
            conn.execute(WRITE, {"n": ids.randint(1, 2_000_000_000)}, prepare=True)
            latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=write, args=(conn, seed)) for seed, conn in enumerate(conns)]
    try:
        for thread in threads:
            thread.start()
        yield latencies
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for conn in conns:
            conn.close()


class Waits:
    """What a sampler saw: the longest heavyweight-lock wait (s), how many
    samples saw one, and what the writers were doing (wait events)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.samples = 0
        self.waiting = 0
        self.writers: Counter[str] = Counter()

    def summary(self) -> str:
        seen = sum(self.writers.values()) or 1
        top = ", ".join(f"{event} {count / seen:.0%}" for event, count in self.writers.most_common(4))
        return f"lock waits in {self.waiting} of {self.samples} samples; writers' wait events: {top}"


@contextmanager
def sampled(url: str, interval: float = 0.01) -> Iterator[Waits]:
    """Samples pg_locks and the writers' wait events every `interval` s for the duration."""
    stop = threading.Event()
    seen = Waits()
    with psycopg.connect(url, autocommit=True) as conn:

        def sample() -> None:
            while not stop.is_set():
                longest, waiting, events = one(conn, SAMPLE, (WRITER,))
                seen.samples += 1
                if waiting:
                    seen.waiting += 1
                    seen.longest = max(seen.longest, longest or 0.0)
                seen.writers.update(events)
                stop.wait(interval)

        thread = threading.Thread(target=sample)
        thread.start()
        try:
            yield seen
        finally:
            stop.set()
            thread.join()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latency(values: list[float]) -> str:
    return f"{len(values):,} inserts, p99 {percentile(values, 0.99) * 1e3:.1f} ms, max {max(values) * 1e3:.1f} ms"


def log_size(conn: psycopg.Connection) -> tuple[int, int]:
    """The change log's table (with its TOAST) and index sizes, in bytes."""
    heap, index = one(
        conn, "SELECT pg_table_size('veil_private.change_log'), pg_indexes_size('veil_private.change_log')"
    )
    return heap, index


def megabytes(size: tuple[int, int]) -> str:
    return f"{size[0] / 2**20:,.0f} MB + index {size[1] / 2**20:,.0f} MB"


def fill_log(conn: psycopg.Connection, entries: int) -> float:
    """Write `entries` entries in transactions of FILL_BATCH; returns the seconds taken."""
    started = time.perf_counter()
    for first in range(1, entries + 1, FILL_BATCH):
        conn.execute(FILL_LOG, (first, min(first + FILL_BATCH - 1, entries)))
    return time.perf_counter() - started


def trim(url: str, conn: psycopg.Connection, entries: int) -> list[bool]:
    # No consumer holds anything back: every entry below the horizon may go.
    for (role,) in conn.execute("SELECT r.rolname FROM veil_private.consumers c JOIN pg_roles r ON r.oid = c.roleid"):
        conn.execute("SELECT veil.revoke_consumer(%s)", (role,))
    assert one(conn, "SELECT max_age FROM veil.change_log_status()")[0] is None
    conn.execute("TRUNCATE veil_private.change_log")
    filled = fill_log(conn, entries)
    conn.execute("VACUUM ANALYZE veil_private.change_log")  # as autovacuum would have, long before a trim
    size_filled = log_size(conn)
    conn.execute("CHECKPOINT")

    with writers(url) as during, sampled(url) as waits:
        time.sleep(0.5)  # the writers at their pace before the trim starts
        writes_before = len(during)
        started = time.perf_counter()
        trimmed = one(conn, f"CALL veil.trim_change_log({TRIM_BATCH})")[0]
        seconds = time.perf_counter() - started
        trim_latencies = during[writes_before:]
    assert trimmed >= entries, (trimmed, entries)
    autovacuumed = one(conn, AUTOVACUUM_COUNT)[0]
    size_trimmed = log_size(conn)

    # The same writers for as long, without a trim (the log trimmed, not vacuumed yet).
    conn.execute("CHECKPOINT")
    with writers(url) as without, sampled(url) as base_waits:
        time.sleep(max(seconds, 2.0))
        base_latencies = list(without)

    # Whether VACUUM matters: a trim frees no space; VACUUM makes it reusable.
    autovacuumed_later = one(conn, AUTOVACUUM_COUNT)[0]
    vacuum = timed(conn, "VACUUM veil_private.change_log")
    size_vacuumed = log_size(conn)
    refill = max(1, entries // 10)
    fill_log(conn, refill)
    size_refilled = log_size(conn)

    print(
        f"trim of {entries:,} change-log entries (written in {filled:.1f} s, {-(-entries // FILL_BATCH)}"
        f" transactions, no consumer), CALL veil.trim_change_log({TRIM_BATCH}) beside 2 single-row writers:"
        f" {trimmed:,} entries in {seconds:.2f} s ({trimmed / seconds:,.0f} entries/s)"
    )
    print(f"  writers during the trim: {latency(trim_latencies)}; {waits.summary()}")
    print(f"  writers without a trim ({max(seconds, 2.0):.1f} s): {latency(base_latencies)}; {base_waits.summary()}")
    print(
        f"  change log: filled {megabytes(size_filled)} ({sum(size_filled) / entries:.0f} bytes an entry),"
        f" trimmed {megabytes(size_trimmed)}, VACUUM {vacuum:.2f} s -> {megabytes(size_vacuumed)},"
        f" then {refill:,} entries more -> {megabytes(size_refilled)};"
        f" autovacuum runs on the log: {autovacuumed} by the trim's end, {autovacuumed_later} by the VACUUM"
    )
    report(
        "  writers' p99 latency during the trim / without",
        percentile(trim_latencies, 0.99) / percentile(base_latencies, 0.99),
        "x",
        "(info)",
        True,
    )
    # Not a lock: the trim's deletes write WAL, which the writers' commits then
    # wait to flush (the wait events above say so).
    max_over = (max(trim_latencies) - max(base_latencies)) * 1e3
    report("  writers' max latency during the trim - without", max_over, "ms", "(info)", True)
    return [
        report("  longest lock wait seen during the trim", waits.longest * 1e3, "ms", "<= 10 ms", waits.longest <= 0.01)
    ]


def backfill(conn: psycopg.Connection, rows: int) -> list[bool]:
    conn.execute("ALTER TABLE bench.backfilled DISABLE TRIGGER USER")
    conn.execute("INSERT INTO bench.backfilled " + ROWS, (1, rows))
    conn.execute("ALTER TABLE bench.backfilled ENABLE TRIGGER USER")
    conn.execute("VACUUM ANALYZE bench.backfilled")
    # The same tokens computed the same way (the stream's compiled rules), in one statement.
    exprs = token_expressions(conn, "bench.backfilled")
    key_join = one(conn, "SELECT veil_private.key_join()")[0]
    once = timed(conn, f"INSERT INTO bench.tokens_once SELECT {exprs} FROM bench.backfilled AS src, {key_join}")
    batched = timed(conn, "CALL veil.backfill('bench.backfilled', 10000)")
    assert one(conn, "SELECT count(*) FROM sanitized.bench__backfilled")[0] == rows
    logged = one(
        conn, "SELECT count(*), coalesce(sum(rows), 0) FROM veil_private.change_log WHERE copy = 'bench__backfilled'"
    )
    assert logged[1] == rows, logged
    print(
        f"backfill of {rows:,} rows: one INSERT ... SELECT {once:.2f} s, CALL veil.backfill {batched:.2f} s"
        f" ({logged[0]} change-log entries)"
    )
    return [report("  backfill / single INSERT ... SELECT", batched / once, "x", "<= 1.3x", batched / once <= 1.3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bulk-rows", type=int, default=500_000)
    parser.add_argument("--bulk-rounds", type=int, default=3)
    parser.add_argument("--backfill-rows", type=int, default=1_000_000)
    parser.add_argument("--oltp-seconds", type=int, default=20)
    parser.add_argument("--trim-entries", type=int, default=10_000_000)
    args = parser.parse_args()

    with bench_database("pgveil_bench_streaming", durable=True) as url, psycopg.connect(url, autocommit=True) as conn:
        print(f"server: {durability(conn)}")
        setup(conn)
        results = [
            *bulk(conn, args.bulk_rows, args.bulk_rounds),
            *oltp(url, args.oltp_seconds),
            *backfill(conn, args.backfill_rows),
            *trim(url, conn, args.trim_entries),
        ]
        print(f"{sum(results)} of {len(results)} within target")


if __name__ == "__main__":
    main()
