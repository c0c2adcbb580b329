"""`pgveil uninstall` leaves nothing of pgveil, Alembic's version table included."""

from __future__ import annotations

from typer.testing import CliRunner

from pgveil.cli import app

# Everything an install could create, by name, cluster- and database-wide —
# Alembic's version table too.
CATALOG_QUERIES = {
    "schemas": "SELECT nspname FROM pg_namespace",
    "relations": "SELECT c.oid::regclass::text || ':' || relkind::text FROM pg_class c",
    "functions": "SELECT p.oid::regprocedure::text FROM pg_proc p",
    "types": "SELECT t.oid::regtype::text FROM pg_type t",
    "extensions": "SELECT extname || ' ' || extnamespace::regnamespace::text FROM pg_extension",
    "roles": "SELECT rolname FROM pg_roles",
    "event_triggers": "SELECT evtname FROM pg_event_trigger",
    "triggers": "SELECT tgrelid::regclass::text || '.' || tgname FROM pg_trigger",
    "default_acls": "SELECT defaclrole::regrole::text || defaclobjtype::text FROM pg_default_acl",
}


def everything(db) -> dict[str, set[str]]:
    return {name: {r[0] for r in db.execute(query).fetchall()} for name, query in CATALOG_QUERIES.items()}


def test_uninstall_through_the_cli_leaves_the_database_as_it_was(bare) -> None:
    before = everything(bare)
    runner = CliRunner()
    installed = runner.invoke(app, ["install", "--database-url", bare.url])
    assert installed.exit_code == 0, installed.output
    assert "pgveil 0.1.0 installed" in installed.output
    assert bare.scalar("SELECT to_regclass('public.pgveil_version')") is not None

    removed = runner.invoke(app, ["uninstall", "--database-url", bare.url])
    assert removed.exit_code == 0, removed.output
    assert "pgveil removed" in removed.output
    assert bare.scalar("SELECT to_regclass('public.pgveil_version') IS NULL") is True
    assert everything(bare) == before


def test_uninstall_where_nothing_is_installed_changes_nothing(bare) -> None:
    before = everything(bare)
    removed = CliRunner().invoke(app, ["uninstall", "--database-url", bare.url])
    assert removed.exit_code == 0, removed.output
    assert everything(bare) == before


def test_uninstall_failure_is_one_line(bare) -> None:
    bare.execute("CREATE SCHEMA veil")
    removed = CliRunner().invoke(app, ["uninstall", "--database-url", bare.url])
    assert removed.exit_code == 1
    assert removed.output.strip().splitlines() == [removed.output.strip()]
    assert "error: schema veil exists and was not created by pgveil" in removed.output
    assert bare.scalar("SELECT to_regnamespace('veil') IS NOT NULL") is True
