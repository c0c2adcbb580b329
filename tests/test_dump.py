"""`pgveil dump`: archives that stock pg_restore and psql restore, masked by the policy,
consistent while the application writes, and never left half-written."""

from __future__ import annotations

import gzip
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from pgveil import dump_manifest, pg_archive
from pgveil.cli import app
from pgveil.errors import PgveilError
from pgveil.services import dump, export_copy, export_schema, subset
from tests.conftest import Database
from tests.helpers import label, scratch_database, seed

PLANTED_EMAIL = "planted.raw.value@leak.test"
PLANTED_NAME = "Zzplantedzz"
# Small tables are read through psycopg, large ones through psql, and large ones with
# several workers in pieces (block ranges): each way is tried.
READERS = pytest.mark.parametrize("reader", ["psycopg", "psql", "pieces"])


def read_by(monkeypatch: pytest.MonkeyPatch, reader: str) -> list[export_copy.Piece]:
    """Make every table be read ``reader``'s way; the pieces planned are collected."""
    if reader == "psql":
        monkeypatch.setattr(export_copy, "PSQL_FROM_BYTES", 0)
    if reader == "pieces":
        monkeypatch.setattr(export_copy, "SPLIT_FROM_BYTES", 0)
    planned: list[export_copy.Piece] = []
    plan_pieces = export_copy.pieces

    def spy(*args: object) -> list[export_copy.Piece]:
        found = plan_pieces(*args)  # type: ignore[arg-type]
        planned.extend(found)
        return found

    monkeypatch.setattr(export_copy, "pieces", spy)
    return planned


def plant(demo: Database) -> None:
    seed(demo)
    demo.execute(
        "INSERT INTO customer (store_id, first_name, last_name, email, address_id) VALUES (1, %s, %s, %s, 1)",
        (PLANTED_NAME, PLANTED_NAME, PLANTED_EMAIL),
    )


def options(out: Path, **kw: object) -> dump.DumpOptions:
    kw.setdefault("uncovered", "keep")
    return dump.DumpOptions(policy="mask", output=out, **kw)  # type: ignore[arg-type]


def archive_bytes(out: Path) -> bytes:
    """Every byte of an archive, data files decompressed."""
    if out.is_file():
        data = out.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return b"".join(
        gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes() for f in sorted(out.iterdir())
    )


def pg_restore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pg_restore", *args], capture_output=True, text=True)


def text_of(url: str) -> str:
    """The whole database as pg_dump prints it."""
    return subprocess.run(["pg_dump", f"--dbname={url}"], capture_output=True, text=True, check=True).stdout


@READERS
def test_a_directory_dump_restores_with_stock_pg_restore_in_parallel_masked(demo, tmp_path, monkeypatch, reader):
    planned = read_by(monkeypatch, reader)
    plant(demo)
    demo.execute("SELECT setval('customer_customer_id_seq', 5000)")
    out = tmp_path / "archive"
    result = dump.dump(demo.url, options(out, jobs=2))
    assert any(p.parts > 1 for p in planned) == (reader == "pieces")
    assert not [f for f in out.iterdir() if f.name.count(".") > 2]  # the pieces' files were put together

    assert not (tmp_path / "archive.pgveil-partial").exists()
    everything = archive_bytes(out)
    assert PLANTED_EMAIL.encode() not in everything and PLANTED_NAME.encode() not in everything
    manifest = dump_manifest.read(out)
    assert {t.qualified: t.rows for t in manifest.tables}["public.customer"] == 201
    assert result.manifest == manifest
    email = next(c for t in manifest.tables if t.table == "customer" for c in t.columns if c.column == "email")
    assert email.changes and email.rule.startswith("MASKED WITH FUNCTION veil.partial_email")

    with scratch_database(demo) as target:
        restored = pg_restore(f"--dbname={target}", "--jobs=4", "--exit-on-error", str(out))
        assert restored.returncode == 0, restored.stderr
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT count(*) FROM customer").fetchone() == (201,)
            assert conn.execute("SELECT count(*) FROM payment").fetchone() == (400,)
            assert conn.execute("SELECT last_value FROM customer_customer_id_seq").fetchone() == (5000,)
            # Constraints came back valid; the data is masked as analysts see it.
            assert (
                conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated").fetchone()[0]
                >= 2
            )
            assert conn.execute("SELECT count(*) FROM customer WHERE email LIKE '%******%'").fetchone() == (201,)
            # Nothing of pgveil: schemas, triggers, event triggers, version table.
            assert conn.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname ~ '^(veil|sanitized|mask_)'"
            ).fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname ~ '^veil'").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM pg_event_trigger").fetchone() == (0,)
            assert conn.execute("SELECT to_regclass('public.pgveil_version')").fetchone() == (None,)
        restored_text = text_of(target)
        assert PLANTED_EMAIL not in restored_text and PLANTED_NAME not in restored_text


