"""`pgveil restore`: pgveil dumps loaded by stock pg_restore/psql, checked first, undone on failure."""

from __future__ import annotations

import gzip
import hashlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer
from psycopg import sql
from typer.testing import CliRunner

from pgveil import cli_restore, dump_manifest, pg_archive, pg_tools
from pgveil.errors import PgveilError
from pgveil.services import dump
from pgveil.services import restore as restore_service
from pgveil.services.restore import RestoreOptions
from tests.helpers import seed

app = typer.Typer()
cli_restore.register(app)


@app.callback()
def _group() -> None:
    """`restore` as a subcommand, as in pgveil's application."""


runner = CliRunner()


@dataclass
class Target:
    name: str
    url: str

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True)

    def scalar(self, query: str) -> Any:
        with self.connect() as conn:
            row = conn.execute(query).fetchone()
            return None if row is None else row[0]

    def contents(self) -> dict[str, int]:
        with self.connect() as conn:
            return restore_service.contents(conn)


EMPTY = {"tables": 0, "views": 0, "sequences": 0, "functions": 0, "types": 0}


@pytest.fixture
def maintenance(pg_server) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        yield conn


@pytest.fixture
def target(pg_server, maintenance) -> Iterator[Target]:
    """An empty database (from template0) to restore into, dropped afterwards."""
    name = f"pgveil_restore_{secrets.token_hex(4)}"
    maintenance.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    yield Target(name, pg_server.url(name))
    maintenance.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def new_database(pg_server, maintenance) -> Iterator[Target]:
    """A database name that does not exist yet (dropped afterwards if a test made it)."""
    name = f"pgveil_restore_new_{secrets.token_hex(4)}"
    yield Target(name, pg_server.url(name))
    maintenance.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def source(demo):
    seed(demo, customers=30, payments=60)
    demo.execute("CREATE INDEX payment_amount_idx ON payment (amount)")
    return demo


def directory_dump(db, path: Path, **options: Any) -> Path:
    dump.dump(db.url, dump.DumpOptions(policy="mask", output=path, uncovered="keep", **options))
    return path


def plain_dump(db, path: Path, compress: int | None = None) -> Path:
    options = dump.DumpOptions(policy="mask", output=path, uncovered="keep", archive_format="plain", compress=compress)
    dump.dump(db.url, options)
    return path


def restore(path: Path, target: Target, *args: str) -> Any:
    return runner.invoke(app, ["restore", str(path), "-d", target.url, *args])


def rows(target: Target) -> dict[str, int]:
    return {t: target.scalar(f"SELECT count(*) FROM public.{t}") for t in ("address", "customer", "payment")}


def edit_manifest(archive: Path, change: Any) -> None:
    path = archive / dump_manifest.FILE_NAME
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def rewrite_data_file(archive: Path, table: str, content: bytes) -> None:
    """Replace a table's data file and record its new size and SHA-256, so only a load can notice."""
    manifest = dump_manifest.read(archive)
    entry = next(t for t in manifest.tables if t.table == table)
    raw = gzip.compress(content) if entry.file.endswith(".gz") else content
    (archive / entry.file).write_bytes(raw)

    def change(doc: dict[str, Any]) -> None:
        for t in doc["tables"]:
            if t["table"] == table:
                t["bytes"], t["sha256"] = len(raw), hashlib.sha256(raw).hexdigest()

    edit_manifest(archive, change)


# -- restores that work --------------------------------------------------------------


