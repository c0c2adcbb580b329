"""pgveil's own jobs over the REST API (sync, verify, anonymize, audit, status), run
by the real app against the test server, reporting to a webhook receiver on
loopback: results, refusals, cancelling, the queue, and no secret anywhere."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient

from pgveil.api.app import create_app
from pgveil.api.settings import ApiSettings
from pgveil.services import audit, dump, sync
from tests.conftest import Database
from tests.helpers import demo_analyst, scratch_database
from tests.test_sync import PLANTED_EMAIL, PLANTED_NAME, plant, text_of
from tests.webhook_receiver import Receiver

TOKEN = "t0k3n"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CUSTOMER_SUM = "SELECT md5(string_agg(c::text, ',' ORDER BY customer_id)) FROM public.customer c"


# -- a webhook receiver on loopback ----------------------------------------------------


# -- the app, and what the tests send it -------------------------------------------------


def settings(tmp_path: Path, **kw: Any) -> ApiSettings:
    return ApiSettings(data_dir=tmp_path / "api", token=TOKEN, webhook_backoff=0.05, cancel_grace=30.0, **kw)


def params(db: Database, url: str | None = None, user: str | None = None, password: str | None = None) -> dict:
    """pg_anon's db_connection_params of ``url`` (default: the test's database), as the admin."""
    server = db.server
    return {
        "host": server.host,
        "port": str(server.port),  # pg_anon's manual sends it as a string
        "db_name": urlsplit(url).path.lstrip("/") if url else db.name,
        "user_login": user or server.user,
        "user_password": server.password if password is None else password,
    }


def accepted(client: TestClient, path: str, body: dict[str, Any]) -> str:
    """POST a job: 202 with its ids; the internal one."""
    answer = client.post(path, json=body, headers=AUTH)
    assert answer.status_code == 202, answer.text
    found = answer.json()
    assert found["status"] in ("queued", "in_progress")
    assert found["operation_id"] == body.get("operation_id", found["internal_operation_id"])
    assert answer.headers["location"] == f"/api/operations/{found['internal_operation_id']}"
    return str(found["internal_operation_id"])


def operation(client: TestClient, internal: str) -> dict[str, Any]:
    found = client.get(f"/api/operations/{internal}", headers=AUTH)
    assert found.status_code == 200
    return found.json()  # type: ignore[no-any-return]


def wait_until(client: TestClient, internal: str, wanted: str, timeout: float = 120) -> dict[str, Any]:
    """Polled, as a client without a webhook would."""
    deadline = time.monotonic() + timeout
    while (found := operation(client, internal))["status"] != wanted:
        assert found["status"] in ("queued", "in_progress"), found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    return found


def wait_log(client: TestClient, internal: str, line: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while line not in [x["message"] for x in client.get(f"/api/operations/{internal}/logs", headers=AUTH).json()]:
        assert time.monotonic() < deadline, (line, operation(client, internal))
        time.sleep(0.05)


def assert_no_secret(client: TestClient, tmp_path: Path, receiver: Receiver | None, *secrets: str) -> None:
    """Not in the records, their logs, the webhooks, nor the store's files."""
    records = client.get("/api/operations", params={"limit": 500}, headers=AUTH).json()["operations"]
    seen = json.dumps(records) + json.dumps(receiver.bodies() if receiver else [])
    for record in records:
        seen += client.get(f"/api/operations/{record['internal_operation_id']}/logs", headers=AUTH).text
        seen += json.dumps(operation(client, record["internal_operation_id"]))
    stored = b"".join(p.read_bytes() for p in (tmp_path / "api" / "state").glob("operations.sqlite3*"))
    for secret in secrets:
        assert secret not in seen and secret.encode() not in stored


