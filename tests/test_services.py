"""The services layer: plain data back, no printing; and where the target URL is resolved."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import psycopg
import pytest

from pgveil import config, migrate
from pgveil.errors import PgveilError
from pgveil.services import install, keys, masking, streaming

NOWHERE = "postgresql://nobody:secret@127.0.0.1:1/nothing"


# --- resolving the target: explicit, else DATABASE_URL, else the entry point's fallback ---


class Fallback:
    """A fallback that remembers whether it was asked."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.asked = 0

    def __call__(self) -> str:
        self.asked += 1
        if self.url is None:
            raise PgveilError("no fallback here")
        return self.url


def test_an_explicit_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://env@host/db")
    fallback = Fallback("postgresql://fallback@host/db")
    assert config.database_url("postgresql://explicit@host/db", fallback=fallback) == "postgresql://explicit@host/db"
    assert config.database_url(None, fallback=fallback) == "postgresql://env@host/db"
    assert fallback.asked == 0


def test_the_fallback_only_without_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    fallback = Fallback("postgresql://fallback@host/db")
    assert config.database_url(None, fallback=fallback) == "postgresql://fallback@host/db"
    assert fallback.asked == 1
    with pytest.raises(PgveilError, match="no fallback here"):
        config.database_url(None, fallback=Fallback(None))
    with pytest.raises(PgveilError, match="DATABASE_URL is not set"):
        config.database_url(None)


def test_every_source_of_a_url_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root@host/db")
    with pytest.raises(PgveilError, match="must start with postgresql://"):
        config.database_url(None)
    monkeypatch.delenv("DATABASE_URL")
    with pytest.raises(PgveilError, match="must start with postgresql://"):
        config.database_url(None, fallback=Fallback("not a url"))


def test_the_migrations_use_the_callers_url_as_given(bare, monkeypatch: pytest.MonkeyPatch) -> None:
    """pgveil.migrate passes the URL it was given; the Alembic environment does not resolve again."""
    monkeypatch.setenv("DATABASE_URL", NOWHERE)

    def resolved_again(*args: object, **kwargs: object) -> str:
        raise AssertionError("migrations/env.py resolved the target again")

    monkeypatch.setattr(config, "database_url", resolved_again)
    migrate.upgrade(bare.url)
    assert bare.scalar("SELECT veil.version()") == "0.1.0"


# --- install: preflight, install, inventory, uninstall ---


def test_install_returns_what_is_installed_and_uninstall_removes_it(bare) -> None:
    install.preflight(bare.url)
    with psycopg.connect(bare.url) as conn:
        assert install.inventory(conn) is None
    installed = install.install(bare.url)
    assert installed.version == "0.1.0"
    counts = {(o.schema, o.kind): o.count for o in installed.objects}
    assert counts[("veil", "functions")] > 10 and counts[("veil_private", "tables")] > 0
    assert {o.schema for o in installed.objects} <= set(install.TOOLKIT_SCHEMAS)
    with psycopg.connect(bare.url) as conn:
        assert install.inventory(conn) == installed
    assert install.uninstall(bare.url) is True
    assert bare.scalar("SELECT to_regnamespace('veil')") is None
    assert bare.scalar("SELECT to_regclass('public.pgveil_version')") is None


def test_alembic_downgrade_base_keeps_its_version_table(bare) -> None:
    """Alembic's convention; only `pgveil uninstall` removes the table."""
    migrate.upgrade(bare.url)
    migrate.downgrade(bare.url)
    assert bare.scalar("SELECT to_regclass('public.pgveil_version')") is not None
    assert bare.scalar("SELECT count(*) FROM public.pgveil_version") == 0


def test_a_version_table_that_still_records_revisions_stays(bare) -> None:
    bare.execute("CREATE TABLE public.pgveil_version (version_num varchar(32) PRIMARY KEY)")
    bare.execute("INSERT INTO public.pgveil_version VALUES ('someone_elses')")
    with psycopg.connect(bare.url) as conn:
        assert install.drop_version_table(conn) is False
    assert bare.scalar("SELECT version_num FROM public.pgveil_version") == "someone_elses"
    bare.execute("DELETE FROM public.pgveil_version")
    with psycopg.connect(bare.url) as conn:
        assert install.drop_version_table(conn) is True
        assert install.drop_version_table(conn) is True  # already gone
    assert bare.scalar("SELECT to_regclass('public.pgveil_version')") is None


def test_a_failed_preflight_is_one_error(bare) -> None:
    bare.execute("CREATE SCHEMA veil")
    with pytest.raises(PgveilError, match="schema veil exists"):
        install.preflight(bare.url)


# --- keys and streaming ---


@pytest.fixture
def autocommit(demo) -> Iterator[psycopg.Connection]:
    with psycopg.connect(demo.url, autocommit=True) as conn:
        yield conn


def test_key_versions_and_rotation(toolkit) -> None:
    with psycopg.connect(toolkit.url, autocommit=True) as conn:
        assert keys.current_version(conn) == 1
        assert keys.rotate(conn) == 2
        assert keys.current_version(conn) == 2
        assert [(k.version, k.is_current) for k in keys.versions(conn)] == [(1, False), (2, True)]
    # committed: another session sees it
    assert toolkit.scalar("SELECT version FROM veil.key_versions WHERE is_current") == 2


def test_backfill_reports_progress_through_its_callback(demo, autocommit: psycopg.Connection) -> None:
    demo.execute("ALTER TABLE customer DISABLE TRIGGER USER")
    demo.execute("INSERT INTO address (address) VALUES ('street')")
    demo.execute(
        "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
        " SELECT 1, 'f' || g, 'l' || g, 'c' || g || '@example.com', 1 FROM generate_series(1, 250) g"
    )
    demo.execute("ALTER TABLE customer ENABLE TRIGGER USER")
    batches: list[int] = []
    assert streaming.backfill(autocommit, "public.customer", 100, batches.append) == 250
    assert sum(batches) == 250 and max(batches) <= 100
    assert demo.scalar("SELECT count(*) FROM sanitized.customer") == 250


def test_rekey_returns_the_new_key_version(demo, autocommit: psycopg.Connection) -> None:
    assert streaming.rekey(autocommit, 50) == 2
    assert [k.version for k in keys.versions(autocommit)] == [2]


# --- masking ---


def test_status_is_plain_data(demo) -> None:
    with psycopg.connect(demo.url) as conn:
        report = masking.status(conn)
        # the report's search_path was local to its own transaction
        assert conn.execute("SHOW search_path").fetchone() != ("pg_catalog",)
    assert dataclasses.is_dataclass(report)
    data = report.as_dict()
    assert list(data) == ["policies", "masked_roles", "masked_tables", "streams", "problems", "refresh_after_ddl"]
    assert list(report.sections()) == list(data)[:-1]
    assert {p["policy"] for p in report.policies} >= {"mask", "sanitized"}
    assert {s["source"] for s in report.streams} == {"public.customer", "public.payment"}
    assert report.problems == []
    assert report.refresh_after_ddl == "automatic"
    json.dumps(data, default=str)


def test_refresh_commits_its_work_and_counts_views(demo) -> None:
    with psycopg.connect(demo.url) as conn:
        rebuilt = masking.refresh(conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert list(rebuilt) == ["mask"] and isinstance(rebuilt["mask"], int)
    with psycopg.connect(demo.url) as conn:
        assert list(masking.refresh(conn, "mask")) == ["mask"]
        with pytest.raises(psycopg.errors.RaiseException, match="not a policy delivered through views"):
            masking.refresh(conn, "sanitized")