def test_pg_restore_lists_selects_and_restores_an_edited_list(demo, tmp_path):
    seed(demo)
    out = tmp_path / "archive"
    dump.dump(demo.url, options(out))
    listing = pg_restore("--list", str(out))
    assert listing.returncode == 0 and "TABLE DATA public customer" in listing.stdout
    # -L with the payment data commented out, as a DBA edits a list.
    edited = tmp_path / "list"
    edited.write_text(
        "\n".join(";" + line if "TABLE DATA public payment" in line else line for line in listing.stdout.splitlines())
    )
    with scratch_database(demo) as target:
        done = pg_restore(f"--dbname={target}", f"--use-list={edited}", "--exit-on-error", str(out))
        assert done.returncode == 0, done.stderr
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT count(*) FROM customer").fetchone() == (200,)
            assert conn.execute("SELECT count(*) FROM payment").fetchone() == (0,)
    with scratch_database(demo) as target:
        assert pg_restore(f"--dbname={target}", "--section=pre-data", str(out)).returncode == 0
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT count(*) FROM customer").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'customer'").fetchone() == (0,)
        assert pg_restore(f"--dbname={target}", "--section=data", "--section=post-data", str(out)).returncode == 0
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT count(*) FROM customer").fetchone() == (200,)
            assert conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'customer'").fetchone()[0] >= 2
    with scratch_database(demo) as target:
        only = pg_restore(f"--dbname={target}", "--table=address", str(out))
        assert only.returncode == 0, only.stderr
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT count(*) FROM address").fetchone() == (10,)
            assert conn.execute("SELECT to_regclass('public.customer')").fetchone() == (None,)


@pytest.mark.parametrize("compress", [None, 6])
def test_a_plain_script_restores_with_psql(demo, tmp_path, compress):
    plant(demo)
    out = tmp_path / ("dump.sql.gz" if compress else "dump.sql")
    dump.dump(demo.url, options(out, archive_format="plain", compress=compress))
    assert (out.read_bytes()[:2] == b"\x1f\x8b") == bool(compress)
    script = archive_bytes(out).decode()
    assert script.startswith(dump_manifest.PLAIN_PREFIX)
    assert PLANTED_EMAIL not in script and PLANTED_NAME not in script
    # Schema, then data, then indexes and constraints.
    assert (
        script.index("CREATE TABLE public.customer")
        < script.index("COPY public.customer")
        < script.index("ADD CONSTRAINT customer_pkey")
    )
    assert dump_manifest.read(out).archive_format == "plain"
    with scratch_database(demo) as target:
        done = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", f"--dbname={target}"],
            input=script,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT count(*) FROM customer").fetchone() == (201,)


@READERS
def test_a_dump_taken_while_the_application_writes_is_one_snapshot(demo, tmp_path, monkeypatch, reader):
    planned = read_by(monkeypatch, reader)
    seed(demo)
    stop = threading.Event()
    writes = [0]

    def application() -> None:
        # Every transaction adds a customer and one payment of theirs: in any
        # consistent state, the two counts move together.
        with psycopg.connect(demo.url, autocommit=True) as conn:
            while not stop.is_set():
                with conn.transaction():
                    row = conn.execute(
                        "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
                        " VALUES (1, 'a', 'b', 'c@example.com', 1) RETURNING customer_id"
                    ).fetchone()
                    conn.execute("SELECT pg_sleep(0.002)")
                    conn.execute("INSERT INTO payment (customer_id, amount) VALUES (%s, 1)", row)
                writes[0] += 1

    writer = threading.Thread(target=application)
    writer.start()
    try:
        while writes[0] < 20:
            time.sleep(0.01)
        out = tmp_path / "archive"
        dump.dump(demo.url, options(out, jobs=3))
        during = writes[0]
    finally:
        stop.set()
        writer.join()
    assert writes[0] > during > 20
    assert any(p.parts > 1 for p in planned) == (reader == "pieces")
    rows = {t.table: t.rows for t in dump_manifest.read(out).tables}
    assert rows["customer"] - 200 == rows["payment"] - 400 > 0
    with scratch_database(demo) as target:
        assert pg_restore(f"--dbname={target}", "--jobs=3", "--exit-on-error", str(out)).returncode == 0
        with psycopg.connect(target) as conn:
            customers, payments = conn.execute(
                "SELECT (SELECT count(*) FROM customer), (SELECT count(*) FROM payment)"
            ).fetchone()
            assert customers - 200 == payments - 400 == rows["payment"] - 400


