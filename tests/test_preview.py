"""`pgveil view-fields` and `pgveil view-data`, and `veil.preview` under them, against a real database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer
from typer.testing import CliRunner, Result

from pgveil import cli_common, cli_review
from pgveil.errors import PgveilError
from pgveil.services import preview
from tests.conftest import Database
from tests.helpers import demo_analyst, label, seed

DENIED = psycopg.errors.InsufficientPrivilege
PREVIEW = "SELECT * FROM veil.preview(%s, %s::regclass, %s, %s)"


def run(*args: str) -> Result:
    app = typer.Typer()
    cli_review.register(app)
    return CliRunner().invoke(app, list(args))


def fails_with(result: Result, message: str) -> None:
    """Exit 1, one line on stderr naming the problem, no traceback, nothing on stdout."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich tables on one line per row, so that cells can be read back."""
    monkeypatch.setattr(cli_common.out, "_width", 400)


def user_columns(db: Database) -> list[tuple[str, str, str]]:
    """Every column of the demo's own tables (Alembic's version table is pgveil's)."""
    rows = db.execute(
        "SELECT n.nspname::text, c.relname::text, a.attname::text FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public' AND c.relname <> 'pgveil_version'"
        " ORDER BY 1, 2, a.attnum"
    ).fetchall()
    return [tuple(r) for r in rows]


SCAN: dict[str, Any] = {
    "pgveil_scan": 1,
    "database": "db",
    "policy": "mask",
    "mode": "partial",
    "sample": 10000,
    "scanned_at": "2026-12-04T21:00:00+00:00",
    "columns": [
        {
            "schema": "public",
            "table": "customer",
            "column": "email",
            "type": "text",
            "sensitive": True,
            "kind": "email",
            "embedded": [],
            "paths": [],
            "confidence": 0.97,
            "reason": "column name matches e-mail (en); 998 of 1000 sampled values are e-mail addresses",
            "rule": "MASKED WITH FUNCTION veil.partial_email(email)",
        },
        {
            "schema": "public",
            "table": "address",
            "column": "postal_code",
            "type": "text",
            "sensitive": True,
            "kind": "postal_address",
            "embedded": [],
            "paths": [],
            "confidence": 0.8,
            "reason": "column name matches postal code (en)",
            "rule": None,
        },
        {
            "schema": "public",
            "table": "customer",
            "column": "store_id",
            "type": "smallint",
            "sensitive": False,
            "kind": None,
            "embedded": [],
            "paths": [],
            "confidence": 0.0,
            "reason": "no personal data found in 1000 sampled values",
            "rule": None,
        },
    ],
    "skipped": [],
}


def write_scan(tmp_path: Path, data: Any = SCAN, text: str | None = None) -> str:
    path = tmp_path / "scan.json"
    path.write_text(text if text is not None else json.dumps(data), encoding="utf-8")
    return str(path)


# -- view-fields ---------------------------------------------------------------


def test_view_fields_lists_every_column_of_the_demo_with_the_mask_policys_rules(demo):
    with psycopg.connect(demo.url) as conn:
        fields = preview.view_fields(conn, "mask")
    assert [(f.schema, f.table, f.column) for f in fields] == user_columns(demo)
    assert not {f.schema for f in fields} & {"veil", "veil_private", "sanitized", "mask_public"}
    rules = {
        (r[0], r[1], r[2]): r[3]
        for r in demo.execute(
            "SELECT schema_name, table_name, column_name, label FROM veil.rules"
            " WHERE policy = 'mask' AND object_type = 'COLUMN'"
        ).fetchall()
    }
    assert {(f.schema, f.table, f.column): f.rule for f in fields if f.rule is not None} == rules
    by_name = {(f.table, f.column): f for f in fields}
    assert by_name["customer", "email"].rule == "MASKED WITH FUNCTION veil.partial_email(email)"
    assert by_name["customer", "email"].type == "text"
    assert by_name["customer", "store_id"].rule == "NOT MASKED"
    assert by_name["address", "postal_code"].rule is None  # the demo leaves it without a rule
    assert by_name["payment", "amount"].type == "numeric(5,2)"

    result = run("view-fields", "--json", "--page-size", "1000", "--database-url", demo.url)
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["total"] == len(fields) and shown["pages"] == 1
    assert [(c["schema"], c["table"], c["column"], c["rule"]) for c in shown["columns"]] == [
        (f.schema, f.table, f.column, f.rule) for f in fields
    ]


