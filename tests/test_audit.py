"""`pgveil audit` (veil.coverage_problems, pgveil.services.audit, pgveil.cli_audit) and the
Alembic coverage gate (pgveil.alembic_gate)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
import typer
from typer.testing import CliRunner, Result

from pgveil import cli_audit
from pgveil.services import audit as audit_service
from tests.helpers import label

SECRET = "s3cret-raw-value-4711"


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app (a callback keeps `audit` a subcommand)."""

    cli_audit.register(app)
    return app


def run_audit(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli(), ["audit", "--database-url", url, *args])


def problems(result: Result) -> list[dict[str, str]]:
    found: list[dict[str, str]] = json.loads(result.stdout)["problems"]
    return found


def kinds(result: Result) -> set[tuple[str | None, str, str]]:
    return {(p["policy"], p["problem"], p["object"]) for p in problems(result)}


@pytest.fixture
def client(toolkit):
    """public.client covered in policy mask, except its phone column; a raw value in it."""
    toolkit.execute('CREATE TABLE public.client (id int PRIMARY KEY, email text, phone text, "E-mail 2" text)')
    toolkit.execute("INSERT INTO public.client VALUES (1, %s, %s, %s)", (SECRET, SECRET, SECRET))
    label(toolkit, "COLUMN", "public.client.id", "NOT MASKED")
    label(toolkit, "COLUMN", "public.client.email", "MASKED WITH FUNCTION veil.partial_email(email)")
    label(toolkit, "COLUMN", 'public.client."E-mail 2"', "MASKED WITH VALUE NULL")
    return toolkit


