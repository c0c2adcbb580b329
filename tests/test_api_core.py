"""The REST API's core: who may call it, where files may go, how operations run,
queue, cancel, survive a restart, report by webhook, and keep no secret."""

from __future__ import annotations

import json
import os
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from pgveil.api.app import create_app
from pgveil.api.runner import JobFailed, JobSpec, Log
from pgveil.api.security import PathRefused, confine
from pgveil.api.settings import ApiSettings
from pgveil.api.store import IN_PROGRESS, Store
from pgveil.api.webhooks import Webhook
from pgveil.cli import app as cli_app
from tests.webhook_receiver import Receiver

TOKEN = "t0k3n-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PASSWORD = "pw-Secret-4711"


# -- job functions, run in the runner's child processes -------------------------------


def quick(params: dict[str, Any], log: Log) -> dict[str, Any]:
    log(f"working for {params['who']} with {params['db']['user_password']}")
    return {"answer": 42, "echo": params["db"]["user_password"]}


def slow(params: dict[str, Any], log: Log) -> dict[str, Any]:
    log("started")
    marker = Path(params["marker"])
    try:
        for _ in range(600):
            time.sleep(0.05)
        return {"done": True}
    except KeyboardInterrupt:
        # What a service does on Ctrl-C: clean up, then stop.
        marker.write_text("cleaned up")
        raise


def failing(params: dict[str, Any], log: Log) -> dict[str, Any]:
    raise JobFailed("DB_CONNECTION_FAILED", f"cannot reach the database with {params['db']['user_password']}")


def settings(tmp_path: Path, **kw: Any) -> ApiSettings:
    kw.setdefault("token", TOKEN)
    kw.setdefault("webhook_backoff", 0.05)
    kw.setdefault("cancel_grace", 10.0)
    return ApiSettings(data_dir=tmp_path / "api", **kw)


def spec(function: str, webhook: Webhook | None = None, **kw: Any) -> JobSpec:
    request = {
        "who": "tests",
        "db": {"host": "h", "port": 5432, "db_name": "d", "user_login": "u", "user_password": PASSWORD},
        "webhook_metadata": {"ticket": 7},
        "webhook_extra_headers": {"Authorization": "Api-key hook-secret-99"},
        **kw.pop("request", {}),
    }
    kw.setdefault("kind", "test")
    return JobSpec(function=f"tests.test_api_core:{function}", request=request, webhook=webhook, **kw)


