"""`pgveil uninstall` leaves nothing of pgveil, Alembic's version table included."""

from __future__ import annotations

from typer.testing import CliRunner

from pgveil.cli import app
from tests.helpers import catalog


def test_uninstall_through_the_cli_leaves_the_database_as_it_was(bare) -> None:
    before = catalog(bare, version_table=True)
    runner = CliRunner()
    installed = runner.invoke(app, ["install", "--database-url", bare.url])
    assert installed.exit_code == 0, installed.output
    assert "pgveil 0.1.0 installed" in installed.output
    assert bare.scalar("SELECT to_regclass('public.pgveil_version')") is not None

    removed = runner.invoke(app, ["uninstall", "--database-url", bare.url])
    assert removed.exit_code == 0, removed.output
    assert "pgveil removed" in removed.output
    assert bare.scalar("SELECT to_regclass('public.pgveil_version') IS NULL") is True
    assert catalog(bare, version_table=True) == before


def test_uninstall_where_nothing_is_installed_changes_nothing(bare) -> None:
    before = catalog(bare, version_table=True)
    removed = CliRunner().invoke(app, ["uninstall", "--database-url", bare.url])
    assert removed.exit_code == 0, removed.output
    assert catalog(bare, version_table=True) == before


def test_uninstall_failure_is_one_line(bare) -> None:
    bare.execute("CREATE SCHEMA veil")
    removed = CliRunner().invoke(app, ["uninstall", "--database-url", bare.url])
    assert removed.exit_code == 1
    assert removed.output.strip().splitlines() == [removed.output.strip()]
    assert "error: schema veil exists and was not created by pgveil" in removed.output
    assert bare.scalar("SELECT to_regnamespace('veil') IS NOT NULL") is True
