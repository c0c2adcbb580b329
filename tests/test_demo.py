"""`pgveil demo`, the README's first command, end to end."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from pgveil import sandbox
from pgveil.cli import app

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_demo_runs_end_to_end_in_its_own_sandbox(tmp_path):
    result = CliRunner().invoke(
        app, ["demo"], env={"DATABASE_URL": None, "PGVEIL_SANDBOX_DIR": str(tmp_path), "COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "consumer connected as consumer: cannot read public.address, public.customer" in out
    assert re.search(r"t= 3s  app wrote +\d+ rows +consumer received: .*customer upsert \d+", out)
    assert re.search(r"app: \d+ writes in \d+ transactions", out)
    # side by side: the application's email, the analyst's partial one, the consumer's token
    emails = re.findall(r"│ email +│ (\S+) +│ (\S+) +│ (\S+) +│", out)
    assert len(emails) == 2, out
    for raw, masked, token in emails:
        assert "@" in raw and "*" in masked and token.startswith("v1:")
        assert raw not in (masked, token)
    assert "analyst: SELECT * FROM public.customer → refused: permission denied" in out
    assert "consumer: SELECT * FROM public.customer → refused: permission denied" in out
    assert "sandbox stopped" in out
    assert sandbox.status(tmp_path) is None


def test_the_demo_will_not_change_the_password_of_a_role_it_did_not_create(demo, bare, monkeypatch):
    """The demo template created the roles (cluster-wide); in another database they are not the
    demo's to change: one clear error, and nothing installed."""
    monkeypatch.setenv("DATABASE_URL", bare.url)
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 1
    assert "role 'app' existed before the demo was installed" in result.output
    assert bare.scalar("SELECT count(*) FROM pg_namespace WHERE nspname IN ('veil', 'sanitized')") == 0


@pytest.mark.slow
def test_alembic_x_demo_password_lets_the_demo_roles_log_in(bare):
    """What docker-compose relies on: roles the demo revisions create get -x demo_password."""
    suffix = secrets.token_hex(4)
    names = {option: f"t_{suffix}_{option.split('_')[0]}" for option in ("app_role", "analyst_role", "consumer_role")}
    options = [arg for option, name in names.items() for arg in ("-x", f"{option}={name}")]
    done = subprocess.run(
        ["alembic", *options, "-x", "demo_password=s3cret", "upgrade", "head"],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": bare.url},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    with psycopg.connect(bare.server.url(bare.name, names["app_role"], "s3cret")) as conn:
        assert conn.execute("SELECT count(*) FROM public.customer").fetchone()[0] == 0
