"""`pgveil sync`: a database copied into another under a policy, resumable, with the
target checked before anything is written and the result checked at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import replace

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from pgveil.cli import app
from pgveil.dump_manifest import ColumnRule
from pgveil.errors import PgveilError
from pgveil.services import subset, sync
from pgveil.services.export import ExportTable
from tests.conftest import Database
from tests.helpers import label, scratch_database, seed
from tests.test_newer_server import database, newer  # noqa: F401 - the PostgreSQL 16 fixture

PLANTED_EMAIL = "planted.raw.value@leak.test"
PLANTED_NAME = "Zzplantedzz"
# Every table of the demo application a sync copies, and how its rows are counted.
COUNTS = "SELECT (SELECT count(*) FROM customer), (SELECT count(*) FROM payment), (SELECT count(*) FROM address)"


def plant(demo: Database, payments: int = 400) -> None:
    seed(demo, payments=payments)
    demo.execute(
        "INSERT INTO customer (store_id, first_name, last_name, email, address_id) VALUES (1, %s, %s, %s, 1)",
        (PLANTED_NAME, PLANTED_NAME, PLANTED_EMAIL),
    )
    demo.execute("SELECT setval('customer_customer_id_seq', 5000)")
    demo.execute("ANALYZE")


def options(**kw: object) -> sync.SyncOptions:
    kw.setdefault("uncovered", "keep")
    return sync.SyncOptions(policy="mask", **kw)  # type: ignore[arg-type]


def text_of(url: str) -> str:
    """The whole database as pg_dump prints it."""
    return subprocess.run(["pg_dump", f"--dbname={url}"], capture_output=True, text=True, check=True).stdout


def scalar(url: str, query: str, params: tuple[object, ...] = ()) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
        return None if row is None else row[0]


def relations(url: str) -> int:
    """Relations outside the system schemas: 0 for a database nothing was written to."""
    return int(
        scalar(  # type: ignore[arg-type]
            url,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'",
        )
    )


def rows_of(url: str, table: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(table))).fetchall()


def invoke(*args: str) -> object:
    return CliRunner().invoke(app, ["sync", *args])


def test_a_full_sync_is_masked_complete_and_valid_with_several_jobs(demo, monkeypatch):
    # Units of 8 kB: payment is copied in key ranges, three at a time.
    monkeypatch.setattr(sync, "UNIT_BYTES", 8192)
    plant(demo, payments=5_000)
    with scratch_database(demo) as target:
        result = sync.sync(demo.url, target, options(jobs=3))
        assert result.ok and result.units > 5 and result.units_resumed == 0
        counted = {t.table: (t.rows_sent, t.rows_in_target, t.units) for t in result.tables}
        assert counted["customer"][:2] == (201, 201) and counted["payment"][:2] == (5_000, 5_000)
        assert counted["payment"][2] > 1
        assert result.invalid_constraints == []
        with psycopg.connect(target) as conn:
            assert conn.execute(COUNTS).fetchone() == (201, 5_000, 10)
            assert conn.execute("SELECT last_value FROM customer_customer_id_seq").fetchone() == (5000,)
            assert conn.execute("SELECT count(*) FROM customer WHERE email LIKE '%******%'").fetchone() == (201,)
            assert (
                conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated").fetchone()[0]
                >= 2
            )
            assert conn.execute("SELECT count(*) FROM pg_constraint WHERE NOT convalidated").fetchone() == (0,)
            # Nothing of pgveil, nor of the sync's progress.
            assert conn.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname ~ '^(veil|sanitized|mask_|pgveil)'"
            ).fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname ~ '^veil'").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM pg_event_trigger").fetchone() == (0,)
        everything = text_of(target)
        assert PLANTED_EMAIL not in everything and PLANTED_NAME not in everything
        # The source was only read, through sessions that cannot write.
        assert demo.scalar("SELECT count(*) FROM customer WHERE email = %s", (PLANTED_EMAIL,)) == 1
        with psycopg.connect(sync.read_only(demo.url)) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE written (id int)")


def test_the_cli_prints_the_check_and_json(demo):
    plant(demo)
    with scratch_database(demo) as target:
        done = invoke("--source", demo.url, "--target", target, "--policy", "mask", "--uncovered", "keep", "--json")
        assert done.exit_code == 0, done.output
        summary = json.loads(done.stdout)
        assert summary["ok"] and summary["checks"]["invalid_constraints"] == []
        assert {t["table"]: t["rows_in_target"] for t in summary["tables"]}["public.customer"] == 201
        assert summary["rows"] >= 611 and summary["units"]["total"] >= 3


KILLER = """
import os, signal, sys
from pgveil.services import sync
sync.UNIT_BYTES = 8192
done = [0]
def progress(p):
    # Killed (nothing runs at exit) once a few units are committed, others in flight.
    if p.unit_done:
        done[0] += 1
        if done[0] == 4:
            os.kill(os.getpid(), signal.SIGKILL)