def test_view_fields_of_another_policy_shows_its_rules(demo):
    result = run("view-fields", "--policy", "sanitized", "--json", "--page-size", "1000", "--database-url", demo.url)
    assert result.exit_code == 0, result.stderr
    rules = {(c["table"], c["column"]): c["rule"] for c in json.loads(result.stdout)["columns"]}
    assert rules["customer", "email"] == "MASKED WITH FUNCTION veil.token(email, 'email')"
    assert rules["customer", "address_id"] is None
    assert rules["address", "address"] is None


def test_only_sensitive_keeps_masked_columns_and_those_the_scan_found(demo, tmp_path):
    with psycopg.connect(demo.url) as conn:
        masked = preview.view_fields(conn, "mask", only_sensitive=True)
        with_scan = preview.view_fields(conn, "mask", only_sensitive=True, scan=preview.load_scan(write_scan(tmp_path)))
    # NOT MASKED columns and columns without a rule are left out; FUNCTION rules kept.
    assert [(f.table, f.column) for f in masked] == [
        ("address", "address"),
        ("address", "phone"),
        ("customer", "first_name"),
        ("customer", "last_name"),
        ("customer", "email"),
    ]
    # The scan adds postal_code (sensitive, no rule yet), not store_id (judged not sensitive).
    assert [(f.table, f.column) for f in with_scan] == [
        ("address", "address"),
        ("address", "postal_code"),
        ("address", "phone"),
        ("customer", "first_name"),
        ("customer", "last_name"),
        ("customer", "email"),
    ]
    label(demo, "COLUMN", "public.payment.amount", "MASKED WITH VALUE 0")
    result = run("view-fields", "--only-sensitive", "--json", "--database-url", demo.url)
    assert result.exit_code == 0, result.stderr
    assert ("payment", "amount") in {(c["table"], c["column"]) for c in json.loads(result.stdout)["columns"]}
    assert json.loads(result.stdout)["total"] == 6


def test_view_fields_pages(demo, wide):
    total = len(user_columns(demo))
    pages = -(-total // 5)
    first = run("view-fields", "--page-size", "5", "--database-url", demo.url)
    assert first.exit_code == 0, first.stderr
    assert f"page 1 of {pages} ({total} columns)" in first.stdout
    second = run("view-fields", "--page-size", "5", "--page", "2", "--json", "--database-url", demo.url)
    shown = json.loads(second.stdout)
    assert (shown["page"], shown["pages"], shown["total"]) == (2, pages, total)
    assert [(c["schema"], c["table"], c["column"]) for c in shown["columns"]] == user_columns(demo)[5:10]
    last = run("view-fields", "--page-size", "5", "--page", str(pages), "--json", "--database-url", demo.url)
    assert len(json.loads(last.stdout)["columns"]) == total - 5 * (pages - 1)
    fails_with(
        run("view-fields", "--page-size", "5", "--page", str(pages + 1), "--database-url", demo.url),
        "past the last page",
    )
    assert run("view-fields", "--page", "0", "--database-url", demo.url).exit_code == 2  # a usage error


def test_a_scan_files_reasons_are_shown(demo, tmp_path, wide):
    scan = write_scan(tmp_path)
    result = run("view-fields", "--scan", scan, "--database-url", demo.url, "--page-size", "1000")
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if " email " in line and " customer " in line)
    assert "column name matches e-mail (en); 998 of 1000 sampled values are e-mail addresses" in line
    assert "0.97" in line and " email " in line
    store = next(line for line in result.stdout.splitlines() if " store_id " in line)
    assert "not sensitive" in store and "no personal data found" in store
    unscanned = next(line for line in result.stdout.splitlines() if " first_name " in line)
    assert "(not scanned)" in unscanned

    as_json = run("view-fields", "--scan", scan, "--json", "--page-size", "1000", "--database-url", demo.url)
    columns = {(c["table"], c["column"]): c for c in json.loads(as_json.stdout)["columns"]}
    assert columns["customer", "email"]["kind"] == "email"
    assert columns["customer", "email"]["confidence"] == 0.97
    assert columns["customer", "email"]["sensitive"] is True
    assert columns["address", "postal_code"]["reason"] == "column name matches postal code (en)"
    assert columns["customer", "first_name"]["reason"] is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("this is { not json", "not JSON"),
        ("[1, 2, 3]", 'no "pgveil_scan" marker'),
        (json.dumps({"columns": []}), 'no "pgveil_scan" marker'),
        (json.dumps({"pgveil_scan": "one", "columns": []}), "not a format number"),
        (json.dumps({"pgveil_scan": 2, "columns": []}), "format 2"),
        (json.dumps({"pgveil_scan": 1, "columns": {"a": 1}}), '"columns" is not a list'),
        (json.dumps({"pgveil_scan": 1, "columns": [{"schema": "public", "table": "t"}]}), "column entry 1"),
        (
            json.dumps(
                {"pgveil_scan": 1, "columns": [{"schema": "public", "table": "t", "column": "c", "confidence": "high"}]}
            ),
            "non-numeric confidence",
        ),
    ],
)
def test_a_bad_scan_file_is_refused(demo, tmp_path, content, message):
    scan = write_scan(tmp_path, text=content)
    with pytest.raises(PgveilError, match="is not a pgveil scan file|format 2"):
        preview.load_scan(scan)
    result = run("view-fields", "--scan", scan, "--database-url", demo.url)
    fails_with(result, message)
    assert scan in result.stderr


