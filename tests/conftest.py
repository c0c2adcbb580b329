"""Test harness: a real PostgreSQL server, a fresh database per test.

The server is the one named by ``DATABASE_URL`` (its user must be a superuser:
tests create databases and roles), else a sandbox cluster that this session
starts in a temporary directory and stops at the end.

Databases are cloned from templates (pytest-postgresql), one template per
starting state: ``bare`` (nothing installed), ``toolkit`` (pgveil installed)
and ``demo`` (pgveil and the demo application). Roles are cluster-wide, so
test roles get unique names and are dropped after the test's database.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from psycopg import sql
from pytest_postgresql import factories

from pgveil import migrate, sandbox

# The REST API's tests' webhook receiver (a fixture, `receiver`).
pytest_plugins = ["tests.webhook_receiver"]


@dataclass
class Server:
    """What pytest-postgresql needs to know of a server it did not start."""

    host: str
    port: int
    user: str
    password: str | None
    options: str = ""
    maintenance_dbname: str = "postgres"
    template_dbname: str | None = None

    def url(self, dbname: str, user: str | None = None, password: str | None = None) -> str:
        user = user or self.user
        password = self.password if password is None and user == self.user else password
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"


@pytest.fixture(scope="session")
def pg_server():
    url = os.environ.get("DATABASE_URL")
    if url:
        parts = urlsplit(url)
        server = Server(parts.hostname or "localhost", parts.port or 5432, parts.username, parts.password)
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            roles_before = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
        yield server
        # The demo template's roles (consumer, analyst, app) outlive its database;
        # drop them and any test role left behind, if this run created them.
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            for (name,) in conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname IN ('consumer', 'analyst', 'app') OR rolname ~ '^t_[0-9a-f]{8}_'"
            ).fetchall():
                if name not in roles_before:
                    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
        return
    root = Path(tempfile.mkdtemp(prefix="pgveil-tests-"))
    state = sandbox.start(root)
    try:
        yield Server("127.0.0.1", state.port, sandbox.SUPERUSER, state.password)
    finally:
        sandbox.stop(root)
        root.rmdir()


@pytest.fixture
def own_server() -> Iterator[tuple[Path, str]]:
    """A server of the test's own, with the toolkit and the demo, to restart under
    the feet of a program it runs; yields its sandbox directory and URL."""
    root = Path(tempfile.mkdtemp(prefix="pgveil-restart-"))
    state = sandbox.start(root)
    try:
        with psycopg.connect(state.url, autocommit=True) as admin:
            # The sandbox acknowledges commits before they are durable (a
            # crash would undo acknowledged commits); test as production runs.
            admin.execute("ALTER DATABASE postgres SET synchronous_commit = on")
        migrate.upgrade(state.url, with_demo=True)
        yield root, state.url
    finally:
        sandbox.stop(root)
        root.rmdir()


def _loader(with_demo: bool):
    def load(host, port, user, dbname, password, **_):
        server = Server(host, int(port), user, password)
        migrate.upgrade(server.url(dbname), with_demo=with_demo)

    return load


bare_proc = factories.postgresql_noproc(depends_on="pg_server", dbname="pgveil_test_bare")
toolkit_proc = factories.postgresql_noproc(
    depends_on="pg_server", dbname="pgveil_test_toolkit", load=[_loader(with_demo=False)]
)
demo_proc = factories.postgresql_noproc(
    depends_on="pg_server", dbname="pgveil_test_demo", load=[_loader(with_demo=True)]
)
bare_conn = factories.postgresql("bare_proc")
toolkit_conn = factories.postgresql("toolkit_proc")
demo_conn = factories.postgresql("demo_proc")


@dataclass
class Role:
    name: str
    password: str
    url: str

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.url, **kwargs)


@dataclass
class Database:
    """One test's database: an autocommit superuser connection, and its roles."""

    server: Server
    admin: psycopg.Connection
    _roles: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.admin.info.dbname

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    def execute(self, query, params=None):
        return self.admin.execute(query, params)

    def scalar(self, query, params=None):
        row = self.admin.execute(query, params).fetchone()
        return None if row is None else row[0]

    def role(self, hint: str, attributes: str = "") -> Role:
        """A LOGIN role unique to this test (``attributes``: e.g. 'CREATEROLE')."""
        name = f"t_{secrets.token_hex(4)}_{hint}"
        password = secrets.token_urlsafe(12)
        self.admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} " + attributes).format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
        self._roles.append(name)
        self.admin.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(self.name), sql.Identifier(name))
        )
        return Role(name, password, self.server.url(self.name, name, password))

    def drop_roles(self, maintenance: psycopg.Connection) -> None:
        for name in reversed(self._roles):
            maintenance.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def _role_janitor(pg_server):
    """Drops the test's roles after its database is gone (set up first, torn down last)."""
    databases: list[Database] = []
    yield databases
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as maintenance:
        for db in databases:
            db.drop_roles(maintenance)


def _database(janitor, server, conn) -> Database:
    conn.autocommit = True
    db = Database(server, conn)
    janitor.append(db)
    return db


@pytest.fixture
def bare(_role_janitor, pg_server, bare_conn) -> Database:
    """A database with nothing of pgveil in it."""
    return _database(_role_janitor, pg_server, bare_conn)


@pytest.fixture
def toolkit(_role_janitor, pg_server, toolkit_conn) -> Database:
    """A database with the pgveil toolkit installed."""
    return _database(_role_janitor, pg_server, toolkit_conn)


@pytest.fixture
def demo(_role_janitor, pg_server, demo_conn) -> Database:
    """A database with the toolkit and the demo application installed."""
    db = _database(_role_janitor, pg_server, demo_conn)
    # A database cloned from a template does not inherit per-database role
    # settings: the refresh gives analyst its search_path here.
    db.execute("SELECT veil.refresh_masking()")
    return db
