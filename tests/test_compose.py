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
    assert "uv run alembic -x demo_password=$$DEMO_PASSWORD upgrade head" in " ".join(migrate["command"])


def test_compose_runs_loader_and_consumer_as_their_own_roles_after_the_migration():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    for name, role, command in (("loader", "app", "pgveil load"), ("consumer", "consumer", "pgveil consume")):
        service = services[name]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["environment"]["DATABASE_URL"].startswith(f"postgresql://{role}:")
        assert "@db:5432/pgveil" in service["environment"]["DATABASE_URL"]
        assert command in " ".join(service["command"])
    # the password the migration gives the demo roles is the one the programs log in with
    assert services["migrate"]["environment"]["DEMO_PASSWORD"] == "${DEMO_PASSWORD:-demo}"


def test_compose_serves_the_api_with_a_token_and_a_volume_for_its_files():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    api = compose["services"]["api"]
    command = " ".join(api["command"])
    assert "uv run pgveil api --host 0.0.0.0 --port 8000 --data-dir /data" in command
    # No default token: compose refuses to start the service without one.
    assert api["environment"]["PGVEIL_API_TOKEN"].startswith("${PGVEIL_API_TOKEN:?")
    assert "pgveil-api:/data" in api["volumes"] and "pgveil-api" in compose["volumes"]
    assert api["ports"] == ["8000:8000"]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
