"""`pgveil verify`: the source's values looked for in a copy or a dump, every kind
of planted leak found, a clean copy passing, the structure checked, and a role's
routes to raw data tried through the command."""

from __future__ import annotations

import gzip
import hashlib
import json

import psycopg
import pytest
from typer.testing import CliRunner

from pgveil.cli import app
from pgveil.errors import PgveilError
from pgveil.services import dump, sync, verify
from pgveil.services.verify_leaks import LeakOptions
from tests.conftest import Database
from tests.helpers import label, scratch_database

PEOPLE = 40
SCHEMA = """
CREATE TABLE public.person (
    id integer PRIMARY KEY,
    email text NOT NULL UNIQUE,
    full_name text,
    phone text,
    profile jsonb
);
CREATE TABLE public.note (
    id serial PRIMARY KEY,
    person_id integer REFERENCES public.person,
    body text,
    meta jsonb
);
CREATE TABLE public.audit (id bigserial PRIMARY KEY, actor text);
"""
RULES = {
    "public.person.id": "NOT MASKED",
    "public.person.email": "MASKED WITH FUNCTION veil.token(email, 'email')",
    "public.person.full_name": "MASKED WITH VALUE 'someone'",
    "public.person.phone": "MASKED WITH VALUE NULL",
    "public.person.profile": "MASKED WITH VALUE NULL",
    "public.note.id": "NOT MASKED",
    "public.note.person_id": "NOT MASKED",
    "public.note.body": "NOT MASKED",
    "public.note.meta": "NOT MASKED",
    "public.audit.id": "NOT MASKED",
    "public.audit.actor": "NOT MASKED",
}


def email(i: int) -> str:
    return f"person{i}@example-corp.com"


def full_name(i: int) -> str:
    return f"Firstname{i} Lastname{i}"


def phone(i: int) -> str:
    return f"+1 555-010-{i:04d}"


def ssn(i: int) -> str:
    return f"123-45-{i:04d}"


# Every source value the report must never show.
SOURCE_VALUES = [f(i) for i in range(1, PEOPLE + 1) for f in (email, full_name, phone, ssn)]


@pytest.fixture
def source(toolkit: Database) -> Database:
    toolkit.execute(SCHEMA)
    with psycopg.connect(toolkit.url, autocommit=True) as conn:
        for i in range(1, PEOPLE + 1):
            conn.execute(
                "INSERT INTO public.person VALUES (%s, %s, %s, %s, %s)",
                (i, email(i), full_name(i), phone(i), json.dumps({"ssn": ssn(i), "vip": i % 2 == 0})),
            )
            conn.execute(
                "INSERT INTO public.note (person_id, body, meta) VALUES (%s, %s, %s)",
                (i, f"Order {1000 + i} shipped on time", json.dumps({"status": "ok"})),
            )
        conn.execute("INSERT INTO public.audit (actor) SELECT 'system' FROM generate_series(1, 5)")
    toolkit.execute("SELECT veil.create_policy('anon', 'static')")
    for column, rule in RULES.items():
        label(toolkit, "column", column, rule, "anon")
    return toolkit


@pytest.fixture
def copy(source: Database):
    """A pgveil sync of the source under the policy: a clean copy."""
    with scratch_database(source) as url:
        sync.sync(source.url, url, sync.SyncOptions(policy="anon"))
        yield url


