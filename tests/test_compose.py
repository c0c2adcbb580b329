"""docker-compose.yml mirrors what the tests exercise (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import yaml

REPO = Path(__file__).resolve().parent.parent


def test_compose_runs_the_migrations_against_the_server_version_we_test(pg_server):
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    db, migrate = compose["services"]["db"], compose["services"]["migrate"]
    with psycopg.connect(pg_server.url("postgres")) as conn:
        tested_major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
    assert re.fullmatch(rf"postgres:{tested_major}(\..*)?", db["image"])
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert migrate["environment"]["DATABASE_URL"].startswith("postgresql://")
    assert "@db:5432/" in migrate["environment"]["DATABASE_URL"]
    assert "uv run alembic upgrade head" in " ".join(migrate["command"])
