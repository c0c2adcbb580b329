"""Benchmark: per-row cost of each masking function relative to md5(column).

Builds a 1,000,000-row table in a database of its own (bench/harness.py), and times `SELECT count(<expression>) FROM t` for each function and
for the baseline md5(email), best of three, in the same run. Prints the ratio
to the baseline and whether it meets the target (2x; 4x for fake_*/pseudo_*).

    uv run python bench/functions.py [--rows N]
"""

from __future__ import annotations

import argparse
import time

import psycopg
from harness import bench_database

BASELINE = "md5(email)"
CASES = [
    # (label, expression, target ratio)
    ("token", "veil.token(email)", 2.0),
    ("token, compiled (as the stream triggers apply it)", "<compiled token rule>", 2.0),
    ("digest", "veil.digest(email, 'salt', 'sha256')", 2.0),
    ("partial", "veil.partial(email, 2, '***', 2)", 2.0),
    ("partial_email", "veil.partial_email(email)", 2.0),
    ("noise", "veil.noise(amount, 0.1)", 2.0),
    ("dnoise", "veil.dnoise(day, interval '10 days')", 2.0),
    ("generalize_int4range", "veil.generalize_int4range(n, 10)", 2.0),
    ("generalize_daterange", "veil.generalize_daterange(day, 'month')", 2.0),
    ("fake_first_name", "veil.fake_first_name()", 4.0),
    ("fake_email", "veil.fake_email()", 4.0),
    ("pseudo_first_name", "veil.pseudo_first_name(email)", 4.0),
    ("pseudo_email", "veil.pseudo_email(email)", 4.0),
]


def compiled_token_rule(conn: psycopg.Connection) -> str:
    """The SQL a stream trigger runs for the rule veil.token(email)."""
    conn.execute(
        "SELECT veil.security_label('sanitized', 'COLUMN', 'bench.t.email', 'MASKED WITH FUNCTION veil.token(email)')"
    )
    return conn.execute(
        "SELECT veil_private.compiled_column('sanitized', 'bench.t'::regclass, 2::smallint, 'src')"
    ).fetchone()[0]


def timed(conn: psycopg.Connection, expression: str, repeats: int = 3) -> float:
    query = f"SELECT count({expression}) FROM bench.t AS src"
    if "veil_key." in expression:
        query += ", " + conn.execute("SELECT veil_private.key_join()").fetchone()[0]
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        conn.execute(query.encode())
        best = min(best, time.perf_counter() - started)
    return best


def build(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bench CASCADE")
        conn.execute("CREATE SCHEMA bench")
        conn.execute(
            "CREATE TABLE bench.t AS SELECT g AS id, 'user' || g || '@example.com' AS email, g %% 1000 AS n,"
            " (g %% 10000)::numeric / 100 AS amount, date '2020-01-01' + g %% 2000 AS day"
            " FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("VACUUM ANALYZE bench.t")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    with bench_database("pgveil_bench_functions") as url:
        build(url, args.rows)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET max_parallel_workers_per_gather = 0")  # one core per query, both sides
            base = timed(conn, BASELINE)
            print(f"{args.rows:,} rows; baseline {BASELINE}: {base * 1000:.0f} ms")
            print(f"{'function':52} {'ms':>7} {'ratio':>6}  target")
            missed = 0
            for label, expression, target in CASES:
                if expression == "<compiled token rule>":
                    expression = compiled_token_rule(conn)
                elapsed = timed(conn, expression)
                ratio = elapsed / base
                ok = ratio <= target
                missed += not ok
                print(f"{label:52} {elapsed * 1000:7.0f} {ratio:6.2f}  <= {target:.1f} {'ok' if ok else 'MISSED'}")
            print(f"{len(CASES) - missed} of {len(CASES)} within target")


if __name__ == "__main__":
    main()