def scalar(url: str, query: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
        return None if row is None else row[0]


def sync_body(demo: Database, target: str, **kw: Any) -> dict[str, Any]:
    return {
        "db_connection_params": params(demo),
        "target_connection_params": params(demo, target),
        "policy": "mask",
        "uncovered": "keep",
        **kw,
    }


# -- sync and verify -----------------------------------------------------------------------


def test_a_sync_through_the_api_then_its_verification_pass_and_fail(demo, tmp_path, receiver):
    plant(demo)
    with scratch_database(demo) as target, TestClient(create_app(settings(tmp_path))) as client:
        hook = {"webhook_status_url": receiver.url, "webhook_metadata": {"ticket": 21}}
        synced = accepted(client, "/api/sync", {**sync_body(demo, target, jobs=2), "operation_id": "sync-1", **hook})
        started, done = receiver.wait_for(2, "sync-1")
        assert (started["status"], started["status_id"], started["rows"]) == ("in_progress", 4, None)
        assert (done["status"], done["status_id"], done["internal_operation_id"]) == ("success", 2, synced)
        assert done["webhook_metadata"] == {"ticket": 21} and done["error"] is None
        assert done["ok"] and done["policy"] == "mask" and done["checks"]["invalid_constraints"] == []
        assert {t["table"]: t["rows_in_target"] for t in done["tables"]}["public.customer"] == 201
        assert done["run_options"]["db_connection_params"]["user_password"] == "***"
        assert operation(client, synced)["result"]["rows"] == done["rows"]
        # The target holds the masked rows, none of the raw ones.
        assert scalar(target, "SELECT count(*) FROM customer WHERE email LIKE '%******%'") == 201
        everything = text_of(target)
        assert PLANTED_EMAIL not in everything and PLANTED_NAME not in everything
        logs = [x["message"] for x in client.get(f"/api/operations/{synced}/logs", headers=AUTH).json()]
        assert "unit done: public.customer" in logs and logs[-1] == f"synced 4 tables, {done['rows']} rows in 4 units"

        verify = {"db_connection_params": params(demo), "target_connection_params": params(demo, target)}
        verify |= {"policy": "mask", "uncovered": "keep", **hook}
        accepted(client, "/api/verify", {**verify, "operation_id": "verify-1"})
        passed = receiver.wait_for(2, "verify-1")[1]
        assert (passed["status"], passed["mode"], passed["result"]) == ("success", "copy", "pass")
        assert passed["leak_scan"]["leaks"] == [] and "public.customer.email" in passed["leak_scan"]["source_columns"]

        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(
                "UPDATE customer SET email = %s WHERE customer_id = (SELECT min(customer_id) FROM customer)",
                (PLANTED_EMAIL,),
            )
        accepted(client, "/api/verify", {**verify, "operation_id": "verify-2"})
        failed = receiver.wait_for(2, "verify-2")[1]
        # The job verified: it succeeded, and its result says the copy fails.
        assert (failed["status"], failed["result"]) == ("success", "fail")
        [leak] = failed["leak_scan"]["leaks"]
        assert (leak["source"], leak["target"], leak["rows"]) == ("public.customer.email", "public.customer.email", 1)
        assert PLANTED_EMAIL not in json.dumps(receiver.bodies())
        assert PLANTED_EMAIL not in json.dumps(client.get("/api/operations", headers=AUTH).json())
        assert_no_secret(client, tmp_path, receiver, demo.server.password)


def test_a_dump_is_verified_by_its_path_inside_the_dumps_directory(demo, tmp_path):
    plant(demo)
    config = settings(tmp_path)
    config.dumps_dir.mkdir(parents=True)
    dump.dump(demo.url, dump.DumpOptions(policy="mask", uncovered="keep", output=config.dumps_dir / "shop"))
    with TestClient(create_app(config)) as client:
        body = {"db_connection_params": params(demo), "uncovered": "keep"}
        internal = accepted(client, "/api/verify", {**body, "archive_path": "shop"})
        result = wait_until(client, internal, "success")["result"]
        assert result["result"] == "pass" and result["policy"] == "mask"
        # The dump as the caller named it, not where the service keeps it.
        assert result["searched"] == "archive shop" and str(tmp_path) not in json.dumps(result)
        for path in ("../shop", "/../../etc", "/"):
            refused = client.post("/api/verify", json={**body, "archive_path": path}, headers=AUTH)
            assert (refused.status_code, refused.json()["error_code"]) == (400, "INVALID_PATH"), path
        missing = client.post("/api/verify", json={**body, "archive_path": "nothing-here"}, headers=AUTH)
        assert (missing.status_code, missing.json()["error_code"]) == (400, "INPUT_DIR_NOT_FOUND")
        both = {**body, "archive_path": "shop", "target_connection_params": params(demo)}
        for bad in (body, both):
            refused = client.post("/api/verify", json=bad, headers=AUTH)
            assert refused.status_code == 422 and "give target_connection_params or archive_path" in refused.text
        assert client.get("/api/operations", headers=AUTH).json()["total"] == 1


def test_a_role_is_verified_through_the_api(demo, tmp_path):
    analyst = demo_analyst(demo)
    with TestClient(create_app(settings(tmp_path))) as client:
        role = {
            "db_connection_params": params(demo),
            "role_connection_params": params(demo, None, "analyst", analyst.password),
        }
        result = wait_until(client, accepted(client, "/api/verify", role), "success")["result"]
        assert (result["mode"], result["role"], result["kind"], result["result"]) == (
            "role",
            "analyst",
            "masked",
            "pass",
        )
        assert result["routes"] and not [r for r in result["routes"] if r["outcome"] == "leaked"]
        demo.execute("SET session_replication_role = replica")
        demo.execute("GRANT SELECT ON public.customer TO analyst")
        demo.execute("SET session_replication_role = origin")
        result = wait_until(client, accepted(client, "/api/verify", role), "success")["result"]
        assert result["result"] == "fail" and result["leaked"] is True
        refused = client.post(
            "/api/verify", json={"db_connection_params": params(demo), "role": "analyst"}, headers=AUTH
        )
        assert refused.status_code == 422 and "how the role logs in" in refused.text
        assert_no_secret(client, tmp_path, None, demo.server.password, analyst.password)


# -- anonymize ---------------------------------------------------------------------------------


def test_anonymize_needs_the_database_name_as_confirmation_then_rewrites(demo, tmp_path, receiver):
    plant(demo)
    # A streamed table is refused by the rewrite: customer is the demo's.
    demo.execute("SELECT veil.unstream('public.customer')")
    demo.execute("SELECT veil.create_policy('clone', 'static')")
    for column, rule in (
        ("email", "MASKED WITH FUNCTION veil.token(email, 'email')"),
        ("first_name", "MASKED WITH VALUE 'someone'"),
        ("last_name", "MASKED WITH VALUE 'someone'"),
    ):
        demo.execute("SELECT veil.security_label('clone', 'column', %s, %s)", (f"public.customer.{column}", rule))
    before = demo.scalar(CUSTOMER_SUM)
    body = {"db_connection_params": params(demo), "policy": "clone", "tables": ["public.customer"], "uncovered": "keep"}
    with TestClient(create_app(settings(tmp_path))) as client:
        for confirm in ({}, {"confirm": "another_database"}, {"confirm": ""}):
            refused = client.post("/api/anonymize", json={**body, **confirm}, headers=AUTH)
            assert refused.status_code == 422, refused.text
            assert f"set confirm to '{demo.name}'" in refused.text and demo.server.password not in refused.text
        assert client.get("/api/operations", headers=AUTH).json()["total"] == 0
        planned = wait_until(client, accepted(client, "/api/anonymize", {**body, "dry_run": True}), "success")
        assert [p["table"] for p in planned["result"]["planned"]] == ["public.customer"]
        assert demo.scalar(CUSTOMER_SUM) == before

        hook = {"operation_id": "anon-1", "webhook_status_url": receiver.url, "confirm": demo.name}
        accepted(client, "/api/anonymize", {**body, **hook})
        started, done = receiver.wait_for(2, "anon-1")
        assert started["status"] == "in_progress" and started["tables"] is None
        assert (done["status"], done["policy"], done["dry_run"]) == ("success", "clone", False)
        assert (done["tables_rewritten"], done["rows"]) == (1, 201)
        assert [t["table"] for t in done["tables"] if t["rewritten"]] == ["public.customer"]
    assert demo.scalar(CUSTOMER_SUM) != before
    assert demo.scalar("SELECT count(*) FROM customer") == 201
    assert (
        demo.scalar("SELECT count(*) FROM customer WHERE email = %s OR first_name <> 'someone'", (PLANTED_EMAIL,)) == 0
    )


# -- audit and status ------------------------------------------------------------------------


def test_audit_and_status_answer_at_once(demo, tmp_path):
    with TestClient(create_app(settings(tmp_path))) as client:
        answer = client.post("/api/audit", json={"db_connection_params": params(demo)}, headers=AUTH)
        assert answer.status_code == 200
        assert (answer.json()["status_id"], answer.json()["status"]) == (2, "success")
        with psycopg.connect(demo.url) as conn:
            assert answer.json()["content"] == json.loads(json.dumps(audit.audit(conn).as_dict()))
        assert answer.json()["content"]["policies"] == ["mask", "sanitized"]
        one = client.post("/api/audit", json={"db_connection_params": params(demo), "policies": ["mask"]}, headers=AUTH)
        assert one.json()["content"]["policies"] == ["mask"]
        unknown = client.post(
            "/api/audit", json={"db_connection_params": params(demo), "policies": ["nope"]}, headers=AUTH
        )
        assert unknown.status_code == 400 and unknown.json()["error_code"] == "DB_QUERY_FAILED"
        assert "nope" in unknown.json()["message"]

        found = client.post("/api/status", json={"db_connection_params": params(demo)}, headers=AUTH)
        assert found.status_code == 200 and found.json()["status"] == "success"
        content = found.json()["content"]
        assert {p["policy"]: p["delivery"] for p in content["policies"]} == {"mask": "views", "sanitized": "copy"}
        assert {s["source"] for s in content["streams"]} == {"public.customer", "public.payment"}
        assert "analyst" in {r["role_name"] for r in content["masked_roles"]}

        wrong = "Wr0ng-Passw0rd-77"
        for path in ("/api/audit", "/api/status"):
            for bad, code in (
                (params(demo, password=wrong), "DB_CONNECTION_FAILED"),
                ({**params(demo), "port": 1}, "DB_CONNECTION_FAILED"),
            ):
                refused = client.post(path, json={"db_connection_params": bad}, headers=AUTH)
                assert (refused.status_code, refused.json()["error_code"]) == (400, code), refused.text
                assert wrong not in refused.text and demo.server.password not in refused.text
        # Synchronous: nothing is recorded.
        assert client.get("/api/operations", headers=AUTH).json()["total"] == 0


# -- failures, cancelling, the queue -------------------------------------------------------------


def test_a_failing_sync_reports_its_error_by_webhook(demo, tmp_path, receiver):
    wrong = "Wr0ng-Passw0rd-77"
    with scratch_database(demo) as target, TestClient(create_app(settings(tmp_path))) as client:
        hook = {"webhook_status_url": receiver.url}
        accepted(client, "/api/sync", {**sync_body(demo, demo.url), "operation_id": "into-itself", **hook})
        failed = receiver.wait_for(2, "into-itself")[1]
        assert (failed["status"], failed["status_id"], failed["error_code"]) == ("error", 3, "OPERATION_FAILED")
        assert failed["error"] == "the target is the source database: choose another target"
        assert failed["rows"] is None and failed["tables"] is None
        bad_target = {**sync_body(demo, target), "target_connection_params": params(demo, target, password=wrong)}
        accepted(client, "/api/sync", {**bad_target, "operation_id": "bad-login", **hook})
        failed = receiver.wait_for(2, "bad-login")[1]
        assert (failed["status"], failed["error_code"]) == ("error", "DB_CONNECTION_FAILED")
        assert "password" in failed["error"] and wrong not in failed["error"]
        assert_no_secret(client, tmp_path, receiver, wrong, demo.server.password)
        assert scalar(target, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace") == 0


@pytest.fixture
def blocked_target(demo: Database) -> Iterator[tuple[str, psycopg.Connection[Any]]]:
    """A target holding the demo's schema, whose payment table a transaction keeps
    locked against writes: a data-only sync loads address and customer, then waits."""
    plant(demo)
    with scratch_database(demo) as target:
        sync.sync(demo.url, target, sync.SyncOptions(policy="mask", uncovered="keep", schema_only=True))
        with psycopg.connect(target) as lock:
            lock.execute("LOCK TABLE payment IN SHARE MODE")
            yield target, lock


def test_a_cancelled_sync_reports_an_error_keeps_its_units_and_resumes(demo, tmp_path, receiver, blocked_target):
    target, lock = blocked_target
    with TestClient(create_app(settings(tmp_path))) as client:
        hook = {"webhook_status_url": receiver.url}
        running = accepted(
            client, "/api/sync", {**sync_body(demo, target, data_only=True), "operation_id": "c", **hook}
        )
        wait_log(client, running, "unit done: public.customer")
        cancelled = client.post(f"/api/operations/{running}/cancel", headers=AUTH)
        assert cancelled.status_code == 200
        started, ended = receiver.wait_for(2, "c")
        assert (started["status"], ended["status"], ended["status_id"]) == ("in_progress", "error", 3)
        assert operation(client, running)["status"] == "cancelled"
        lock.rollback()
        # The units finished before the interruption are kept, committed; payment's is not.
        assert scalar(target, "SELECT count(*) FROM pgveil_sync.unit") == 4
        assert scalar(target, "SELECT count(*) FROM pgveil_sync.done") == 3
        assert scalar(target, "SELECT count(*) FROM customer") == 201
        assert scalar(target, "SELECT count(*) FROM payment") == 0
        assert client.post(f"/api/operations/{running}/cancel", headers=AUTH).status_code == 409

        resumed = accepted(client, "/api/sync", {**sync_body(demo, target, data_only=True, resume=True), **hook})
        done = wait_until(client, resumed, "success")["result"]
        assert done["ok"] and done["units"] == {"total": 4, "resumed": 3}
        assert scalar(target, "SELECT count(*) FROM payment") == 400
        assert scalar(target, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgveil_sync'") == 0


def test_syncs_beyond_the_limit_wait_in_the_queue(demo, tmp_path, blocked_target):
    target, lock = blocked_target
    with scratch_database(demo) as second, TestClient(create_app(settings(tmp_path, limits={"sync": 1}))) as client:
        first = accepted(client, "/api/sync", sync_body(demo, target, data_only=True))
        wait_log(client, first, "unit done: public.customer")
        waiting = accepted(client, "/api/sync", sync_body(demo, second))
        queued = client.get("/api/operations", params={"status": "queued"}, headers=AUTH).json()
        assert [o["internal_operation_id"] for o in queued["operations"]] == [waiting]
        assert operation(client, first)["status"] == "in_progress"
        assert operation(client, waiting)["started"] is None
        lock.rollback()
        ended = wait_until(client, first, "success")["ended"]
        assert wait_until(client, waiting, "success")["started"] >= ended
        assert scalar(second, "SELECT count(*) FROM payment") == 400


# -- the API's own refusals ----------------------------------------------------------------------


PATHS = ("/api/sync", "/api/verify", "/api/anonymize", "/api/audit", "/api/status")


def test_every_endpoint_needs_the_token_and_refuses_a_bad_body(demo, tmp_path):
    password = demo.server.password
    with TestClient(create_app(settings(tmp_path))) as client:
        for path in PATHS:
            assert client.post(path, json={"db_connection_params": params(demo)}).status_code == 401
            wrong_token = client.post(path, json={}, headers={"Authorization": "Bearer nope"})
            assert wrong_token.status_code == 401
            missing = client.post(path, json={}, headers=AUTH)
            assert missing.status_code == 422 and ["body", "db_connection_params"] in [
                e["loc"] for e in missing.json()["detail"]
            ]
            assert client.post(path, content=b"{not json", headers=AUTH).status_code == 422
        with scratch_database(demo) as target:
            good = sync_body(demo, target)
            for bad, message in (
                ({"schema_only": True, "data_only": True}, "--schema-only and --data-only exclude each other"),
                ({"truncate": True}, "--truncate goes with --data-only"),
                ({"subset": ["no condition"]}, "--subset is"),
                ({"subset_percent": ["public.customer=lots"]}, "--subset-percent is"),
                ({"virtual_fk": ["public.a(x)"]}, "--virtual-fk is"),
                ({"uncovered": "maybe"}, "'refuse', 'keep' or 'null'"),
                ({"jobs": 0}, "greater than or equal to 1"),
                ({"webhook_status_url": "ftp://example.com/hook"}, "should match pattern"),
                ({"policy": ""}, "at least 1 character"),
            ):
                refused = client.post("/api/sync", json={**good, **bad}, headers=AUTH)
                assert refused.status_code == 422 and message in refused.text, (bad, refused.text)
                assert password not in refused.text
            # A connection's fields incomplete: the error names the field, never the password with it.
            partial = {k: v for k, v in params(demo).items() if k != "port"}
            refused = client.post("/api/status", json={"db_connection_params": partial}, headers=AUTH)
            assert refused.status_code == 422 and password not in refused.text
            assert client.get("/api/operations", headers=AUTH).json()["total"] == 0
            assert scalar(target, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace") == 0
        schema = client.get("/openapi.json").json()["paths"]
        assert set(PATHS) <= set(schema)
