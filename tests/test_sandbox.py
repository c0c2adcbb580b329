"""The sandbox command starts, reports and removes a real cluster."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgveil import sandbox


def pgveil(*args: str, sandbox_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PGVEIL_SANDBOX_DIR"] = str(sandbox_dir)
    return subprocess.run([sys.executable, "-m", "pgveil", *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_start_url_stop(tmp_path):
    root = tmp_path / "sandbox"
    started = pgveil("sandbox", "start", sandbox_dir=root)
    try:
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        data_dir = Path(json.loads((root / "state.json").read_text())["data_dir"])
        assert url.startswith("postgresql://pgveil:")
        with psycopg.connect(url) as conn:
            assert conn.execute("SHOW server_version_num").fetchone()[0] >= "150000"
        again = pgveil("sandbox", "start", sandbox_dir=root)
        assert again.stdout.strip() == url, "a second start reuses the running cluster"
        assert pgveil("sandbox", "url", sandbox_dir=root).stdout.strip() == url
        if os.geteuid() == 0:
            # PostgreSQL refuses root: the cluster belongs to an unprivileged user.
            assert pwd.getpwuid(data_dir.stat().st_uid).pw_name != "root"
    finally:
        stopped = pgveil("sandbox", "stop", sandbox_dir=root)
    assert stopped.returncode == 0
    assert not (root / "state.json").exists()
    assert not data_dir.exists()
    gone = pgveil("sandbox", "url", sandbox_dir=root)
    assert gone.returncode == 1
    assert "no sandbox is running" in gone.stderr
    try:
        psycopg.connect(url, connect_timeout=2)
        raise AssertionError("the server still accepts connections after stop")
    except psycopg.OperationalError:
        pass


@pytest.mark.slow
def test_password_is_required(tmp_path):
    root = tmp_path / "sandbox"
    url = pgveil("sandbox", "start", sandbox_dir=root).stdout.strip()
    try:
        wrong = url.replace("pgveil:", "pgveil:x", 1)
        try:
            psycopg.connect(wrong, connect_timeout=5)
            raise AssertionError("a wrong password was accepted")
        except psycopg.OperationalError as exc:
            assert "password authentication failed" in str(exc)
    finally:
        pgveil("sandbox", "stop", sandbox_dir=root)


@pytest.mark.slow
def test_a_durable_sandbox_keeps_postgresql_durability_settings(tmp_path):
    """Benchmarks that measure commits need fsync on; the ordinary sandbox trades it for speed."""
    settings = (
        "SELECT current_setting('fsync'), current_setting('synchronous_commit'), current_setting('full_page_writes')"
    )
    for durable, expected in ((True, ("on", "on", "on")), (False, ("off", "off", "off"))):
        root = tmp_path / f"durable-{durable}"
        state = sandbox.start(root, durable=durable)
        try:
            with psycopg.connect(state.url) as conn:
                assert conn.execute(settings).fetchone() == expected
        finally:
            sandbox.stop(root)