def test_columns_without_a_rule_are_refused_listed_and_nothing_is_written(demo, tmp_path):
    out = tmp_path / "archive"
    with pytest.raises(PgveilError) as refused:
        dump.dump(demo.url, options(out, uncovered=None))
    assert "public.address.postal_code has no rule in policy mask" in str(refused.value)
    assert "public.address.address2 has no rule in policy mask" in str(refused.value)
    assert list(tmp_path.iterdir()) == []
    # uncovered null: written as NULL, and the manifest says so.
    seed(demo)
    demo.execute("UPDATE address SET postal_code = 'K1A 0B1'")
    # (demo_created_roles' key has no rule and cannot be nulled: left out with -T.)
    dump.dump(demo.url, options(out, uncovered="null", exclude_tables=("public.demo_created_roles",)))
    assert b"K1A 0B1" not in archive_bytes(out)
    address = next(t for t in dump_manifest.read(out).tables if t.table == "address")
    postal = next(c for c in address.columns if c.column == "postal_code")
    assert (postal.rule, postal.changes) == ("uncovered: null", True)


@READERS
def test_a_rule_failing_on_a_row_stops_the_dump_naming_table_and_key_not_the_value(demo, tmp_path, monkeypatch, reader):
    read_by(monkeypatch, reader)
    seed(demo)
    demo.execute("UPDATE address SET postal_code = CASE WHEN address_id = 7 THEN 'SECRET-7' ELSE '75001' END")
    label(demo, "column", "public.address.postal_code", "MASKED WITH FUNCTION pg_catalog.abs((postal_code)::integer)")
    out = tmp_path / "archive"
    with pytest.raises(PgveilError) as failed:
        dump.dump(demo.url, options(out, jobs=2))
    message = str(failed.value)
    assert "public.address.postal_code fails on the row with (address_id)=(7)" in message
    assert "22P02" in message and "SECRET" not in message
    assert list(tmp_path.iterdir()) == []
    # --validate finds the same without writing anything.
    [failing] = [v for v in dump.validate(demo.url, options(out)) if v.error]
    assert failing.table == "public.address" and "(address_id)=(7)" in str(failing.error)
    assert list(tmp_path.iterdir()) == []


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgveil", *args], capture_output=True, text=True)


