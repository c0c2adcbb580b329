"""Bad input before install: one clear line, a non-zero exit, nothing changed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pgveil import preflight
from pgveil.errors import PgveilError
from tests.helpers import catalog

REPO = Path(__file__).resolve().parent.parent


def alembic_upgrade(tmp_path, database_url: str | None) -> subprocess.CompletedProcess:
    """`alembic upgrade head` from the repository root, as a DBA runs it."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PGVEIL_SANDBOX_DIR"] = str(tmp_path / "no-sandbox-here")
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_clear_failure(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    failed = [line for line in (done.stderr + done.stdout).splitlines() if line.startswith("FAILED:")]
    assert len(failed) == 1, done.stderr
    for fragment in fragments:
        assert fragment in failed[0]


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unset_database_url_without_a_sandbox(tmp_path):
    assert_one_clear_failure(alembic_upgrade(tmp_path, None), "DATABASE_URL is not set", "pgveil sandbox start")


@pytest.mark.parametrize("url", ["mysql://root@localhost/db", "not a url", "postgresql//localhost/db"])
def test_invalid_database_url(tmp_path, url):
    assert_one_clear_failure(alembic_upgrade(tmp_path, url), "postgresql://")


def test_unreachable_server(tmp_path):
    url = f"postgresql://someone:pw@127.0.0.1:{unused_port()}/db"
    assert_one_clear_failure(alembic_upgrade(tmp_path, url), "cannot reach PostgreSQL", "start the server")


def test_wrong_password(tmp_path, bare):
    url = bare.server.url(bare.name, bare.server.user, "wrong-password")
    before = catalog(bare)
    assert_one_clear_failure(alembic_upgrade(tmp_path, url), "cannot log in", "password")
    assert catalog(bare) == before


def test_schema_veil_that_pgveil_did_not_create(tmp_path, bare):
    bare.execute("CREATE SCHEMA veil")
    bare.execute("CREATE TABLE veil.precious (x int)")
    before = catalog(bare)
    assert_one_clear_failure(alembic_upgrade(tmp_path, bare.url), "schema veil exists", "not created by pgveil")
    assert catalog(bare) == before


def test_role_without_create_on_the_database(tmp_path, bare):
    weak = bare.role("weak")
    before = catalog(bare)
    assert_one_clear_failure(alembic_upgrade(tmp_path, weak.url), "may not create schemas", "GRANT CREATE ON DATABASE")
    assert catalog(bare) == before


def test_role_without_create_on_the_version_table_schema(tmp_path, bare):
    user = bare.role("nopublic")
    bare.execute(f'GRANT CREATE ON DATABASE "{bare.name}" TO "{user.name}"')
    before = catalog(bare)
    assert_one_clear_failure(alembic_upgrade(tmp_path, user.url), "may not create tables in schema public")
    assert catalog(bare) == before


# No PostgreSQL 14 server or pgcrypto-less contrib exists on our machines, so
# these two run the real checks against the real server with the bar raised.
def test_server_older_than_required(bare):
    with preflight.connect(bare.url) as conn, pytest.raises(PgveilError, match=r"too old .* needs PostgreSQL 99"):
        preflight.check(conn, min_version_num=990000)


def test_missing_extension(bare):
    with preflight.connect(bare.url) as conn, pytest.raises(PgveilError, match=r"not available .* contrib"):
        preflight.check(conn, extension="pgveil_no_such_extension")


def test_preflight_passes_on_a_fresh_database(bare):
    before = catalog(bare)
    preflight.run(bare.url)
    assert catalog(bare) == before
