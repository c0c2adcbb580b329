"""pg_anon's asynchronous stateless endpoints (scan, dump, restore) on pgveil's services:
the real app, real jobs in child processes, a real webhook receiver on loopback."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from pgveil import dump_manifest
from pgveil.api.app import create_app
from pgveil.api.settings import ApiSettings
from pgveil.pg_anon_dicts import map_anon_rule, parse_no_sens_dict, parse_sens_dict
from tests.conftest import Database, Role
from tests.helpers import scratch_database
from tests.webhook_receiver import Receiver

AUTH = {"Authorization": "Bearer t0k3n"}
ROWS = 40
# Every key of pg_anon 1.9's webhook payload (digest §6.1), per operation.
BASE_KEYS = {
    "operation_id",
    "internal_operation_id",
    "status_id",
    "status",
    "webhook_metadata",
    "started",
    "ended",
    "error",
    "error_code",
    "run_options",
}
SCAN_KEYS = BASE_KEYS | {"sens_dict_content", "no_sens_dict_content"}
# The manual's own meta-dictionary example, as a Python literal.
META_DICT = "{'data_regex': {'rules': ['.*@.*']}, 'funcs': {'text': 'md5(%s)'}}  # the manual's example"
SENS_DICT = """{
    # pg_anon's sensitive dictionary: a Python literal, as pg_anon reads it
    'dictionary': [
        {'schema': 'public', 'table': 'person', 'fields': {'email': 'md5("email")'}},
    ],
}"""


# -- a webhook receiver on loopback ----------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(ApiSettings(data_dir=tmp_path, token="t0k3n", webhook_backoff=0.05))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def source(toolkit: Database) -> Role:
    """A table of e-mail addresses, and a superuser role (a governor: it may create the
    temporary policy) with a password of its own."""
    toolkit.execute("CREATE TABLE public.person (id int PRIMARY KEY, email text NOT NULL, note text)")
    toolkit.execute(
        "INSERT INTO public.person SELECT g, 'person' || g || '@example.com', 'note ' || g FROM generate_series(1, %s) g",
        (ROWS,),
    )
    toolkit.execute("ANALYZE public.person")
    return toolkit.role("api", "SUPERUSER")


def connection(db: Database, role: Role, database: str | None = None, password: str | None = None) -> dict[str, Any]:
    # The manual's examples send the port as a string.
    return {
        "host": db.server.host,
        "port": str(db.server.port),
        "db_name": database or db.name,
        "user_login": role.name,
        "user_password": role.password if password is None else password,
    }


def hook(receiver: Receiver, operation_id: str, **fields: Any) -> dict[str, Any]:
    return {"operation_id": operation_id, "webhook_status_url": receiver.url, **fields}


def post(api: TestClient, path: str, body: dict[str, Any]) -> Any:
    return api.post(f"/api/stateless/{path}", json=body, headers=AUTH)


def started(api: TestClient, path: str, body: dict[str, Any]) -> None:
    response = post(api, path, body)
    assert response.status_code == 201, response.text
    assert response.content == b"null"


def final(receiver: Receiver, operation_id: str) -> dict[str, Any]:
    """The final webhook, after exactly one in_progress."""
    events = receiver.final(operation_id)
    assert [e["status"] for e in events] == ["in_progress", events[-1]["status"]]
    return events[-1]


def temporary_policies(db: Database) -> list[str]:
    return [r[0] for r in db.execute("SELECT policy FROM veil.policies WHERE policy LIKE 'pgveil\\_api\\_%'")]


def sens(content: str = SENS_DICT) -> list[dict[str, Any]]:
    return [{"name": "sens dict for email", "content": content}]


def operation(api: TestClient, operation_id: str) -> dict[str, Any]:
    found = api.get("/api/operations", params={"operation_id": operation_id}, headers=AUTH).json()["operations"]
    assert len(found) == 1
    return found[0]  # type: ignore[no-any-return]


def dump_body(receiver: Receiver, db: Database, role: Role, operation_id: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("type", "dump")
    fields.setdefault("sens_dict_contents", sens())
    return hook(receiver, operation_id, db_connection_params=connection(db, role), **fields)


def wait_until(predicate: Callable[[], bool], timeout: float = 30) -> None:
    """Poll a state that raises no event (a backend waiting on a lock)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- scan ------------------------------------------------------------------------------------