def test_audit_fails_on_an_uncovered_column_and_passes_after_its_rule(client):
    result = run_audit(client.url, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert kinds(result) == {("mask", "uncovered column", "public.client.phone")}
    detail = problems(result)[0]["detail"]
    assert SECRET not in result.stdout
    # The detail's fix is a statement that works as written.
    fix = re.search(r"SELECT veil\.security_label\('mask', 'COLUMN', 'public\.client\.phone', 'NOT MASKED'\)", detail)
    assert fix, detail
    assert "MASKED WITH FUNCTION veil.<function>(phone)" in detail

    text_result = run_audit(client.url)
    assert text_result.exit_code == 1
    assert "public.client.phone" in text_result.stdout and "uncovered column" in text_result.stdout

    client.execute(fix.group(0))
    passed = run_audit(client.url)
    assert passed.exit_code == 0, passed.output
    assert "audit passed: 2 policies, 1 tables, 4 columns covered" in passed.stdout
    as_json = run_audit(client.url, "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["ok"] is True


def test_not_masked_is_a_decision_and_quoted_names_are_written_as_sql(client):
    label(client, "COLUMN", 'public.client."E-mail 2"', None)
    label(client, "COLUMN", "public.client.phone", "NOT MASKED")
    report = audit_service.audit(client.admin)
    assert [(p.problem, p.object) for p in report.problems] == [("uncovered column", 'public.client."E-mail 2"')]
    # The object name is one SQL can read back.
    assert (
        client.scalar(
            "SELECT count(*) FROM veil.rules WHERE schema_name = 'public' AND table_name = 'client'"
            " AND column_name = (parse_ident(%s))[3]",
            (report.problems[0].object,),
        )
        == 0
    )
    label(client, "COLUMN", 'public.client."E-mail 2"', "NOT MASKED")
    assert audit_service.audit(client.admin).ok


def test_tables_without_rules_are_out_of_scope_and_policies_filter(client):
    client.execute("CREATE TABLE public.unrelated (id int, note text)")
    by_policy = audit_service.audit(client.admin, ["sanitized"])
    assert by_policy.ok and by_policy.policies == ["sanitized"]
    assert not audit_service.audit(client.admin, ["mask"]).ok
    assert [p.object for p in audit_service.audit(client.admin).problems] == ["public.client.phone"]


def test_a_partition_is_covered_by_its_roots_rules_and_a_gap_is_reported_once(toolkit):
    toolkit.execute("""
        CREATE TABLE public.event (id int, who text, what text) PARTITION BY RANGE (id);
        CREATE TABLE public.event_1 PARTITION OF public.event FOR VALUES FROM (0) TO (100);
        CREATE TABLE public.event_2 PARTITION OF public.event FOR VALUES FROM (100) TO (200);
    """)
    label(toolkit, "COLUMN", "public.event.id", "NOT MASKED")
    label(toolkit, "COLUMN", "public.event.who", "MASKED WITH VALUE 'someone'")
    # A rule on a partition puts it in scope too; its other columns are its root's.
    label(toolkit, "COLUMN", "public.event_2.who", "MASKED WITH VALUE NULL")
    report = audit_service.audit(toolkit.admin, ["mask"])
    assert [(p.problem, p.object) for p in report.problems] == [("uncovered column", "public.event.what")]
    label(toolkit, "COLUMN", "public.event.what", "NOT MASKED")
    assert audit_service.audit(toolkit.admin, ["mask"]).ok


def test_a_rule_whose_trusted_function_is_dropped_is_stale(client):
    client.execute("CREATE SCHEMA masks")
    client.execute("CREATE FUNCTION masks.hide(text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT md5($1) $$")
    label(client, "SCHEMA", "masks", "TRUSTED", policy="sanitized")
    for column, rule in [
        ("id", "NOT MASKED"),
        ("email", "MASKED WITH FUNCTION masks.hide(email)"),
        ("phone", "MASKED WITH VALUE 'none'"),
        ('"E-mail 2"', "NOT MASKED"),
    ]:
        label(client, "COLUMN", f"public.client.{column}", rule, policy="sanitized")
    assert audit_service.audit(client.admin, ["sanitized"]).ok
    # No view or trigger of the copy policy depends on it: the drop goes through.
    client.execute("DROP FUNCTION masks.hide(text)")
    # A constant that no longer casts to the column's new type.
    client.execute("ALTER TABLE public.client ALTER COLUMN phone TYPE integer USING NULL")
    result = run_audit(client.url, "--policy", "sanitized", "--json")
    assert result.exit_code == 1
    assert kinds(result) == {
        ("sanitized", "stale rule", "public.client.email"),
        ("sanitized", "stale rule", "public.client.phone"),
    }
    details = {p["object"]: p["detail"] for p in problems(result)}
    assert "function masks.hide(text) does not exist" in details["public.client.email"]
    assert 'invalid input syntax for type integer: "none"' in details["public.client.phone"]
    assert SECRET not in result.stdout
    # Untrusting the schema makes a rule stale too; fixing the rules clears the audit.
    label(client, "COLUMN", "public.client.email", "MASKED WITH VALUE NULL", policy="sanitized")
    label(client, "COLUMN", "public.client.phone", "MASKED WITH VALUE 0", policy="sanitized")
    assert audit_service.audit(client.admin, ["sanitized"]).ok


def test_an_untrusted_schema_makes_its_rules_stale(client):
    client.execute("CREATE SCHEMA masks")
    client.execute("CREATE FUNCTION masks.hide(text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT md5($1) $$")
    label(client, "SCHEMA", "masks", "TRUSTED")
    label(client, "COLUMN", "public.client.phone", "MASKED WITH FUNCTION masks.hide(phone)")
    assert audit_service.audit(client.admin, ["mask"]).ok
    label(client, "SCHEMA", "masks", None)
    report = audit_service.audit(client.admin, ["mask"])
    assert [(p.problem, p.object) for p in report.problems] == [("stale rule", "public.client.phone")]
    assert "is not trusted" in report.problems[0].detail


def test_the_demo_rules_all_still_validate(demo):
    """Every rule of the demo (functions, values, tokens) passes its own validation again."""
    found = demo.execute("SELECT problem, object FROM veil.coverage_problems() WHERE problem = 'stale rule'").fetchall()
    assert found == []
    assert demo.scalar("SELECT count(*) FROM veil.rules WHERE kind IN ('function', 'value')") > 0


def test_a_masked_role_with_raw_access_fails_the_audit(client):
    label(client, "COLUMN", "public.client.phone", "NOT MASKED")
    analyst = client.role("analyst")
    label(client, "ROLE", analyst.name, "MASKED")
    assert run_audit(client.url).exit_code == 0
    # A direct GRANT to a masked role is withheld by pgveil's DDL trigger; a role
    # membership granted later is not DDL it sees.
    reader = client.role("reader")
    client.execute(f'GRANT SELECT ON public.client TO "{reader.name}"')
    with analyst.connect() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT email FROM public.client")
    client.execute(f'GRANT "{reader.name}" TO "{analyst.name}"')
    # The attack the audit reports: the masked role reads the raw value.
    with analyst.connect() as conn:
        assert conn.execute("SELECT email FROM public.client").fetchone() == (SECRET,)
    result = run_audit(client.url, "--json")
    assert result.exit_code == 1
    assert ("mask", "raw access", analyst.name) in kinds(result)
    # Another policy's audit does not report the mask policy's role.
    assert run_audit(client.url, "--policy", "sanitized").exit_code == 0


def test_a_stream_that_needs_a_backfill_fails_the_audit(toolkit):
    toolkit.execute("CREATE TABLE public.shop (id int PRIMARY KEY, owner text)")
    toolkit.execute("INSERT INTO public.shop VALUES (1, %s)", (SECRET,))
    label(toolkit, "COLUMN", "public.shop.id", "NOT MASKED", policy="sanitized")
    label(toolkit, "COLUMN", "public.shop.owner", "MASKED WITH FUNCTION veil.token(owner)", policy="sanitized")
    toolkit.execute("SELECT veil.stream('public.shop')")
    result = run_audit(toolkit.url, "--policy", "sanitized", "--json")
    assert result.exit_code == 1
    assert kinds(result) == {("sanitized", "needs backfill", "public.shop")}
    assert "pgveil backfill public.shop" in problems(result)[0]["detail"]
    assert run_audit(toolkit.url, "--policy", "mask").exit_code == 0
    toolkit.execute("CALL veil.backfill('public.shop')")
    assert run_audit(toolkit.url, "--policy", "sanitized").exit_code == 0


def test_an_unknown_policy_is_one_clear_error(client):
    result = run_audit(client.url, "--policy", "mask", "--policy", "nope")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "error: pgveil: there is no policy 'nope'"
    with pytest.raises(psycopg.errors.RaiseException, match="there is no policy 'nope'"):
        audit_service.audit(client.admin, ["nope"])


def test_a_role_that_is_not_a_governor_is_refused(client):
    intruder = client.role("intruder")
    client.execute(f'GRANT USAGE ON SCHEMA veil TO "{intruder.name}"')
    result = run_audit(intruder.url)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "permission denied for function coverage_problems" in result.stderr
    # Even with EXECUTE granted, the function itself refuses non-governors.
    client.execute(f'GRANT EXECUTE ON FUNCTION veil.coverage_problems(text[]) TO "{intruder.name}"')
    with intruder.connect() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege, match="toolkit owner"):
        conn.execute("SELECT * FROM veil.coverage_problems()")


# The Alembic gate: a user's project, run by the alembic command as a user would.

ENV_PY = """
import os

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

import pgveil.alembic_gate
import pgveil.alembic_ops  # noqa: F401  (op.security_label)
from pgveil.config import sqlalchemy_url

engine = create_engine(sqlalchemy_url(os.environ["GATE_DATABASE_URL"]), poolclass=NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        version_table="app_version",
        transaction_per_migration={per_migration},
        on_version_apply=pgveil.alembic_gate.coverage_gate({gate_arguments}),
    )
    with context.begin_transaction():
        context.run_migrations()
"""

REVISION = '''
"""{doc}"""
from alembic import op

revision = "{revision}"
down_revision = {down}
branch_labels = None
depends_on = None


def upgrade():
{body}


def downgrade():
    pass
'''

ADD_LOYALTY = 'op.execute("ALTER TABLE public.client ADD COLUMN loyalty text")'
LOYALTY_RULE = "op.security_label('mask', 'COLUMN', 'public.client.loyalty', 'MASKED WITH VALUE NULL')"


def write_revision(versions: Path, revision: str, down: str | None, doc: str, *statements: str) -> None:
    body = textwrap.indent("\n".join(statements), "    ")
    down_text = "None" if down is None else repr(down)
    (versions / f"{revision}.py").write_text(
        REVISION.format(doc=doc, revision=revision, down=down_text, body=body), encoding="utf-8"
    )


def alembic_project(tmp_path: Path, per_migration: bool, baseline_now: bool) -> Path:
    project = tmp_path / "project"
    versions = project / "versions"
    versions.mkdir(parents=True)
    gate_arguments = "connection=connection" if baseline_now else ""
    (project / "env.py").write_text(
        ENV_PY.format(per_migration=per_migration, gate_arguments=gate_arguments), encoding="utf-8"
    )
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {project}\n", encoding="utf-8")
    return ini


def alembic_upgrade(ini: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GATE_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # alembic prints its FAILED: line on stdout
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def has_column(db, table: str, column: str) -> bool:
    return bool(
        db.scalar(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s AND NOT attisdropped",
            (table, column),
        )
    )


def app_version(db) -> str | None:
    if db.scalar("SELECT to_regclass('public.app_version')") is None:
        return None
    row = db.execute("SELECT version_num FROM public.app_version").fetchone()
    return None if row is None else str(row[0])


@pytest.mark.parametrize(
    ("per_migration", "baseline_now"),
    [(True, True), (False, False)],
    ids=["transaction-per-migration,baseline-at-creation", "one-transaction,baseline-at-first-call"],
)
def test_the_alembic_gate_fails_a_revision_that_adds_an_uncovered_column(client, tmp_path, per_migration, baseline_now):
    # A gap that exists before the run is not blamed on any revision of it.
    client.execute("ALTER TABLE public.client ADD COLUMN legacy text")
    label(client, "COLUMN", "public.client.phone", "NOT MASKED")
    ini = alembic_project(tmp_path, per_migration, baseline_now)
    versions = tmp_path / "project" / "versions"
    # r1 adds a table with every column ruled, and an unrelated column to a table with no rules.
    write_revision(
        versions,
        "r1",
        None,
        "a covered table",
        'op.execute("CREATE TABLE public.visit (id int PRIMARY KEY, note text)")',
        "op.security_label('mask', 'COLUMN', 'public.visit.id', 'NOT MASKED')",
        "op.security_label('mask', 'COLUMN', 'public.visit.note', 'MASKED WITH VALUE NULL')",
        'op.execute("CREATE TABLE public.audit_log (id int, payload text)")',
    )
    write_revision(versions, "r2", "r1", "add loyalty", ADD_LOYALTY)

    failed = alembic_upgrade(ini, client.url)
    assert failed.returncode != 0, failed.stdout
    message = failed.stdout
    assert "pgveil coverage gate" in message and "r2 (add loyalty)" in message, message
    assert "public.client.loyalty" in message
    assert "SELECT veil.security_label('mask', 'COLUMN', 'public.client.loyalty', 'NOT MASKED')" in message
    assert "public.client.legacy" not in message and SECRET not in message
    # The failing revision's DDL is gone; the revision before it stays only in its own transaction.
    assert not has_column(client, "public.client", "loyalty")
    if per_migration:
        assert app_version(client) == "r1"
        assert has_column(client, "public.visit", "note")
    else:
        assert app_version(client) is None
        assert client.scalar("SELECT to_regclass('public.visit')") is None

    # The same revision with its rule passes.
    write_revision(versions, "r2", "r1", "add loyalty with its rule", ADD_LOYALTY, LOYALTY_RULE)
    passed = alembic_upgrade(ini, client.url)
    assert passed.returncode == 0, passed.stdout
    assert app_version(client) == "r2"
    assert has_column(client, "public.client", "loyalty")
    assert client.scalar("SELECT veil.current_label('mask', 'COLUMN', 'public.client.loyalty')") == (
        "MASKED WITH VALUE NULL"
    )
    # The pre-existing gap is still for `pgveil audit` to report.
    assert [p.object for p in audit_service.audit(client.admin).problems] == ["public.client.legacy"]


def test_the_alembic_gate_fails_a_revision_that_removes_a_rule_or_makes_one_stale(client, tmp_path):
    label(client, "COLUMN", "public.client.phone", "NOT MASKED")
    label(client, "COLUMN", "public.client.phone", "MASKED WITH VALUE 'none'", policy="sanitized")
    for column in ("id", "email", '"E-mail 2"'):
        label(client, "COLUMN", f"public.client.{column}", "NOT MASKED", policy="sanitized")
    ini = alembic_project(tmp_path, per_migration=True, baseline_now=True)
    versions = tmp_path / "project" / "versions"
    write_revision(
        versions, "r1", None, "forget a rule", "op.security_label('mask', 'COLUMN', 'public.client.phone', None)"
    )
    failed = alembic_upgrade(ini, client.url)
    assert failed.returncode != 0 and "uncovered column public.client.phone" in failed.stdout
    assert client.scalar("SELECT veil.current_label('mask', 'COLUMN', 'public.client.phone')") == "NOT MASKED"

    write_revision(
        versions,
        "r1",
        None,
        "retype phone",
        'op.execute("ALTER TABLE public.client ALTER COLUMN phone TYPE integer USING NULL")',
    )
    failed = alembic_upgrade(ini, client.url)
    assert failed.returncode != 0 and "stale rule public.client.phone" in failed.stdout
    assert (
        client.scalar(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'public.client'::regclass AND attname = 'phone'"
        )
        == "text"
    )
    assert app_version(client) is None


def test_without_a_baseline_the_gate_still_fails_a_first_revision_that_adds_an_uncovered_column(client, tmp_path):
    client.execute("ALTER TABLE public.client ADD COLUMN legacy text")  # before the run: not blamed
    ini = alembic_project(tmp_path, per_migration=True, baseline_now=False)
    versions = tmp_path / "project" / "versions"
    write_revision(versions, "r1", None, "add loyalty", ADD_LOYALTY)
    failed = alembic_upgrade(ini, client.url)
    assert failed.returncode != 0 and "uncovered column public.client.loyalty" in failed.stdout, failed.stdout
    assert "public.client.legacy" not in failed.stdout
    assert not has_column(client, "public.client", "loyalty") and app_version(client) is None
    write_revision(versions, "r1", None, "add loyalty with its rule", ADD_LOYALTY, LOYALTY_RULE)
    assert alembic_upgrade(ini, client.url).returncode == 0
    assert has_column(client, "public.client", "loyalty")
