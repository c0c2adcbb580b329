"""Benchmark: the demo pipeline — loader writes, streaming triggers, consumer — in one run.

In a database of its own with the demo application (bench/harness.py), after
seeding 100,000 customers as role app:

1. latency: the loader at 500 writes/s for 30 s while the consumer follows
   sanitized.* (the change log, woken by the change feed, then key lookups);
   for every customer row it fetches, the time from the start of the writer's
   transaction (last_update) to the fetch. Target: p95 <= 50 ms. Beside it, in the same run, the common
   alternative: a poller reading sanitized.customer by last_update every 2 s.
2. throughput: the loader as fast as it goes for 30 s (default mix, 4
   connections, 20 writes per transaction) with streaming on, then again
   after the tables are unstreamed. Target: >= 2,000 writes/s with streaming
   on, and loader RSS < 200 MB.

Commits are acknowledged as on a default server (synchronous_commit on); the
sandbox runs with fsync off, so the disk's flush latency is not measured.

    uv run python bench/pipeline.py [--seconds S] [--customers N]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
from harness import bench_database, report
from psycopg import sql

from consumer.follow import Change, Follower, skip_to_now
from demo.flow import login_urls
from loader.fakes import Fakes
from loader.runner import percentiles
from loader.seed import seed

REPO = Path(__file__).resolve().parent.parent


def run_loader(url: str, *args: str) -> dict:
    """The loader as a program of its own (its RSS is then its own); returns its summary."""
    done = subprocess.run(
        [sys.executable, "-m", "loader", "--database-url", url, "--quiet", "--json", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


class Poller(threading.Thread):
    """The alternative: read what changed since the last poll, every ``interval`` seconds."""

    def __init__(self, url: str, interval: float, stop: threading.Event):
        super().__init__(daemon=True)
        self.url, self.interval, self.stop = url, interval, stop
        self.lags: list[float] = []

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            mark = conn.execute("SELECT now()").fetchone()[0]
            while not self.stop.wait(self.interval):
                rows = conn.execute(
                    "SELECT last_update FROM sanitized.customer WHERE last_update > %s", (mark,)
                ).fetchall()
                now = time.time()
                self.lags += [now - r[0].timestamp() for r in rows]
                mark = max([mark, *(r[0] for r in rows)])


def latency(app: str, consumer: str, seconds: int) -> bool:
    lags: list[float] = []

    def arrived(change: Change) -> None:
        lags.extend(
            change.fetched_at - r["last_update"].timestamp()
            for r in change.rows
            if change.table == "customer" and not change.catch_up
        )

    stop = threading.Event()
    # From now on: the seed's change-log entries are behind the consumer.
    with psycopg.connect(consumer, autocommit=True) as conn:
        skip_to_now(conn)
    follower = Follower(lambda: psycopg.connect(consumer, autocommit=True), arrived, stop)
    following = threading.Thread(target=follower.run, daemon=True)
    poller = Poller(consumer, 2.0, stop)
    following.start()
    poller.start()
    time.sleep(1)
    summary = run_loader(app, "--rate", "500", "--duration", str(seconds), "--connections", "2", "--batch", "10")
    time.sleep(2.5)
    stop.set()
    following.join()
    poller.join()
    print(
        f"loader at --rate 500: {summary['writes_per_s']:.0f} writes/s for {summary['elapsed_s']:.0f} s;"
        f" consumer fetched {len(lags)} customer rows, poller {len(poller.lags)}"
    )
    p50, p95 = percentiles(lags, 0.5, 0.95)
    poll50, poll95 = percentiles(poller.lags, 0.5, 0.95)
    report("  consumer (change log) lag p50", 1000 * p50, " ms", "", True)
    ok = report("  consumer (change log) lag p95", 1000 * p95, " ms", "<= 50ms", p95 <= 0.05)
    report("  poller every 2 s lag p50", 1000 * poll50, " ms", "", True)
    report("  poller every 2 s lag p95", 1000 * poll95, " ms", "", True)
    report("  poller p95 / consumer p95", poll95 / p95, "x", "", True)
    return ok


def throughput(admin: psycopg.Connection, app: str, seconds: int) -> bool:
    load = ("--duration", str(seconds), "--connections", "4", "--batch", "20")
    streamed = run_loader(app, *load)
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    streamed_tables = ("public.customer", "public.payment")
    for table in streamed_tables:
        admin.execute("SELECT veil.unstream(%s::regclass)", (table,))
    plain = run_loader(app, *load)
    for table in streamed_tables:  # as the demo's revisions left them, for their downgrade
        admin.execute("SELECT veil.stream(%s::regclass)", (table,))
    for label, summary in (("streaming on", streamed), ("streaming off", plain)):
        print(
            f"loader as fast as it goes, {label}: {summary['writes']} writes in {summary['elapsed_s']:.0f} s,"
            f" transaction latency p50 {summary['latency_ms']['p50']} ms, p95 {summary['latency_ms']['p95']} ms,"
            f" failed {sum(summary['failed'].values())}"
        )
    ok = report("  writes/s, streaming on", streamed["writes_per_s"], "", ">= 2000", streamed["writes_per_s"] >= 2000)
    report("  writes/s, streaming off", plain["writes_per_s"], "", "", True)
    report("  streaming on / off", streamed["writes_per_s"] / plain["writes_per_s"], "x", "", True)
    ok &= report("  loader max RSS", rss_mb, " MB", "< 200MB", rss_mb < 200)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args()
    with bench_database("bench_pipeline", with_demo=True) as url, psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(sql.Identifier(admin.info.dbname))
        )
        urls = login_urls(admin, url, ("app", "consumer"))
        with psycopg.connect(urls["app"], autocommit=True) as app:
            started = time.perf_counter()
            seed(app, args.customers, Fakes(1), random.Random(1))
        print(
            f"seeded {args.customers} customers (with addresses and payments) by COPY"
            f" in {time.perf_counter() - started:.1f} s"
        )
        admin.execute("VACUUM ANALYZE")
        ok = latency(urls["app"], urls["consumer"], args.seconds)
        ok &= throughput(admin, urls["app"], args.seconds)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