def test_directory_archive_restores_into_an_empty_database_with_two_jobs(source, target, tmp_path):
    archive = directory_dump(source, tmp_path / "d")
    result = restore(archive, target, "-j", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["mode"] == "full"
    counted = {t["table"]: (t["expected"], t["restored"]) for t in report["tables"]}
    assert counted["customer"] == (30, 30) and counted["payment"] == (60, 60) and counted["address"] == (10, 10)
    assert rows(target) == {"address": 10, "customer": 30, "payment": 60}
    # Sequences carry their values; indexes and constraints came along; nothing of pgveil.
    assert target.scalar("SELECT last_value FROM public.customer_customer_id_seq") == source.scalar(
        "SELECT last_value FROM public.customer_customer_id_seq"
    )
    assert target.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 'payment_amount_idx'") == 1
    assert target.scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'veil%'") == 0
    # Masked values, not the source's.
    assert target.scalar("SELECT count(*) FROM public.customer WHERE first_name LIKE 'first%'") == 0


@pytest.mark.parametrize("compress", [None, 6])
def test_plain_script_restores_in_one_transaction(source, target, tmp_path, compress):
    script = plain_dump(source, tmp_path / ("p.sql.gz" if compress else "p.sql"), compress)
    assert dump_manifest.is_gzip(script) == bool(compress)
    result = restore(script, target)
    assert result.exit_code == 0, result.output
    assert rows(target) == {"address": 10, "customer": 30, "payment": 60}
    assert "public.customer" in result.stdout and "restored" in result.stdout


def test_non_empty_target_is_refused_and_clean_replaces_the_archive_objects(source, target, tmp_path):
    archive = directory_dump(source, tmp_path / "d")
    with target.connect() as conn:
        conn.execute("CREATE TABLE public.keep (x int); INSERT INTO public.keep VALUES (1)")
        conn.execute("CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    before = target.contents()
    result = restore(archive, target)
    assert result.exit_code == 1
    assert "is not empty: it holds 1 table, 1 function" in result.stderr and "--clean" in result.stderr
    assert target.contents() == before
    # Restored once, then again over itself with --clean (in parallel too); the other table stays.
    assert restore(archive, target, "--clean").exit_code == 0
    with target.connect() as conn:
        conn.execute("DELETE FROM public.payment")
    result = restore(archive, target, "--clean", "-j", "2")
    assert result.exit_code == 0, result.output
    assert rows(target) == {"address": 10, "customer": 30, "payment": 60}
    assert target.scalar("SELECT count(*) FROM public.keep") == 1


def test_create_makes_the_database_and_refuses_one_that_exists(source, new_database, target, tmp_path):
    archive = directory_dump(source, tmp_path / "d")
    result = restore(archive, new_database, "--create")
    assert result.exit_code == 0, result.output
    assert rows(new_database) == {"address": 10, "customer": 30, "payment": 60}
    result = restore(archive, target, "--create")
    assert result.exit_code == 1
    assert f"database {target.name} exists" in result.stderr
    assert target.contents() == EMPTY


def test_schema_mode_restores_no_rows_and_data_mode_loads_them(source, target, tmp_path):
    archive = directory_dump(source, tmp_path / "d")
    result = restore(archive, target, "--mode", "schema", "--json")
    assert result.exit_code == 0, result.output
    assert all(t["expected"] == 0 and t["restored"] == 0 for t in json.loads(result.stdout)["tables"])
    assert rows(target) == {"address": 0, "customer": 0, "payment": 0}
    assert target.scalar("SELECT count(*) FROM pg_constraint WHERE contype = 'f'") > 0
    result = restore(archive, target, "--mode", "data", "-j", "2")
    assert result.exit_code == 0, result.output
    assert rows(target) == {"address": 10, "customer": 30, "payment": 60}
    assert target.scalar("SELECT last_value FROM public.payment_payment_id_seq") == 60
    # Loading again would duplicate: refused, nothing changed.
    result = restore(archive, target, "--mode", "data")
    assert result.exit_code == 1 and "hold rows" in result.stderr
    assert rows(target) == {"address": 10, "customer": 30, "payment": 60}


def test_data_mode_needs_the_schema(source, target, tmp_path):
    archive = directory_dump(source, tmp_path / "d")
    result = restore(archive, target, "--mode", "data")
    assert result.exit_code == 1 and "restore the schema first" in result.stderr
    assert target.contents() == EMPTY


def test_table_selection_brings_the_table_indexes_and_plain_refuses_it(source, target, tmp_path):
    archive = directory_dump(source, tmp_path / "d")
    result = restore(archive, target, "-t", "public.payment", "--json")
    assert result.exit_code == 0, result.output
    assert [t["table"] for t in json.loads(result.stdout)["tables"]] == ["payment"]
    assert target.scalar("SELECT count(*) FROM public.payment") == 60
    indexes = target.scalar("SELECT array_agg(indexname::text) FROM pg_indexes WHERE tablename = 'payment'")
    assert {"payment_amount_idx", "payment_pkey"} <= set(indexes)
    assert target.scalar("SELECT to_regclass('public.customer')") is None
    # Its foreign key to customer cannot come without customer.
    assert target.scalar("SELECT count(*) FROM pg_constraint WHERE contype = 'f'") == 0

    script = plain_dump(source, tmp_path / "p.sql")
    other = restore(script, target, "--clean", "-t", "public.payment")
    assert other.exit_code == 1 and "cannot select tables" in other.stderr


def test_exclude_table_leaves_it_and_what_depends_on_it(source, target, tmp_path):
    archive = directory_dump(source, tmp_path / "d")
    result = restore(archive, target, "-T", "public.customer")
    assert result.exit_code == 0, result.output
    assert target.scalar("SELECT to_regclass('public.customer')") is None
    assert target.scalar("SELECT count(*) FROM public.payment") == 60
    assert restore(archive, target, "--clean", "-t", "public.nope").exit_code == 1


def test_pre_and_post_sql_run_and_a_failing_one_is_named(source, target, tmp_path):
    archive = directory_dump(source, tmp_path / "d")
    pre = tmp_path / "pre.sql"
    pre.write_text("CREATE SCHEMA patches;\n")
    post = tmp_path / "post.sql"
    post.write_text("CREATE TABLE patches.done AS SELECT count(*) AS n FROM public.customer;\n")
    result = restore(archive, target, "--pre-sql", str(pre), "--post-sql", str(post))
    assert result.exit_code == 0, result.output
    assert target.scalar("SELECT n FROM patches.done") == 30

    bad = tmp_path / "bad_post.sql"
    bad.write_text("UPDATE public.customer SET store_id = 9;\nSELECT * FROM public.no_such_table;\n")
    result = restore(archive, target, "--clean", "--post-sql", str(bad))
    assert result.exit_code == 1
    assert f"--post-sql {bad} failed" in result.stderr and "no_such_table" in result.stderr
    assert target.scalar("SELECT count(*) FROM public.customer WHERE store_id = 9") == 0


def test_failing_pre_sql_with_create_drops_the_new_database(source, new_database, tmp_path, maintenance):
    archive = directory_dump(source, tmp_path / "d")
    bad = tmp_path / "pre.sql"
    bad.write_text("SELECT 1/0;\n")
    result = restore(archive, new_database, "--create", "--pre-sql", str(bad))
    assert result.exit_code == 1 and f"--pre-sql {bad} failed" in result.stderr
    assert maintenance.execute("SELECT FROM pg_database WHERE datname = %s", (new_database.name,)).fetchone() is None


def test_row_count_that_differs_from_the_manifest_exits_1(source, target, tmp_path):
    archive = directory_dump(source, tmp_path / "d")
    edit_manifest(archive, lambda doc: [t.update(rows=31) for t in doc["tables"] if t["table"] == "customer"])
    result = restore(archive, target)
    assert result.exit_code == 1
    assert "differs" in result.stdout and "public.customer" in result.stderr


# -- refused before anything is written ------------------------------------------------


def test_data_file_short_by_a_byte_is_refused(source, target, tmp_path):
    archive = directory_dump(source, tmp_path / "d")
    data = next(t for t in dump_manifest.read(archive).tables if t.table == "payment").file
    (archive / data).write_bytes((archive / data).read_bytes()[:-1])
    result = restore(archive, target)
    assert result.exit_code == 1 and f"the data file {data} of public.payment has" in result.stderr
    assert target.contents() == EMPTY


def test_data_file_changed_in_place_is_refused(source, target, tmp_path):
    archive = directory_dump(source, tmp_path / "d")
    data = archive / next(t for t in dump_manifest.read(archive).tables if t.table == "payment").file
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    result = restore(archive, target)
    assert result.exit_code == 1 and "does not have the SHA-256" in result.stderr
    assert target.contents() == EMPTY


def test_truncated_toc_is_refused(source, target, tmp_path):
    archive = directory_dump(source, tmp_path / "d")
    toc = archive / pg_archive.TOC_FILE
    toc.write_bytes(toc.read_bytes()[:-10])
    result = restore(archive, target)
    assert result.exit_code == 1 and "truncated" in result.stderr
    assert target.contents() == EMPTY


def test_truncated_plain_script_is_refused(source, target, tmp_path):
    script = plain_dump(source, tmp_path / "p.sql")
    text = script.read_text()
    script.write_text(text[: text.index(restore_service.TRAILER)])
    result = restore(script, target)
    assert result.exit_code == 1 and "does not end with pg_dump's line" in result.stderr
    gz = plain_dump(source, tmp_path / "p.sql.gz", 6)
    gz.write_bytes(gz.read_bytes()[:-20])
    result = restore(gz, target)
    assert result.exit_code == 1 and "truncated or corrupt" in result.stderr
    assert target.contents() == EMPTY


def test_manifest_of_a_newer_format_is_refused(source, target, tmp_path):
    archive = directory_dump(source, tmp_path / "d")
    edit_manifest(archive, lambda doc: doc.update(pgveil_dump=99))
    result = restore(archive, target)
    assert result.exit_code == 1 and "newer pgveil (manifest format 99" in result.stderr
    assert target.contents() == EMPTY


def test_archive_newer_than_the_local_pg_restore_is_refused(source, target, tmp_path):
    archive = directory_dump(source, tmp_path / "d")
    toc = pg_archive.read(archive)
    toc.header.version = (1, 16, 0)
    toc.header.compression = pg_archive.COMPRESSION_GZIP
    pg_archive.write(archive, toc)
    result = restore(archive, target)
    assert result.exit_code == 1
    assert "version 1.16, which pg_restore 17 or newer reads; the pg_restore here is version 15" in result.stderr
    assert target.contents() == EMPTY


def test_older_target_server_is_refused(source, target, tmp_path):
    archive = directory_dump(source, tmp_path / "d")
    edit_manifest(archive, lambda doc: doc.update(source_server_version_num=170002))
    result = restore(archive, target)
    assert result.exit_code == 1
    assert "restoring into an older major version is not supported" in result.stderr
    assert target.contents() == EMPTY


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "everything"], "--mode is full, schema or data"),
        (["--clean", "--create"], "exclude each other"),
        (["--mode", "data", "--clean"], "does not go with --mode data"),
        (["--pre-sql", "/nonexistent.sql"], "no such file"),
        (["-t", "payment"], "is not a schema.table name"),
    ],
)
def test_bad_options_are_refused(source, target, tmp_path, args, message):
    archive = directory_dump(source, tmp_path / "d")
    result = restore(archive, target, *args)
    assert result.exit_code == 1 and message in result.stderr
    assert target.contents() == EMPTY


