"""JSON masking: veil.jsonb_mask on a 2 kB document against jsonb_set of one path.

Both run as a rule runs, inside one SELECT over the same 100,000 rows (not a
call per row from Python), in the same run, without parallel workers (a
rule with fake values is parallel restricted; jsonb_set alone would get
workers and look faster than it is). Each figure is the best of three.

Target (issue 16): jsonb_mask of one path <= 5x jsonb_set of one path. The
benchmark also prints, for information, a spec of the size a real policy
has (five paths, a list wildcard, a key at any depth with a fake value).

    uv run python bench/json_mask.py [rows]
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import psycopg

ROWS = 100_000

# One order of about 2 kB of JSON text, different per row.
DOCUMENTS = """
CREATE TABLE bench_json AS
SELECT i AS id, jsonb_build_object(
    'id', i,
    'customer', jsonb_build_object(
        'name', 'Alice Martin ' || i, 'email', 'alice' || i || '@example.com',
        'phone', '+33 6 12 34 56 ' || lpad((i %% 100)::text, 2, '0'),
        'address', jsonb_build_object('street', i || ' rue de la Paix', 'city', 'Paris', 'zip', '75002', 'country', 'FR')),
    'contacts', jsonb_build_array(
        jsonb_build_object('kind', 'home', 'phone', '+33 1 ' || i),
        jsonb_build_object('kind', 'work', 'phone', '+33 2 ' || i)),
    'items', (SELECT jsonb_agg(jsonb_build_object('sku', 'SKU-' || j, 'name', 'Product number ' || j, 'qty', j,
                                                  'price', j * 1.5, 'gift_message', 'Happy birthday dear friend ' || j))
              FROM generate_series(1, 12) j),
    'notes', 'Delivered to the neighbour, call before',
    'tags', jsonb_build_array('vip', 'repeat', 'newsletter'),
    'payment', jsonb_build_object('card', '4111111111111111', 'holder', 'Alice Martin', 'expiry', '12/27'),
    'meta', jsonb_build_object('ip', '192.168.1.' || (i %% 255),
                               'ua', 'Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/115.0',
                               'session', md5(i::text))
) AS payload
FROM generate_series(1, %(rows)s) i
"""

ONE_PATH = {"paths": {"$.customer.email": "partial_email"}}
POLICY_SIZED = {
    "paths": {
        "$.customer.email": "partial_email",
        "$.customer.name": {"partial": [1, "***", 0]},
        "$.payment.card": {"partial": [0, "************", 4]},
        "$.payment.holder": "null",
        "$.meta.ip": "remove",
        "$.contacts[*].phone": {"value": "[REDACTED]"},
    },
    "keys": {"phone": {"fake": "phone"}},
    "ignore_keys": ["tags"],
}


def _best_of_three(conn: psycopg.Connection[Any], query: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        conn.execute(query)
        best = min(best, time.perf_counter() - start)
    return best


def measure(conn: psycopg.Connection[Any], rows: int = ROWS) -> dict[str, Any]:
    """Build the documents, time the baseline and the candidates in this run, return the figures.

    conn: a connection to a database with pgveil installed (autocommit or not).
    """
    conn.execute("DROP TABLE IF EXISTS bench_json")
    conn.execute(DOCUMENTS, {"rows": rows})
    conn.execute("ANALYZE bench_json")
    conn.execute("SET max_parallel_workers_per_gather = 0")
    text_bytes = conn.execute("SELECT avg(length(payload::text))::int FROM bench_json").fetchone()
    baseline = _best_of_three(
        conn, "SELECT sum(pg_column_size(jsonb_set(payload, '{customer,email}', '\"x\"'))) FROM bench_json"
    )
    figures: dict[str, Any] = {
        "rows": rows,
        "document_bytes": text_bytes[0] if text_bytes else None,
        "jsonb_set_s": baseline,
    }
    for name, spec in (("one_path", ONE_PATH), ("policy_sized", POLICY_SIZED)):
        literal = json.dumps(spec).replace("'", "''")
        seconds = _best_of_three(
            conn, f"SELECT sum(pg_column_size(veil.jsonb_mask(payload, '{literal}'::jsonb))) FROM bench_json"
        )
        figures[f"{name}_s"] = seconds
        figures[f"{name}_ratio"] = seconds / baseline
    conn.execute("RESET max_parallel_workers_per_gather")
    conn.execute("DROP TABLE bench_json")
    return figures


def main() -> int:
    from harness import bench_database, report

    rows = int(sys.argv[1]) if len(sys.argv) > 1 else ROWS
    with bench_database("bench_json_mask") as url, psycopg.connect(url, autocommit=True) as conn:
        f = measure(conn, rows)
    print(
        f"{f['rows']} rows of {f['document_bytes']} bytes of JSON text; jsonb_set of one path {f['jsonb_set_s']:.3f} s"
    )
    ok = report(
        "jsonb_mask, one path / jsonb_set, one path", f["one_path_ratio"], "x", "<= 5", f["one_path_ratio"] <= 5
    )
    print(f"{'jsonb_mask, policy-sized spec / jsonb_set, one path':58} {f['policy_sized_ratio']:8.2f}x  (information)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