def wait_log(client: TestClient, internal: str, line: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while line not in [x["message"] for x in client.get(f"/api/operations/{internal}/logs", headers=AUTH).json()]:
        assert time.monotonic() < deadline, line
        time.sleep(0.05)


def wait_status(client: TestClient, internal: str, wanted: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = client.get(f"/api/operations/{internal}", headers=AUTH).json()
        if found["status"] == wanted:
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


# -- tests --------------------------------------------------------------------------------


def test_every_operation_needs_the_token_and_the_schema_is_public(tmp_path):
    with TestClient(create_app(settings(tmp_path))) as client:
        assert client.get("/api/operations").status_code == 401
        assert client.get("/api/operations", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/operations", headers={"Authorization": TOKEN}).status_code == 401
        assert client.get("/api/operations", headers=AUTH).status_code == 200
        assert client.get("/operation", headers=AUTH).status_code == 200
        assert client.get("/operation").status_code == 401
        schema = client.get("/openapi.json")
        assert schema.status_code == 200 and "/api/operations" in schema.json()["paths"]
        assert client.get("/docs").status_code == 200


def test_the_service_refuses_to_start_without_a_token_unless_local(tmp_path, monkeypatch):
    monkeypatch.delenv("PGVEIL_API_TOKEN", raising=False)
    result = CliRunner().invoke(cli_app, ["api", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no token" in result.output
    result = CliRunner().invoke(cli_app, ["api", "--insecure-local", "--host", "0.0.0.0", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "only on a loopback address" in result.output
    empty = tmp_path / "token"
    empty.write_text("\n")
    result = CliRunner().invoke(cli_app, ["api", "--token-file", str(empty), "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "is empty" in result.output


def test_an_operation_reports_by_webhook_and_keeps_no_secret(tmp_path, receiver):
    with TestClient(create_app(settings(tmp_path))) as client:
        runner = client.app.state.runner  # type: ignore[attr-defined]
        hook = Webhook(receiver.url, {"ticket": 7}, {"authorization": "Api-key hook-secret-99"}, True)
        operation = runner.submit(spec("quick", hook, operation_id="caller-1", result_keys=("answer",)))
        in_progress, done = receiver.wait_for(2)
        record = wait_status(client, operation.id, "success")
        logs = client.get(f"/api/operations/{operation.id}/logs", headers=AUTH).json()
        pg_anon_logs = client.get(f"/operation/{operation.id}/logs", headers=AUTH).json()
    assert in_progress["status"] == "in_progress" and in_progress["status_id"] == 4
    assert in_progress["started"] is None and in_progress["answer"] is None
    assert done["status"] == "success" and done["status_id"] == 2
    assert done["operation_id"] == "caller-1" and done["internal_operation_id"] == operation.id
    assert done["webhook_metadata"] == {"ticket": 7} and done["answer"] == 42
    assert done["started"].endswith("+00:00") and done["error"] is None
    headers = {k.lower(): v for k, v in receiver.events[1][1]}
    assert headers["authorization"] == "Api-key hook-secret-99"
    # The password is scrubbed from the result, the logs and the record; the header from the record.
    assert done["echo"] == "***" and record["result"]["echo"] == "***"
    assert record["request"]["db"]["user_password"] == "***"
    assert record["request"]["webhook_extra_headers"] == "***"
    assert logs[0]["message"] == "working for tests with ***" and PASSWORD not in json.dumps(pg_anon_logs)
    stored = (tmp_path / "api" / "state").glob("operations.sqlite3*")
    for path in stored:
        data = path.read_bytes()
        assert PASSWORD.encode() not in data and b"hook-secret-99" not in data


def test_webhook_delivery_is_retried_and_every_attempt_recorded(tmp_path):
    receiver = Receiver(failures=2)
    try:
        with TestClient(create_app(settings(tmp_path))) as client:
            operation = client.app.state.runner.submit(spec("quick", Webhook(receiver.url)))  # type: ignore[attr-defined]
            events = receiver.wait_for(2)
            wait_status(client, operation.id, "success")
            record = client.get(f"/api/operations/{operation.id}", headers=AUTH).json()
    finally:
        receiver.close()
    assert [e["status"] for e in events] == ["in_progress", "success"]
    attempts = [(a["event"], a["attempt"], a["http_status"]) for a in record["webhook_attempts"]]
    assert attempts[:3] == [("in_progress", 1, 500), ("in_progress", 2, 500), ("in_progress", 3, 200)]
    assert ("success", 1, 200) in attempts


def test_webhook_verify_ssl_is_honoured(tmp_path):
    """A receiver whose certificate no trusted authority signed: refused while the
    certificate is checked, delivered with webhook_verify_ssl false."""
    authority = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(tls)
    receiver = Receiver(tls=tls)
    try:
        with TestClient(create_app(settings(tmp_path, webhook_attempts=2))) as client:
            runner = client.app.state.runner  # type: ignore[attr-defined]
            checked = runner.submit(spec("quick", Webhook(receiver.url, verify_ssl=True), operation_id="checked"))
            wait_status(client, checked.id, "success")
            runner.submit(spec("quick", Webhook(receiver.url, verify_ssl=False), operation_id="unchecked"))
            assert [e["status"] for e in receiver.wait_for(2, "unchecked")] == ["in_progress", "success"]
            # Both events of the checked one, each tried twice, are recorded as they fail.
            deadline = time.monotonic() + 30
            while (
                len(record := client.get(f"/api/operations/{checked.id}", headers=AUTH).json()["webhook_attempts"]) < 4
            ):
                assert time.monotonic() < deadline, record
                time.sleep(0.05)
    finally:
        receiver.close()
    assert receiver.bodies("checked") == []
    attempts = record
    assert [(a["event"], a["attempt"], a["http_status"]) for a in attempts] == [
        ("in_progress", 1, None),
        ("in_progress", 2, None),
        ("success", 1, None),
        ("success", 2, None),
    ]
    assert all(a["error"] == "ConnectError" for a in attempts)


def test_a_failed_job_reports_its_code_without_the_secret(tmp_path, receiver):
    with TestClient(create_app(settings(tmp_path))) as client:
        operation = client.app.state.runner.submit(spec("failing", Webhook(receiver.url)))  # type: ignore[attr-defined]
        _, done = receiver.wait_for(2)
        record = wait_status(client, operation.id, "error")
    assert done["status"] == "error" and done["status_id"] == 3
    assert done["error_code"] == "DB_CONNECTION_FAILED"
    assert done["error"] == "cannot reach the database with ***" == record["error"]


def test_a_running_job_is_cancelled_cleanly_and_a_queue_waits_for_its_slot(tmp_path, receiver):
    first_marker, second_marker = tmp_path / "first", tmp_path / "second"
    with TestClient(create_app(settings(tmp_path, limits={"test": 1}))) as client:
        runner = client.app.state.runner  # type: ignore[attr-defined]
        first = runner.submit(spec("slow", Webhook(receiver.url), request={"marker": str(first_marker)}))
        second = runner.submit(spec("slow", request={"marker": str(second_marker)}))
        wait_log(client, first.id, "started")
        listed = client.get("/api/operations", params={"status": "queued"}, headers=AUTH).json()
        assert [o["internal_operation_id"] for o in listed["operations"]] == [second.id]
        # Neither may be deleted while it runs or waits.
        assert client.delete(f"/api/operations/{first.id}", headers=AUTH).status_code == 409
        assert client.delete(f"/api/operations/{second.id}", headers=AUTH).status_code == 409
        assert client.post(f"/api/operations/{first.id}/cancel", headers=AUTH).status_code == 200
        wait_status(client, first.id, "cancelled")
        # The slot freed: the second starts; cancelled while running too.
        wait_log(client, second.id, "started")
        client.post(f"/api/operations/{second.id}/cancel", headers=AUTH)
        wait_status(client, second.id, "cancelled")
        assert client.post(f"/api/operations/{first.id}/cancel", headers=AUTH).status_code == 409
        events = receiver.wait_for(2)
        assert client.delete(f"/api/operations/{first.id}", headers=AUTH).status_code == 204
        assert client.get(f"/api/operations/{first.id}", headers=AUTH).status_code == 404
    # SIGINT reached each job, which cleaned up as a service does on Ctrl-C.
    assert first_marker.read_text() == "cleaned up" and second_marker.read_text() == "cleaned up"
    assert [e["status"] for e in events] == ["in_progress", "error"] and events[1]["error_code"] == "cancelled"


def test_a_deleted_operation_takes_its_files(tmp_path):
    with TestClient(create_app(settings(tmp_path))) as client:
        output = tmp_path / "api" / "dumps" / "d1"
        output.mkdir(parents=True)
        (output / "toc.dat").write_text("x")
        operation = client.app.state.runner.submit(spec("quick", files=[str(output)]))  # type: ignore[attr-defined]
        wait_status(client, operation.id, "success")
        assert client.delete(f"/api/operations/{operation.id}", headers=AUTH).status_code == 204
    assert not output.exists()


def test_operations_survive_a_restart_and_the_interrupted_are_failed(tmp_path):
    config = settings(tmp_path)
    with TestClient(create_app(config)) as client:
        done = client.app.state.runner.submit(spec("quick", operation_id="before-restart"))  # type: ignore[attr-defined]
        wait_status(client, done.id, "success")
    # A service killed while a job ran leaves it in progress in the store.
    store = Store(config.state_dir)
    stuck = store.create("dump", "stuck-one", {"x": 1}, [], None)
    assert store.start(stuck.id) and store.get(stuck.id).status == IN_PROGRESS  # type: ignore[union-attr]
    store.close()
    with TestClient(create_app(config)) as client:
        found = client.get(f"/api/operations/{done.id}", headers=AUTH).json()
        assert found["status"] == "success" and found["result"]["answer"] == 42
        assert client.get(f"/api/operations/{done.id}/logs", headers=AUTH).json()[0]["message"].startswith("working")
        failed = client.get(f"/api/operations/{stuck.id}", headers=AUTH).json()
        assert failed["status"] == "error" and failed["error_code"] == "service_restarted"
        listed = client.get("/api/operations", params={"operation_id": "before-restart"}, headers=AUTH).json()
        assert listed["total"] == 1
        pg_anon = client.get(f"/operation/{stuck.id}", headers=AUTH).json()
        assert pg_anon["run_status"]["status"] == "error"


def test_list_filters_and_pages(tmp_path):
    with TestClient(create_app(settings(tmp_path))) as client:
        runner = client.app.state.runner  # type: ignore[attr-defined]
        ids = [runner.submit(spec("quick", operation_id=f"op-{i}")).id for i in range(5)]
        for internal in ids:
            wait_status(client, internal, "success")
        page = client.get("/api/operations", params={"limit": 2, "offset": 1}, headers=AUTH).json()
        assert page["total"] == 5 and len(page["operations"]) == 2
        assert client.get("/api/operations", params={"kind": "nope"}, headers=AUTH).json()["total"] == 0
        assert client.get("/api/operations", params={"status": "bogus"}, headers=AUTH).status_code == 422
        assert client.get("/api/operations", params={"limit": 0}, headers=AUTH).status_code == 422
        assert client.get("/operation", params={"date_after": "2999-01-01"}, headers=AUTH).json() == []
        bad = client.get("/operation", params={"date_after": "2026-02-01", "date_before": "2026-01-01"}, headers=AUTH)
        assert bad.status_code == 422
        # The shape the schema documents for every 422.
        assert bad.json()["detail"][0]["loc"] == ["query", "date_after"]


@pytest.mark.parametrize(
    "requested",
    ["../x", "a/../../x", "/../etc/passwd", "..", "", "a/\0b"],
)
def test_paths_outside_the_dumps_directory_are_refused(tmp_path, requested):
    root = tmp_path / "dumps"
    root.mkdir()
    with pytest.raises(PathRefused):
        confine(root, requested)


def test_paths_inside_the_dumps_directory_are_kept_and_symlinks_out_refused(tmp_path):
    root = tmp_path / "dumps"
    root.mkdir()
    assert confine(root, "a/b") == (root / "a" / "b").resolve()
    assert confine(root, str(root / "c")) == (root / "c").resolve()
    os.symlink(tmp_path, root / "out")
    with pytest.raises(PathRefused):
        confine(root, "out/secret")
    with pytest.raises(PathRefused):
        confine(root, "/etc/passwd")


def test_a_422_never_repeats_a_password(tmp_path):
    """FastAPI's validation errors repeat the input: a body missing one field would
    otherwise come back with its password."""
    body = {"host": "h", "port": "not a port", "db_name": "d", "user_password": PASSWORD}
    with TestClient(create_app(settings(tmp_path))) as client:
        answer = client.post("/api/stateless/check_db_connection", json=body, headers=AUTH)
        bad_password_type = client.post(
            "/api/stateless/check_db_connection", json={**body, "user_password": [PASSWORD]}, headers=AUTH
        )
        # libpq would read a value only up to a NUL (a 500 found by the schema's property tests).
        nul = client.post(
            "/api/stateless/check_db_connection",
            json={**body, "port": 5432, "user_login": "u", "user_password": PASSWORD + "\x00'"},
            headers=AUTH,
        )
    assert answer.status_code == 422 and bad_password_type.status_code == 422 and nul.status_code == 422
    assert PASSWORD not in nul.text and nul.json()["detail"][0]["loc"] == ["body", "user_password"]
    locations = {tuple(e["loc"]) for e in answer.json()["detail"]}
    assert ("body", "user_login") in locations and ("body", "port") in locations
    assert PASSWORD not in answer.text and PASSWORD not in bad_password_type.text
    assert "***" in answer.text