def test_scan_answers_201_null_then_reports_pg_anon_dictionaries_by_webhook(api, receiver, toolkit, source):
    body = hook(
        receiver,
        "scan-1",
        db_connection_params=connection(toolkit, source),
        type="partial",
        depth=500,
        meta_dict_contents=[{"name": "meta", "content": META_DICT, "additional_info": {"any": "json"}}],
        need_no_sens_dict=True,
        proc_count=2,
        proc_conn_count=4,
        save_dicts=True,
        webhook_metadata={"ticket": 7, "list": [1, 2]},
        webhook_extra_headers={"X-Api-Key": "hook-key-123"},
        web_debug=True,  # a later pg_anon's field, and one no version has: ignored
        something_new={"nested": True},
    )
    started(api, "scan", body)
    events = receiver.final("scan-1")
    assert [e["status"] for e in events] == ["in_progress", "success"]
    for event in events:
        assert set(event) == SCAN_KEYS
        assert event["webhook_metadata"] == {"ticket": 7, "list": [1, 2]}
    assert events[0]["sens_dict_content"] is None and events[0]["status_id"] == 4
    done = events[1]
    assert done["status_id"] == 2 and done["error"] is None and done["error_code"] is None
    assert done["started"].endswith("+00:00") and done["ended"].endswith("+00:00")
    # pg_anon's shape: a JSON string, 4-space indent, that pgveil's reader reads back.
    content = done["sens_dict_content"]
    assert isinstance(content, str) and '\n    "dictionary": [' in content
    found = parse_sens_dict(content, fmt="json")
    rule = found.rule_for("public", "person", "email")
    assert rule is not None and map_anon_rule(rule, "email").label is not None
    assert not found.is_listed("public", "person", "id")
    no_sens = parse_no_sens_dict(done["no_sens_dict_content"], fmt="json")
    assert no_sens.is_listed("public", "person", "id")
    assert not no_sens.is_listed("public", "person", "email")
    # The header names arrive lower-cased, with pg_anon's content-type.
    for _, headers in receiver.of("scan-1"):
        assert ("x-api-key", "hook-key-123") in headers
        assert ("content-type", "application/json") in headers
    assert temporary_policies(toolkit) == []
    logs = [
        line["message"]
        for line in api.get(f"/api/operations/{done['internal_operation_id']}/logs", headers=AUTH).json()
    ]
    assert any("proc_conn_count is ignored" in line for line in logs)


def test_scan_without_need_no_sens_dict_sends_it_null_and_carries_the_sensitive_dictionary(
    api, receiver, toolkit, source
):
    toolkit.execute("CREATE TABLE public.other (id int PRIMARY KEY, secret_code text)")
    toolkit.execute("INSERT INTO public.other SELECT g, 'x' || g FROM generate_series(1, 5) g")
    started(
        api,
        "scan",
        hook(
            receiver,
            "scan-2",
            db_connection_params=connection(toolkit, source),
            meta_dict_contents=[{"name": "empty", "content": "  "}],
            sens_dict_contents=[
                {
                    "name": "known",
                    "content": '{"dictionary": [{"schema": "public", "table": "other", "fields": {"secret_code": "NULL"}}]}',
                }
            ],
        ),
    )
    done = final(receiver, "scan-2")
    assert done["status"] == "success", done
    assert done["no_sens_dict_content"] is None
    found = parse_sens_dict(done["sens_dict_content"], fmt="json")
    assert found.rule_for("public", "other", "secret_code") == "NULL"
    assert found.is_listed("public", "person", "email")


# -- dump and restore ------------------------------------------------------------------------