sync.sync(sys.argv[1], sys.argv[2], sync.SyncOptions(policy="mask", uncovered="keep", jobs=2), progress)
"""


def test_a_killed_sync_resumes_to_the_same_rows_as_an_uninterrupted_one(demo, monkeypatch, tmp_path):
    # Deterministic rules instead of fake names: two runs can be compared row for row.
    for column in ("customer.first_name", "customer.last_name", "address.address"):
        label(demo, "column", f"public.{column}", f"MASKED WITH FUNCTION pg_catalog.md5({column.split('.')[1]})")
    tokens = options()
    monkeypatch.setattr(sync, "UNIT_BYTES", 8192)
    plant(demo, payments=20_000)
    with scratch_database(demo) as target, scratch_database(demo) as reference:
        # Its scratch directory, which a SIGKILL leaves behind, in the test's.
        environment = {**os.environ, "TMPDIR": str(tmp_path)}
        killed = subprocess.run(
            [sys.executable, "-c", KILLER, demo.url, target], capture_output=True, text=True, env=environment
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        units = scalar(target, "SELECT count(*) FROM pgveil_sync.unit")
        done = scalar(target, "SELECT count(*) FROM pgveil_sync.done")
        assert 4 <= done < units  # type: ignore[operator]
        # Without --resume: refused, saying what to do.
        with pytest.raises(PgveilError, match="holds an unfinished sync: continue it with --resume"):
            sync.sync(demo.url, target, tokens)
        # Resuming with another policy or other options is refused too.
        with pytest.raises(PgveilError, match="another policy"):
            sync.sync(demo.url, target, replace(tokens, policy="sanitized", resume=True))
        with pytest.raises(PgveilError, match="other options"):
            sync.sync(demo.url, target, replace(tokens, resume=True, exclude_tables=("public.address",)))
        resumed = sync.sync(demo.url, target, replace(tokens, resume=True, jobs=3))
        assert resumed.ok and resumed.units_resumed == done and resumed.units == units
        sync.sync(demo.url, reference, tokens)
        for table in ("customer", "payment", "address"):
            assert rows_of(target, table) == rows_of(reference, table)
        assert scalar(target, "SELECT to_regnamespace('pgveil_sync')") is None
        assert scalar(target, "SELECT count(*) FROM pg_constraint WHERE NOT convalidated") == 0


def test_the_source_itself_and_a_non_empty_target_are_refused_clean_replaces(demo):
    plant(demo)
    before = relations(demo.url)
    with pytest.raises(PgveilError, match="the target is the source database"):
        sync.sync(demo.url, demo.url, options())
    assert relations(demo.url) == before
    with scratch_database(demo) as target:
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("CREATE TABLE customer (id int); CREATE TABLE kept (id int)")
        with pytest.raises(PgveilError, match=r"the target database is not empty \(2 tables\).*--clean"):
            sync.sync(demo.url, target, options())
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("DROP TABLE customer")
        sync.sync(demo.url, target, options(clean=True))
        # Again over a full copy: its foreign keys do not stop the drops.
        result = sync.sync(demo.url, target, options(clean=True, jobs=2))
        assert result.ok
        with psycopg.connect(target) as conn:
            assert conn.execute(COUNTS).fetchone() == (201, 400, 10)
        assert scalar(target, "SELECT to_regclass('public.kept') IS NOT NULL")


def test_an_older_target_is_refused_and_a_newer_one_works(demo, newer):  # noqa: F811
    _, url16 = newer
    plant(demo)
    # 16 into 15: refused before pg_dump (15's) would meet the 16 server.
    with scratch_database(demo) as target:
        with pytest.raises(
            PgveilError, match="the target server is PostgreSQL 15 and the source PostgreSQL 16: syncing into an older"
        ):
            sync.sync(url16, target, options())
        assert relations(target) == 0
    # 15 into 16 (without the source's roles there).
    target16 = database(url16, "synced")
    result = sync.sync(demo.url, target16, options(no_owner=True, no_privileges=True, jobs=2))
    assert result.ok
    assert scalar(target16, "SELECT count(*) FROM customer WHERE last_name = %s", (PLANTED_NAME,)) == 0
    assert scalar(target16, "SELECT count(*) FROM payment") == 400


def test_data_only_into_an_existing_schema_refuses_rows_unless_truncated(demo):
    plant(demo)
    with scratch_database(demo) as target:
        sync.sync(demo.url, target, options(schema_only=True))
        assert scalar(target, "SELECT count(*) FROM customer") == 0
        assert scalar(target, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'") >= 2  # type: ignore[operator]
        # Parents first: payment and customer reference their parents.
        result = sync.sync(demo.url, target, options(data_only=True, jobs=3))
        assert result.ok
        assert scalar(target, "SELECT count(*) FROM payment") == 400
        assert scalar(target, "SELECT last_value FROM customer_customer_id_seq") == 5000
        with pytest.raises(PgveilError, match=r"tables of the target hold rows \(.*public\.customer.*--truncate"):
            sync.sync(demo.url, target, options(data_only=True))
        demo.execute("DELETE FROM payment WHERE payment_id > 100")
        result = sync.sync(demo.url, target, options(data_only=True, truncate=True))
        assert result.ok and scalar(target, "SELECT count(*) FROM payment") == 100
        # A table of the target outside the sync references customer: TRUNCATE without CASCADE refuses.
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("CREATE TABLE note (customer_id int REFERENCES customer)")
        with pytest.raises(PgveilError, match="could not empty the target's tables: .*nothing was changed"):
            sync.sync(demo.url, target, options(data_only=True, truncate=True, exclude_tables=("public.note",)))
        assert scalar(target, "SELECT count(*) FROM payment") == 100


def test_data_only_breaks_a_cycle_of_foreign_keys_at_nullable_columns(toolkit):
    toolkit.execute("SELECT veil.create_policy('anon', 'static')")
    # NOT DEFERRABLE foreign keys both ways, on nullable columns. team, the smaller table,
    # is where the cycle breaks: it has an identity column GENERATED ALWAYS, a quoted
    # column name and a NOT NULL generated column.
    toolkit.execute(
        'CREATE TABLE team (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, "Lead Id" int,'
        " shout text GENERATED ALWAYS AS (upper(name)) STORED NOT NULL);"
        "CREATE TABLE member (id int PRIMARY KEY, team_id int REFERENCES team, name text NOT NULL);"
        'ALTER TABLE team ADD CONSTRAINT team_lead FOREIGN KEY ("Lead Id") REFERENCES member;'
        "INSERT INTO team (name) SELECT 'team ' || g FROM generate_series(1, 50) g;"
        "INSERT INTO member SELECT g, CASE WHEN g % 7 <> 0 THEN 1 + g % 50 END, 'm' || g"
        " FROM generate_series(1, 2000) g;"
        'UPDATE team SET "Lead Id" = id * 3 WHERE id % 5 <> 0; ANALYZE'
    )
    with scratch_database(toolkit) as target:
        sync.sync(toolkit.url, target, sync.SyncOptions(policy="anon", schema_only=True))
        # The target's row triggers see each row of team inserted, then updated.
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE fired (op text);"
                "CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS"
                " $$BEGIN INSERT INTO fired VALUES (TG_OP); RETURN NULL; END$$;"
                "CREATE TRIGGER noted AFTER INSERT OR UPDATE ON team FOR EACH ROW EXECUTE FUNCTION note()"
            )
        result = sync.sync(
            toolkit.url, target, sync.SyncOptions(policy="anon", uncovered="keep", data_only=True, jobs=2)
        )
        assert result.ok and not result.invalid_constraints
        assert {t.table: t.rows_in_target for t in result.tables} == {"team": 50, "member": 2000}
        for table in ("team", "member"):
            assert rows_of(target, table) == rows_of(toolkit.url, table)
        assert scalar(target, 'SELECT count(*) FROM team WHERE "Lead Id" IS NOT NULL') == 40
        assert scalar(target, "SELECT count(*) FROM member WHERE team_id IS NOT NULL") == 2000 - 2000 // 7
        assert scalar(target, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated") == 2
        with psycopg.connect(target) as conn:
            fired = dict(conn.execute("SELECT op, count(*) FROM fired GROUP BY op").fetchall())
        assert fired == {"INSERT": 50, "UPDATE": 40}
        assert scalar(target, "SELECT to_regnamespace('pgveil_sync')") is None
        # A trigger of the target skipping updates: those rows would keep a NULL foreign key.
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION skip() RETURNS trigger LANGUAGE plpgsql AS"
                " $$BEGIN RETURN CASE WHEN OLD.id % 2 = 0 THEN NULL ELSE NEW END; END$$;"
                "CREATE TRIGGER skipped BEFORE UPDATE ON team FOR EACH ROW EXECUTE FUNCTION skip()"
            )
        with pytest.raises(
            PgveilError, match=r"^loading public\.team into the target failed: 20 of its rows were .* team_lead"
        ):
            sync.sync(
                toolkit.url, target, sync.SyncOptions(policy="anon", uncovered="keep", data_only=True, truncate=True)
            )
        assert scalar(target, "SELECT count(*) FROM member") == scalar(target, "SELECT count(*) FROM team") == 0


def test_data_only_refuses_a_cycle_that_cannot_be_broken_and_loads_a_deferrable_one(toolkit):
    toolkit.execute("SELECT veil.create_policy('anon', 'static')")
    # NOT NULL both ways: rows the source can only hold through deferrable constraints.
    toolkit.execute(
        "CREATE TABLE a (id int PRIMARY KEY, b_id int NOT NULL);"
        "CREATE TABLE b (id int PRIMARY KEY, a_id int NOT NULL REFERENCES a DEFERRABLE INITIALLY DEFERRED);"
        "ALTER TABLE a ADD CONSTRAINT a_b FOREIGN KEY (b_id) REFERENCES b DEFERRABLE INITIALLY DEFERRED;"
        "CREATE TABLE c (id int PRIMARY KEY, parent int REFERENCES c);"
        "INSERT INTO a VALUES (1, 2), (2, 1); INSERT INTO b VALUES (1, 1), (2, 2);"
        "INSERT INTO c VALUES (1, NULL), (2, 1), (3, 2)"
    )
    anon = sync.SyncOptions(policy="anon", uncovered="keep", data_only=True)
    with scratch_database(toolkit) as target:
        # The target's schema by hand: the same tables, their foreign keys NOT DEFERRABLE.
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE a (id int PRIMARY KEY, b_id int NOT NULL);"
                "CREATE TABLE b (id int PRIMARY KEY, a_id int NOT NULL REFERENCES a);"
                "ALTER TABLE a ADD CONSTRAINT a_b FOREIGN KEY (b_id) REFERENCES b;"
                "CREATE TABLE c (id int PRIMARY KEY, parent int REFERENCES c)"
            )
        with pytest.raises(PgveilError) as refused:
            sync.sync(toolkit.url, target, anon)
        message = str(refused.value)
        assert "tables public.a, public.b;" in message
        assert "constraints public.a.a_b, public.b.b_a_id_fkey" in message
        assert "none of them is DEFERRABLE or on nullable columns" in message
        for table in ("a", "b", "c"):
            assert scalar(target, f"SELECT count(*) FROM {table}") == 0
        assert scalar(target, "SELECT to_regnamespace('pgveil_sync')") is None
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("ALTER TABLE a ALTER CONSTRAINT a_b DEFERRABLE")
        result = sync.sync(toolkit.url, target, anon)
        assert result.ok
        for table in ("a", "b", "c"):
            assert rows_of(target, table) == rows_of(toolkit.url, table)


def test_a_cycle_is_broken_at_deferrable_foreign_keys_first_then_at_nullable_ones_with_a_key():
    def key(name: str, child: str, parent: str, **kw: object) -> sync._ForeignKey:
        kw.setdefault("deferrable", False)
        return sync._ForeignKey(name, "s", child, "s", parent, columns=(f"{parent}_id",), **kw)  # type: ignore[arg-type]

    nodes = [("s", "x"), ("s", "y"), ("s", "z")]
    # y is the largest table: its rows are not the ones staged when another will do.
    columns = tuple(ColumnRule(c, "NOT MASKED", False) for c in ("id", "x_id", "y_id", "z_id"))
    tables = {
        (s, t): ExportTable(i, s, t, 0, 8192 * (9 if t == "y" else 1), "", f"COPY {s}.{t} FROM stdin;\n", columns)
        for i, (s, t) in enumerate(nodes)
    }
    nullable = {"nullable": True, "row_key": ("id",)}
    # x -> y -> z -> x, with z -> x also deferrable: postponing the deferrable one is enough.
    ring = [key("x_y", "x", "y", **nullable), key("y_z", "y", "z", **nullable), key("z_x", "z", "x")]
    deferred = key("z_x2", "z", "x", deferrable=True)
    cycle = sync._break_cycle(nodes, [*ring[:2], deferred], tables)
    assert (cycle.deferred, cycle.nulled) == ([deferred], [])
    assert cycle.order == [("s", "z"), ("s", "y"), ("s", "x")]
    # None deferrable: a nullable foreign key of the smaller table waits, the others order the tables.
    cycle = sync._break_cycle(nodes, ring, tables)
    assert (cycle.deferred, [k.name for k in cycle.nulled]) == ([], ["x_y"])
    assert cycle.order == [("s", "x"), ("s", "z"), ("s", "y")]
    # Nullable columns on a table without a key, NOT NULL ones, or columns the COPY leaves out cannot break it.
    keyless = [
        key("x_y", "x", "y", nullable=True),
        key("y_z", "y", "z"),
        sync._ForeignKey("z_x", "s", "z", "s", "x", False, ("generated",), True, ("id",)),
    ]
    with pytest.raises(PgveilError, match=r"tables s\.x, s\.y, s\.z; constraints s\.x\.x_y, s\.y\.y_z, s\.z\.z_x"):
        sync._break_cycle(nodes, keyless, tables)


def test_a_subset_sync_keeps_every_foreign_key_valid(demo):
    plant(demo)
    subset_of = subset.Subset(conditions=(("public.customer", "store_id = 1"),))
    with scratch_database(demo) as target:
        result = sync.sync(demo.url, target, options(subset=subset_of, jobs=2))
        assert result.ok
        kept = demo.scalar("SELECT count(*) FROM customer WHERE store_id = 1")
        assert scalar(target, "SELECT count(*) FROM customer") == kept
        assert scalar(target, "SELECT count(*) FROM customer WHERE store_id <> 1") == 0
        assert scalar(target, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated") == 0
        assert scalar(target, "SELECT count(*) FROM payment p JOIN customer c USING (customer_id)") == scalar(
            target, "SELECT count(*) FROM payment"
        )


def test_an_invalid_subset_condition_is_refused_and_nothing_is_written(demo):
    plant(demo)
    with scratch_database(demo) as target:
        for condition, named in (("no_such_column = 1", "no_such_column"), ("store_id = = 1", "syntax")):
            done = invoke("--source", demo.url, "--target", target, "--policy", "mask", "--uncovered", "keep",
                          "--subset", f"public.customer: {condition}")  # fmt: skip
            assert done.exit_code == 1
            assert named in done.output and "Traceback" not in done.output
        assert relations(target) == 0


def test_a_target_dropped_mid_run_stops_the_sync_with_one_clear_error(demo, monkeypatch):
    monkeypatch.setattr(sync, "UNIT_BYTES", 8192)
    plant(demo, payments=5_000)
    with scratch_database(demo) as target:
        name = target.rsplit("/", 1)[1]
        dropped = threading.Event()

        def progress(p: sync.Progress) -> None:
            if p.unit_done and not dropped.is_set():
                dropped.set()
                with psycopg.connect(demo.server.url("postgres"), autocommit=True) as admin:
                    admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))

        with pytest.raises(PgveilError) as stopped:
            sync.sync(demo.url, target, options(), progress)
        assert "lost the connection to the target" in str(stopped.value)
        assert "the sync stopped" in str(stopped.value) and "--resume" in str(stopped.value)


def test_a_role_without_select_on_a_source_table_is_refused_before_writing(demo):
    plant(demo)
    reader = demo.role("reader")
    # pgveil's catalog readable, the application's tables but payment too.
    for grant in (
        "GRANT USAGE ON SCHEMA public, veil, veil_private, veil_ext TO {}",
        "GRANT SELECT ON ALL TABLES IN SCHEMA veil_private, veil TO {}",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}",
        "REVOKE SELECT ON payment FROM {}",
    ):
        demo.execute(sql.SQL(grant).format(sql.Identifier(reader.name)))
    with scratch_database(demo) as target:
        done = invoke("--source", reader.url, "--target", target, "--policy", "mask", "--uncovered", "keep")
        assert done.exit_code == 1, done.output
        assert "permission denied for table payment" in done.output, done.output
        assert "Traceback" not in done.output
        assert relations(target) == 0


def test_an_unreachable_source_or_target_is_one_clear_error(demo):
    with scratch_database(demo) as target:
        done = invoke("--source", "postgresql://u@127.0.0.1:1/x", "--target", target, "--policy", "mask")
        assert done.exit_code == 1 and "cannot reach PostgreSQL at 127.0.0.1:1" in done.output
        done = invoke("--source", demo.url, "--target", "postgresql://u@127.0.0.1:1/x", "--policy", "mask")
        assert done.exit_code == 1 and "cannot reach PostgreSQL at 127.0.0.1:1" in done.output
        assert relations(target) == 0


def test_dry_run_shows_rows_rules_and_units_and_writes_nothing(demo, monkeypatch):
    monkeypatch.setattr(sync, "UNIT_BYTES", 8192)
    plant(demo, payments=5_000)
    with scratch_database(demo) as target:
        done = invoke("--source", demo.url, "--target", target, "--policy", "mask", "--uncovered", "keep",
                      "--dry-run", "--json")  # fmt: skip
        assert done.exit_code == 0, done.output
        tables = {t["table"]: t for t in json.loads(done.stdout)["tables"]}
        assert len(tables["public.payment"]["units"]) > 1 and tables["public.address"]["units"] == ["all rows"]
        email = next(c for c in tables["public.customer"]["columns"] if c["column"] == "email")
        assert email["rule"].startswith("MASKED WITH FUNCTION veil.partial_email")
        subset_run = invoke("--source", demo.url, "--target", target, "--policy", "mask", "--uncovered", "keep",
                            "--dry-run", "--subset", "public.customer: store_id = 1")  # fmt: skip
        assert subset_run.exit_code == 0, subset_run.output
        assert "public.customer: 101 rows of the subset" in subset_run.output
        assert relations(target) == 0
    # A dry run needs no target; a sync does.
    alone = invoke("--source", demo.url, "--policy", "mask", "--uncovered", "keep", "--dry-run")
    assert alone.exit_code == 0 and "public.payment" in alone.output, alone.output
    missing = invoke("--source", demo.url, "--policy", "mask")
    assert missing.exit_code == 2 and "--target" in missing.output


def test_bad_options_are_refused(demo):
    with scratch_database(demo) as target:
        for kw, message in (
            ({"schema_only": True, "data_only": True}, "exclude each other"),
            ({"truncate": True}, "--truncate goes with --data-only"),
            ({"clean": True, "resume": True}, "choose one"),
            ({"resume": True}, "holds no unfinished sync"),
            ({"uncovered": "maybe"}, "--uncovered is refuse, keep or null"),
        ):
            with pytest.raises(PgveilError, match=message):
                sync.sync(demo.url, target, options(**kw))
        assert relations(target) == 0


# The CLI, with units of 8 kB, telling on stdout when a unit is committed.
CLI_TELLING_UNITS = """
from pgveil.cli import app
from pgveil.services import sync
sync.UNIT_BYTES = 8192
load = sync._Loader._load
def told(*args):
    load(*args)
    print("unit done", flush=True)
sync._Loader._load = told
app(prog_name="pgveil")
"""


def test_ctrl_c_stops_the_sync_with_status_130_and_progress_kept(demo):
    plant(demo, payments=100_000)
    with scratch_database(demo) as target:
        proc = subprocess.Popen(
            [sys.executable, "-c", CLI_TELLING_UNITS, "sync", "--source", demo.url, "--target", target, "--policy", "mask",
             "--uncovered", "keep"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdout.readline() == "unit done\n", proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert "interrupted: the units already done are kept in the target; continue with --resume" in stderr
        assert "Traceback" not in stderr
        done = scalar(target, "SELECT count(*) FROM pgveil_sync.done")
        assert 0 < done < scalar(target, "SELECT count(*) FROM pgveil_sync.unit")  # type: ignore[operator]
        # Nothing left running on either side.
        assert (
            demo.scalar("SELECT count(*) FROM pg_stat_activity WHERE query ~ '^COPY' AND pid <> pg_backend_pid()") == 0
        )
        resumed = sync.sync(demo.url, target, options(resume=True))
        assert resumed.ok and resumed.units_resumed == done
        assert scalar(target, "SELECT count(*) FROM payment") == 100_000
