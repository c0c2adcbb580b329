"""Alembic is the installer: install, upgrade, uninstall, and what they leave."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from pgveil import migrate
from tests.helpers import catalog

REPO = Path(__file__).resolve().parent.parent


def test_upgrade_then_downgrade_leaves_the_catalog_as_it_was(bare):
    before = catalog(bare)
    migrate.upgrade(bare.url, with_demo=True)
    installed = catalog(bare)
    assert {"veil", "veil_private"} <= installed["schemas"] - before["schemas"]
    assert any(f.startswith("veil.version(") for f in installed["functions"])
    migrate.downgrade(bare.url, with_demo=True)
    assert catalog(bare) == before


def test_install_records_its_version_and_reports_it(toolkit):
    assert toolkit.scalar("SELECT veil.version()") == "0.1.0"
    assert toolkit.scalar("SELECT version_num FROM pgveil_version") is not None


def test_pgcrypto_created_by_pgveil_lives_in_veil_ext_and_goes_on_uninstall(bare):
    migrate.upgrade(bare.url)
    assert (
        bare.scalar("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pgcrypto'")
        == "veil_ext"
    )
    migrate.downgrade(bare.url)
    assert bare.scalar("SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypto'") == 0
    assert bare.scalar("SELECT to_regnamespace('veil_ext')") is None


def test_pgcrypto_that_was_already_there_stays(bare):
    bare.execute("CREATE EXTENSION pgcrypto")
    migrate.upgrade(bare.url)
    assert bare.scalar("SELECT to_regnamespace('veil_ext')") is None
    migrate.downgrade(bare.url)
    assert (
        bare.scalar("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pgcrypto'") == "public"
    )


def test_upgrade_twice_is_a_no_op(toolkit):
    before = catalog(toolkit)
    migrate.upgrade(toolkit.url)
    assert catalog(toolkit) == before


def test_a_failing_step_rolls_back_the_whole_upgrade(bare):
    # The demo revision collides with an existing table; the toolkit revision
    # before it ran in the same transaction and must be gone too.
    bare.execute("CREATE TABLE public.customer (id int)")
    before = catalog(bare)
    with pytest.raises(psycopg.errors.DuplicateTable):
        migrate.upgrade(bare.url, with_demo=True)
    assert catalog(bare) == before


def test_a_non_superuser_database_owner_can_install_and_uninstall(bare):
    # The toolkit; the demo streams tables, which needs event triggers.
    owner = bare.role("owner")
    bare.execute(f'ALTER DATABASE "{bare.name}" OWNER TO "{owner.name}"')
    bare.execute(f'ALTER SCHEMA public OWNER TO "{owner.name}"')
    migrate.upgrade(owner.url)
    assert bare.scalar("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'veil_private'") == owner.name
    with owner.connect() as conn:
        assert conn.execute("SELECT veil.version()").fetchone()[0] == "0.1.0"
    with owner.connect() as conn, pytest.raises(psycopg.errors.RaiseException, match="DDL event trigger"):
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.execute("SELECT veil.security_label('sanitized', 'COLUMN', 'public.t.id', 'NOT MASKED')")
        conn.execute("SELECT veil.stream('public.t')")
    migrate.downgrade(owner.url)
    assert bare.scalar("SELECT to_regnamespace('veil')") is None


def test_each_revision_set_has_exactly_one_head():
    toolkit_only = migrate.alembic_config("postgresql://unused@localhost/x")
    with_demo = migrate.alembic_config("postgresql://unused@localhost/x", with_demo=True)
    assert len(migrate.heads(toolkit_only)) == 1
    assert len(migrate.heads(with_demo)) == 1
    checkout = Config(str(REPO / "alembic.ini"))
    assert ScriptDirectory.from_config(checkout).get_heads() == migrate.heads(with_demo)


def test_toolkit_revisions_never_include_the_demo():
    script = ScriptDirectory.from_config(migrate.alembic_config("postgresql://unused@localhost/x"))
    assert all(not rev.revision.startswith("d") for rev in script.walk_revisions())