def test_a_missing_scan_file_is_refused(demo, tmp_path):
    fails_with(run("view-fields", "--scan", str(tmp_path / "none.json"), "--database-url", demo.url), "does not exist")


def test_a_scan_files_values_never_reach_the_error(tmp_path):
    # A file that is not a scan may hold anything; the error names the file, not its text.
    scan = write_scan(tmp_path, text='{"secret": "c1@example.com", "columns": []}')
    with pytest.raises(PgveilError) as refused:
        preview.load_scan(scan)
    assert "c1@example.com" not in str(refused.value)


def test_view_fields_unknown_policy(demo):
    fails_with(run("view-fields", "--policy", "nope", "--database-url", demo.url), "there is no policy 'nope'")


# -- view-data -----------------------------------------------------------------


@pytest.fixture
def seeded(demo) -> Database:
    """12 customers inserted out of primary-key order."""
    seed(demo, customers=0, payments=0)
    demo.execute(
        "INSERT INTO customer (customer_id, store_id, first_name, last_name, email, address_id)"
        " SELECT g, 1, 'first' || g, 'last' || g, 'c' || g || '@example.com', 1 + g % 10"
        " FROM unnest(ARRAY[7, 3, 12, 1, 9, 5, 2, 11, 4, 8, 10, 6]) AS g"
    )
    return demo


def test_view_data_shows_original_beside_masked_in_primary_key_order(seeded):
    with psycopg.connect(seeded.url) as conn:
        page = preview.view_data(conn, "customer", "mask", 5, 0)
    assert page.table == "public.customer"
    names = [c.name for c in page.columns]
    assert names == [c for _, t, c in user_columns(seeded) if t == "customer"]
    assert [r.number for r in page.rows] == [1, 2, 3, 4, 5]
    column = {name: i for i, name in enumerate(names)}
    assert [r.values[column["customer_id"]] for r in page.rows] == [(str(i), str(i)) for i in range(1, 6)]
    for row in page.rows:
        n = row.number
        assert row.values[column["email"]] == (
            f"c{n}@example.com",
            seeded.scalar("SELECT veil.partial_email(%s)", (f"c{n}@example.com",)),
        )
        original, masked = row.values[column["first_name"]]
        assert original == f"first{n}" and masked and masked != original
    rules = {c.name: c.rule for c in page.columns}
    assert rules["email"] == "MASKED WITH FUNCTION veil.partial_email(email)"
    assert rules["store_id"] == "NOT MASKED"


def test_view_data_text_output_warns_on_stderr_first(seeded, wide):
    result = run("view-data", "public.customer", "--limit", "2", "--database-url", seeded.url)
    assert result.exit_code == 0, result.stderr
    assert "RAW personal data" in result.stderr and "tickets" in result.stderr
    assert "RAW" not in result.stdout
    lines = result.stdout.splitlines()
    assert any("row 1" in line for line in lines) and any("row 2" in line for line in lines)
    email = next(line for line in lines if " email " in line)
    assert "c1@example.com" in email and "c1******@ex******.com" in email
    assert "MASKED WITH FUNCTION veil.partial_email(email)" in email
    assert "rows 1–2 of public.customer in primary-key order" in result.stdout


