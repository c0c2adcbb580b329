"""Benchmark: the leak scan of `pgveil verify` against one read of the copy it searches.

In a database of its own (bench/harness.py) it builds `public.person`: `--rows`
rows (default 1,000,000), a bigint key and 20 text columns of realistic shapes
(unique e-mail, "First Last" names from a few thousand combinations, phone, street
address, SSN-like number, 300 cities, state, zip, company, job title, codes,
language, time zone, device, a free-text note of about 12 words naming an order,
and a small JSON document as text). The static policy `bench` transforms 5 of
them (e-mail by token, full name by fake first and last names, phone and SSN
partially hidden, address by a fake one) and keeps the other 15. The target is
that copy, made by `pgveil sync` into a fresh database of the same server; the
names, streets and companies come from lists disjoint from veil.dictionary, so a
fake name cannot equal a real one by chance and the clean copy must pass.

Measured in the same run, the fastest of --repeat runs of each:

1. read: one full read of the target's 20 text columns, `COPY (SELECT c1, ...,
   c20 FROM public.person) TO STDOUT` consumed and discarded by psycopg: the
   baseline of the issue's ratio;
2. `pgveil verify --source S --target T --policy bench --json` as a process (wall
   time, exit 0 expected) and the phases of its JSON report; the leak scan is its
   fingerprints (computed on the source, streamed into the target) plus its
   search (every value of the target's text hashed whole and, inside text, as
   runs of 1 to 3 words, joined with the fingerprints);
3. floor: whole values only, without pgveil's machinery: the source's distinct
   values of the 5 columns COPYed (binary) into a temporary table of the target
   session, then one query joining every value of the target's 20 text columns
   (unnest) with them by equality (a hash join, work_mem as pgveil's), counting
   matches; no fingerprints, no case folding, no words inside text;
4. floor with words: the same search as pgveil's, whole and inside text, in raw
   text: the source's forms of the 5 columns (whole, and the words joined by a
   space for values of at most 3 words and 8 characters), built with pgveil's own
   expressions (veil_private.leak_whole_sql, leak_tokens_sql), distinct, COPYed
   (binary) into a temporary table of the target session; then one query: every
   target value folded whole, and every run of 1 to 3 of its words built as
   veil.leak_search_query builds them (words once per value, unnest of slices,
   the same byte-length filters), joined with the forms, matches counted per
   (column, source column). No fingerprints, seed, dictionary or row places.
   Gate: while the whole-value floor is within 3x the read, the leak scan <= 3x
   the read (the issue's target); when it is above, that target is below the
   physical work, and the gate is the leak scan <= 1.2x the floor with words
   (the other ratios are information). Source sessions run with the server's
   default work_mem, as pgveil's;
5. peak RSS of the `pgveil verify` process (os.wait4's ru_maxrss, through
   bench/dump.py's bare launcher; target < 200 MB);
6. a planted leak (not timed): 100 source e-mails appended to the target's
   `note`; verify must exit 1 and report >= 100 rows public.person.email ->
   public.person.note; undone afterwards.

    uv run python bench/verify.py [--rows 1000000] [--repeat 3] [--work-mem 256MB] [--baseline-only]

Exit status 1 when a target is missed or a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from dump import LAUNCHER, PGVEIL, libpq_url
from harness import bench_database, database_url
from psycopg import sql

POLICY = "bench"
RATIO_TARGET = 3.0
WORDS_TARGET = 1.2
# pgveil verify's defaults (veil.leak_fingerprint_query, veil.leak_search_query).
MIN_LENGTH, TEXT_MIN_LENGTH, MAX_WORDS = 4, 8, 3
RSS_TARGET_MB = 200
PLANTED = 100
# Lists of names, streets and company words outside veil.dictionary (what the
# fake_* rules write): build() drops any that is there, so a fake value of the
# copy never equals a source value by chance.
FIRST_NAMES = [
    "Ansel", "Briony", "Caspian", "Delphine", "Evander", "Fenella", "Gideon", "Honora", "Ignatius", "Leopold",
    "Marisol", "Nerys", "Orson", "Petronella", "Quill", "Rosalind", "Soren", "Tamsin", "Ulric", "Verity",
    "Wystan", "Xanthe", "Yorick", "Zinnia", "Alaric", "Bettina", "Cosmo", "Drusilla", "Emrys", "Florian",
    "Griselda", "Hollis", "Isolde", "Jaspar", "Kerensa", "Lysander", "Mireille", "Niamh", "Osric", "Perpetua",
    "Radomir", "Saoirse", "Thaddeus", "Valentin", "Wilhelmina", "Ximena", "Yvaine", "Zebedee", "Anselm",
    "Berenice", "Cressida", "Dashiell", "Eulalia", "Gwendolyn", "Horatio", "Imelda", "Jolyon", "Ottilie",
]  # fmt: skip
LAST_NAMES = [
    "Abernathy", "Blackwood", "Cartwright", "Dunmore", "Etheridge", "Fairweather", "Ingleby", "Jessop",
    "Lockhart", "Merriweather", "Northcott", "Ormsby", "Pemberton", "Quennell", "Ravenscroft", "Stanhope",
    "Thistlewood", "Underhill", "Vandermeer", "Whitlock", "Yardley", "Zellweger", "Ashdown", "Bramwell",
    "Copperfield", "Darrow", "Eversley", "Fothergill", "Grimshaw", "Hartigan", "Ironside", "Jellicoe",
    "Kettering", "Lindqvist", "Mortlake", "Nettleship", "Oakenfold", "Quartermain", "Rutherford", "Sallow",
    "Tregarthen", "Umfreville", "Verlaine", "Wetherby", "Zabriskie", "Blenkinsop", "Cholmondeley", "Dalrymple",
    "Entwistle", "Featherstone", "Gilchrist", "Inchbald", "Juxon", "Ramsbottom", "Sidebottom", "Trelawney",
]  # fmt: skip
STREETS = [
    "Maple", "Cedar", "Willow", "Birch", "Aspen", "Hickory", "Walnut", "Chestnut", "Spruce", "Magnolia",
    "Sycamore", "Poplar", "Cypress", "Alder", "Hawthorn", "Redwood", "Dogwood", "Sequoia", "Mulberry", "Larch",
]  # fmt: skip
STREET_TYPES = ["Street", "Avenue", "Road", "Lane", "Drive", "Court", "Place", "Way", "Terrace", "Boulevard"]
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "icloud.com", "proton.me", "fastmail.com"]
CITY_ROOTS = ["Ash", "Bright", "Clear", "Deer", "Elk", "Fox", "Gold", "Heron", "Iron", "Jade", "Kings", "Lark", "Mill", "Norr", "Quarry"]  # fmt: skip
CITY_ENDS = [
    "ton", "ville", "field", "burg", "ford", "wood", "dale", "port", "bridge", "haven",
    "mont", "ridge", "brook", "view", "crest", "land", "stead", "wick", "moor", "gate",
]  # fmt: skip
COMPANY_FIRST = ["Northwind", "Bluefin", "Silverline", "Redstone", "Brightpath", "Ironclad", "Summit", "Harborlight", "Keystone", "Pinnacle"]  # fmt: skip
COMPANY_SECOND = ["Logistics", "Analytics", "Foods", "Health", "Energy", "Media", "Systems", "Capital", "Labs", "Outfitters"]  # fmt: skip
TEXT_COLUMNS = [
    "email", "full_name", "phone", "address", "ssn", "city", "state", "zip", "country", "company",
    "job_title", "status", "plan_code", "referral_code", "language", "timezone", "signup_channel", "device",
    "note", "profile",
]  # fmt: skip
TRANSFORMED = {
    "email": "MASKED WITH FUNCTION veil.token(email, 'email')",
    "full_name": "MASKED WITH FUNCTION concat(veil.fake_first_name(), ' ', veil.fake_last_name())",
    "phone": "MASKED WITH FUNCTION veil.partial(phone, 3, '***-***-**', 2)",
    "address": "MASKED WITH FUNCTION veil.fake_address()",
    "ssn": "MASKED WITH FUNCTION veil.partial(ssn, 0, 'XXX-XX-', 4)",
}
COLUMN_DEFINITIONS = ", ".join(f"{c} text NOT NULL" + (" UNIQUE" if c == "email" else "") for c in TEXT_COLUMNS)
SCHEMA = f"CREATE TABLE public.person (id bigint PRIMARY KEY, {COLUMN_DEFINITIONS})"
# The e-mail of person g (also written on the target for the planted leak).
EMAIL = "lower(n.f) || '.' || lower(n.l) || g || '@' || (%(domains)s::text[])[1 + g %% 6]"
NAMES = """LATERAL (SELECT (%(firsts)s::text[])[1 + g %% %(first_count)s] AS f,
                 (%(lasts)s::text[])[1 + (g / %(first_count)s) %% %(last_count)s] AS l) n"""
ROWS = f"""
INSERT INTO public.person
SELECT g,
       {EMAIL},
       n.f || ' ' || n.l,
       '+1 555-' || lpad(((g * 7919) %% 1000)::text, 3, '0') || '-' || lpad(((g * 104729) %% 10000)::text, 4, '0'),
       (1 + (g * 7919) %% 9999) || ' ' || (%(streets)s::text[])[1 + (g * 13) %% %(street_count)s] || ' '
           || (%(street_types)s::text[])[1 + (g / 3) %% 10] || CASE WHEN g %% 10 = 0 THEN ', Apt ' || (1 + g %% 400) ELSE '' END,
       lpad((100 + (g * 7919) %% 800)::text, 3, '0') || '-' || lpad((1 + (g * 31) %% 99)::text, 2, '0') || '-'
           || lpad(((g * 48271) %% 10000)::text, 4, '0'),
       city,
       (ARRAY['IL', 'OH', 'TX', 'CA', 'NY', 'WA', 'GA', 'MI', 'PA', 'OR'])[1 + g %% 10],
       lpad(((g * 7919) %% 100000)::text, 5, '0'),
       CASE WHEN g %% 20 = 0 THEN 'CA' ELSE 'US' END,
       (%(company_first)s::text[])[1 + g %% 10] || ' ' || (%(company_second)s::text[])[1 + (g / 10) %% 10]
           || (ARRAY[' Inc', ' LLC', ' Group'])[1 + (g / 100) %% 3],
       (ARRAY['Account Manager', 'Software Engineer', 'Nurse Practitioner', 'Sales Associate', 'Data Analyst',
              'Operations Lead', 'Teacher', 'Warehouse Supervisor', 'Graphic Designer', 'Accountant'])[1 + (g * 7) %% 10],
       (ARRAY['active', 'active', 'active', 'suspended', 'closed', 'pending'])[1 + g %% 6],
       'PLN-' || (ARRAY['FREE', 'BASIC', 'PLUS', 'GOLD'])[1 + g %% 4] || '-' || (1 + g %% 24),
       upper(substr(md5(g::text), 1, 10)),
       (ARRAY['en-US', 'en-US', 'es-US', 'fr-CA', 'en-CA'])[1 + g %% 5],
       (ARRAY['America/Chicago', 'America/New_York', 'America/Denver', 'America/Los_Angeles'])[1 + g %% 4],
       (ARRAY['web', 'ios', 'android', 'partner', 'store'])[1 + (g * 3) %% 5],
       (ARRAY['iPhone 15 / iOS 17.4', 'Pixel 8 / Android 14', 'Windows 11 / Chrome 122', 'MacBook Air / Safari 17',
              'Galaxy S23 / Android 14'])[1 + g %% 5],
       'Order ' || (4000000 + (g * 7919) %% 1000000) || ' was '
           || (ARRAY['shipped', 'packed', 'returned', 'delayed'])[1 + g %% 4] || ' on '
           || to_char(DATE '2023-01-01' + (g %% 500)::integer, 'YYYY-MM-DD') || '; the '
           || (ARRAY['blue kettle', 'garden hose', 'desk lamp', 'rain jacket', 'coffee grinder'])[1 + g %% 5]
           || ' leaves the ' || city || ' warehouse.',
       '{{"plan": "' || (ARRAY['free', 'basic', 'plus', 'gold'])[1 + g %% 4] || '", "newsletter": '
           || (g %% 3 = 0)::text || ', "score": ' || (g * 7919) %% 100 || ', "tags": ["'
           || (ARRAY['beta', 'vip', 'churn-risk', 'wholesale'])[1 + g %% 4] || '", "'
           || (ARRAY['mobile', 'desktop', 'tablet'])[1 + g %% 3] || '"], "since": "'
           || to_char(DATE '2018-01-01' + ((g * 31) %% 2000)::integer, 'YYYY-MM-DD') || '"}}'
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g,
     {NAMES},
     LATERAL (SELECT (%(city_roots)s::text[])[1 + g %% 15] || (%(city_ends)s::text[])[1 + (g / 15) %% 20] AS city) c
