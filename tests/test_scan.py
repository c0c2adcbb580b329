"""`pgveil scan`: validated detectors in the database, decisions by name and value,
proposals that psql applies, pg_anon dictionaries, and scans that meet trouble."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from pgveil.errors import PgveilError
from pgveil.pg_anon_dicts import parse_meta_dict
from pgveil.services import scan, scan_output
from tests.helpers import pgveil

# A value planted in the data that must never appear in any output.
PLANTED = "planted.secret.person@very-private.example"


@pytest.mark.parametrize(
    ("value", "kinds"),
    [
        ("john.doe@example.com", ["email"]),
        ("192.168.1.20", ["ip_address"]),
        ("2001:db8::1", ["ip_address"]),
        ("(555) 123-4567", ["phone"]),
        ("+44 20 7946 0958", ["phone"]),
        ("01 23 45 67 89", ["phone"]),
        ("8 (912) 345-67-89", ["phone"]),
        ("5551234567", ["phone?"]),
        ("4111 1111 1111 1111", ["payment_card"]),
        ("GB82WEST12345698765432", ["iban"]),
        ("123-45-6789", ["national_id"]),
        ("12345678Z", ["national_id"]),
        ("112-233-445 95", ["national_id"]),
        ("48032 Johnson Fork Suite 123", ["postal_address"]),
        ("Hauptstraße 5", ["postal_address"]),
        ("12, rue de la Paix", ["postal_address"]),
        ("Please call (555) 123-4567 or write to jane@corp.io", ["in:email", "in:phone"]),
        # Hard negatives: the look of a kind without passing its check.
        ("10.0.0.256", []),
        ("1.2.3", []),
        ("aa:bb:cc:dd:ee:ff", []),
        ("4111111111111112", []),  # fails Luhn
        ("GB83WEST12345698765432", []),  # fails mod-97
        ("666-45-6789", []),  # never issued
        ("12345678A", []),  # wrong check letter
        ("112-233-445 96", []),  # wrong checksum
        ("12 Red Chairs", []),
        ("SKU-48213-BL", []),
        ("1234.56", []),
        ("2024-01-05 10:22:33", []),
        ("550e8400-e29b-41d4-a716-446655440000", []),
        ("d41d8cd98f00b204e9800998ecf8427e", []),
        ("Lorem ipsum dolor sit amet consectetur", []),
        ("Order 12345678 shipped 2024-01-05", []),
    ],
)
def test_detectors_validate_values_not_just_their_shape(toolkit, value, kinds):
    assert sorted(toolkit.scalar("SELECT veil.pii_kinds(%s)", (value,))) == sorted(kinds)


@pytest.mark.parametrize(
    ("check", "value", "passes"),
    [
        ("luhn", "4111111111111111", True),
        ("luhn", "4111111111111112", False),
        ("luhn", "79927398713", True),
        ("payment_card", "5500-0000-0000-0004", True),
        ("payment_card", "1234567812345670", False),  # Luhn-valid, no network starts so
        ("iban", "DE89 3704 0044 0532 0130 00", True),
        ("iban", "DE89370400440532013001", False),
        ("national_id", "X1234567L", True),
        ("national_id", "000-12-3456", False),
        ("phone", "+49 30 1234567", True),
        ("phone", "2024-01-05", False),
        ("email", "a@b", False),
        ("ipv6", "::1", True),
        ("ipv4", "256.1.1.1", False),
    ],
)
def test_each_check_on_its_own(toolkit, check, value, passes):
    assert toolkit.scalar("SELECT veil.pii_check(%s, %s)", (check, value)) is passes


def test_an_unknown_check_is_refused(toolkit):
    with pytest.raises(psycopg.Error, match="there is no check 'zip'"):
        toolkit.execute("SELECT veil.pii_check('zip', '12345')")


def build_tables(db) -> None:
    db.execute(
        """
        CREATE SCHEMA crm;
        CREATE TABLE crm.kunden (
            id integer PRIMARY KEY,
            "E-Mail-Adresse" text, telefon text, vorname text, geburtsdatum date,
            c7 text, notes text, profile jsonb, sku text, amount numeric(10,2), status text,
            created_at timestamptz, token_uuid uuid, photo bytea, email_template text);
        INSERT INTO crm.kunden
        SELECT g, 'kunde' || g || '@example.de', '+49 30 ' || (1000000 + g), d.value,
               date '1950-01-01' + g * 9, '4111 1111 1111 1111',
               CASE WHEN g % 20 = 0 THEN 'please call me on (555) 123-' || lpad(g::text, 4, '0') ELSE 'all fine, thanks' END,
               jsonb_build_object('contact', jsonb_build_object('email', 'p' || g || '@x.org'), 'n', g),
               'SKU-' || (10000 + g) || '-BL', g * 1.25, (ARRAY['NEW', 'SHIPPED'])[1 + g % 2],
               now() - g * interval '1 hour', gen_random_uuid(), '\\x00', 'Dear {{name}}, welcome'
        FROM generate_series(1, 400) g
        JOIN veil.dictionary d ON d.name = 'first_name' AND d.id = 1 + g % 300;
        UPDATE crm.kunden SET notes = 'mail %s please, ref ' || id WHERE id IN (7, 8);
        ANALYZE crm.kunden;
        """.replace("%s", PLANTED)
    )


def findings(report: scan.ScanReport) -> dict[str, scan.ColumnFinding]:
    return {c.column: c for c in report.columns if c.schema == "crm"}


def test_scan_finds_personal_data_by_name_and_value_and_not_in_hard_negatives(toolkit):
    build_tables(toolkit)
    with psycopg.connect(toolkit.url, autocommit=True) as conn:
        report = scan.scan(conn, scan.ScanOptions(schemas=("crm",)))
    found = findings(report)
    assert found["E-Mail-Adresse"].kind == "email" and "(en)" in found["E-Mail-Adresse"].reason
    assert found["telefon"].kind == "phone" and "(de)" in found["telefon"].reason
    assert (
        found["vorname"].kind == "person_name"
        and found["vorname"].rule == "MASKED WITH FUNCTION veil.fake_first_name()"
    )
    assert found["geburtsdatum"].kind == "birth_date"
    assert found["c7"].kind == "payment_card"  # by value alone
    assert found["c7"].confidence < found["E-Mail-Adresse"].confidence
    assert found["notes"].kind == "free_text" and found["notes"].embedded == ["email", "phone"]
    assert found["profile"].kind == "json"
    assert [(p.path, p.kind) for p in found["profile"].paths] == [("$.contact.email", "email")]
    assert "veil.jsonb_mask(profile" in (found["profile"].rule or "")
    for negative in ("id", "sku", "amount", "status", "created_at", "token_uuid", "photo", "email_template"):
        assert not found[negative].sensitive, (negative, found[negative].reason)
    assert "none of" in found["email_template"].reason  # the name said email; the values did not
    assert "not sampled" in found["photo"].reason
    assert PLANTED not in json.dumps(report.as_dict())


def test_full_mode_and_parallel_jobs_agree_with_partial(toolkit):
    build_tables(toolkit)
    toolkit.execute(
        "CREATE TABLE crm.other (mail text); INSERT INTO crm.other SELECT 'o' || g || '@e.com' FROM generate_series(1, 50) g"
    )
    with psycopg.connect(toolkit.url, autocommit=True) as conn:
        partial = scan.scan(conn, scan.ScanOptions(schemas=("crm",)))
        full = scan.scan(conn, scan.ScanOptions(schemas=("crm",), mode="full", jobs=2), url=toolkit.url)
    kinds = {(c.table, c.column): c.kind for c in partial.columns}
    assert kinds == {(c.table, c.column): c.kind for c in full.columns}
    assert kinds[("other", "mail")] == "email"
    assert "400 values" in findings(full)["telefon"].reason


def psql() -> str:
    found = shutil.which("psql") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))), None)
    assert found, "psql is needed"
    return str(found)


def test_scan_sql_script_applies_with_psql_and_alembic_revision_compiles(toolkit, tmp_path):
    build_tables(toolkit)
    script = tmp_path / "rules.sql"
    done = pgveil("scan", "--schema", "crm", "--output", str(script), "--not-masked", "--database-url", toolkit.url)
    assert done.returncode == 0, done.stderr
    text = script.read_text()
    assert PLANTED not in text and "BEGIN;" in text and "-- email (" in text
    applied = subprocess.run(
        [psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script), toolkit.url], capture_output=True, text=True
    )
    assert applied.returncode == 0, applied.stderr
    rules = dict(
        toolkit.execute(
            "SELECT column_name, label FROM veil.rules WHERE policy = 'mask' AND schema_name = 'crm'"
        ).fetchall()
    )
    assert rules["telefon"].startswith("MASKED WITH FUNCTION veil.partial(")
    assert rules["sku"] == "NOT MASKED"
    assert len(rules) == 15  # every column decided

    revision = tmp_path / "rev.py"
    done = pgveil(
        "scan",
        "--schema",
        "crm",
        "--format",
        "alembic",
        "--output",
        str(revision),
        "--down-revision",
        "abc",
        "--database-url",
        toolkit.url,
    )
    assert done.returncode == 0, done.stderr
    source = revision.read_text()
    compile(source, str(revision), "exec")
    assert "down_revision = 'abc'" in source and "op.security_label('mask', 'COLUMN', 'crm.kunden.telefon'" in source


def test_previous_scan_reads_only_new_or_changed_columns(toolkit, tmp_path):
    build_tables(toolkit)
    first = tmp_path / "first.json"
    assert (
        pgveil(
            "scan", "--schema", "crm", "--format", "json", "-o", str(first), "--database-url", toolkit.url
        ).returncode
        == 0
    )
    toolkit.execute(
        "ALTER TABLE crm.kunden ADD COLUMN mobile text; UPDATE crm.kunden SET mobile = '+33 6 12 34 56 ' || lpad((id % 100)::text, 2, '0')"
    )
    toolkit.execute("ALTER TABLE crm.kunden ALTER COLUMN sku TYPE varchar(40)")
    done = pgveil("scan", "--schema", "crm", "--previous", str(first), "--json", "--database-url", toolkit.url)
    assert done.returncode == 0, done.stderr
    columns = {c["column"]: c for c in json.loads(done.stdout)["columns"]}
    assert columns["mobile"]["kind"] == "phone" and not columns["mobile"]["reason"].startswith("(previous scan)")
    assert not columns["sku"]["reason"].startswith("(previous scan)")  # its type changed
    assert columns["telefon"]["reason"].startswith("(previous scan)") and columns["telefon"]["kind"] == "phone"


def test_a_role_without_select_on_a_table_is_reported_and_the_scan_goes_on(toolkit):
    build_tables(toolkit)
    toolkit.execute("CREATE TABLE crm.open (email text); INSERT INTO crm.open VALUES ('a@b.com'), ('c@d.org')")
    reader = toolkit.role("reader")
    toolkit.execute(f"GRANT USAGE ON SCHEMA crm TO {reader.name}; GRANT SELECT ON crm.open TO {reader.name}")
    with psycopg.connect(reader.url, autocommit=True) as conn:
        report = scan.scan(conn, scan.ScanOptions(schemas=("crm",)))
    assert [(s.table, "permission denied" in s.reason) for s in report.skipped] == [("kunden", True)]
    kinds = {(c.table, c.column): c for c in report.columns}
    assert kinds[("open", "email")].kind == "email"
    assert kinds[("kunden", "telefon")].kind == "phone" and "not read" in kinds[("kunden", "telefon")].reason


def test_a_table_dropped_during_the_scan_is_reported(toolkit):
    build_tables(toolkit)
    toolkit.execute("CREATE TABLE crm.zz_gone (email text); INSERT INTO crm.zz_gone VALUES ('a@b.com')")

    def drop_next(table: str, rows: int, tables: int) -> None:
        if table == "crm.kunden":
            toolkit.execute("DROP TABLE crm.zz_gone")

    with psycopg.connect(toolkit.url, autocommit=True) as conn:
        report = scan.scan(conn, scan.ScanOptions(schemas=("crm",)), drop_next)
    assert [s.table for s in report.skipped] == ["zz_gone"]
    assert "does not exist" in report.skipped[0].reason


def test_pg_anon_meta_dictionary_drives_the_scan_and_its_rules_are_mapped(toolkit):
    build_tables(toolkit)
    meta = parse_meta_dict(
        """var = {
    "field": {"rules": ["^stat"], "constants": ["sku"]},
    "skip_rules": [{"schema": "crm", "table": "kunden", "fields": ["photo"]}],
    "data_regex": {"rules": [r"^SKU-1000[0-9]-BL$"]},
    "data_const": {"constants": ["all fine, thanks"], "partial_constants": []},
    "sens_pg_types": ["text", "integer", "jsonb", "date"],
    "funcs": {"text": "anon_funcs.digest(\\"%s\\", 'salt_word', 'md5')", "default": "anon_funcs.digest(\\"%s\\", 'x', 'sha256')"},
}""",
        "meta.py",
    )
    with psycopg.connect(toolkit.url, autocommit=True) as conn:
        report = scan.scan(conn, scan.ScanOptions(schemas=("crm",), meta_dicts=(meta,)))
    found = findings(report)
    assert found["status"].kind == "custom" and "field rule '^stat'" in found["status"].reason
    assert found["status"].rule == "MASKED WITH FUNCTION veil.digest(status, 'salt_word', 'md5')"
    assert found["sku"].kind == "custom" and "data_regex" in found["sku"].reason
    assert "not scanned" in found["photo"].reason
    assert "sens_pg_types" in found["created_at"].reason
    assert found["notes"].kind == "free_text"  # our own detectors still run
    # Every mapped rule is accepted by the policy.
    for c in report.sensitive:
        toolkit.execute("SELECT veil.security_label('mask', 'COLUMN', %s, %s)", (c.qualified, c.rule))


def test_bad_input_is_one_clear_error_and_writes_nothing(toolkit, tmp_path):
    build_tables(toolkit)
    out = tmp_path / "rules.sql"
    for args, message in [
        (["--policy", "nope"], "there is no policy 'nope'"),
        (["--mode", "half"], "--mode is partial or full"),
        (["--rule", "shoe_size=veil.redact(%s)"], "--rule names a kind"),
        (["--rule", "email"], "--rule is KIND=RULE"),
        (["--format", "xml"], "--format is one of"),
        (["--table", "crm.nope"], "no table named crm.nope"),
    ]:
        done = pgveil("scan", "--schema", "crm", "-o", str(out), *args, "--database-url", toolkit.url)
        assert done.returncode == 1, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
        assert not out.exists()
    bad = tmp_path / "bad_meta.py"
    bad.write_text('var = {\n    "data_regex": {"rules": ["(unclosed"]},\n}\n')
    done = pgveil("scan", "--schema", "crm", "--meta-dict", str(bad), "-o", str(out), "--database-url", toolkit.url)
    assert done.returncode == 1 and "line 2" in done.stderr and "Traceback" not in done.stderr, done.stderr
    code = tmp_path / "code_meta.py"
    code.write_text('import os\nvar = {"field": {"rules": [os.getcwd()]}}\n')
    done = pgveil("scan", "--meta-dict", str(code), "--database-url", toolkit.url)
    assert done.returncode == 1 and "line 1" in done.stderr, done.stderr
    assert not out.exists()


def test_scan_output_formats_refuse_nothing_and_hold_no_values(toolkit):
    build_tables(toolkit)
    with psycopg.connect(toolkit.url, autocommit=True) as conn:
        report = scan.scan(conn, scan.ScanOptions(schemas=("crm",)))
    for text in (
        scan_output.sql_script(report),
        scan_output.alembic_revision(report, down_revision=None),
        scan_output.json_document(report),
        scan_output.no_sens_dictionary(report),
    ):
        assert PLANTED not in text and "kunde1@example.de" not in text
    assert '"sku"' in scan_output.no_sens_dictionary(report)


def test_scan_options_are_checked_before_reading(toolkit):
    with (
        psycopg.connect(toolkit.url, autocommit=True) as conn,
        pytest.raises(PgveilError, match="--sample is at least 1"),
    ):
        scan.scan(conn, scan.ScanOptions(sample=0))


def test_a_check_function_of_our_own_finds_what_the_detectors_cannot(toolkit):
    build_tables(toolkit)
    toolkit.execute(
        "CREATE FUNCTION crm.is_internal_code(value text, s text, t text, c text) RETURNS boolean"
        " LANGUAGE sql IMMUTABLE AS $$ SELECT value LIKE 'SKU-1000%' $$"
    )
    with psycopg.connect(toolkit.url, autocommit=True) as conn:
        report = scan.scan(conn, scan.ScanOptions(schemas=("crm",), checks=("crm.is_internal_code",)))
        found = findings(report)
        assert found["sku"].kind == "custom" and "crm.is_internal_code returned true" in found["sku"].reason
        assert found["sku"].rule == "MASKED WITH FUNCTION veil.redact(sku)"
        with pytest.raises(PgveilError, match=r"there is no function crm.nope\(value text"):
            scan.scan(conn, scan.ScanOptions(schemas=("crm",), checks=("crm.nope",)))


def test_pg_anon_per_field_function_decides_a_column_without_reading_it(toolkit):
    build_tables(toolkit)
    toolkit.execute(
        "CREATE FUNCTION crm.is_legacy(s text, t text, c text, ty text) RETURNS boolean"
        " LANGUAGE sql IMMUTABLE AS $$ SELECT c = 'status' $$"
    )
    meta = parse_meta_dict(
        """var = {"data_func": {"anyelement": [{"scan_func_per_field": "crm.is_legacy",
            "anon_func": "anon_funcs.digest(\\"%s\\", 's', 'md5')"}]}}""",
        "meta.py",
    )
    with psycopg.connect(toolkit.url, autocommit=True) as conn:
        found = findings(scan.scan(conn, scan.ScanOptions(schemas=("crm",), meta_dicts=(meta,))))
    assert found["status"].kind == "custom" and "crm.is_legacy says" in found["status"].reason
    assert found["status"].rule == "MASKED WITH FUNCTION veil.digest(status, 's', 'md5')"
    assert not found["sku"].sensitive


def test_pg_anon_readme_meta_dictionary_runs_a_scan(toolkit, tmp_path):
    from tests.test_pg_anon_dicts import FULL_META

    toolkit.execute(
        """
        CREATE SCHEMA schm_other_2;
        CREATE TABLE schm_other_2.tbl_test_anon_functions (id integer PRIMARY KEY, fld_5_email text, note text);
        INSERT INTO schm_other_2.tbl_test_anon_functions SELECT g, 'u' || g || '@example.com', 'x' FROM generate_series(1, 50) g;
        CREATE SCHEMA my_custom_functions;
        CREATE FUNCTION my_custom_functions.check_by_users_table(value text, s text, t text, f text) RETURNS boolean
            LANGUAGE sql IMMUTABLE AS $$ SELECT false $$;
        """
    )
    meta = tmp_path / "test_meta_dict.py"
    meta.write_text(FULL_META)
    done = pgveil("scan", "--meta-dict", str(meta), "--json", "--database-url", toolkit.url)
    assert done.returncode == 0, done.stderr
    columns = {c["column"]: c for c in json.loads(done.stdout)["columns"] if c["schema"] == "schm_other_2"}
    assert columns["fld_5_email"]["kind"] == "email" and columns["fld_5_email"]["sensitive"]
    assert columns["note"]["reason"].startswith("not scanned: left out by")
    # Without the custom function it names, the dictionary is refused before anything is read.
    toolkit.execute("DROP SCHEMA my_custom_functions CASCADE")
    done = pgveil("scan", "--meta-dict", str(meta), "--database-url", toolkit.url)
    assert done.returncode == 1 and "there is no function my_custom_functions.check_by_users_table" in done.stderr


def test_a_check_function_also_reads_json_leaves(toolkit):
    toolkit.execute(
        "CREATE SCHEMA crm; CREATE TABLE crm.events (id integer PRIMARY KEY, payload jsonb);"
        " INSERT INTO crm.events SELECT g, jsonb_build_object('ref', 'INT-' || g) FROM generate_series(1, 20) g;"
        " CREATE FUNCTION crm.is_internal(value text, s text, t text, c text) RETURNS boolean"
        " LANGUAGE sql IMMUTABLE AS $$ SELECT value LIKE 'INT-%' $$"
    )
    with psycopg.connect(toolkit.url, autocommit=True) as conn:
        plain = findings(scan.scan(conn, scan.ScanOptions(schemas=("crm",))))
        checked = findings(scan.scan(conn, scan.ScanOptions(schemas=("crm",), checks=("crm.is_internal",))))
    assert not plain["payload"].sensitive
    assert checked["payload"].kind == "custom" and "returned true for 20 values" in checked["payload"].reason