def test_view_data_limit_and_offset(seeded):
    result = run("view-data", "customer", "--limit", "3", "--offset", "4", "--json", "--database-url", seeded.url)
    assert result.exit_code == 0, result.stderr
    assert "RAW personal data" in result.stderr  # warned with --json too
    page = json.loads(result.stdout)
    assert (page["table"], page["policy"], page["limit"], page["offset"]) == ("public.customer", "mask", 3, 4)
    assert [r["row"] for r in page["rows"]] == [5, 6, 7]
    assert [r["values"]["customer_id"]["original"] for r in page["rows"]] == ["5", "6", "7"]
    assert [r["values"]["last_name"]["original"] for r in page["rows"]] == ["last5", "last6", "last7"]
    past = run("view-data", "customer", "--offset", "12", "--json", "--database-url", seeded.url)
    assert json.loads(past.stdout)["rows"] == []
    empty = run("view-data", "customer", "--offset", "12", "--database-url", seeded.url)
    assert empty.exit_code == 0 and "no rows at offset 12" in empty.stdout


def test_a_composite_primary_key_orders_the_rows(demo):
    demo.execute("CREATE TABLE public.pairs (b int, a int, note text, PRIMARY KEY (a, b))")
    demo.execute("INSERT INTO pairs VALUES (2, 1, 'x'), (1, 2, 'y'), (1, 1, 'z'), (3, 1, 'w')")
    with psycopg.connect(demo.url) as conn:
        page = preview.view_data(conn, "pairs", "mask", 10, 0)
    # a first, then b; every column without a rule is withheld by the mask policy.
    assert [(r.values[1][0], r.values[0][0]) for r in page.rows] == [("1", "1"), ("1", "2"), ("1", "3"), ("2", "1")]
    assert {c.rule for c in page.columns} == {"(no rule: withheld)"}
    assert {v[1] for r in page.rows for v in r.values} == {None}


def test_a_token_rule_of_the_copy_policy_previews(seeded):
    with psycopg.connect(seeded.url) as conn:
        page = preview.view_data(conn, "public.customer", "sanitized", 3, 0)
    column = {c.name: i for i, c in enumerate(page.columns)}
    rules = {c.name: c.rule for c in page.columns}
    assert rules["customer_id"] == "MASKED WITH FUNCTION veil.token(customer_id::text, 'customer')"
    assert rules["address_id"] == "(no rule: withheld)"
    for row in page.rows:
        n = row.number
        assert row.values[column["customer_id"]] == (
            str(n),
            seeded.scalar("SELECT veil.token(%s::text, 'customer')", (n,)),
        )
        assert row.values[column["email"]][1] == seeded.scalar("SELECT veil.token(%s, 'email')", (f"c{n}@example.com",))
        # The sanitized copy holds the same token: the preview is what the copy delivers.
        assert row.values[column["email"]][1] == seeded.scalar(
            "SELECT email FROM sanitized.customer WHERE customer_id = veil.token(%s::text, 'customer')", (n,)
        )
        assert row.values[column["address_id"]][1] is None


def test_what_a_policy_does_with_columns_without_a_rule(seeded):
    def address_rules(policy: str) -> dict[str, tuple[str, str | None]]:
        rows = seeded.execute(PREVIEW, (policy, "public.address", 1, 0)).fetchall()
        return {r[1]: (r[2], r[4]) for r in rows}

    assert address_rules("mask")["postal_code"] == ("(no rule: withheld)", None)
    seeded.execute("SELECT veil.alter_policy('mask', pass_through_unlabeled => true)")
    assert address_rules("mask")["address2"] == ("(no rule: passed through)", None)  # NULL in the data
    seeded.execute("UPDATE address SET postal_code = '12345' WHERE address_id = 1")
    assert address_rules("mask")["postal_code"] == ("(no rule: passed through)", "12345")
    seeded.execute("SELECT veil.create_policy('scrub', 'static')")
    assert address_rules("scrub")["address"] == ("(no rule: anonymize refuses the table)", None)
    seeded.execute("SELECT veil.alter_policy('scrub', uncovered => 'keep')")
    assert address_rules("scrub")["address"] == ("(no rule: kept)", "street 1")
    seeded.execute("SELECT veil.alter_policy('scrub', uncovered => 'null')")
    label(seeded, "COLUMN", "public.address.address", "MASKED WITH VALUE 'hidden'", policy="scrub")
    rules = address_rules("scrub")
    assert rules["address"] == ("MASKED WITH VALUE 'hidden'", "hidden")
    assert rules["city"] == ("(no rule: set to NULL)", None)