def test_dump_then_restore_through_the_api(api, receiver, toolkit, source, tmp_path):
    started(
        api,
        "dump",
        dump_body(receiver, toolkit, source, "dump-1", output_path="runs/first", ignore_privileges=True, proc_count=2),
    )
    done = final(receiver, "dump-1")
    assert done["status"] == "success", done
    assert set(done) == BASE_KEYS | {"size"}
    archive = tmp_path / "dumps" / "runs" / "first"
    assert (archive / "toc.dat").is_file()
    assert done["size"] == sum(f.stat().st_size for f in archive.rglob("*") if f.is_file()) > 0
    manifest = dump_manifest.read(archive)
    assert [(t.table, t.rows) for t in manifest.tables] == [("person", ROWS)]
    assert sorted(p.name for p in (tmp_path / "dumps" / "runs").iterdir()) == ["first"]
    assert temporary_policies(toolkit) == []

    with scratch_database(toolkit) as target_url:
        target = target_url.rsplit("/", 1)[1]
        started(
            api,
            "restore",
            hook(
                receiver,
                "restore-1",
                db_connection_params=connection(toolkit, source, target),
                type="restore",
                input_path="/runs/first",  # a leading '/' is the dumps directory, as in pg_anon
                ignore_privileges=True,
                drop_custom_check_constr=True,
            ),
        )
        done = final(receiver, "restore-1")
        assert done["status"] == "success", done
        assert set(done) == BASE_KEYS
        with psycopg.connect(target_url) as conn:
            restored = conn.execute("SELECT id, email, note FROM public.person ORDER BY id").fetchall()
        originals = toolkit.execute("SELECT id, email, note FROM public.person ORDER BY id").fetchall()
        assert len(restored) == ROWS
        # The e-mails are md5'd as the dictionary says; the column it does not name is kept.
        assert [r[1] for r in restored] == [hashlib.md5(o[1].encode()).hexdigest() for o in originals]
        assert not {o[1] for o in originals} & {r[1] for r in restored}
        assert [r[2] for r in restored] == [o[2] for o in originals]
        logs = [
            line["message"]
            for line in api.get(f"/api/operations/{done['internal_operation_id']}/logs", headers=AUTH).json()
        ]
        assert any("drop_custom_check_constr is ignored" in line for line in logs)
        assert any(f"public.person: {ROWS} rows restored" in line for line in logs)

        # A non-empty target, without clean_db or drop_db: refused.
        started(
            api,
            "restore",
            hook(
                receiver, "restore-2", db_connection_params=connection(toolkit, source, target), input_path="runs/first"
            ),
        )
        refused = final(receiver, "restore-2")
        assert refused["status"] == "error" and refused["error_code"] == "DB_NOT_EMPTY", refused
        assert f"database {target} is not empty" in refused["error"]

        # drop_db makes the target again, empty, and restores into it.
        with psycopg.connect(target_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.leftover (x int)")
        started(
            api,
            "restore",
            hook(
                receiver,
                "restore-3",
                db_connection_params=connection(toolkit, source, target),
                input_path="runs/first",
                drop_db=True,
            ),
        )
        assert final(receiver, "restore-3")["status"] == "success"
        with psycopg.connect(target_url) as conn:
            assert conn.execute("SELECT to_regclass('public.leftover')").fetchone() == (None,)
            assert conn.execute("SELECT count(*) FROM public.person").fetchone() == (ROWS,)

        # clean_db drops the archive's objects first.
        started(
            api,
            "restore",
            hook(
                receiver,
                "restore-4",
                db_connection_params=connection(toolkit, source, target),
                input_path="runs/first",
                clean_db=True,
                pg_restore_options="--no-owner -x",
            ),
        )
        assert final(receiver, "restore-4")["status"] == "success"
        with psycopg.connect(target_url) as conn:
            assert conn.execute("SELECT count(*) FROM public.person").fetchone() == (ROWS,)

    # DELETE of the dump operation removes its directory.
    internal = operation(api, "dump-1")["internal_operation_id"]
    assert api.delete(f"/api/operations/{internal}", headers=AUTH).status_code == 204
    assert not archive.exists()


def test_dump_replaces_an_earlier_pgveil_dump_and_refuses_any_other_content(api, receiver, toolkit, source, tmp_path):
    dumps = tmp_path / "dumps"
    started(api, "dump", dump_body(receiver, toolkit, source, "d-1", output_path="same"))
    first = final(receiver, "d-1")
    assert first["status"] == "success"
    toolkit.execute("INSERT INTO public.person VALUES (1000, 'late@example.com', NULL)")
    started(api, "dump", dump_body(receiver, toolkit, source, "d-2", output_path="same", type="sync-data-dump"))
    assert final(receiver, "d-2")["status"] == "success"
    manifest = dump_manifest.read(dumps / "same")
    assert manifest.sections == "data" and manifest.tables[0].rows == ROWS + 1
    assert sorted(p.name for p in dumps.iterdir()) == ["same"]

    (dumps / "mine").mkdir()
    (dumps / "mine" / "notes.txt").write_text("keep me")
    started(api, "dump", dump_body(receiver, toolkit, source, "d-3", output_path="mine"))
    refused = final(receiver, "d-3")
    assert refused["error_code"] == "OUTPUT_DIR_NOT_EMPTY", refused
    assert refused["size"] is None
    assert sorted(p.name for p in (dumps / "mine").iterdir()) == ["notes.txt"]
    assert temporary_policies(toolkit) == []


def test_partial_tables_dictionaries_choose_the_dumped_tables(api, receiver, toolkit, source, tmp_path):
    toolkit.execute("CREATE TABLE public.audit_log (id int PRIMARY KEY, line text)")
    toolkit.execute("CREATE TABLE public.audit_old (id int PRIMARY KEY, line text)")
    tables = "{'tables': [{'schema': 'public', 'table_mask': '^audit_'}]}"
    started(
        api,
        "dump",
        dump_body(
            receiver,
            toolkit,
            source,
            "p-1",
            output_path="p",
            partial_tables_exclude_dict_contents=[{"name": "no audit", "content": tables}],
        ),
    )
    assert final(receiver, "p-1")["status"] == "success"
    assert [t.table for t in dump_manifest.read(tmp_path / "dumps" / "p").tables] == ["person"]

    started(
        api,
        "dump",
        dump_body(
            receiver,
            toolkit,
            source,
            "p-2",
            output_path="q",
            partial_tables_dict_contents=[{"name": "only audit", "content": tables}],
        ),
    )
    assert final(receiver, "p-2")["status"] == "success"
    assert sorted(t.table for t in dump_manifest.read(tmp_path / "dumps" / "q").tables) == ["audit_log", "audit_old"]


# -- failures --------------------------------------------------------------------------------


def test_a_connection_that_fails_is_reported_as_db_connection_failed(api, receiver, toolkit, source):
    body = dump_body(receiver, toolkit, source, "bad-1", output_path="never")
    body["db_connection_params"] = connection(toolkit, source, password="wrong-Password-31337")
    started(api, "dump", body)
    done = final(receiver, "bad-1")
    assert done["error_code"] == "DB_CONNECTION_FAILED", done
    assert "wrong-Password-31337" not in json.dumps(done)
    started(
        api,
        "scan",
        hook(
            receiver,
            "bad-2",
            db_connection_params=connection(toolkit, source, database="no_such_database_here"),
            meta_dict_contents=[],
        ),
    )
    assert final(receiver, "bad-2")["error_code"] == "DB_CONNECTION_FAILED"


@pytest.mark.parametrize("path", ["../x", "/../../etc", "a/../../b", ""])
def test_a_path_out_of_the_dumps_directory_is_refused_at_once(api, receiver, toolkit, source, tmp_path, path):
    response = post(api, "dump", dump_body(receiver, toolkit, source, "path-1", output_path=path))
    assert response.status_code == 400
    assert response.json() == {"error_code": "INVALID_PATH", "message": f"Invalid path: {path}"}
    response = post(
        api, "restore", hook(receiver, "path-2", db_connection_params=connection(toolkit, source), input_path=path)
    )
    assert response.status_code == 400 and response.json()["error_code"] == "INVALID_PATH"
    assert api.get("/api/operations", headers=AUTH).json()["total"] == 0
    assert receiver.events == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dumps", "state"]
    assert list((tmp_path / "dumps").iterdir()) == []


def test_clean_db_with_drop_db_is_refused_with_pg_anons_422(api, receiver, toolkit, source):
    body = hook(
        receiver,
        "both",
        db_connection_params=connection(toolkit, source),
        input_path="x",
        clean_db=True,
        drop_db=True,
    )
    response = post(api, "restore", body)
    assert response.status_code == 422
    [detail] = response.json()["detail"]
    assert detail["type"] == "value_error" and detail["loc"] == ["body"]
    assert detail["msg"] == "Value error, Only one of `clean_db` or `drop_db` can be set."
    assert receiver.events == []


def test_tool_options_outside_the_safe_list_are_refused_at_once(api, receiver, toolkit, source, tmp_path):
    response = post(
        api, "dump", dump_body(receiver, toolkit, source, "o-1", pg_dump_options="--no-owner --file=/tmp/elsewhere")
    )
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_CONFIG"
    assert "--file is not an option pgveil's dump takes" in response.json()["message"]
    response = post(
        api,
        "restore",
        hook(
            receiver,
            "o-2",
            db_connection_params=connection(toolkit, source),
            input_path="x",
            pg_restore_options="-j 2 --disable-triggers",
        ),
    )
    assert response.status_code == 400 and "--disable-triggers" in response.json()["message"]
    assert receiver.events == []


def test_an_unmappable_rule_fails_before_anything_is_written(api, receiver, toolkit, source, tmp_path):
    concatenated = "{'dictionary': [{'schema': 'public', 'table': 'person', 'fields': {'email': 'md5(\"email\") || \\'@abc.com\\''}}]}"
    started(
        api,
        "dump",
        dump_body(receiver, toolkit, source, "u-1", output_path="u", sens_dict_contents=sens(concatenated)),
    )
    done = final(receiver, "u-1")
    assert done["error_code"] == "INVALID_DICT_FILE", done
    assert "public.person.email" in done["error"] and "||" in done["error"]
    # A rule the database refuses (no such column): after the policy was made, which is dropped.
    missing = "{'dictionary': [{'schema': 'public', 'table': 'person', 'fields': {'nope': 'NULL'}}]}"
    started(api, "dump", dump_body(receiver, toolkit, source, "u-2", output_path="u", sens_dict_contents=sens(missing)))
    done = final(receiver, "u-2")
    assert done["error_code"] == "INVALID_DICT_FILE", done
    assert "has no column nope" in done["error"]
    # Not a dictionary at all.
    started(
        api,
        "dump",
        dump_body(receiver, toolkit, source, "u-3", output_path="u", sens_dict_contents=sens("__import__('os')")),
    )
    done = final(receiver, "u-3")
    assert done["error_code"] == "INVALID_DICT_FILE" and "sens_dict_contents[0]" in done["error"]
    assert list((tmp_path / "dumps").iterdir()) == []
    assert temporary_policies(toolkit) == []


def test_a_source_without_pgveil_is_refused(api, receiver, bare):
    role = bare.role("api", "SUPERUSER")
    started(api, "dump", dump_body(receiver, bare, role, "np-1", output_path="np"))
    done = final(receiver, "np-1")
    assert done["error_code"] == "SCHEMA_NOT_INITIALIZED" and "pgveil is not installed" in done["error"]


def test_restore_refuses_what_is_not_a_pgveil_dump(api, receiver, toolkit, source, tmp_path):
    (tmp_path / "dumps" / "plain").mkdir()
    (tmp_path / "dumps" / "plain" / "toc.dat").write_bytes(b"PGDMP not really")
    started(
        api,
        "restore",
        hook(receiver, "r-1", db_connection_params=connection(toolkit, source), input_path="plain"),
    )
    done = final(receiver, "r-1")
    assert done["error_code"] == "INVALID_FILE_FORMAT", done
    assert "input_path plain is not a pgveil dump" in done["error"]
    started(
        api,
        "restore",
        hook(receiver, "r-2", db_connection_params=connection(toolkit, source), input_path="missing"),
    )
    assert final(receiver, "r-2")["error_code"] == "INPUT_DIR_NOT_FOUND"


# -- cancelling, secrets -----------------------------------------------------------------------


def test_a_cancelled_dump_leaves_no_output_and_no_policy(api, receiver, toolkit, source, tmp_path):
    with psycopg.connect(toolkit.url) as locker:
        locker.execute("LOCK TABLE public.person IN ACCESS EXCLUSIVE MODE")
        started(api, "dump", dump_body(receiver, toolkit, source, "c-1", output_path="cancelled"))
        receiver.started("c-1")
        wait_until(
            lambda: (
                toolkit.scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                > 0
            )
        )
        assert temporary_policies(toolkit) != []
        internal = operation(api, "c-1")["internal_operation_id"]
        assert api.post(f"/api/operations/{internal}/cancel", headers=AUTH).status_code == 200
        done = final(receiver, "c-1")
        locker.rollback()
    assert done["status"] == "error" and done["size"] is None
    assert operation(api, "c-1")["status"] == "cancelled"
    assert list((tmp_path / "dumps").iterdir()) == []
    assert temporary_policies(toolkit) == []


def test_the_password_is_never_kept_nor_sent(api, receiver, toolkit, source, tmp_path):
    started(
        api,
        "scan",
        hook(
            receiver,
            "s-1",
            db_connection_params=connection(toolkit, source),
            meta_dict_contents=[{"name": "meta", "content": META_DICT}],
        ),
    )
    started(api, "dump", dump_body(receiver, toolkit, source, "s-2", output_path="s"))
    failing = dump_body(receiver, toolkit, source, "s-3", output_path="t")
    failing["db_connection_params"]["user_login"] = "nobody_here"
    started(api, "dump", failing)
    finals = [final(receiver, op) for op in ("s-1", "s-2", "s-3")]
    assert [f["status"] for f in finals] == ["success", "success", "error"]
    seen = json.dumps(receiver.bodies())
    for op in ("s-1", "s-2", "s-3"):
        internal = operation(api, op)["internal_operation_id"]
        seen += api.get(f"/api/operations/{internal}", headers=AUTH).text
        seen += api.get(f"/api/operations/{internal}/logs", headers=AUTH).text
        seen += api.get(f"/operation/{internal}", headers=AUTH).text
    assert source.password not in seen
    assert '"user_password": "***"' in seen
    for path in (tmp_path / "state").iterdir():
        assert source.password.encode() not in path.read_bytes()