"""
BATCH = 250_000


@dataclass(frozen=True)
class Lists:
    """The name and street lists the data was built from (what veil.dictionary left)."""

    firsts: list[str]
    lasts: list[str]
    streets: list[str]

    def parameters(self) -> dict[str, Any]:
        return {
            "firsts": self.firsts,
            "lasts": self.lasts,
            "first_count": len(self.firsts),
            "last_count": len(self.lasts),
            "streets": self.streets,
            "street_count": len(self.streets),
            "street_types": STREET_TYPES,
            "domains": DOMAINS,
            "city_roots": CITY_ROOTS,
            "city_ends": CITY_ENDS,
            "company_first": COMPANY_FIRST,
            "company_second": COMPANY_SECOND,
        }


@dataclass
class Verify:
    seconds: float
    status: int
    max_rss_kib: int
    report: dict[str, Any]

    @property
    def timings(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.report.get("timings", {}).items()}

    @property
    def leak_scan(self) -> float:
        return self.timings.get("fingerprints", 0.0) + self.timings.get("search", 0.0)


@dataclass
class Floor:
    seconds: float
    copy: float
    search: float
    values: int
    matches: int


def build(conn: psycopg.Connection[Any], rows: int) -> Lists:
    """public.person and the policy `bench`; the lists, without veil.dictionary's names."""
    known = {
        str(v)
        for (v,) in conn.execute(
            "SELECT lower(value) FROM veil.dictionary WHERE name IN ('first_name', 'last_name')"
        ).fetchall()
    }
    lists = Lists(*([w for w in words if w.lower() not in known] for words in (FIRST_NAMES, LAST_NAMES, STREETS)))
    conn.execute(SCHEMA.encode())
    for first in range(1, rows + 1, BATCH):
        parameters = lists.parameters() | {"first": first, "last": min(rows, first + BATCH - 1)}
        conn.execute(ROWS.encode(), parameters)
    conn.execute("VACUUM ANALYZE public.person")
    conn.execute("SELECT veil.create_policy(%s, 'static')", (POLICY,))
    rules = {"id": "NOT MASKED"} | {c: TRANSFORMED.get(c, "NOT MASKED") for c in TEXT_COLUMNS}
    for column, label in rules.items():
        conn.execute("SELECT veil.security_label(%s, 'column', %s, %s)", (POLICY, f"public.person.{column}", label))
    conn.execute("CHECKPOINT")
    return lists


