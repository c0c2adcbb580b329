"""Re-identification risk: veil.k_anonymity (sql/0011_verify/30_k_anonymity.sql),
pgveil.services.k_anonymity and `pgveil report k-anonymity` (pgveil.cli_report)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import typer
from typer.testing import CliRunner, Result

from pgveil import cli_report
from pgveil.errors import PgveilError
from pgveil.services.k_anonymity import KAnonymity, k_anonymity
from tests.conftest import Database
from tests.helpers import demo_analyst, label, seed

FIGURES = (
    "k",
    "total_rows",
    "classes",
    "classes_below_threshold",
    "rows_below_threshold",
    "share_below_threshold",
    "smallest_classes",
    "l_diversity",
    "classes_not_diverse",
)

# public.patient, classes over (zip, age), sensitive column diagnosis:
#   ('75001', 30): 3 rows, diagnoses flu, flu, cold     -> 2 distinct
#   ('75001', 40): 2 rows, diagnoses cold, cold         -> 1 distinct
#   ('75002', 30): 4 rows, flu, cold, asthma, NULL      -> 4 distinct (NULL is one value)
#   (NULL, 30):    2 rows, flu, NULL                    -> 2 distinct (the NULL zips are one class)
# 11 rows in 4 classes; k = 2; below threshold 3: the two classes of 2, 4 rows, 4/11;
# smallest sizes 2, 2, 3, 4; l = 1 (the cold/cold class), and it is the only class with
# fewer than 2 distinct diagnoses.
PATIENTS = [
    ("75001", 30, "flu"),
    ("75001", 30, "flu"),
    ("75001", 30, "cold"),
    ("75001", 40, "cold"),
    ("75001", 40, "cold"),
    ("75002", 30, "flu"),
    ("75002", 30, "cold"),
    ("75002", 30, "asthma"),
    ("75002", 30, None),
    (None, 30, "flu"),
    (None, 30, None),
]
RAW_VALUE = "Zz-raw-value-4711"


def figures(m: KAnonymity) -> dict[str, Any]:
    return {name: getattr(m, name) for name in FIGURES}


def sql_figures(db: Database, call: str, params: tuple[Any, ...] = ()) -> dict[str, Any]:
    row = db.execute(f"SELECT {', '.join(FIGURES)} FROM {call}", params).fetchone()
    return dict(zip(FIGURES, row, strict=True))


@pytest.fixture
def patients(toolkit: Database) -> Database:
    toolkit.execute("CREATE TABLE public.patient (id serial PRIMARY KEY, zip text, age integer, diagnosis text)")
    with toolkit.admin.cursor().copy("COPY public.patient (zip, age, diagnosis) FROM STDIN") as copy:
        for row in PATIENTS:
            copy.write_row(row)
    return toolkit


def test_hand_computed_classes(patients: Database) -> None:
    measured = k_anonymity(patients.url, "patient", ["zip", "age"], threshold=3, sensitive="diagnosis")
    assert measured == KAnonymity(
        table="public.patient",
        quasi_identifiers=("zip", "age"),
        threshold=3,
        sensitive="diagnosis",
        policy=None,
        k=2,
        total_rows=11,
        classes=4,
        classes_below_threshold=2,
        rows_below_threshold=4,
        share_below_threshold=pytest.approx(4 / 11),
        smallest_classes=(2, 2, 3, 4),
        l_diversity=1,
        classes_not_diverse=1,
    )
    # The SQL function returns the same row (arrays as lists, the share as numeric).
    row = sql_figures(patients, "veil.k_anonymity('public.patient', '{zip,age}', 3, 'diagnosis')")
    assert row == {
        **figures(measured),
        "share_below_threshold": pytest.approx(Decimal(4) / Decimal(11)),
        "smallest_classes": [2, 2, 3, 4],
    }
    # Threshold 1: no class is smaller. Without a sensitive column, no l-diversity.
    plain = k_anonymity(patients.url, "public.patient", ["zip", "age"], threshold=1)
    assert (plain.classes_below_threshold, plain.rows_below_threshold, plain.share_below_threshold) == (0, 0, 0.0)
    assert (plain.l_diversity, plain.classes_not_diverse) == (None, None)
    # One quasi-identifier: zip alone makes classes of 5, 4 and 2 (the NULLs).
    assert k_anonymity(patients.url, "patient", ["zip"]).smallest_classes == (2, 4, 5)


def test_an_empty_table_has_no_k(patients: Database) -> None:
    patients.execute("TRUNCATE public.patient")
    m = k_anonymity(patients.url, "patient", ["zip"], sensitive="diagnosis")
    assert (m.k, m.total_rows, m.classes, m.rows_below_threshold, m.share_below_threshold) == (None, 0, 0, 0, 0.0)
    assert (m.smallest_classes, m.l_diversity, m.classes_not_diverse) == ((), None, 0)


def test_matches_an_independent_computation_on_a_larger_table(toolkit: Database) -> None:
    rng = random.Random(20)
    zips = [f"{75000 + i:05d}" for i in range(12)] + [None]
    years = [*range(1950, 2000, 5), None]
    rows = [
        (
            rng.choices(zips, weights=range(len(zips), 0, -1))[0],
            rng.choices(years, weights=[1 + i * i for i in range(len(years))])[0],
            rng.choice(["F", "M"]),
            rng.choice(["flu", "cold", "asthma", None]) if rng.random() < 0.7 else "flu",
        )
        for _ in range(6000)
    ]
    toolkit.execute("CREATE TABLE public.visit (zip text, birth_year integer, sex text, diagnosis text)")
    with toolkit.admin.cursor().copy("COPY public.visit FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)

    def expected(threshold: int) -> dict[str, Any]:
        classes = Counter((z, y, s) for z, y, s, _ in rows)
        diagnoses: dict[tuple[Any, ...], set[str | None]] = defaultdict(set)
        for z, y, s, d in rows:
            diagnoses[(z, y, s)].add(d)
        sizes = sorted(classes.values())
        below = [n for n in sizes if n < threshold]
        return {
            "k": sizes[0],
            "total_rows": len(rows),
            "classes": len(sizes),
            "classes_below_threshold": len(below),
            "rows_below_threshold": sum(below),
            "share_below_threshold": pytest.approx(sum(below) / len(rows)),
            "smallest_classes": tuple(sizes[:10]),
            "l_diversity": min(len(d) for d in diagnoses.values()),
            "classes_not_diverse": sum(1 for d in diagnoses.values() if len(d) < 2),
        }

    for threshold in (5, 20):
        want = expected(threshold)
        # The data make every figure count: some classes below, some not; some homogeneous.
        assert 0 < want["classes_below_threshold"] < want["classes"]
        assert want["l_diversity"] == 1 and 0 < want["classes_not_diverse"] < want["classes"]
        got = k_anonymity(
            toolkit.url, "visit", ["zip", "birth_year", "sex"], threshold=threshold, sensitive="diagnosis"
        )
        assert figures(got) == want


@pytest.fixture
def generalized(toolkit: Database) -> Database:
    """public.person and policy gen: zip keeps its first 3 digits, age becomes its decade."""
    toolkit.execute("CREATE TABLE public.person (zip text, age integer, diagnosis text, name text)")
    # Raw: every zip differs, so every class has one row. Under gen, (zip, age):
    #   ('750**', 30): 75001/31, 75002/38, 75003/35         -> 3 rows, flu, cold, flu  (2 distinct)
    #   ('690**', 40): 69001/42, 69002/47                   -> 2 rows, asthma, asthma  (1 distinct)
    #   ('130**', 20): 13001/23, 13002/25, 13003/29, 13004/21 -> 4 rows, flu, cold, NULL, flu (3 distinct)
    # k = 2; threshold 3: one class, 2 rows, 2/9; smallest 2, 3, 4; l = 1, one class.
    toolkit.execute(
        "INSERT INTO public.person VALUES ('75001', 31, 'flu', %(v)s), ('75002', 38, 'cold', %(v)s),"
        " ('75003', 35, 'flu', %(v)s), ('69001', 42, 'asthma', %(v)s), ('69002', 47, 'asthma', %(v)s),"
        " ('13001', 23, 'flu', %(v)s), ('13002', 25, 'cold', %(v)s), ('13003', 29, NULL, %(v)s),"
        " ('13004', 21, 'flu', %(v)s)",
        {"v": RAW_VALUE},
    )
    toolkit.execute("SELECT veil.create_policy('gen')")
    label(toolkit, "COLUMN", "public.person.zip", "MASKED WITH FUNCTION veil.partial(zip, 3, '**', 0)", "gen")
    label(
        toolkit,
        "COLUMN",
        "public.person.age",
        "MASKED WITH FUNCTION pg_catalog.lower(veil.generalize_int4range(age, 10))",
        "gen",
    )
    label(toolkit, "COLUMN", "public.person.diagnosis", "NOT MASKED", "gen")
    return toolkit


def test_a_policy_generalizing_rules_raise_k(generalized: Database) -> None:
    raw = k_anonymity(generalized.url, "person", ["zip", "age"], threshold=3, sensitive="diagnosis")
    assert (raw.k, raw.classes, raw.rows_below_threshold, raw.smallest_classes) == (1, 9, 9, (1,) * 9)
    masked = k_anonymity(generalized.url, "person", ["zip", "age"], threshold=3, sensitive="diagnosis", policy="gen")
    assert figures(masked) == {
        "k": 2,
        "total_rows": 9,
        "classes": 3,
        "classes_below_threshold": 1,
        "rows_below_threshold": 2,
        "share_below_threshold": pytest.approx(2 / 9),
        "smallest_classes": (2, 3, 4),
        "l_diversity": 1,
        "classes_not_diverse": 1,
    }
    # A MASKED WITH VALUE rule puts every row in one class for that column.
    label(generalized, "COLUMN", "public.person.zip", "MASKED WITH VALUE '00000'", "gen")
    by_age = k_anonymity(generalized.url, "person", ["zip", "age"], policy="gen")
    assert (by_age.k, by_age.classes, by_age.smallest_classes) == (2, 3, (2, 3, 4))
    label(generalized, "COLUMN", "public.person.age", "MASKED WITH VALUE NULL", "gen")
    assert k_anonymity(generalized.url, "person", ["zip", "age"], policy="gen").smallest_classes == (9,)


def test_a_sanitized_copy_a_mask_view_and_the_policy_they_come_from(demo: Database) -> None:
    seed(demo)  # 200 customers g = 1..200: store 1 + g % 2, e-mail 'c<g>@example.com', activebool true
    # Tokens are one-to-one: the copy's e-mails single out every customer, as the raw ones do.
    tokens = k_anonymity(demo.url, "sanitized.customer", ["email"])
    assert (tokens.k, tokens.classes, tokens.rows_below_threshold) == (1, 200, 200)
    assert k_anonymity(demo.url, "public.customer", ["email"]).classes == 200
    stores = k_anonymity(demo.url, "sanitized.customer", ["store_id"], sensitive="activebool")
    assert figures(stores) == {
        "k": 100,
        "total_rows": 200,
        "classes": 2,
        "classes_below_threshold": 0,
        "rows_below_threshold": 0,
        "share_below_threshold": 0.0,
        "smallest_classes": (100, 100),
        "l_diversity": 1,  # every customer is active: the store tells it
        "classes_not_diverse": 2,
    }
    # partial_email keeps the first two characters: 'c1' for g = 1, 10..19, 100..199 (111),
    # 'c2' for 2, 20..29, 200 (12), 'c3'..'c9' for d, d0..d9 (11 each): 9 classes, k = 11;
    # below 12: the seven classes of 11, 77 rows.
    partial = {
        "k": 11,
        "total_rows": 200,
        "classes": 9,
        "classes_below_threshold": 7,
        "rows_below_threshold": 77,
        "share_below_threshold": pytest.approx(0.385),
        "smallest_classes": (11, 11, 11, 11, 11, 11, 11, 12, 111),
        "l_diversity": None,
        "classes_not_diverse": None,
    }
    assert figures(k_anonymity(demo.url, "customer", ["email"], threshold=12, policy="mask")) == partial
    # The masked role measures its own view: "customer" is mask_public.customer for it.
    analyst = demo_analyst(demo)
    seen = k_anonymity(analyst.url, "customer", ["email"], threshold=12)
    assert seen.table == "mask_public.customer"
    assert figures(seen) == partial
    with pytest.raises(PgveilError, match="^permission denied for table customer$"):
        k_anonymity(analyst.url, "public.customer", ["email"])


def test_it_reads_only_what_the_caller_may_read(generalized: Database) -> None:
    function = generalized.execute(
        "SELECT prosecdef, proacl::text[] FROM pg_proc"
        " WHERE oid = 'veil.k_anonymity(regclass, text[], integer, text, text)'::regprocedure"
    ).fetchone()
    assert function is not None and function[0] is False  # SECURITY INVOKER
    nosy = generalized.role("nosy")
    with (
        nosy.connect() as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table person"),
    ):
        conn.execute("SELECT * FROM veil.k_anonymity('public.person', '{zip}')")
    with pytest.raises(PgveilError, match="^permission denied for table person$"):
        k_anonymity(nosy.url, "public.person", ["zip"])
    # Column privileges hold too: zip granted, age not.
    generalized.execute(f'GRANT SELECT (zip) ON public.person TO "{nosy.name}"')
    assert k_anonymity(nosy.url, "public.person", ["zip"]).k == 1
    with pytest.raises(PgveilError, match="^permission denied for table person$"):
        k_anonymity(nosy.url, "public.person", ["zip", "age"])
    # The policy's output reads veil_private: governors only, even for a reader of the table.
    generalized.execute(f'GRANT SELECT ON public.person TO "{nosy.name}"')
    with pytest.raises(PgveilError, match="^pgveil: only the toolkit owner or a superuser may measure a policy's"):
        k_anonymity(nosy.url, "public.person", ["zip"], policy="gen")


@pytest.mark.parametrize(
    ("table", "qi", "options", "message"),
    [
        ("person", [], {}, "pgveil: name at least one quasi-identifier column (and no NULL among them)"),
        ("person", ["zip", "nope", "Odd Name"], {}, 'pgveil: public.person has no column nope, "Odd Name"'),
        ("person", ["zip"], {"sensitive": "nope"}, "pgveil: public.person has no column nope"),
        ("person", ["zip"], {"threshold": 0}, "pgveil: the threshold is a class size of at least 1 (got 0)"),
        ("person", ["zip"], {"policy": "nope"}, "pgveil: there is no policy 'nope'"),
        (
            "person",
            ["zip", "name"],
            {"policy": "gen"},
            "pgveil: policy gen leaves column name of public.person out of its output (it has no rule there)",
        ),
        (
            "person",
            ["zip", "diagnosis"],
            {"sensitive": "diagnosis"},
            "pgveil: the sensitive column diagnosis is also a quasi-identifier: every class would have l = 1",
        ),
        ("nope", ["zip"], {}, "there is no table or view 'nope'"),
        ("person_zip", ["zip"], {}, "pgveil: public.person_zip is not a table or a view"),
        (
            "person_view",
            ["zip"],
            {"policy": "gen"},
            "pgveil: a policy's rules apply to tables: public.person_view is not one",
        ),
    ],
)
def test_bad_input_is_one_clear_error(
    generalized: Database, table: str, qi: list[str], options: dict[str, Any], message: str
) -> None:
    generalized.execute("CREATE INDEX person_zip ON public.person (zip)")
    generalized.execute("CREATE VIEW public.person_view AS SELECT zip FROM public.person")
    with pytest.raises(PgveilError) as refused:
        k_anonymity(generalized.url, table, qi, **options)
    assert str(refused.value) == message


def test_a_null_quasi_identifier_name_is_refused_in_sql(generalized: Database) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="name at least one quasi-identifier"):
        generalized.execute("SELECT * FROM veil.k_anonymity('public.person', ARRAY['zip', NULL])")


def test_a_value_that_fails_on_a_row_is_not_quoted(generalized: Database) -> None:
    generalized.execute("CREATE VIEW public.person_number AS SELECT name::integer AS n FROM public.person")
    with pytest.raises(PgveilError) as failed:
        k_anonymity(generalized.url, "person_number", ["n"])
    assert str(failed.value) == (
        "pgveil: measuring public.person_number failed on a row (SQLSTATE 22P02);"
        " the message is withheld: it may quote a value"
    )
    assert RAW_VALUE not in str(failed.value)


def run_report(url: str, *args: str) -> Result:
    app = typer.Typer()
    app.add_typer(cli_report.report_app, name="report")  # as pgveil/cli.py adds it
    return CliRunner().invoke(app, ["report", "k-anonymity", *args, "--database-url", url])


def test_the_cli_prints_the_measure(patients: Database) -> None:
    result = run_report(patients.url, "patient", "--qi", "zip,age", "--threshold", "3", "--sensitive", "diagnosis")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "k-anonymity of public.patient over (zip, age)" in text
    for measure, value in [
        ("k (smallest class)", "2"),
        ("rows", "11"),
        ("classes", "4"),
        ("classes smaller than 3", "2"),
        (r"rows in classes smaller than 3", r"4 \(36\.36%\)"),
        ("smallest class sizes", "2, 2, 3, 4"),
        ("l-diversity of diagnosis", "1"),
        ("classes with one value of diagnosis", "1"),
    ]:
        assert re.search(rf"│ {re.escape(measure)}\s+│\s+{value} │", text), (measure, text)
    # --qi may also be repeated.
    repeated = run_report(patients.url, "patient", "--qi", "zip", "--qi", "age", "--json")
    assert json.loads(repeated.stdout)["quasi_identifiers"] == ["zip", "age"]


def test_the_cli_prints_json_and_gates_on_min_k(patients: Database) -> None:
    passed = run_report(patients.url, "patient", "--qi", "zip,age", "--json", "--min-k", "2")
    assert passed.exit_code == 0, passed.output
    data = json.loads(passed.stdout)
    assert data == {
        "table": "public.patient",
        "quasi_identifiers": ["zip", "age"],
        "threshold": 5,
        "sensitive": None,
        "policy": None,
        "k": 2,
        "total_rows": 11,
        "classes": 4,
        "classes_below_threshold": 4,
        "rows_below_threshold": 11,
        "share_below_threshold": 1.0,
        "smallest_classes": [2, 2, 3, 4],
        "l_diversity": None,
        "classes_not_diverse": None,
        "min_k": 2,
        "ok": True,
    }
    failed = run_report(patients.url, "patient", "--qi", "zip,age", "--json", "--min-k", "3")
    assert failed.exit_code == 1
    assert json.loads(failed.stdout)["ok"] is False
    assert failed.stderr.strip() == "k = 2 is below --min-k 3"
    # Without --min-k the measure never fails the command.
    assert run_report(patients.url, "patient", "--qi", "zip,age").exit_code == 0
    text_failed = run_report(patients.url, "patient", "--qi", "zip,age", "--min-k", "3")
    assert text_failed.exit_code == 1 and "k (smallest class)" in text_failed.stdout


def test_the_cli_reports_bad_input_on_one_line(patients: Database) -> None:
    for args, message in [
        (["patient", "--qi", "zip,,age"], "error: --qi names columns separated by commas (got 'zip,,age')"),
        (["patient", "--qi", "nope"], "error: pgveil: public.patient has no column nope"),
        (["nope", "--qi", "zip"], "error: there is no table or view 'nope'"),
    ]:
        result = run_report(patients.url, *args)
        assert (result.exit_code, result.stdout, result.stderr.strip()) == (1, "", message)