def on(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def run(source_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["verify", "--source", source_url, *args])
    return result.exit_code, result.output


def leaks_of(report: verify.VerifyReport) -> dict[tuple[str, str], tuple[int, str, tuple[str, ...]]]:
    return {(x.source, x.target): (x.rows, x.how, x.keys) for x in report.leak_scan.leaks}


def test_a_clean_copy_passes(source, copy, tmp_path):
    code, output = run(source.url, "--target", copy, "--policy", "anon", "--json", "--html", str(tmp_path / "r.html"))
    assert code == 0, output
    report = json.loads(output)
    assert report["result"] == "pass"
    assert report["leak_scan"]["leaks"] == []
    assert report["policy"] == "anon"
    assert len(report["rules_hash"]) == 64
    assert sorted(report["leak_scan"]["source_columns"]) == [
        "public.person.email",
        "public.person.full_name",
        "public.person.phone",
        "public.person.profile",
    ]
    # Per person: e-mail, name, phone, the profile's ssn (its boolean is too short).
    assert report["leak_scan"]["fingerprints"] >= 4 * PEOPLE
    kinds = {(c["kind"], c["subject"]): c["status"] for c in report["checks"]}
    assert kinds[("row count", "public.person")] == "ok"
    assert kinds[("foreign key", "public.note note_person_id_fkey")] == "ok"
    assert kinds[("unique", "public.person person_email_key")] == "ok"
    assert kinds[("sequence", "public.note_id_seq (public.note.id)")] == "ok"
    assert all(status == "ok" for status in kinds.values()), kinds
    page = (tmp_path / "r.html").read_text()
    assert '<h1>pgveil verify: <span class="pass">pass</span></h1>' in page
    assert report["rules_hash"] in page


def test_every_kind_of_planted_leak_is_found_and_no_value_is_shown(source, copy, tmp_path):
    on(
        copy,
        # The same column, put back.
        f"UPDATE public.person SET email = '{email(3)}' WHERE id = 3",
        # Another column, in other letters.
        f"UPDATE public.person SET full_name = '{email(5).upper()}' WHERE id = 5",
        # Another table.
        f"INSERT INTO public.audit (actor) VALUES ('{full_name(7)}')",
        # Inside free text, at the end of a sentence.
        f"UPDATE public.note SET body = 'Customer {email(9)}. asked for a refund' WHERE person_id = 2",
        # Inside a JSON document.
        f"""UPDATE public.note SET meta = '{{"contact": {{"phone": "{phone(11)}"}}}}' WHERE person_id = 4""",
        # A JSON column's leaf, as free text.
        f"UPDATE public.note SET body = 'ssn on file: {ssn(13)}' WHERE person_id = 6",
    )
    code, output = run(source.url, "--target", copy, "--policy", "anon", "--html", str(tmp_path / "r.html"))
    assert code == 1, output
    report = verify.verify(verify.VerifyOptions(source=source.url, target=copy, policy="anon"))
    assert not report.passed
    assert leaks_of(report) == {
        ("public.person.email", "public.person.email"): (1, "whole value", ("(id)=(3)",)),
        ("public.person.email", "public.person.full_name"): (1, "whole value", ("(id)=(5)",)),
        ("public.person.full_name", "public.audit.actor"): (1, "whole value", ("(id)=(6)",)),
        ("public.person.email", "public.note.body"): (1, "inside text", ("(id)=(2)",)),
        ("public.person.phone", "public.note.meta"): (1, "inside text", ("(id)=(4)",)),
        ("public.person.profile", "public.note.body"): (1, "inside text", ("(id)=(6)",)),
    }
    shown = output + json.dumps(report.as_dict()) + (tmp_path / "r.html").read_text()
    for value in SOURCE_VALUES:
        assert value not in shown and value.lower() not in shown.lower()


def test_short_and_dictionary_values_are_not_looked_for(source, copy):
    """A value shorter than --min-length, or one a fake-value dictionary holds, is
    in a copy by coincidence or by design: neither is a leak."""
    word = source.scalar("SELECT value FROM veil.dictionary WHERE length(value) >= 6 ORDER BY name, id LIMIT 1")
    source.execute("UPDATE public.person SET full_name = %s WHERE id = 1", (word,))
    source.execute("UPDATE public.person SET full_name = 'Bo' WHERE id = 2")
    on(copy, f"INSERT INTO public.audit (actor) VALUES ('{word}'), ('Bo')")
    assert verify.verify(verify.VerifyOptions(source=source.url, target=copy, policy="anon")).passed
    # With a shorter minimum, the short one is found.
    found = verify.verify(
        verify.VerifyOptions(source=source.url, target=copy, policy="anon", leaks=LeakOptions(min_length=2))
    )
    assert [(x.source, x.target, x.rows) for x in found.leak_scan.leaks] == [
        ("public.person.full_name", "public.audit.actor", 1)
    ]


def test_structure_failures_and_pattern_warnings(source, copy):
    on(
        copy,
        "ALTER TABLE public.note DISABLE TRIGGER ALL",
        "INSERT INTO public.note (id, person_id, body) VALUES (900, 999, 'orphan')",
        "ALTER TABLE public.note ENABLE TRIGGER ALL",
        "SELECT setval('public.note_id_seq', 3)",
        "DELETE FROM public.audit WHERE id = 1",
        # A kept column holding a phone number and an address at the source's domain.
        "UPDATE public.audit SET actor = '+1 (212) 555-0199' WHERE id = 2",
        "UPDATE public.audit SET actor = 'nobody-else@example-corp.com' WHERE id = 3",
    )
    report = verify.verify(verify.VerifyOptions(source=source.url, target=copy, policy="anon"))
    assert not report.passed and not report.leak_scan.leaks
    failed = {(c.kind, c.subject): c.detail for c in report.failures}
    assert failed == {
        ("foreign key", "public.note note_person_id_fkey"): "1 rows reference no row of public.person",
        ("sequence", "public.note_id_seq (public.note.id)"): "stands at 3, below the column's largest value 900",
    }
    warned = {(c.kind, c.subject): c.detail for c in report.warnings}
    assert warned[("row count", "public.audit")] == "4 rows; the source has 5 now"
    assert "phone numbers" in warned[("pattern", "public.audit.actor")] or any(
        "phone numbers" in c.detail for c in report.warnings if c.subject == "public.audit.actor"
    )
    details = [c.detail for c in report.warnings if c.subject == "public.audit.actor"]
    assert any("1 of its first 10000 rows hold phone numbers" in d for d in details), details
    assert any("1 of its first 10000 rows hold e-mail addresses at the source's domains" in d for d in details)


def test_an_archive_is_verified_from_its_data_files(source, tmp_path):
    out = tmp_path / "clean"
    dump.dump(source.url, dump.DumpOptions(policy="anon", output=out))
    code, output = run(source.url, "--archive", str(out), "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["policy"] == "anon" and report["searched"] == f"archive {out}"
    statuses = {(c["kind"], c["subject"]): c["status"] for c in report["checks"]}
    assert statuses[("row count", "public.person")] == "ok"
    assert statuses[("foreign key", "public.note note_person_id_fkey")] == "ok"
    assert statuses[("unique", "public.person person_email_key")] == "ok"
    assert statuses[("sequence", "public.note_id_seq (public.note.id)")] == "ok"

    # A column the policy keeps holds the source's e-mails: the data file has them.
    source.execute(
        "UPDATE public.note SET body = 'write to ' || p.email FROM public.person p WHERE p.id = note.person_id AND p.id <= 3"
    )
    leaky = tmp_path / "leaky"
    dump.dump(source.url, dump.DumpOptions(policy="anon", output=leaky))
    report_obj = verify.verify(verify.VerifyOptions(source=source.url, archive=leaky))
    [leak] = report_obj.leak_scan.leaks
    assert (leak.source, leak.target, leak.rows, leak.how) == (
        "public.person.email",
        "public.note.body",
        3,
        "inside text",
    )
    note_file = next(
        t["file"] for t in json.loads((leaky / "pgveil-manifest.json").read_text())["tables"] if t["table"] == "note"
    )
    assert all(key.startswith("line ") and key.endswith(f"of {note_file}") for key in leak.keys)
    code, output = run(source.url, "--archive", str(leaky))
    assert code == 1 and "public.note.body" in output
    assert email(1) not in output


def test_a_tampered_archive_fails_its_checks(source, tmp_path):
    out = tmp_path / "d"
    dump.dump(source.url, dump.DumpOptions(policy="anon", output=out))
    manifest_path = out / "pgveil-manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = next(t for t in manifest["tables"] if t["table"] == "person")
    path = out / entry["file"]
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        lines = f.read().split(b"\n")
    # A duplicated row, with the manifest rewritten to match the file, as a careless hand would.
    lines.insert(0, lines[0])
    with opener(path, "wb") as f:
        f.write(b"\n".join(lines))
    entry["bytes"] = path.stat().st_size
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    report = verify.verify(verify.VerifyOptions(source=source.url, archive=out))
    failed = {(c.kind, c.subject): c.detail for c in report.failures}
    assert failed[("row count", "public.person")] == f"{PEOPLE + 1} rows; the manifest records {PEOPLE}"
    assert failed[("unique", "public.person person_pkey")] == "1 values occur more than once"
    # Changed behind the manifest's back: refused before anything is read.
    with opener(path, "ab") as f:
        f.write(b"")
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(PgveilError, match="does not have the SHA-256|has .* bytes"):
        verify.verify(verify.VerifyOptions(source=source.url, archive=out))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --target URL or --archive DIR"),
        (["--target", "{copy}", "--archive", "{tmp}"], "give --target URL or --archive DIR"),
        (["--target", "{source}"], "--target is the source database itself"),
        (["--target", "{copy}", "--policy", "nope"], "there is no policy 'nope'"),
        (["--target", "{copy}", "--policy", "anon", "--min-length", "0"], "--min-length is at least 1"),
        (["--archive", "{tmp}/missing"], "is not a directory archive"),
        (["--target", "{copy}", "--role", "x"], "--role checks a role in the source database"),
    ],
)
def test_bad_input_is_one_clear_error(source, copy, tmp_path, args, message):
    before = [row for row in psycopg.connect(copy).execute("SELECT count(*) FROM public.person")]
    filled = [a.format(copy=copy, source=source.url, tmp=tmp_path) for a in args]
    code, output = run(source.url, *filled)
    assert code == 1
    assert message in " ".join(output.split())
    assert "Traceback" not in output
    assert [row for row in psycopg.connect(copy).execute("SELECT count(*) FROM public.person")] == before