@contextmanager
def target_database(source_url: str) -> Iterator[str]:
    """A fresh database of the source's server, dropped afterwards."""
    admin_url = database_url(source_url, "postgres")
    dbname = f"vb_verify_target_{secrets.token_hex(3)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        yield database_url(source_url, dbname)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))


def sync(source: str, target: str, rows: int) -> float:
    """`pgveil sync` of the source into the target, checked (every row, e-mails
    changed) and vacuumed (hint bits set before any timed read); its seconds."""
    started = time.perf_counter()
    done = subprocess.run(
        [*PGVEIL, "sync", "--source", source, "--target", target, "--policy", POLICY],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pgveil sync failed: {done.stderr.strip()}")
    query = "SELECT id, email FROM public.person WHERE id <= %s"
    with psycopg.connect(source) as src, psycopg.connect(target, autocommit=True) as copy:
        raw: dict[int, str] = dict(src.execute(query, (PLANTED,)).fetchall())
        masked: dict[int, str] = dict(copy.execute(query, (PLANTED,)).fetchall())
        count = copy.execute("SELECT count(*) FROM public.person").fetchone()
        copy.execute("VACUUM ANALYZE public.person")
    if count != (rows,) or raw.keys() != masked.keys() or any(raw[k] == masked[k] for k in raw):
        raise SystemExit(f"pgveil sync: the target holds {count} rows or unmasked e-mails")
    return seconds


def read(url: str) -> tuple[float, int]:
    """One full read of the 20 text columns, discarded by the client: seconds, bytes."""
    query = sql.SQL("COPY (SELECT {} FROM public.person) TO STDOUT").format(
        sql.SQL(", ").join(map(sql.Identifier, TEXT_COLUMNS))
    )
    size = 0
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur, cur.copy(query) as copy:
        for block in copy:
            size += len(block)
    return time.perf_counter() - started, size


# The target's text columns as pgveil's search lists them: values, numbers, JSON or not.
VALUES = sql.SQL(", ").join(sql.SQL("src.{}::text").format(sql.Identifier(c)) for c in TEXT_COLUMNS)
NUMBERS = sql.SQL(", ").join(sql.Literal(n) for n in range(1, len(TEXT_COLUMNS) + 1))
NOT_JSON = sql.SQL(", ").join(sql.Literal(False) for _ in TEXT_COLUMNS)


def measure_floor(
    source: str, target: str, work_mem: str, table: str, columns: str, values: sql.Composed, search: sql.Composed
) -> Floor:
    """A floor's two steps: the rows of the source's query `values` COPYed (binary)
    into a temporary table of the target session (analyzed), then `search` run
    there with pgveil's work_mem; the search's rows end with a count of matches."""
    with psycopg.connect(source, autocommit=True) as src, psycopg.connect(target, autocommit=True) as tgt:
        started = time.perf_counter()
        tgt.execute(sql.SQL("CREATE TEMPORARY TABLE {} ({})").format(sql.Identifier(table), sql.SQL(columns)))
        copy_out = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(values)
        copy_in = sql.SQL("COPY pg_temp.{} FROM STDIN (FORMAT binary)").format(sql.Identifier(table))
        with src.cursor() as out_cur, tgt.cursor() as in_cur:
            with in_cur.copy(copy_in) as sink, out_cur.copy(copy_out) as stream:
                for chunk in stream:
                    sink.write(chunk)
            loaded = in_cur.rowcount
        tgt.execute(sql.SQL("ANALYZE pg_temp.{}").format(sql.Identifier(table)))
        copied = time.perf_counter()
        tgt.execute(sql.SQL("SET work_mem = {}").format(sql.Literal(work_mem)))
        matches = sum(int(r[-1]) for r in tgt.execute(search).fetchall())
        finished = time.perf_counter()
    return Floor(finished - started, copied - started, finished - copied, loaded, matches)


def floor(source: str, target: str, work_mem: str) -> Floor:
    """Whole values only: the source's distinct values of the transformed columns,
    every value of the target's text columns joined with them by equality."""
    values = sql.SQL(" UNION ").join(
        sql.SQL("SELECT {}, {}::text FROM public.person").format(sql.Literal(n), sql.Identifier(c))
        for n, c in enumerate(TRANSFORMED, 1)
    )
    search = sql.SQL(
        "SELECT u.column_no, f.column_id, count(*) FROM public.person AS src"
        " CROSS JOIN LATERAL ROWS FROM (unnest(ARRAY[{}]), unnest(ARRAY[{}])) AS u(value, column_no)"
        " JOIN pg_temp.floor_values AS f ON f.value = u.value GROUP BY 1, 2"
    ).format(VALUES, NUMBERS)
    columns = "column_id integer NOT NULL, value text NOT NULL"
    return measure_floor(source, target, work_mem, "floor_values", columns, values, search)


def floor_with_words(source: str, target: str, work_mem: str) -> Floor:
    """Whole values and words inside text, in raw text: the source's forms as
    pgveil's fingerprint query forms them, without its hash and dictionary; the
    target's values and runs of 1 to 3 words as pgveil's search builds them
    (words computed once per value, runs by unnest of slices, the same byte-length
    filters), without its hash and row places; joined by equality."""
    with psycopg.connect(source, autocommit=True) as conn:
        # pgveil's own expressions of the forms, so both sides split words alike.
        forms = conn.execute(
            "SELECT veil_private.leak_whole_sql('v.value'), veil_private.leak_tokens_sql('v.value'),"
            " veil_private.leak_whole_sql('u.value'), veil_private.leak_tokens_sql('u.value')"
        ).fetchone()
    assert forms is not None
    whole, tokens, target_whole, target_tokens = (sql.SQL(str(f)) for f in forms)
    columns = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, src.{}::text FROM public.person AS src").format(sql.Literal(n), sql.Identifier(c))
        for n, c in enumerate(TRANSFORMED, 1)
    )
    values = sql.SQL(
        """SELECT v.column_id, f.form, f.in_text
FROM ({}) AS v(column_id, value)
CROSS JOIN LATERAL (SELECT {} AS whole, {} AS tokens OFFSET 0) AS x
CROSS JOIN LATERAL (SELECT array_to_string(x.tokens, ' ') AS joined) AS y
CROSS JOIN LATERAL (SELECT cardinality(x.tokens) <= {} AND length(y.joined) >= {} AS searchable) AS s
CROSS JOIN LATERAL (VALUES (x.whole, false), (y.joined, true)) AS f(form, in_text)
WHERE length(f.form) >= {} AND CASE WHEN f.in_text THEN s.searchable ELSE NOT (s.searchable AND y.joined = x.whole) END
GROUP BY 1, 2, 3"""
    ).format(columns, whole, tokens, MAX_WORDS, TEXT_MIN_LENGTH, MIN_LENGTH)
    slices = sql.SQL(", ").join(sql.SQL("unnest(w.tokens[{}:])").format(k) for k in range(1, MAX_WORDS + 1))
    words = sql.SQL(", ").join(sql.Identifier(f"w{k}") for k in range(1, MAX_WORDS + 1))
    runs = sql.SQL(", ").join(
        sql.SQL(" || ' ' || ").join(sql.SQL("r.{}").format(sql.Identifier(f"w{m}")) for m in range(1, k + 1))
        for k in range(1, MAX_WORDS + 1)
    )
    search = sql.SQL(
        """SELECT m.column_no, f.column_id, count(*)
FROM (
    SELECT u.column_no, {} AS form, true AS whole
    FROM public.person AS src
    CROSS JOIN LATERAL ROWS FROM (unnest(ARRAY[{}]), unnest(ARRAY[{}])) AS u(value, column_no)
    WHERE octet_length(u.value) >= {}
    UNION ALL
    SELECT u.column_no, x.run, false
    FROM public.person AS src
    CROSS JOIN LATERAL ROWS FROM (unnest(ARRAY[{}]), unnest(ARRAY[{}]), unnest(ARRAY[{}])) AS u(value, column_no, is_json)
    CROSS JOIN LATERAL (SELECT {} AS tokens OFFSET 0) AS w
    CROSS JOIN LATERAL ROWS FROM ({}) AS r({})
    CROSS JOIN LATERAL unnest(ARRAY[{}]) AS x(run)
    WHERE octet_length(u.value) >= {}
      AND (u.is_json OR strpos(u.value, ' ') > 0 OR strpos(u.value, ',') > 0 OR strpos(u.value, E'\\n') > 0)
      AND octet_length(x.run) >= {}
) AS m
JOIN pg_temp.floor_forms AS f ON f.form = m.form AND (m.whole OR f.in_text)
GROUP BY 1, 2"""
    ).format(
        target_whole, VALUES, NUMBERS, MIN_LENGTH,
        VALUES, NUMBERS, NOT_JSON, target_tokens, slices, words, runs, TEXT_MIN_LENGTH, TEXT_MIN_LENGTH,
    )  # fmt: skip
    columns_ddl = "column_id integer NOT NULL, form text NOT NULL, in_text boolean NOT NULL"
    return measure_floor(source, target, work_mem, "floor_forms", columns_ddl, values, search)