def test_plain_script_refuses_directory_only_options(source, target, tmp_path):
    script = plain_dump(source, tmp_path / "p.sql")
    for args, message in ((["-j", "2"], "-j needs a directory"), (["--no-owner"], "--no-owner")):
        result = restore(script, target, *args)
        assert result.exit_code == 1 and message in result.stderr
    assert target.contents() == EMPTY


# -- failures while writing leave the target as it was ---------------------------------

BAD_ROWS = b"1\t1\tnot-a-number-4242\t2020-01-01 00:00:00+00\n\\.\n\n\n"


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_failure_mid_restore_leaves_the_target_as_it_was(source, target, tmp_path, jobs):
    archive = directory_dump(source, tmp_path / "d")
    rewrite_data_file(archive, "payment", BAD_ROWS)
    result = restore(archive, target, "-j", jobs)
    assert result.exit_code == 1
    assert "loading the rows of table" in result.stderr and "payment" in result.stderr
    assert "4242" not in result.output  # the row's value is never quoted
    undone = (
        "Nothing was written: the restore ran in one transaction"
        if jobs == "1"
        else "objects the archive created were dropped"
    )
    assert undone in result.stderr
    assert target.contents() == EMPTY


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_failed_data_load_empties_the_tables_again(source, target, tmp_path, jobs):
    archive = directory_dump(source, tmp_path / "d")
    assert restore(archive, target, "--mode", "schema").exit_code == 0
    rewrite_data_file(archive, "payment", BAD_ROWS)
    result = restore(archive, target, "--mode", "data", "-j", jobs)
    assert result.exit_code == 1 and "4242" not in result.output
    if jobs == "2":
        assert "emptied again" in result.stderr
    assert rows(target) == {"address": 0, "customer": 0, "payment": 0}
    assert target.scalar("SELECT is_called FROM public.customer_customer_id_seq") is False


