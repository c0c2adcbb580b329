"""Benchmark: the live sanitized copy against its baselines, in one run.

In a database of its own (bench/harness.py), on a server with PostgreSQL's
durable defaults (fsync, synchronous_commit and full_page_writes on; the
settings in force are printed), it builds its tables and measures:

1. bulk: INSERT ... SELECT of 500,000 rows into a table streamed with three
   tokens, against the same insert into an unstreamed table (target <= 4.5x),
   and against the common row-level pattern (AFTER INSERT FOR EACH ROW, HMAC
   with the key from a setting, INSERT ... ON CONFLICT DO UPDATE);
2. OLTP: single-row inserts over 2 connections for 20 s with pgbench, in
   alternating slices, streamed against unstreamed tps (target >= 0.85x),
   and streamed while a consumer follows the change feed (writers then
   notify, which serializes their commits);
3. backfill of 1,000,000 rows against one INSERT ... SELECT computing the same
   tokens (target <= 1.3x).

    uv run python bench/streaming.py [--bulk-rows N] [--backfill-rows N] [--oltp-seconds S]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from harness import bench_database, report

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
PGBENCH_SCRIPT = """\\set n random(1, 2000000000)
INSERT INTO bench.{table} (id, email, name, phone, amount)
VALUES (:n, 'u' || :n || '@example.com', 'name ' || :n, '+1 555 ' || :n, :n % 1000)
ON CONFLICT DO NOTHING;
"""


def timed(conn: psycopg.Connection, query: str, params=None) -> float:
    started = time.perf_counter()
    conn.execute(query, params)
    return time.perf_counter() - started


def setup(conn: psycopg.Connection) -> None:
    conn.execute("DROP SCHEMA IF EXISTS bench CASCADE")
    conn.execute("CREATE SCHEMA bench")
    for name in ("plain", "streamed", "row_level", "backfilled", "oltp_plain", "oltp_streamed"):
        conn.execute(f"CREATE TABLE bench.{name} {TABLE}")
    conn.execute("CREATE TABLE bench.row_level_copy (id text PRIMARY KEY, email text, name text, amount numeric)")
    for table in ("streamed", "backfilled", "oltp_streamed"):
        for column, label in RULES.items():
            conn.execute(
                "SELECT veil.security_label('sanitized', 'COLUMN', %s, %s)", (f"bench.{table}.{column}", label)
            )
        conn.execute("SELECT veil.stream(%s)", (f"bench.{table}",))
    # The backfill's baseline writes into a table like the copy (columns, collations, key).
    conn.execute("CREATE TABLE bench.tokens_once (LIKE sanitized.bench__backfilled INCLUDING ALL)")
    conn.execute(ROW_LEVEL_TRIGGER)


def bulk(conn: psycopg.Connection, rows: int, rounds: int = 2) -> bool:
    """Best of `rounds` per table, each insert into an emptied table after a checkpoint."""
    conn.execute("SELECT set_config('bench.key', encode(veil_ext.gen_random_bytes(32), 'hex'), false)")
    best = {}
    for _ in range(rounds):
        for table in ("plain", "streamed", "row_level"):
            conn.execute(f"TRUNCATE bench.{table}, bench.row_level_copy")
            conn.execute("CHECKPOINT")
            elapsed = timed(conn, f"INSERT INTO bench.{table} " + ROWS, (1, rows))
            best[table] = min(best.get(table, elapsed), elapsed)
    assert conn.execute("SELECT count(*) FROM sanitized.bench__streamed").fetchone()[0] == rows
    plain, streamed, row_level = best["plain"], best["streamed"], best["row_level"]
    print(
        f"bulk INSERT ... SELECT of {rows:,} rows (best of {rounds}): unstreamed {plain:.2f} s,"
        f" streamed {streamed:.2f} s, row-level trigger {row_level:.2f} s"
    )
    report("  row-level trigger baseline / unstreamed", row_level / plain, "x", "(~7.5x)", True)
    report("  streamed / row-level trigger baseline", streamed / row_level, "x", "(info)", True)
    return report("  streamed (3 tokens) / unstreamed", streamed / plain, "x", "<= 4.5x", streamed / plain <= 4.5)


def pgbench_tps(url: str, bindir: Path, table: str, seconds: int, workdir: Path) -> float:
    script = workdir / f"{table}.sql"
    script.write_text(PGBENCH_SCRIPT.format(table=table))
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
    return float(re.search(r"tps = ([\d.]+)", done.stdout).group(1))


def durability(conn: psycopg.Connection) -> str:
    return ", ".join(
        f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}"
        for name in ("fsync", "synchronous_commit", "full_page_writes")
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


def oltp(url: str, seconds: int, slices: int = 4) -> bool:
    """Each side runs `seconds` in all, in alternating slices, so that drift in
    the disk's flush latency falls on both sides alike. Streamed inserts notify
    only while a session follows the change feed: measured without and with one."""
    with tempfile.TemporaryDirectory() as workdir:
        bindir = sandbox.find_bindir()
        plain = streamed = followed = 0.0
        slice_seconds = max(1, seconds // slices)
        for _ in range(slices):
            plain += pgbench_tps(url, bindir, "oltp_plain", slice_seconds, Path(workdir)) / slices
            streamed += pgbench_tps(url, bindir, "oltp_streamed", slice_seconds, Path(workdir)) / slices
            with follower(url):
                followed += pgbench_tps(url, bindir, "oltp_streamed", slice_seconds, Path(workdir)) / slices
    print(
        f"OLTP single-row inserts, 2 connections, {slice_seconds * slices} s each in {slices} alternating slices:"
        f" unstreamed {plain:.0f} tps, streamed {streamed:.0f} tps,"
        f" streamed while a consumer follows the change feed {followed:.0f} tps"
    )
    report("  streamed, feed followed / unstreamed tps", followed / plain, "x", "(info)", True)
    return report("  streamed / unstreamed tps", streamed / plain, "x", ">= 0.85x", streamed / plain >= 0.85)


def backfill(conn: psycopg.Connection, rows: int) -> bool:
    conn.execute("ALTER TABLE bench.backfilled DISABLE TRIGGER USER")
    conn.execute("INSERT INTO bench.backfilled " + ROWS, (1, rows))
    conn.execute("ALTER TABLE bench.backfilled ENABLE TRIGGER USER")
    conn.execute("VACUUM ANALYZE bench.backfilled")
    # The same tokens computed the same way (the stream's compiled rules), in one statement.
    exprs = conn.execute(
        "SELECT string_agg(expression, ', ' ORDER BY attnum) FROM veil_private.copy_columns("
        "'bench.backfilled'::regclass, 'sanitized')"
    ).fetchone()[0]
    key_join = conn.execute("SELECT veil_private.key_join()").fetchone()[0]
    once = timed(conn, f"INSERT INTO bench.tokens_once SELECT {exprs} FROM bench.backfilled AS src, {key_join}")
    batched = timed(conn, "CALL veil.backfill('bench.backfilled', 10000)")
    assert conn.execute("SELECT count(*) FROM sanitized.bench__backfilled").fetchone()[0] == rows
    print(f"backfill of {rows:,} rows: one INSERT ... SELECT {once:.2f} s, CALL veil.backfill {batched:.2f} s")
    return report("  backfill / single INSERT ... SELECT", batched / once, "x", "<= 1.3x", batched / once <= 1.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bulk-rows", type=int, default=500_000)
    parser.add_argument("--backfill-rows", type=int, default=1_000_000)
    parser.add_argument("--oltp-seconds", type=int, default=20)
    args = parser.parse_args()

    with bench_database("pgveil_bench_streaming", durable=True) as url, psycopg.connect(url, autocommit=True) as conn:
        print(f"server: {durability(conn)}")
        setup(conn)
        results = [bulk(conn, args.bulk_rows), oltp(url, args.oltp_seconds), backfill(conn, args.backfill_rows)]
        print(f"{sum(results)} of {len(results)} within target")


if __name__ == "__main__":
    main()