def verify(source: str, target: str, work_mem: str) -> Verify:
    """`pgveil verify --json` as a process (through the bare launcher, for its own
    peak RSS): wall time, exit status, peak RSS, report. Fails on exit status 2."""
    command = [*PGVEIL, "verify", "--source", source, "--target", target, "--policy", POLICY]
    command += ["--work-mem", work_mem, "--json"]
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as errors,
        tempfile.NamedTemporaryFile("r") as result,
    ):
        launcher = [sys.executable, "-S", "-c", LAUNCHER, result.name, *command]
        subprocess.run(launcher, stdout=out, stderr=errors, env=dict(os.environ, DATABASE_URL=source), check=True)
        seconds, status, max_rss_kib = result.read().split()
        out.seek(0)
        document = out.read().decode()
        if int(status) not in (0, 1) or not document.strip():
            errors.seek(0)
            raise SystemExit(f"pgveil verify failed ({status}): {errors.read().decode(errors='replace').strip()}")
    return Verify(float(seconds), int(status), int(max_rss_kib), json.loads(document))


def best(repeat: int, once: Callable[[], Any], seconds: Callable[[Any], float]) -> Any:
    return min((once() for _ in range(repeat)), key=seconds)


def leaks(report: dict[str, Any]) -> list[dict[str, Any]]:
    return list(report.get("leak_scan", {}).get("leaks", []))


