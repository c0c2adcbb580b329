"""FK-closed subsets (`--subset`, `--subset-percent`, `--subset-direction`, `--virtual-fk`) of
`pgveil dump` and `pgveil sync`: what a restore or a sync holds is exactly the closure of the
seeds, computed here independently (a fixed point over the foreign keys listed by hand),
and every foreign key comes back valid."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest
from click.testing import Result
from typer.testing import CliRunner

from pgveil import dump_manifest
from pgveil.cli import app
from tests.conftest import Database
from tests.helpers import label, scratch_database
from tests.test_dump import archive_bytes, read_by

POLICY = "subset_policy"
PLANTED_EMAIL = "planted.subset.value@leak.test"
PLANTED_NAME = "Zzsubsetplantedzz"
VIRTUAL_FK = "public.audit(customer_ref) -> public.customer(customer_id)"

SCHEMA = f"""
CREATE TABLE store (store_id int PRIMARY KEY, name text NOT NULL);
-- Self-reference: per store a chain of ten (each managed by the one before) and a branch
-- of five under the chain's head.
CREATE TABLE employee (employee_id int PRIMARY KEY, store_id int NOT NULL REFERENCES store,
                       manager_id int REFERENCES employee, name text NOT NULL);
-- An ON DELETE SET NULL link (rep_id) and a UNIQUE key that is not the primary key (code).
CREATE TABLE customer (customer_id int PRIMARY KEY, code text NOT NULL UNIQUE,
                       store_id int NOT NULL REFERENCES store,
                       rep_id int REFERENCES employee ON DELETE SET NULL, email text, name text);