def test_a_rules_failure_does_not_quote_the_value(seeded):
    seeded.execute("CREATE SCHEMA my_masks")
    seeded.execute(
        "CREATE FUNCTION my_masks.strict_code(v text) RETURNS text LANGUAGE plpgsql"
        " SET search_path = pg_catalog, pg_temp"
        " AS $$ BEGIN IF v !~ '^[0-9]+$' THEN RAISE EXCEPTION 'bad code %', v USING ERRCODE = '22023'; END IF;"
        " RETURN v; END $$"
    )
    label(seeded, "SCHEMA", "my_masks", "TRUSTED")
    label(seeded, "COLUMN", "public.customer.email", "MASKED WITH FUNCTION my_masks.strict_code(email)")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as failed:
        seeded.execute(PREVIEW, ("mask", "public.customer", 1, 0))
    assert "withheld" in str(failed.value) and "c1@example.com" not in str(failed.value)
    result = run("view-data", "customer", "--database-url", seeded.url)
    fails_with(result, "a rule of policy mask failed on a row of public.customer")
    assert "c1@example.com" not in result.stderr


# -- who may preview -----------------------------------------------------------


def test_a_role_with_select_on_the_table_is_refused(seeded):
    reader = seeded.role("reader")
    seeded.execute(f'GRANT SELECT ON public.customer TO "{reader.name}"')
    seeded.execute(f'GRANT USAGE ON SCHEMA veil TO "{reader.name}"')
    with reader.connect() as conn:
        assert conn.execute("SELECT count(*) FROM public.customer").fetchone() == (12,)  # it may read the table
        with pytest.raises(DENIED, match="permission denied for function preview"):
            conn.execute(PREVIEW, ("mask", "public.customer", 1, 0))
    # Granted EXECUTE by mistake, the function itself still refuses it.
    seeded.execute(f'GRANT EXECUTE ON FUNCTION veil.preview(text, regclass, integer, bigint) TO "{reader.name}"')
    with reader.connect() as conn, pytest.raises(DENIED, match="only the toolkit owner"):
        conn.execute(PREVIEW, ("mask", "public.customer", 1, 0))
    result = run("view-data", "public.customer", "--database-url", reader.url)
    fails_with(result, "only the toolkit owner")
    assert "first1" not in result.stdout + result.stderr


def test_a_masked_role_is_refused(seeded):
    analyst = demo_analyst(seeded)
    seeded.execute("GRANT EXECUTE ON FUNCTION veil.preview(text, regclass, integer, bigint) TO analyst")
    try:
        with analyst.connect() as conn, pytest.raises(DENIED, match="only the toolkit owner"):
            conn.execute(PREVIEW, ("mask", "public.customer", 1, 0))
        result = run("view-data", "public.customer", "--database-url", analyst.url)
        fails_with(result, "only the toolkit owner")
        assert "c1@example.com" not in result.stdout + result.stderr
    finally:
        seeded.execute("REVOKE EXECUTE ON FUNCTION veil.preview(text, regclass, integer, bigint) FROM analyst")
    with analyst.connect() as conn, pytest.raises(DENIED, match="permission denied for function preview"):
        conn.execute(PREVIEW, ("mask", "public.customer", 1, 0))


def test_a_member_of_the_toolkit_owner_may_preview(seeded):
    owner = seeded.scalar("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'veil_private'")
    member = seeded.role("governor")
    seeded.execute(f'GRANT {owner} TO "{member.name}"')
    seeded.execute(f'GRANT SELECT ON public.customer TO "{member.name}"')
    result = run("view-data", "customer", "--limit", "1", "--json", "--database-url", member.url)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["rows"][0]["values"]["email"]["original"] == "c1@example.com"


# -- bad input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "offset", "message"),
    [
        (0, 0, "row_limit is 1 to 1000 rows (got 0)"),
        (1001, 0, "row_limit is 1 to 1000 rows (got 1001)"),
        (10, -1, "row_offset is 0 or more (got -1)"),
    ],
)
def test_bad_limits_are_refused_by_the_function_and_the_command(seeded, limit, offset, message):
    with pytest.raises(psycopg.errors.RaiseException) as refused:
        seeded.execute(PREVIEW, ("mask", "public.customer", limit, offset))
    assert message in str(refused.value)
    option = "--offset" if offset < 0 else "--limit"
    result = run("view-data", "customer", "--limit", str(limit), "--offset", str(offset), "--database-url", seeded.url)
    fails_with(result, option)