def print_leaks(report: dict[str, Any]) -> None:
    for leak in leaks(report):
        print(f"    {leak['source']} -> {leak['target']}: {leak['rows']} rows ({leak['how']})")
    for check in report.get("checks", []):
        if check.get("status") in ("warn", "fail"):
            print(f"    {check.get('status')}: {json.dumps({k: v for k, v in check.items() if k != 'status'})}")


def planted(source: str, target: str, lists: Lists, work_mem: str) -> bool:
    """100 source e-mails written into the target's note (rebuilt from the data's
    own expression, checked against the source), verify run, the notes restored."""
    email = f"SELECT {EMAIL} FROM (SELECT id AS g FROM public.person WHERE id <= %(planted)s) AS p, {NAMES}"
    parameters = lists.parameters() | {"planted": PLANTED}
    with psycopg.connect(source) as src:
        same = src.execute(
            f"SELECT count(*) FROM public.person WHERE id <= %(planted)s AND email IN ({email})".encode(), parameters
        ).fetchone()
    if same != (PLANTED,):
        raise SystemExit(f"planted leak: {same} of the {PLANTED} written e-mails are the source's")
    update = f"""UPDATE public.person AS t SET note = t.note || ' contact ' || e.email
        FROM (SELECT p.g, {EMAIL} AS email FROM (SELECT id AS g FROM public.person WHERE id <= %(planted)s) AS p, {NAMES}) AS e
        WHERE t.id = e.g"""
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute(update.encode(), parameters)
    try:
        run = verify(source, target, work_mem)
    finally:
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("UPDATE public.person SET note = split_part(note, ' contact ', 1) WHERE id <= %s", (PLANTED,))
            conn.execute("VACUUM ANALYZE public.person")
    found = [
        x for x in leaks(run.report) if (x["source"], x["target"]) == ("public.person.email", "public.person.note")
    ]
    rows = sum(int(x["rows"]) for x in found)
    ok = run.status == 1 and rows >= PLANTED
    print(
        f"{'planted leak: exit status, rows email -> note':58} {run.status:8} {rows:>6}"
        f"  expected 1, >= {PLANTED}  {'ok' if ok else 'MISSED'}"
    )
    print_leaks(run.report)
    return ok