CREATE TABLE loyalty_card (card_id int PRIMARY KEY, customer_code text NOT NULL REFERENCES customer (code));
CREATE TABLE product (product_id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (region text, no int, customer_id int NOT NULL REFERENCES customer, PRIMARY KEY (region, no));
-- A composite foreign key.
CREATE TABLE order_line (line_id int PRIMARY KEY, order_region text NOT NULL, order_no int NOT NULL,
                         product_id int NOT NULL REFERENCES product, qty int NOT NULL,
                         FOREIGN KEY (order_region, order_no) REFERENCES orders (region, no));
-- A cycle through nullable foreign keys between two tables.
CREATE TABLE team (team_id int PRIMARY KEY, lead_id int);
CREATE TABLE member (member_id int PRIMARY KEY, team_id int REFERENCES team, customer_id int REFERENCES customer);
ALTER TABLE team ADD FOREIGN KEY (lead_id) REFERENCES member;
-- Three tables, two cycles, one strongly connected component: p -> q -> r -> p and p -> q -> p.
CREATE TABLE node_p (p_id int PRIMARY KEY, customer_id int REFERENCES customer, q_id int);
CREATE TABLE node_q (q_id int PRIMARY KEY, r_id int, p_id int REFERENCES node_p);
CREATE TABLE node_r (r_id int PRIMARY KEY, p_id int REFERENCES node_p);
ALTER TABLE node_p ADD FOREIGN KEY (q_id) REFERENCES node_q;
ALTER TABLE node_q ADD FOREIGN KEY (r_id) REFERENCES node_r;
-- A partitioned table referencing one table and referenced by another, rows in three partitions.
CREATE TABLE payment (payment_id int, paid_on date, customer_id int NOT NULL REFERENCES customer,
                      amount numeric NOT NULL, PRIMARY KEY (payment_id, paid_on)) PARTITION BY RANGE (paid_on);
CREATE TABLE payment_2023 PARTITION OF payment FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE payment_2024 PARTITION OF payment FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE payment_2025 PARTITION OF payment FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE refund (refund_id int PRIMARY KEY, payment_id int NOT NULL, paid_on date NOT NULL,
                     FOREIGN KEY (payment_id, paid_on) REFERENCES payment);
-- No foreign key at all: linked to customer only by the virtual one.
CREATE TABLE audit (audit_id int PRIMARY KEY, customer_ref int, note text);
-- Unrelated to every seeded table: copied whole.
CREATE TABLE currency (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE price_list (price_id int PRIMARY KEY, currency_code text NOT NULL REFERENCES currency, amount numeric);

INSERT INTO store SELECT g, 'store ' || g FROM generate_series(1, 3) g;
INSERT INTO employee
SELECT s * 100 + e, s, CASE WHEN e = 1 THEN NULL WHEN e <= 10 THEN s * 100 + e - 1 ELSE s * 100 + 1 END, 'employee ' || e
FROM generate_series(1, 3) s, generate_series(1, 15) e;
INSERT INTO customer
SELECT g, 'C' || g, 1 + g % 3,
       CASE g % 4 WHEN 0 THEN (1 + g % 3) * 100 + 10 WHEN 1 THEN (1 + g % 3) * 100 + 5 END,
       'user' || g || '@example.com', 'Name ' || g
FROM generate_series(1, 300) g;
UPDATE customer SET email = '{PLANTED_EMAIL}', name = '{PLANTED_NAME}' WHERE customer_id = 3;
INSERT INTO loyalty_card SELECT g, 'C' || (g * 2) FROM generate_series(1, 150) g;
INSERT INTO product SELECT g, 'product ' || g FROM generate_series(1, 120) g;
INSERT INTO orders SELECT CASE WHEN g % 2 = 0 THEN 'north' ELSE 'south' END, g, 1 + (g * 7) % 300
FROM generate_series(1, 400) g;
INSERT INTO order_line
SELECT g, CASE WHEN (1 + g % 400) % 2 = 0 THEN 'north' ELSE 'south' END, 1 + g % 400, 1 + (g * 13) % 100, 1 + g % 5
FROM generate_series(1, 800) g;
INSERT INTO team SELECT g, NULL FROM generate_series(1, 20) g;
INSERT INTO member SELECT g, 1 + g % 20, g * 3 FROM generate_series(1, 100) g;
INSERT INTO member SELECT g, NULL, NULL FROM generate_series(101, 110) g;
UPDATE team SET lead_id = team_id * 5 - 2;
INSERT INTO node_p SELECT g, CASE WHEN g <= 50 THEN g * 5 END, NULL FROM generate_series(1, 60) g;
INSERT INTO node_q SELECT g, NULL, 1 + (g * 7) % 60 FROM generate_series(1, 60) g;
INSERT INTO node_r SELECT g, 1 + (g * 11) % 60 FROM generate_series(1, 60) g;
UPDATE node_p SET q_id = p_id WHERE p_id % 2 = 0;
UPDATE node_q SET r_id = q_id WHERE q_id % 3 = 0;
INSERT INTO payment SELECT g, DATE '2023-03-01' + g * 2, 1 + (g * 11) % 300, g % 90 + 0.5 FROM generate_series(1, 500) g;
INSERT INTO refund SELECT g, g * 8, DATE '2023-03-01' + g * 16 FROM generate_series(1, 60) g;
INSERT INTO audit SELECT g, CASE WHEN g % 10 <> 0 THEN 1 + (g * 17) % 330 END, 'note ' || g FROM generate_series(1, 400) g;
UPDATE audit SET note = 'called {PLANTED_NAME}' WHERE customer_ref = 3;
INSERT INTO currency SELECT 'K' || g, 'currency ' || g FROM generate_series(1, 5) g;
INSERT INTO price_list SELECT g, 'K' || (1 + g % 5), g FROM generate_series(1, 20) g;
ANALYZE;

SELECT veil.create_policy('{POLICY}', 'static');
SELECT veil.alter_policy('{POLICY}', uncovered => 'keep');
"""
RULES = {
    "public.customer.email": "MASKED WITH FUNCTION veil.token(email, 'email')",
    "public.customer.name": "MASKED WITH VALUE 'someone'",
    "public.employee.name": "MASKED WITH VALUE 'someone'",
    "public.audit.note": "MASKED WITH VALUE NULL",
    # A masked key: the two ends of the composite foreign key share one deterministic rule.
    "public.orders.region": "MASKED WITH FUNCTION veil.token(region, 'region')",
    "public.order_line.order_region": "MASKED WITH FUNCTION veil.token(order_region, 'region')",
}

# Per table: its key as the policy writes it, read on the source; its key in a copy.
TABLES = {
    "public.store": ("store_id", "store_id"),
    "public.employee": ("employee_id", "employee_id"),
    "public.customer": ("customer_id", "customer_id"),
    "public.loyalty_card": ("card_id", "card_id"),
    "public.product": ("product_id", "product_id"),
    "public.orders": ("veil.token(region, 'region'), no", "region, no"),
    "public.order_line": ("line_id", "line_id"),
    "public.team": ("team_id", "team_id"),
    "public.member": ("member_id", "member_id"),
    "public.node_p": ("p_id", "p_id"),
    "public.node_q": ("q_id", "q_id"),
    "public.node_r": ("r_id", "r_id"),
    "public.payment": ("payment_id, paid_on", "payment_id, paid_on"),
    "public.refund": ("refund_id", "refund_id"),
    "public.audit": ("audit_id", "audit_id"),
    "public.currency": ("code", "code"),
    "public.price_list": ("price_id", "price_id"),
}
# The links, written out by hand (child, its columns, parent, the parent's columns); the last
# but one is the virtual foreign key.
EDGES = (
    ("public.employee", "store_id", "public.store", "store_id"),
    ("public.employee", "manager_id", "public.employee", "employee_id"),
    ("public.customer", "store_id", "public.store", "store_id"),
    ("public.customer", "rep_id", "public.employee", "employee_id"),
    ("public.loyalty_card", "customer_code", "public.customer", "code"),
    ("public.orders", "customer_id", "public.customer", "customer_id"),
    ("public.order_line", "order_region, order_no", "public.orders", "region, no"),
    ("public.order_line", "product_id", "public.product", "product_id"),
    ("public.member", "team_id", "public.team", "team_id"),
    ("public.member", "customer_id", "public.customer", "customer_id"),
    ("public.team", "lead_id", "public.member", "member_id"),
    ("public.node_p", "customer_id", "public.customer", "customer_id"),
    ("public.node_p", "q_id", "public.node_q", "q_id"),
    ("public.node_q", "r_id", "public.node_r", "r_id"),
    ("public.node_q", "p_id", "public.node_p", "p_id"),
    ("public.node_r", "p_id", "public.node_p", "p_id"),
    ("public.payment", "customer_id", "public.customer", "customer_id"),
    ("public.refund", "payment_id, paid_on", "public.payment", "payment_id, paid_on"),
    ("public.audit", "customer_ref", "public.customer", "customer_id"),
    ("public.price_list", "currency_code", "public.currency", "code"),
)
VIRTUAL_EDGE = ("public.audit", "customer_ref", "public.customer", "customer_id")

Keys = dict[str, set[tuple[object, ...]]]


@pytest.fixture
def shop(toolkit: Database) -> Database:
    toolkit.execute(SCHEMA)
    for column, rule in RULES.items():
        label(toolkit, "column", column, rule, policy=POLICY)
    # The hand-written links are the catalog's foreign keys (partitions' clones aside) and the virtual one.
    found = {
        (child, cols, parent, pcols)
        for child, cols, parent, pcols in toolkit.execute(
            """SELECT k.conrelid::regclass::text, string_agg(a.attname, ', ' ORDER BY c.n),
                      k.confrelid::regclass::text, string_agg(b.attname, ', ' ORDER BY c.n)
               FROM pg_constraint k
               CROSS JOIN LATERAL unnest(k.conkey, k.confkey) WITH ORDINALITY AS c(key, fkey, n)
               JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = c.key
               JOIN pg_attribute b ON b.attrelid = k.confrelid AND b.attnum = c.fkey
               WHERE k.contype = 'f' AND k.conparentid = 0 AND k.connamespace = 'public'::regnamespace
               GROUP BY k.oid"""
        ).fetchall()
    }
    assert {(f"public.{c}", cc, f"public.{p}", pc) for c, cc, p, pc in found} == set(EDGES) - {VIRTUAL_EDGE}
    return toolkit


def connected(seeded: set[str]) -> set[str]:
    """The tables linked to a seeded table, in either direction, transitively."""
    reached = set(seeded)
    while True:
        more = {t for c, _, p, _ in EDGES for t in (c, p) if c in reached or p in reached} - reached
        if not more:
            return reached
        reached |= more


def closure(db: Database, seeds: dict[str, str], direction: str) -> Keys:
    """The rows a subset must keep, by key, computed on the source: seeds are the rows
    matching each table's condition; a table linked to no seeded table is kept whole."""
    keep = {t: "keep_" + t.removeprefix("public.") for t in TABLES}

    def grow(down: bool) -> bool:
        """Add children of kept rows (down) or parents (up) until nothing changes."""
        grew = False
        while True:
            added = 0
            for child, child_cols, parent, parent_cols in EDGES:
                into, mine, other, theirs = (
                    (child, child_cols, parent, parent_cols) if down else (parent, parent_cols, child, child_cols)
                )
                key = TABLES[into][1]
                row_key = ", ".join(f"s.{c.strip()}" for c in key.split(","))
                kept_key = ", ".join(f"k.{c.strip()}" for c in key.split(","))
                links = ", ".join(f"s.{c.strip()}" for c in mine.split(","))
                linked = ", ".join(f"o.{c.strip()}" for c in theirs.split(","))
                added += db.execute(
                    f"INSERT INTO {keep[into]} SELECT s.* FROM {into} s"
                    f" WHERE EXISTS (SELECT FROM {keep[other]} o WHERE ({links}) = ({linked}))"
                    f" AND NOT EXISTS (SELECT FROM {keep[into]} k WHERE ({kept_key}) = ({row_key}))"
                ).rowcount
            if not added:
                return grew
            grew = True

    with db.admin.transaction():
        for table in TABLES:
            db.execute(
                f"CREATE TEMP TABLE {keep[table]} ON COMMIT DROP AS SELECT * FROM {table} WHERE {seeds.get(table, 'false')}"
            )
        if direction == "up":
            grow(down=False)
        elif direction == "down":
            grow(down=True)
            grow(down=False)
        else:
            while grow(down=True) | grow(down=False):
                pass
        linked = connected(set(seeds))
        return {
            table: {
                tuple(r)
                for r in db.execute(f"SELECT {source} FROM {keep[table] if table in linked else table}").fetchall()
            }
            for table, (source, _) in TABLES.items()
        }


def held(url: str) -> Keys:
    """The keys every table of a copy holds."""
    with psycopg.connect(url) as conn:
        return {
            table: {tuple(r) for r in conn.execute(f"SELECT {copy} FROM {table}").fetchall()}
            for table, (_, copy) in TABLES.items()
        }


def foreign_keys(url: str) -> tuple[set[tuple[str, str]], int, int]:
    """The declared foreign keys (partitions' clones aside), how many there are with the
    clones, and how many are not valid."""
    with psycopg.connect(url) as conn:
        declared = {
            (r[0], r[1])
            for r in conn.execute(
                "SELECT conrelid::regclass::text, conname FROM pg_constraint"
                " WHERE contype = 'f' AND conparentid = 0 AND connamespace = 'public'::regnamespace"
            ).fetchall()
        }
        total, invalid = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT convalidated) FROM pg_constraint"
            " WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
        ).fetchone()
    return declared, total, invalid


