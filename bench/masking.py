"""Benchmark: queries through mask views against the same queries on the raw tables.

In a database of its own (bench/harness.py) it builds a customer table of
1,000,000 rows with 5 masked columns (first and last name fake_*, email
partial_email, phone partial, address fake_address) and an orders table of
2,000,000 rows whose columns are all NOT MASKED, masks a role, and times each
query as that role (through the views) and as the owner (raw tables), in
alternation, reporting medians:

1. SELECT count(*) ... WHERE store_id = 1 (target <= 1.2x);
2. SELECT * of every row, streamed to the client and discarded (target <= 4x);
3. a join of customer to orders on the unmasked key (target <= 1.5x): once
   aggregated by store (no masked column read), once returning every order
   with the customer's masked email, once for a single order.

--security-barrier generates the views WITH (security_barrier) instead of as
plain views, to show what that option costs.

    uv run python bench/masking.py [--customers N] [--repeat R] [--security-barrier]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time

import psycopg
from harness import bench_database
from psycopg import sql

SCHEMA = """
CREATE TABLE public.customer (
    customer_id integer PRIMARY KEY, store_id integer NOT NULL, first_name text, last_name text,
    email text, phone text, address text, create_date date NOT NULL);
INSERT INTO public.customer
SELECT g, g % 100, 'First' || g, 'Last' || g, 'user' || g || '@mail' || g % 977 || '.example.com',
       '+1 555 ' || lpad(g::text, 7, '0'), g || ' Main Street, Springfield', DATE '2020-01-01' + g % 1500
FROM generate_series(1, {customers}) g;
CREATE INDEX ON public.customer (store_id);
CREATE TABLE public.orders (
    order_id bigint PRIMARY KEY, customer_id integer NOT NULL, amount numeric(8,2) NOT NULL, order_date date NOT NULL);
INSERT INTO public.orders
SELECT g, 1 + g % {customers}, (g % 10000) / 100.0, DATE '2024-01-01' + g % 365
FROM generate_series(1, 2 * {customers}) g;
"""
RULES = {
    "public.customer.customer_id": "NOT MASKED",
    "public.customer.store_id": "NOT MASKED",
    "public.customer.create_date": "NOT MASKED",
    "public.customer.first_name": "MASKED WITH FUNCTION veil.fake_first_name()",
    "public.customer.last_name": "MASKED WITH FUNCTION veil.fake_last_name()",
    "public.customer.email": "MASKED WITH FUNCTION veil.partial_email(email)",
    "public.customer.phone": "MASKED WITH FUNCTION veil.partial(phone, 3, '******', 2)",
    "public.customer.address": "MASKED WITH FUNCTION veil.fake_address()",
    "public.orders.order_id": "NOT MASKED",
    "public.orders.customer_id": "NOT MASKED",
    "public.orders.amount": "NOT MASKED",
    "public.orders.order_date": "NOT MASKED",
}
QUERIES = [
    ("count(*) WHERE store_id = 1", "SELECT count(*) FROM customer WHERE store_id = 1", 1.2),
    ("SELECT * (all rows to client)", "COPY (SELECT * FROM customer) TO STDOUT", 4.0),
    (
        "join orders, by store",
        "SELECT c.store_id, count(*), sum(o.amount) FROM customer c"
        " JOIN orders o ON o.customer_id = c.customer_id GROUP BY c.store_id",
        1.5,
    ),
    (
        "join orders, with email",
        "COPY (SELECT o.order_id, c.email, o.amount FROM customer c"
        " JOIN orders o ON o.customer_id = c.customer_id) TO STDOUT",
        1.5,
    ),
    (
        "one order with its customer",
        "SELECT c.email, o.amount FROM customer c"
        " JOIN orders o ON o.customer_id = c.customer_id WHERE o.order_id = 12345",
        1.5,
    ),
]


def run(conn: psycopg.Connection, query: str) -> float:
    start = time.perf_counter()
    if query.startswith("COPY"):
        with conn.cursor().copy(query) as copy:
            for _ in copy:
                pass
    else:
        conn.execute(query).fetchall()
    return time.perf_counter() - start


def build(url: str, customers: int) -> str:
    """Tables, rules and a masked role; returns the masked role's URL."""
    password = secrets.token_urlsafe(12)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA.replace("{customers}", str(customers)))
        for name, label in RULES.items():
            conn.execute("SELECT veil.security_label('mask', 'COLUMN', %s, %s)", (name, label))
        conn.execute(sql.SQL("CREATE ROLE bench_analyst LOGIN PASSWORD {}").format(sql.Literal(password)))
        conn.execute("SELECT veil.security_label('mask', 'ROLE', 'bench_analyst', 'MASKED')")
        conn.execute("VACUUM ANALYZE")
    host_part = url.split("@", 1)[1]
    return f"postgresql://bench_analyst:{password}@{host_part}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--security-barrier",
        action="store_true",
        help="generate the mask views WITH (security_barrier), to see what it costs",
    )
    args = parser.parse_args()
    with bench_database("bench_masking") as url:
        print(f"building {args.customers:,} customers, {2 * args.customers:,} orders …", flush=True)
        analyst_url = build(url, args.customers)
        if args.security_barrier:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT veil.alter_policy('mask', security_barrier => true)")
        try:
            with psycopg.connect(url, autocommit=True) as raw, psycopg.connect(analyst_url, autocommit=True) as masked:
                print(f"{'query':32} {'raw':>9} {'masked':>9} {'ratio':>6} {'target':>7}")
                for name, query, target in QUERIES:
                    repeat = args.repeat * 5 if name.startswith(("count", "one")) else args.repeat
                    run(raw, query), run(masked, query)  # warm the cache
                    raw_times, masked_times = [], []
                    for _ in range(repeat):
                        raw_times.append(run(raw, query))
                        masked_times.append(run(masked, query))
                    r, m = statistics.median(raw_times), statistics.median(masked_times)
                    verdict = "met" if m / r <= target else "MISSED"
                    print(
                        f"{name:32} {r * 1000:7.1f}ms {m * 1000:7.1f}ms {m / r:5.2f}x {target:5.1f}x  {verdict}",
                        flush=True,
                    )
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT veil.security_label('mask', 'ROLE', 'bench_analyst', NULL)")
                conn.execute("DROP OWNED BY bench_analyst")
                conn.execute("DROP ROLE bench_analyst")


if __name__ == "__main__":
    main()