def verify_available() -> bool:
    """Whether this tree has `pgveil verify` (the benchmark's candidate)."""
    result = subprocess.run([*PGVEIL, "verify", "--help"], capture_output=True, check=False)
    return result.returncode == 0


Row = tuple[str, float | None, str, float | None, str, bool | None]  # label, value, unit, x read, target, ok


def table(rows: Sequence[Row]) -> None:
    print(f"\n{'':58} {'value':>10} {'x read':>8}  {'target':10} ok")
    for label, value, unit, ratio, target, ok in rows:
        v = f"{value:8.2f}{unit:>2}" if value is not None else f"{'':10}"
        r = f"{ratio:7.2f}x" if ratio is not None else f"{'':8}"
        verdict = "" if ok is None else ("ok" if ok else "MISSED")
        print(f"{label:58} {v} {r}  {target:10} {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timing; the fastest counts")
    parser.add_argument("--work-mem", default="256MB", help="work_mem of pgveil's search and of the floor's")
    parser.add_argument("--baseline-only", action="store_true", help="build the data and time the baselines only")
    args = parser.parse_args()
    candidate = not args.baseline_only and verify_available()
    if not args.baseline_only and not candidate:
        print("`pgveil verify` is not available in this tree: baselines only")

    ok = True
    with bench_database("vb_verify") as url:
        source = libpq_url(url)
        with psycopg.connect(source, autocommit=True) as conn:
            started = time.perf_counter()
            lists = build(conn, args.rows)
            gather = conn.execute("SHOW max_parallel_workers_per_gather").fetchone()
        print(
            f"person: {args.rows:,} rows, {len(TEXT_COLUMNS)} text columns, {len(TRANSFORMED)} transformed;"
            f" {len(lists.firsts)}x{len(lists.lasts)} names; built in {time.perf_counter() - started:.1f} s;"
            f" {os.cpu_count()} CPUs, max_parallel_workers_per_gather {gather[0] if gather else '?'}"
        )
        with target_database(source) as target:
            print(f"{'pgveil sync into the target (information)':58} {sync(source, target, args.rows):8.2f} s")
            read(target)  # warms the cache for everything after it
            reads = [read(target) for _ in range(args.repeat)]
            baseline, size = min(reads)
            print(
                f"{'read: COPY of the target 20 text columns (psycopg)':58} {baseline:8.2f} s"
                f"  ({size / 2**20:.0f} MB; runs {', '.join(f'{s:.2f}' for s, _ in reads)})"
            )
            low: Floor = best(args.repeat, lambda: floor(source, target, args.work_mem), lambda f: f.seconds)
            print(
                f"{'floor: distinct values COPYed in, one hash join':58} {low.seconds:8.2f} s"
                f"  (copy {low.copy:.2f}: {low.values:,} values; search {low.search:.2f}; {low.matches} matches)"
            )
            words: Floor = best(
                args.repeat, lambda: floor_with_words(source, target, args.work_mem), lambda f: f.seconds
            )
            print(
                f"{'floor with words: forms COPYed in, values and runs joined':58} {words.seconds:8.2f} s"
                f"  (copy {words.copy:.2f}: {words.values:,} forms; search {words.search:.2f}; {words.matches} matches)"
            )
            out_of_reach = low.seconds > RATIO_TARGET * baseline
            rows: list[Row] = [
                ("read (baseline)", baseline, "s", 1.0, "", None),
                ("floor: copy of the source's distinct values", low.copy, "s", low.copy / baseline, "", None),
                ("floor: hash join of every target value", low.search, "s", low.search / baseline, "", None),
                ("floor", low.seconds, "s", low.seconds / baseline, "", None),
                ("floor with words: copy", words.copy, "s", words.copy / baseline, "", None),
                ("floor with words: search", words.search, "s", words.search / baseline, "", None),
                ("floor with words", words.seconds, "s", words.seconds / baseline, "", None),
            ]
            if candidate:
                ours: Verify = best(args.repeat, lambda: verify(source, target, args.work_mem), lambda v: v.seconds)
                scan = ours.report.get("leak_scan", {})
                print(
                    f"{'pgveil verify (whole command)':58} {ours.seconds:8.2f} s  (exit {ours.status}, "
                    f"{scan.get('fingerprints')} fingerprints, {scan.get('searched_columns')} columns searched,"
                    f" peak RSS {ours.max_rss_kib / 1024:.0f} MB)"
                )
                clean = ours.status == 0 and ours.report.get("result") == "pass"
                if not clean:
                    print("  the clean copy did not pass:")
                    print_leaks(ours.report)
                timings = ours.timings
                scan_ratio = ours.leak_scan / baseline
                to_words = ours.leak_scan / words.seconds
                label = "leak scan (fingerprints + search)"
                words_label = "leak scan / floor with words"
                if out_of_reach:
                    # The 3x the read is below the work itself: judged against the floor with words.
                    gate_ok = to_words <= WORDS_TARGET
                    rows.append((label, ours.leak_scan, "s", scan_ratio, "info", None))
                    rows.append((words_label, to_words, "x", None, f"<= {WORDS_TARGET}x", gate_ok))
                else:
                    gate_ok = scan_ratio <= RATIO_TARGET
                    rows.append((label, ours.leak_scan, "s", scan_ratio, f"<= {RATIO_TARGET:g}x", gate_ok))
                    rows.append((words_label, to_words, "x", None, "info", None))
                rows.append(("leak scan / floor", ours.leak_scan / low.seconds, "x", None, "info", None))
                for phase in ("fingerprints", "search", "patterns", "structure"):
                    if phase in timings:
                        rows.append((f"  verify: {phase}", timings[phase], "s", timings[phase] / baseline, "", None))
                rows.append(("pgveil verify (whole command)", ours.seconds, "s", ours.seconds / baseline, "info", None))
                rss = ours.max_rss_kib / 1024
                rss_ok = rss < RSS_TARGET_MB
                rows.append(("pgveil verify peak RSS", rss, "MB", None, f"< {RSS_TARGET_MB} MB", rss_ok))
                rows.append(("clean copy: exit 0, result pass", float(ours.status), "", None, "exit 0", clean))
                planted_ok = planted(source, target, lists, args.work_mem)
                rows.append(("planted leak: exit 1, >= 100 rows email -> note", None, "", None, "found", planted_ok))
                ok &= gate_ok and rss_ok and clean and planted_ok
            table(rows)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