def assert_copy_is_the_closure(source: Database, target: str, expected: Keys) -> None:
    declared, total, invalid = foreign_keys(target)
    assert (declared, total, invalid) == (*foreign_keys(source.url)[:2], 0)
    copy = held(target)
    for table in TABLES:
        missing, extra = expected[table] - copy[table], copy[table] - expected[table]
        assert (missing, extra) == (set(), set()), table


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def subset_args(subsets: tuple[str, ...], direction: str | None) -> list[str]:
    args = ["--virtual-fk", VIRTUAL_FK]
    for s in subsets:
        args += ["--subset", s]
    if direction:
        args += ["--subset-direction", direction]
    return args


def dump_subset(db: Database, out: Path, *extra: str) -> Result:
    return cli("dump", "--policy", POLICY, "-f", str(out), "--database-url", db.url, *extra)


def sync_subset(db: Database, target: str, *extra: str) -> Result:
    return cli("sync", "--source", db.url, "--target", target, "--policy", POLICY, *extra)


def restore(out: Path, target: str) -> None:
    done = subprocess.run(
        ["pg_restore", "--exit-on-error", f"--dbname={target}", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def one_line(text: str) -> str:
    """An error as one line: rich's boxes and wrapping taken out."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


# Each direction with the seeds it starts from ("down" also without the option: the default).
CASES = {
    "down": (("public.customer: customer_id % 25 IN (3, 10)",), "down"),
    "default": (("public.customer: customer_id % 25 IN (3, 10)",), None),
    # Two seeded tables; the audit rows' customers come through the virtual key, upwards.
    "up": (("public.customer: store_id::int = 2 AND customer_id % 7 = 0", "public.audit: audit_id <= 20"), "up"),
    "both": (("public.customer: customer_id % 50 = 3",), "both"),
}


def seeds_of(subsets: tuple[str, ...]) -> dict[str, str]:
    """The conditions of --subset options, by table."""
    return {table.strip(): condition.strip() for table, condition in (s.split(":", 1) for s in subsets)}


@pytest.mark.parametrize("case", CASES)
def test_a_subset_dump_restores_valid_foreign_keys_and_exactly_the_closure(shop, tmp_path, case):
    subsets, direction = CASES[case]
    expected = closure(shop, seeds_of(subsets), direction or "down")
    # The subset is neither empty nor everything (both: the rows linked to no seed are left).
    everything = closure(shop, {}, "down")
    assert expected["public.customer"] and expected["public.product"] < everything["public.product"]
    assert expected["public.member"] < everything["public.member"]
    assert (expected["public.customer"] < everything["public.customer"]) == (direction != "both")
    assert expected["public.currency"] == everything["public.currency"] != set()
    out = tmp_path / "archive"
    done = dump_subset(shop, out, *subset_args(subsets, direction))
    assert done.exit_code == 0, done.output
    with scratch_database(shop) as target:
        restore(out, target)
        assert_copy_is_the_closure(shop, target, expected)


# (psycopg, the reader of small tables, reads every other test's tables.)
@pytest.mark.parametrize("reader", ["psql", "pieces"])
def test_a_subset_read_every_way_by_several_workers_is_the_closure_and_the_manifest_counts_it(
    shop, tmp_path, monkeypatch, reader
):
    read_by(monkeypatch, reader)
    subsets, direction = CASES["down"]
    expected = closure(shop, seeds_of(subsets), "down")
    out = tmp_path / "archive"
    done = dump_subset(shop, out, "-j", "3", *subset_args(subsets, direction))
    assert done.exit_code == 0, done.output
    rows = {t.qualified: t.rows for t in dump_manifest.read(out).tables}
    assert sum(n for t, n in rows.items() if t.startswith("public.payment_")) == len(expected["public.payment"])
    assert {t: n for t, n in rows.items() if not t.startswith("public.payment_")} == {
        t: len(keys) for t, keys in expected.items() if t != "public.payment"
    }
    with scratch_database(shop) as target:
        restore(out, target)
        assert_copy_is_the_closure(shop, target, expected)


def test_a_subset_taken_while_the_application_writes_is_one_snapshot(shop, tmp_path):
    subsets, direction = CASES["down"]
    writes = threading.Condition()
    count = [0]
    stop = threading.Event()

    def application() -> None:
        try:
            write()
        finally:  # a writer that failed wakes the test up
            with writes:
                stop.set()
                writes.notify_all()

    def write() -> None:
        # Each transaction adds a seeded customer, an order of theirs and its line: in any
        # consistent state, the three move together.
        with psycopg.connect(shop.url, autocommit=True) as conn:
            while not stop.is_set():
                n = count[0]
                keys = {"c": 1003 + 25 * n, "o": 10_000 + n}
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO customer (customer_id, code, store_id) VALUES (%(c)s, 'N' || %(c)s, 1)", keys
                    )
                    conn.execute("INSERT INTO orders VALUES ('north', %(o)s, %(c)s)", keys)
                    conn.execute("INSERT INTO order_line VALUES (%(o)s, 'north', %(o)s, 1, 1)", keys)
                with writes:
                    count[0] += 1
                    writes.notify_all()

    writer = threading.Thread(target=application)
    writer.start()
    try:
        with writes:
            assert writes.wait_for(lambda: count[0] >= 10 or stop.is_set(), timeout=60) and not stop.is_set()
        out = tmp_path / "archive"
        done = dump_subset(shop, out, "-j", "3", *subset_args(subsets, direction))
        with writes:
            during = count[0]
            assert writes.wait_for(lambda: count[0] > during or stop.is_set(), timeout=60) and not stop.is_set()
    finally:
        stop.set()
        writer.join()
    assert done.exit_code == 0, done.output
    with scratch_database(shop) as target:
        restore(out, target)
        with psycopg.connect(target) as conn:
            customers, orders, lines = conn.execute(
                "SELECT (SELECT count(*) FROM customer WHERE customer_id > 1000),"
                " (SELECT count(*) FROM orders WHERE no >= 10000), (SELECT count(*) FROM order_line WHERE line_id >= 10000)"
            ).fetchone()
        assert foreign_keys(target)[2] == 0
    assert 10 <= customers == orders == lines <= during


def test_the_directions_keep_what_each_promises(shop):
    """The independent closure itself, on rows chosen by hand (guards the oracle)."""
    up = closure(shop, {"public.customer": "customer_id = 4"}, "up")
    # Customer 4 (store 2), its rep 210 and the chain of managers above it, their store; nothing below.
    assert up["public.customer"] == {(4,)}
    assert up["public.employee"] == {(200 + e,) for e in range(1, 11)}
    assert up["public.store"] == {(2,)}
    assert up["public.orders"] == up["public.audit"] == up["public.payment"] == set()
    down = closure(shop, {"public.customer": "customer_id = 4"}, "down")
    orders = {("north" if g % 2 == 0 else "south", g) for g in range(1, 401) if 1 + (g * 7) % 300 == 4}
    assert down["public.orders"] == {tuple(r) for r in shop.execute(
        "SELECT veil.token(region, 'region'), no FROM unnest(%s::text[], %s::int[]) AS o(region, no)",
        ([r for r, _ in orders], [n for _, n in orders]),
    ).fetchall()}  # fmt: skip
    assert down["public.loyalty_card"] == {(2,)}  # card 2 is customer C4's
    assert down["public.audit"] == {(g,) for g in range(1, 401) if g % 10 and 1 + (g * 17) % 330 == 4}
    # Members belong to customers 3, 6, 9, ...: customer 4 has none.
    assert down["public.member"] == set()
    # Customers kept only as parents (of members, node_p rows) leave their own orders behind.
    down = closure(shop, seeds_of(CASES["down"][0]), "down")
    parents_only = down["public.customer"] - {(c,) for c in range(1, 301) if c % 25 in (3, 10)}
    ordering = {(1 + (no * 7) % 300,) for no in range(1, 401)}
    assert parents_only & ordering
    assert not {(1 + (no * 7) % 300,) for _, no in down["public.orders"]} & parents_only


@pytest.mark.parametrize("case", ["down", "up", "both"])
def test_a_subset_sync_holds_valid_foreign_keys_and_exactly_the_closure(shop, case):
    subsets, direction = CASES[case]
    expected = closure(shop, seeds_of(subsets), direction or "down")
    with scratch_database(shop) as target:
        done = sync_subset(shop, target, *subset_args(subsets, direction))
        assert done.exit_code == 0, done.output
        assert_copy_is_the_closure(shop, target, expected)


def test_a_percent_of_customers_is_about_that_share_the_same_rows_each_time_and_closed(shop, tmp_path):
    # Upwards nothing adds customers (no customer is another's parent): the copy's customers are the sample.
    args = ["--virtual-fk", VIRTUAL_FK, "--subset-percent", "public.customer=10", "--subset-direction", "up"]
    copies = []
    for run in ("first", "second"):
        out = tmp_path / run
        done = dump_subset(shop, out, *args)
        assert done.exit_code == 0, done.output
        with scratch_database(shop) as target:
            restore(out, target)
            copies.append(held(target))
            sample = copies[-1]["public.customer"]
            assert 10 <= len(sample) <= 60  # 10% of 300: 30, sd 5.2
            ids = ", ".join(str(c) for (c,) in sample)
            assert_copy_is_the_closure(
                shop, target, closure(shop, {"public.customer": f"customer_id IN ({ids})"}, "up")
            )
    assert copies[0] == copies[1]


def test_a_percent_sample_downwards_keeps_exactly_its_closure(shop, tmp_path):
    # Products are only parents: the copy's products are the sample itself.
    out = tmp_path / "archive"
    done = dump_subset(shop, out, "--virtual-fk", VIRTUAL_FK, "--subset-percent", "public.product=20")
    assert done.exit_code == 0, done.output
    with scratch_database(shop) as target:
        restore(out, target)
        sample = held(target)["public.product"]
        assert 8 <= len(sample) <= 45  # 20% of 120: 24, sd 4.4
        ids = ", ".join(str(p) for (p,) in sample)
        assert_copy_is_the_closure(shop, target, closure(shop, {"public.product": f"product_id IN ({ids})"}, "down"))


def test_dry_run_json_counts_the_rows_the_subset_keeps_per_table(shop, tmp_path):
    subsets, direction = CASES["down"]
    expected = closure(shop, seeds_of(subsets), "down")
    out = tmp_path / "archive"
    done = dump_subset(shop, out, "--dry-run", "--json", *subset_args(subsets, direction))
    assert done.exit_code == 0, done.output
    kept = {t["table"]: t["subset_rows"] for t in json.loads(done.stdout)["tables"]}
    # Partitions are dumped one by one: each one's share of the kept payments. Tables linked
    # to no seed are copied whole, uncounted.
    leaf = dict(shop.execute("SELECT payment_id, tableoid::regclass::text FROM payment").fetchall())
    wanted: dict[str, int | None] = {t: len(keys) for t, keys in expected.items() if t != "public.payment"}
    for name in ("payment_2023", "payment_2024", "payment_2025"):
        wanted[f"public.{name}"] = sum(1 for (p, _) in expected["public.payment"] if leaf[p] == name)
    wanted["public.currency"] = wanted["public.price_list"] = None
    assert all(wanted[f"public.payment_{y}"] for y in (2023, 2024, 2025))
    assert kept == wanted
    assert not out.exists()


BAD_INPUT = {
    "syntax error": (["--subset", "public.customer: store_id = = 1"], ("public.customer", "syntax")),
    "two statements": (["--subset", "public.customer: store_id = 1; DROP TABLE public.currency"], ("public.customer",)),
    "unknown column": (["--subset", "public.customer: no_such_column = 1"], ("no_such_column",)),
    "unknown table": (["--subset", "public.no_such_table: id = 1"], ("public.no_such_table",)),
    "no condition": (["--subset", "public.customer"], ("public.customer",)),
    "percent 0": (["--subset-percent", "public.customer=0"], ("percent",)),
    "percent 150": (["--subset-percent", "public.customer=150"], ("percent",)),
    "percent of an unknown table": (["--subset-percent", "public.no_such_table=10"], ("public.no_such_table",)),
    "virtual key on a missing column": (
        ["--virtual-fk", "public.audit(no_such_ref) -> public.customer(customer_id)"],
        ("no_such_ref", "which public.audit does not have"),
    ),
    "virtual key to a missing table": (
        ["--virtual-fk", "public.audit(customer_ref) -> public.no_such_table(id)"],
        ("public.no_such_table",),
    ),
    "virtual key with different column counts": (
        ["--virtual-fk", "public.audit(customer_ref, note) -> public.customer(customer_id)"],
        ("public.audit", "public.customer"),
    ),
    "unknown direction": (["--subset-direction", "sideways"], ("sideways",)),
}


def assert_refused(done: Result, named: tuple[str, ...]) -> None:
    assert done.exit_code in (1, 2), done.output
    message = one_line(done.stderr)
    # Names as whole words (public.audit is not public.audits), other words anywhere.
    assert all(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)" if "." in n or "_" in n else re.escape(n), message, re.I)
               for n in named), message  # fmt: skip
    if done.exit_code == 1:  # pgveil's own refusal: one line (after the progress bar, if it was drawn)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and done.stderr.rstrip().endswith(errors[0].rstrip()), done.stderr
    assert PLANTED_EMAIL not in done.output and PLANTED_NAME not in done.output


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_subset_input_to_dump_is_refused_in_one_clear_error_and_nothing_is_written(shop, tmp_path, case):
    args, named = BAD_INPUT[case]
    if not any(a.startswith("--subset") and a != "--subset-direction" for a in args):
        args = [*args, "--subset", "public.customer: store_id = 1"]
    out = tmp_path / "archive"
    assert_refused(dump_subset(shop, out, *args), named)
    assert list(tmp_path.iterdir()) == []
    assert shop.scalar("SELECT to_regclass('public.currency') IS NOT NULL")


# sync reads the options as dump does: one of each kind.
@pytest.mark.parametrize("case", ["syntax error", "unknown table", "percent 150", "virtual key on a missing column"])
def test_bad_subset_input_to_sync_is_refused_and_the_target_stays_empty(shop, case):
    args, named = BAD_INPUT[case]
    if not any(a.startswith("--subset") and a != "--subset-direction" for a in args):
        args = [*args, "--subset", "public.customer: store_id = 1"]
    with scratch_database(shop) as target:
        assert_refused(sync_subset(shop, target, *args), named)
        with psycopg.connect(target) as conn:
            assert conn.execute(
                "SELECT count(*) FROM pg_class WHERE relnamespace NOT IN"
                " ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, 'pg_toast'::regnamespace)"
            ).fetchone() == (0,)
    assert shop.scalar("SELECT to_regclass('public.currency') IS NOT NULL")


def test_a_planted_raw_value_of_a_kept_row_is_not_in_the_archive(shop, tmp_path):
    subsets, direction = CASES["down"]
    out = tmp_path / "archive"
    done = dump_subset(shop, out, *subset_args(subsets, direction))
    assert done.exit_code == 0, done.output
    everything = archive_bytes(out)
    assert PLANTED_EMAIL.encode() not in everything and PLANTED_NAME.encode() not in everything
    assert b"user13@example.com" not in everything  # another kept customer's e-mail
    with scratch_database(shop) as target:
        restore(out, target)
        with psycopg.connect(target) as conn:
            # The planted customer and its audit rows were kept, masked.
            assert conn.execute("SELECT email, name FROM customer WHERE customer_id = 3").fetchone() == (
                shop.scalar(f"SELECT veil.token('{PLANTED_EMAIL}', 'email')"),
                "someone",
            )
            assert conn.execute("SELECT count(*), count(note) FROM audit WHERE customer_ref = 3").fetchone() == (
                shop.scalar("SELECT count(*) FROM audit WHERE customer_ref = 3"),
                0,
            )