def test_a_source_without_pgveil_is_refused(bare, copy):
    code, output = run(bare.url, "--target", copy)
    assert code == 1 and "the source has no pgveil verify functions" in " ".join(output.split())


def test_the_role_check_through_the_command(demo, monkeypatch):
    demo.execute("ALTER ROLE analyst PASSWORD 'analyst-pw'")
    monkeypatch.setenv("PGVEIL_ROLE_PASSWORD", "analyst-pw")
    result = CliRunner().invoke(app, ["verify", "--role", "analyst", "--source", demo.url, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["role"] == "analyst" and report["leaked"] is False
    assert "analyst-pw" not in result.output
    # A grant behind pgveil's back (replica mode keeps its event triggers from withholding it): found, exit 1.
    on(demo.url, "SET session_replication_role = replica", "GRANT SELECT ON public.customer TO analyst")
    result = CliRunner().invoke(app, ["verify", "--role", "analyst", "--source", demo.url])
    assert result.exit_code == 1, result.output
    assert "FAIL: 5 of" in result.output and "analyst-pw" not in result.output
    result = CliRunner().invoke(app, ["verify", "--role", "analyst", "--source", demo.url, "--json"])
    leaked = {r["route"] for r in json.loads(result.output)["routes"] if r["outcome"] == "leaked"}
    assert "SELECT public.customer (qualified)" in leaked and "COPY public.customer TO STDOUT" in leaked