def test_failure_with_create_drops_the_new_database(source, new_database, tmp_path, maintenance):
    archive = directory_dump(source, tmp_path / "d")
    rewrite_data_file(archive, "payment", BAD_ROWS)
    result = restore(archive, new_database, "--create", "-j", "2")
    assert result.exit_code == 1 and "this restore created was dropped" in result.stderr
    assert maintenance.execute("SELECT FROM pg_database WHERE datname = %s", (new_database.name,)).fetchone() is None


def test_interrupt_undoes_the_restore_and_reraises(source, target, new_database, tmp_path, monkeypatch, maintenance):
    archive = directory_dump(source, tmp_path / "d")
    real_run = restore_service._run

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        real_run(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(restore_service, "_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        restore_service.restore(archive, target.url, RestoreOptions(jobs=2))
    assert target.contents() == EMPTY
    with pytest.raises(KeyboardInterrupt):
        restore_service.restore(archive, new_database.url, RestoreOptions(create=True, jobs=2))
    assert maintenance.execute("SELECT FROM pg_database WHERE datname = %s", (new_database.name,)).fetchone() is None


def test_tool_messages_never_quote_a_row():
    lines = [
        'pg_restore: error: COPY failed for table "payment": ERROR:  invalid input syntax for type numeric: "s3cret"',
        'CONTEXT:  COPY payment, line 1, column amount: "s3cret"',
        'pg_restore: error: could not execute query: ERROR:  could not create unique index "u"',
        "DETAIL:  Key (email)=(someone@example.com) is duplicated.",
        "Command was: CREATE UNIQUE INDEX u ON public.customer USING btree (email);",
    ]
    message = pg_tools.error_lines(lines, "pg_restore")
    assert "s3cret" not in message and "someone@example.com" not in message
    assert "loading the rows of table payment failed" in message and 'unique index "u"' in message
    psql = [
        'psql:<stdin>:80: ERROR:  invalid input syntax for type integer: "s3cret"',
        'CONTEXT:  COPY t, line 2: "s3cret\t1"',
    ]
    assert "s3cret" not in pg_tools.error_lines(psql, "psql")


def test_parse_name():
    assert restore_service.parse_name('Public."My.Table"') == ("public", "My.Table")
    with pytest.raises(PgveilError):
        restore_service.parse_name("a.b.c")


def test_data_mode_into_tables_with_foreign_keys_needs_session_replication_role(
    source, target, tmp_path, maintenance, pg_server
):
    archive = directory_dump(source, tmp_path / "d")
    assert restore(archive, target, "--mode", "schema").exit_code == 0
    role, password = f"t_{secrets.token_hex(4)}_loader", secrets.token_urlsafe(12)
    maintenance.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    try:
        with target.connect() as conn:
            conn.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
        loader = Target(target.name, pg_server.url(target.name, role, password))
        result = restore(archive, loader, "--mode", "data")
        assert result.exit_code == 1
        assert f"GRANT SET ON PARAMETER session_replication_role TO {role}" in result.stderr
        assert rows(target) == {"address": 0, "customer": 0, "payment": 0}
    finally:
        with target.connect() as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        maintenance.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
