"""`pgveil demo`: the whole product on one screen.

Installs the toolkit and the demo application, seeds it as the application,
backfills, runs live traffic while a consumer follows the sanitized copies,
then shows the same customers as the application, the analyst and the
consumer see them, each read through that role's own connection.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from consumer.boundary import Boundary
from consumer.follow import Change, Follower, skip_to_now
from demo import roles as demo_roles
from loader import runner, seed
from loader.fakes import Fakes
from loader.mix import DEFAULT_MIX, parse_mix
from pgveil import migrate, preflight
from pgveil.services import streaming

ROLES = ("app", "analyst", "consumer")
SEED_CUSTOMERS = 1000
TRAFFIC_SECONDS = 6
TRAFFIC_RATE = 100  # writes per second: enough to see, few enough to read
FIELDS = ("customer_id", "first_name", "last_name", "email")


def role_url(url: str, role: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{quote(role, safe='')}:{quote(password, safe='')}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Arrivals:
    """What the consumer received, counted per second for the running commentary."""

    changes: Counter[tuple[str, str]] = field(default_factory=Counter)
    lags: list[float] = field(default_factory=list)
    total: Counter[tuple[str, str]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, change: Change) -> None:
        rows = len(change.rows) if change.op == "upsert" else change.count
        with self.lock:
            self.changes[(change.table, change.op)] += rows
            self.total[(change.table, change.op)] += rows
            # Every customer write sets last_update to its transaction's start:
            # an upper bound of the time from commit to fetch (rows re-read whole
            # are not new writes).
            if not change.catch_up:
                self.lags.extend(
                    change.fetched_at - row["last_update"].timestamp()
                    for row in change.rows
                    if row.get("last_update") is not None
                )

    def take(self) -> Counter[tuple[str, str]]:
        with self.lock:
            taken, self.changes = self.changes, Counter()
        return taken


def run(url: str, out: Console) -> dict[str, str]:
    """Run the demo against ``url`` (a superuser's); returns the demo roles' URLs."""
    began = time.monotonic()
    with preflight.connect(url) as admin:
        for role in ROLES:
            demo_roles.refuse_foreign(admin, role)
    out.rule("1. install: alembic upgrade head (toolkit + demo application)")
    migrate.upgrade(url, with_demo=True)
    with preflight.connect(url) as admin:
        urls = login_urls(admin, url, ROLES)
        admin.commit()
    out.print(
        "roles: [bold]app[/] (the application), [bold]analyst[/] (masked role), "
        "[bold]consumer[/] (reads sanitized.* only)"
    )

    out.rule(f"2. seed {SEED_CUSTOMERS} customers as app (COPY), then backfill the sanitized copies")
    fakes = Fakes(seed=7)
    with psycopg.connect(urls["app"], autocommit=True) as app:
        runner.check_role(app)
        seed.seed(app, SEED_CUSTOMERS, fakes, random.Random(7))
    with preflight.connect(url) as admin:
        admin.autocommit = True
        for name in ("customer", "payment"):
            copied = streaming.backfill(admin, f"public.{name}", 5000)
            counts = admin.execute(
                sql.SQL("SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})").format(
                    sql.Identifier("public", name), sql.Identifier("sanitized", name)
                )
            ).fetchone()
            assert counts is not None
            raw, copy = counts
            out.print(f"public.{name}: {raw} rows; sanitized.{name}: {copy} rows (backfill rewrote {copied})")

    out.rule(f"3. live traffic for {TRAFFIC_SECONDS} s as app, while the consumer follows sanitized.*")
    arrivals = _traffic(urls, fakes, out)

    out.rule("4. the same customers, three ways")
    _side_by_side(url, urls, out)

    out.rule("5. what the analyst and the consumer cannot do")
    for role in ("analyst", "consumer"):
        with psycopg.connect(urls[role]) as conn:
            try:
                conn.execute("SELECT * FROM public.customer")
                out.print(f"[red]{role} read public.customer: this must not happen[/]")
            except psycopg.errors.InsufficientPrivilege as exc:
                out.print(f"{role}: SELECT * FROM public.customer → [bold]refused[/]: {str(exc).strip()}")
    if arrivals.lags:
        p50, p95 = runner.percentiles(arrivals.lags, 0.5, 0.95)
        out.print(
            f"consumer lag, from the start of the writer's transaction to the fetched customer row: "
            f"p50 {1000 * p50:.0f} ms, p95 {1000 * p95:.0f} ms over {len(arrivals.lags)} rows"
        )
    out.print(f"demo finished in {time.monotonic() - began:.0f} s")
    return urls


def login_urls(admin: psycopg.Connection, url: str, roles: Iterable[str]) -> dict[str, str]:
    """A fresh password for each of the demo's ``roles``, and the URL to log in as it."""
    urls: dict[str, str] = {}
    for role in roles:
        password = secrets.token_urlsafe(18)
        demo_roles.set_password(admin, role, password)
        urls[role] = role_url(url, role, password)
    return urls


def _traffic(urls: dict[str, str], fakes: Fakes, out: Console) -> Arrivals:
    arrivals = Arrivals()
    stop_consumer = threading.Event()

    def boundary_report(b: Boundary) -> None:
        out.print(f"consumer connected as {b.role}: cannot read {', '.join(b.refused)} (permission denied)")

    # The demo's consumer starts from now: the seed and backfill are behind it.
    with psycopg.connect(urls["consumer"], autocommit=True) as conn:
        skip_to_now(conn)
    follower = Follower(
        lambda: psycopg.connect(urls["consumer"], autocommit=True),
        arrivals.add,
        stop_consumer,
        on_boundary=boundary_report,
        idle_timeout=0.2,
    )
    following = threading.Thread(target=follower.run, name="consumer", daemon=True)
    following.start()
    follower.following.wait(10)  # the first write comes after it follows the change feed
    settings = runner.Settings(
        urls["app"],
        parse_mix(DEFAULT_MIX),
        rate=TRAFFIC_RATE,
        duration=TRAFFIC_SECONDS,
        connections=2,
        batch=10,
        seed=7,
    )
    stats_seen = [0]

    def tick(stats: runner.Stats) -> None:
        if stats.elapsed() < len(stats_seen):
            return
        written = stats.total_writes()
        got = arrivals.take()
        received = ", ".join(f"{table} {op} {n}" for (table, op), n in sorted(got.items())) or "nothing yet"
        out.print(
            f"t={len(stats_seen):>2}s  app wrote {written - stats_seen[-1]:>3} rows   consumer received: {received}",
            highlight=False,
        )
        stats_seen.append(written)

    stats = runner.run(settings, fakes, threading.Event(), on_tick=tick, tick=0.25)
    time.sleep(0.5)  # the last notifications
    stop_consumer.set()
    following.join()
    summary = stats.summary()
    out.print(
        f"app: {summary['writes']} writes in {summary['transactions']} transactions "
        f"({summary['writes_per_s']:.0f}/s), transaction latency p95 {summary['latency_ms']['p95']} ms"
    )
    total = ", ".join(f"{table} {op} {n}" for (table, op), n in sorted(arrivals.total.items()))
    out.print(f"consumer: {total}")
    return arrivals


def _side_by_side(url: str, urls: dict[str, str], out: Console) -> None:
    with preflight.connect(url) as admin:
        # The narrator (the installing role) picks recently changed customers
        # and computes their tokens; each role then reads them itself.
        picked = admin.execute(
            "SELECT customer_id, veil.token(customer_id::text, 'customer') FROM public.customer"
            " ORDER BY last_update DESC, customer_id LIMIT 2"
        ).fetchall()
    ids = [p[0] for p in picked]
    tokens = [p[1] for p in picked]
    query = sql.SQL("SELECT {} FROM {} WHERE customer_id = ANY(%s)").format
    columns = sql.SQL(", ").join(map(sql.Identifier, FIELDS))
    seen: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(urls["app"]) as conn:
        seen["application"] = conn.execute(query(columns, sql.Identifier("public", "customer")), (ids,)).fetchall()
    with psycopg.connect(urls["analyst"]) as conn:
        # The application's query without the schema: the analyst's search_path leads to the mask view.
        seen["analyst"] = conn.execute(query(columns, sql.Identifier("customer")), (ids,)).fetchall()
    with psycopg.connect(urls["consumer"]) as conn:
        seen["consumer"] = conn.execute(query(columns, sql.Identifier("sanitized", "customer")), (tokens,)).fetchall()
    order = {"application": ids, "analyst": ids, "consumer": tokens}
    by_key = {who: {row[0]: row for row in rows} for who, rows in seen.items()}
    table = Table(show_lines=False)
    table.add_column("column")
    table.add_column("application (app: public.customer)")
    table.add_column("analyst (masked role: customer)")
    table.add_column("consumer (sanitized.customer)")
    for i in range(len(ids)):
        rows = [by_key[who].get(order[who][i]) for who in ("application", "analyst", "consumer")]
        for position, name in enumerate(FIELDS):
            table.add_row(
                name,
                *("—" if row is None else str(row[position]) for row in rows),
                end_section=position == len(FIELDS) - 1,
            )
    out.print(table)
