"""Benchmark: the live sanitized copy against its baselines, in one run.

In a database of its own (bench/harness.py) it builds its tables and measures:

1. bulk: INSERT ... SELECT of 500,000 rows into a table streamed with three
   tokens, against the same insert into an unstreamed table (target <= 4.5x),
   and against the common row-level pattern (AFTER INSERT FOR EACH ROW, HMAC
   with the key from a setting, INSERT ... ON CONFLICT DO UPDATE);
2. OLTP: single-row inserts over 2 connections for 20 s with pgbench, with
   durable commits (fsync and synchronous_commit on), streamed against
   unstreamed tps (target >= 0.85x);
3. backfill of 1,000,000 rows against one INSERT ... SELECT computing the same
   tokens (target <= 1.3x).

    uv run python bench/streaming.py [--bulk-rows N] [--backfill-rows N] [--oltp-seconds S]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from harness import bench_database, report
from pgveil import sandbox

TABLE = "(id bigint PRIMARY KEY, email text, name text, phone text, amount numeric)"
ROWS = ("SELECT g, 'user' || g || '@example.com', 'name ' || g, '+1 555 ' || g, g %% 1000"
        " FROM generate_series(%s, %s) g")
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
    conn.execute("CREATE TABLE bench.tokens_once (id text PRIMARY KEY, email text, name text, amount numeric)")
    for table in ("streamed", "backfilled", "oltp_streamed"):
        for column, label in RULES.items():
            conn.execute("SELECT veil.security_label('sanitized', 'COLUMN', %s, %s)",
                         (f"bench.{table}.{column}", label))
        conn.execute("SELECT veil.stream(%s)", (f"bench.{table}",))
    conn.execute(ROW_LEVEL_TRIGGER)


def bulk(conn: psycopg.Connection, rows: int) -> bool:
    conn.execute("SELECT set_config('bench.key', encode(veil_ext.gen_random_bytes(32), 'hex'), false)")
    plain = timed(conn, "INSERT INTO bench.plain " + ROWS, (1, rows))
    streamed = timed(conn, "INSERT INTO bench.streamed " + ROWS, (1, rows))
    row_level = timed(conn, "INSERT INTO bench.row_level " + ROWS, (1, rows))
    assert conn.execute("SELECT count(*) FROM sanitized.bench__streamed").fetchone()[0] == rows
    print(f"bulk INSERT ... SELECT of {rows:,} rows: unstreamed {plain:.2f} s, streamed {streamed:.2f} s,"
          f" row-level trigger {row_level:.2f} s")
    report("  row-level trigger baseline / unstreamed", row_level / plain, "x", "(~7.5x)", True)
    return report("  streamed (3 tokens) / unstreamed", streamed / plain, "x", "<= 4.5x", streamed / plain <= 4.5)


def pgbench_tps(url: str, bindir: Path, table: str, seconds: int, workdir: Path) -> float:
    script = workdir / f"{table}.sql"
    script.write_text(PGBENCH_SCRIPT.format(table=table))
    env = dict(os.environ, PGOPTIONS="-c synchronous_commit=on")
    done = subprocess.run(
        [str(bindir / "pgbench"), "-n", "-M", "prepared", "-c", "2", "-j", "2", "-T", str(seconds),
         "-f", str(script), url], capture_output=True, text=True, env=env, check=True)
    return float(re.search(r"tps = ([\d.]+)", done.stdout).group(1))


def oltp(conn: psycopg.Connection, url: str, seconds: int) -> bool:
    # Durable commits, as in production: the copy is written in the same commit.
    conn.execute("ALTER SYSTEM SET fsync = on")
    conn.execute("ALTER SYSTEM SET full_page_writes = on")
    conn.execute("SELECT pg_reload_conf()")
    time.sleep(1)
    with tempfile.TemporaryDirectory() as workdir:
        bindir = sandbox.find_bindir()
        plain = pgbench_tps(url, bindir, "oltp_plain", seconds, Path(workdir))
        streamed = pgbench_tps(url, bindir, "oltp_streamed", seconds, Path(workdir))
    conn.execute("ALTER SYSTEM RESET fsync")
    conn.execute("ALTER SYSTEM RESET full_page_writes")
    conn.execute("SELECT pg_reload_conf()")
    print(f"OLTP single-row inserts, 2 connections, {seconds} s, durable commits:"
          f" unstreamed {plain:.0f} tps, streamed {streamed:.0f} tps")
    return report("  streamed / unstreamed tps", streamed / plain, "x", ">= 0.85x", streamed / plain >= 0.85)


def backfill(conn: psycopg.Connection, rows: int) -> bool:
    conn.execute("ALTER TABLE bench.backfilled DISABLE TRIGGER USER")
    conn.execute("INSERT INTO bench.backfilled " + ROWS, (1, rows))
    conn.execute("ALTER TABLE bench.backfilled ENABLE TRIGGER USER")
    conn.execute("VACUUM ANALYZE bench.backfilled")
    # The same tokens computed the same way (the stream's compiled rules), in one statement.
    exprs = conn.execute(
        "SELECT string_agg(expression, ', ' ORDER BY attnum) FROM veil_private.copy_columns("
        "'bench.backfilled'::regclass, 'sanitized')").fetchone()[0]
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

    with bench_database("pgveil_bench_streaming") as url, psycopg.connect(url, autocommit=True) as conn:
        setup(conn)
        results = [bulk(conn, args.bulk_rows), oltp(conn, url, args.oltp_seconds),
                   backfill(conn, args.backfill_rows)]
        print(f"{sum(results)} of {len(results)} within target")


if __name__ == "__main__":
    main()