def test_a_full_disk_stops_the_dump_and_removes_the_partial_output(demo, tmp_path):
    seed(demo, customers=20_000, payments=20_000)
    out = tmp_path / "archive"

    def small_disk() -> None:
        # Files may not grow past 64 kB: writes fail as on a full disk.
        resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))

    done = subprocess.run(
        [sys.executable, "-m", "pgveil", "dump", "--policy", "mask", "--uncovered", "keep", "-f", str(out),
         "--compress", "0", "--database-url", demo.url],
        capture_output=True, text=True, preexec_fn=small_disk,
    )  # fmt: skip
    assert done.returncode == 1
    assert "could not write the dump (File too large); the partial output was removed" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_stops_the_dump_cleanly_and_removes_the_partial_output(demo, tmp_path):
    # Enough rows (and the slowest compression) to be interrupted in the middle.
    seed(demo, customers=1_000, payments=400_000)
    out = tmp_path / "archive"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgveil", "dump", "--policy", "mask", "--uncovered", "keep", "-f", str(out),
         "-j", "2", "--compress", "9", "--database-url", demo.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    partial = tmp_path / "archive.pgveil-partial"
    deadline = time.monotonic() + 60
    while not (partial.is_dir() and any(p.suffix == ".gz" for p in partial.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert list(tmp_path.iterdir()) == []
    # The workers' queries were cancelled, not left running.
    assert demo.scalar("SELECT count(*) FROM pg_stat_activity WHERE query ~ '^COPY' AND pid <> pg_backend_pid()") == 0


def test_an_unreachable_source_is_one_clear_error(tmp_path):
    done = run_cli(
        "dump", "--policy", "mask", "-f", str(tmp_path / "a"), "--database-url", "postgresql://u@127.0.0.1:1/x"
    )
    assert done.returncode == 1
    assert "cannot reach PostgreSQL at 127.0.0.1:1" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_large_objects_are_refused_unless_left_out(demo, tmp_path):
    seed(demo)
    demo.execute("SELECT lo_from_bytea(0, convert_to(%s, 'UTF8'))", (PLANTED_EMAIL,))
    with pytest.raises(PgveilError, match="1 large objects, which no rule can mask; export with --no-large-objects"):
        dump.dump(demo.url, options(tmp_path / "a"))
    out = tmp_path / "b"
    dump.dump(demo.url, options(out, no_large_objects=True))
    assert PLANTED_EMAIL.encode() not in archive_bytes(out)


def test_partitions_take_their_roots_rules_and_unlogged_tables_are_dumped(toolkit, tmp_path):
    toolkit.execute("SELECT veil.create_policy('anon', 'static')")
    toolkit.execute(
        "CREATE TABLE event (id int, at date, who text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);"
        "CREATE TABLE event_2024 PARTITION OF event FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');"
        "CREATE TABLE event_2025 PARTITION OF event FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"
        "CREATE UNLOGGED TABLE session (id int PRIMARY KEY, who text);"
        f"INSERT INTO event SELECT g, DATE '2024-06-01' + g * 2, '{PLANTED_NAME}' FROM generate_series(1, 200) g;"
        f"INSERT INTO session VALUES (1, '{PLANTED_NAME}')"
    )
    for column, rule in (
        ("public.event.id", "NOT MASKED"),
        ("public.event.at", "NOT MASKED"),
        ("public.event.who", "MASKED WITH VALUE 'someone'"),
        ("public.session.id", "NOT MASKED"),
        ("public.session.who", "MASKED WITH VALUE 'someone'"),
    ):
        label(toolkit, "column", column, rule, policy="anon")
    out = tmp_path / "archive"
    dump.dump(toolkit.url, dump.DumpOptions(policy="anon", output=out))
    assert PLANTED_NAME.encode() not in archive_bytes(out)
    assert {t.table for t in dump_manifest.read(out).tables} == {"event_2024", "event_2025", "session"}
    with scratch_database(toolkit) as target:
        assert pg_restore(f"--dbname={target}", "--exit-on-error", str(out)).returncode == 0
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT count(*), min(who), max(who) FROM event").fetchone() == (
                200,
                "someone",
                "someone",
            )
            assert conn.execute("SELECT relpersistence FROM pg_class WHERE relname = 'session'").fetchone() == ("u",)
            assert conn.execute("SELECT who FROM session").fetchone() == ("someone",)


def test_schema_only_and_data_only(demo, tmp_path):
    seed(demo)
    schema = tmp_path / "schema"
    # No rows, no rule run: columns without a rule are no reason to refuse.
    dump.dump(demo.url, options(schema, schema_only=True, uncovered=None))
    data = tmp_path / "data"
    dump.dump(demo.url, options(data, data_only=True))
    assert dump_manifest.read(schema).tables == ()
    assert "CREATE TABLE" not in pg_restore("--file=-", str(data)).stdout
    with scratch_database(demo) as target:
        assert pg_restore(f"--dbname={target}", "--exit-on-error", str(schema)).returncode == 0
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT count(*) FROM customer").fetchone() == (0,)
        # Constraints are in place: the data goes in with triggers disabled, as for pg_dump's.
        loaded = pg_restore(f"--dbname={target}", "--exit-on-error", "--disable-triggers", str(data))
        assert loaded.returncode == 0, loaded.stderr
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT count(*) FROM customer").fetchone() == (200,)


def test_dry_run_and_validate_write_nothing(demo, tmp_path):
    seed(demo)
    demo.execute("ANALYZE")
    out = tmp_path / "archive"
    runner = CliRunner()
    planned = runner.invoke(app, ["dump", "--policy", "mask", "-f", str(out), "--uncovered", "keep", "--dry-run",
                                  "-t", "public.customer", "--database-url", demo.url])  # fmt: skip
    assert planned.exit_code == 0, planned.output
    assert "-- public.customer: about 200 rows" in planned.output
    assert "FROM ONLY public.customer AS src" in planned.output and "public.payment" not in planned.output
    checked = runner.invoke(app, ["dump", "--policy", "mask", "-f", str(out), "--uncovered", "keep", "--validate",
                                  "--database-url", demo.url])  # fmt: skip
    assert checked.exit_code == 0, checked.output
    assert "validated 4 tables: 0 failed" in checked.output
    assert list(tmp_path.iterdir()) == []


def test_bad_options_and_an_existing_output_are_refused(demo, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    for opts, message in (
        (options(tmp_path / "taken"), "exists and is not empty"),
        (options(tmp_path / "a", archive_format="tar"), "--format is directory or plain"),
        (options(tmp_path / "a", schema_only=True, data_only=True), "exclude each other"),
        (options(tmp_path / "a", uncovered="maybe"), "--uncovered is refuse, keep or null"),
        (dump.DumpOptions(policy="nope", output=tmp_path / "a"), "there is no policy 'nope'"),
    ):
        with pytest.raises(PgveilError, match=message):
            dump.dump(demo.url, opts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_the_archive_is_pg_dumps_format_read_back_byte_for_byte(demo, tmp_path):
    seed(demo)
    out = tmp_path / "archive"
    dump.dump(demo.url, options(out))
    raw = (out / pg_archive.TOC_FILE).read_bytes()
    toc = pg_archive.parse(raw)
    assert pg_archive.serialize(toc) == raw
    data = [e for e in toc.entries if e.desc == "TABLE DATA"]
    tables = {e.dump_id: e for e in toc.entries if e.desc == "TABLE"}
    assert data and all(tables[e.dependencies[0]].tag == e.tag for e in data)
    assert all((out / (e.filename + toc.data_suffix())).is_file() for e in data)
    assert os.path.getsize(out / pg_archive.TOC_FILE) == len(raw)


def test_data_pg_dump_wrote_itself_is_refused(bare, tmp_path):
    """The guard behind --exclude-table-data: were pg_dump to write rows pgveil did not
    compute (a kind of data it does not know of), the dump stops."""
    bare.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    out = tmp_path / "d"
    subprocess.run(["pg_dump", f"--dbname={bare.url}", "--format=directory", f"--file={out}"], check=True)
    with pytest.raises(PgveilError, match=r"pg_dump wrote data pgveil did not compute \(TABLE DATA public\.t\)"):
        export_schema.refuse_raw_data(pg_archive.read(out))


def test_views_of_the_application_built_on_pgveil_are_left_out_and_the_rest_restores(demo, tmp_path):
    seed(demo)
    demo.execute(
        "CREATE VIEW public.customer_tokens AS SELECT veil.token(email, 'email') AS email FROM customer;"
        "CREATE VIEW public.token_count AS SELECT count(*) FROM public.customer_tokens;"
        "CREATE VIEW public.store_count AS SELECT store_id, count(*) FROM customer GROUP BY store_id"
    )
    out = tmp_path / "archive"
    result = dump.dump(demo.url, options(out))
    assert {"VIEW public.customer_tokens", "VIEW public.token_count"} <= set(result.left_out)
    assert not any("store_count" in line for line in result.left_out)
    with scratch_database(demo) as target:
        restored = pg_restore(f"--dbname={target}", "--exit-on-error", str(out))
        assert restored.returncode == 0, restored.stderr
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT to_regclass('public.customer_tokens')").fetchone() == (None,)
            assert conn.execute("SELECT sum(count) FROM public.store_count").fetchone() == (200,)


def test_a_subset_dump_records_its_shape_but_never_a_conditions_text(demo, tmp_path):
    """A condition may quote a value (an e-mail looked for): the manifest names the
    seeded tables and the direction only, and the archive holds the subset's rows."""
    plant(demo)
    out = tmp_path / "subset"
    kept = subset.Subset(conditions=(("public.customer", f"email = '{PLANTED_EMAIL}'"),), direction="down")
    result = dump.dump(demo.url, options(out, subset=kept))
    assert PLANTED_EMAIL.encode() not in archive_bytes(out)
    manifest = dump_manifest.read(out)
    assert manifest == result.manifest
    assert manifest.subset == {
        "direction": "down",
        "seeds": [{"table": "public.customer", "condition": True}],
        "virtual_keys": [],
    }
    rows = {t.qualified: t.rows for t in manifest.tables}
    assert rows["public.customer"] == 1 and rows["public.payment"] == 0 and rows["public.address"] == 1