@pytest.mark.parametrize(
    ("table", "policy", "message"),
    [
        ("public.nothing", "mask", "there is no table 'public.nothing'"),
        ("not a name!", "mask", "is not a table name"),
        ("customer", "nope", "there is no policy 'nope'"),
        ("mask_public.customer", "mask", "mask_public.customer is a view, not a table"),
        ("public.customer_pkey", "mask", "public.customer_pkey is an index, not a table"),
    ],
)
def test_bad_tables_and_policies_are_one_clear_error(seeded, table, policy, message):
    result = run("view-data", table, "--policy", policy, "--database-url", seeded.url)
    fails_with(result, message)


def test_a_table_without_a_primary_key_is_refused(demo):
    demo.execute("CREATE TABLE public.heap (a int, b text)")
    demo.execute("INSERT INTO heap VALUES (1, 'x')")
    with pytest.raises(psycopg.errors.RaiseException, match="has no primary key"):
        demo.execute(PREVIEW, ("mask", "public.heap", 1, 0))
    fails_with(run("view-data", "heap", "--database-url", demo.url), "public.heap has no primary key")


def test_a_user_view_is_refused_in_sql_too(seeded):
    seeded.execute("CREATE VIEW public.customer_emails AS SELECT customer_id, email FROM customer")
    with pytest.raises(psycopg.errors.RaiseException, match="is a view, not a table"):
        seeded.execute(PREVIEW, ("mask", "public.customer_emails", 1, 0))
    with pytest.raises(psycopg.errors.RaiseException, match="there is no policy"):
        seeded.execute(PREVIEW, ("nope", "public.customer", 1, 0))


def test_preview_changes_nothing(seeded):
    before = seeded.execute("SELECT * FROM customer ORDER BY customer_id").fetchall()
    copy_before = seeded.execute("SELECT * FROM sanitized.customer ORDER BY customer_id").fetchall()
    for policy in ("mask", "sanitized"):
        assert run("view-data", "customer", "--policy", policy, "--database-url", seeded.url).exit_code == 0
    assert seeded.execute("SELECT * FROM customer ORDER BY customer_id").fetchall() == before
    assert seeded.execute("SELECT * FROM sanitized.customer ORDER BY customer_id").fetchall() == copy_before


def test_a_partitioned_table_previews_through_its_root(demo):
    demo.execute(
        "CREATE TABLE public.events (id int, day int, who text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day)"
    )
    demo.execute("CREATE TABLE public.events_early PARTITION OF events FOR VALUES FROM (0) TO (10)")
    demo.execute("CREATE TABLE public.events_late PARTITION OF events FOR VALUES FROM (10) TO (20)")
    demo.execute("INSERT INTO events VALUES (2, 15, 'b'), (1, 5, 'a'), (3, 1, 'c')")
    label(demo, "COLUMN", "public.events.who", "MASKED WITH VALUE 'x'")
    with psycopg.connect(demo.url) as conn:
        page = preview.view_data(conn, "events", "mask", 10, 0)
        tables = {f.table for f in preview.view_fields(conn, "mask")}
    assert [r.values[0][0] for r in page.rows] == ["1", "2", "3"]  # rows of both partitions
    assert [r.values[2] for r in page.rows] == [("a", "x"), ("b", "x"), ("c", "x")]
    assert "events" in tables and not tables & {"events_early", "events_late"}


def test_a_static_policy_previews_inherited_rules_and_only_the_tables_own_rows(demo):
    demo.execute("CREATE TABLE public.person (id int PRIMARY KEY, name text)")
    demo.execute("CREATE TABLE public.vip (level int, PRIMARY KEY (id)) INHERITS (person)")
    demo.execute("INSERT INTO person VALUES (1, 'ann')")
    demo.execute("INSERT INTO vip VALUES (2, 'bob', 7)")
    demo.execute("SELECT veil.create_policy('scrub', 'static')")
    demo.execute("SELECT veil.alter_policy('scrub', uncovered => 'keep')")
    label(demo, "COLUMN", "public.person.name", "MASKED WITH VALUE 'anon'", policy="scrub")
    parent = demo.execute(PREVIEW, ("scrub", "public.person", 10, 0)).fetchall()
    assert [(r[0], r[1], r[3], r[4]) for r in parent] == [(1, "id", "1", "1"), (1, "name", "ann", "anon")]
    child = demo.execute(PREVIEW, ("scrub", "public.vip", 10, 0)).fetchall()
    assert [(r[1], r[2], r[3], r[4]) for r in child] == [
        ("id", "(no rule: kept)", "2", "2"),
        ("name", "MASKED WITH VALUE 'anon'", "bob", "anon"),
        ("level", "(no rule: kept)", "7", "7"),
    ]
