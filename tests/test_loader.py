"""The loader, run for real as the demo's application role."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from loader import runner
from loader.fakes import Fakes
from loader.mix import DEFAULT_MIX, MixError, parse_mix
from pgveil import migrate, sandbox
from pgveil.cli import app
from pgveil.demo import login_urls

cli = CliRunner()


def login(db, role: str) -> str:
    """A URL for one of the demo's roles (cluster-wide; a fresh password each time)."""
    return login_urls(db.admin, db.url, [role])[role]


def counts(db) -> dict[str, int]:
    return dict(zip(("customer", "address", "payment", "sanitized_customer", "sanitized_payment"), db.admin.execute(
        "SELECT (SELECT count(*) FROM customer), (SELECT count(*) FROM address), (SELECT count(*) FROM payment),"
        " (SELECT count(*) FROM sanitized.customer), (SELECT count(*) FROM sanitized.payment)").fetchone()))


def load(*args: str):
    result = cli.invoke(app, ["load", "--quiet", *args])
    return result


@pytest.fixture
def app_url(demo):
    return login(demo, "app")


def test_the_mix_is_parsed_into_shares():
    shares = parse_mix("insert_customer=3, update_email=1")
    assert shares == {"insert_customer": 0.75, "update_email": 0.25}
    assert abs(sum(parse_mix(DEFAULT_MIX).values()) - 1) < 1e-9
    assert "delete_customer" not in parse_mix("insert_customer=1,delete_customer=0")


@pytest.mark.parametrize("mix, message", [
    ("bogus=1", "unknown kind 'bogus'"),
    ("insert_customer", "is not kind=weight"),
    ("insert_customer=x", "must be a number"),
    ("insert_customer=-1", ">= 0"),
    ("insert_customer=nan", ">= 0"),
    ("insert_customer=0", "at least one kind"),
    ("insert_customer=1,insert_customer=2", "given twice"),
])
def test_a_bad_mix_is_refused(mix, message):
    with pytest.raises(MixError, match=message):
        parse_mix(mix)


@pytest.mark.parametrize("args, message", [
    (["--rate", "0"], "--rate"),
    (["--rate", "-5"], "--rate"),
    (["--rate", "fast"], "--rate"),
    (["--count", "0"], "--count"),
    (["--batch", "0"], "--batch"),
    (["--connections", "0"], "--connections"),
    (["--mix", "insert_customer=1,teleport=2"], "unknown kind 'teleport'"),
    (["--locale", "xx_YY"], "unknown Faker locale"),
])
def test_bad_options_are_one_clear_error_and_change_nothing(demo, app_url, args, message):
    before = counts(demo)
    result = load("--database-url", app_url, "--count", "10", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert counts(demo) == before


def test_the_loader_refuses_a_superuser(demo):
    before = counts(demo)
    result = load("--database-url", demo.url, "--count", "10")
    assert result.exit_code == 1
    assert "is a superuser" in result.output
    assert counts(demo) == before


def test_the_loader_refuses_a_role_that_cannot_write(demo):
    reader = demo.role("reader")
    demo.execute(sql.SQL("GRANT SELECT ON public.customer TO {}").format(sql.Identifier(reader.name)))
    result = load("--database-url", reader.url, "--count", "10")
    assert result.exit_code == 1
    assert "may not insert, update and delete" in result.output


def test_seed_rows_fill_every_table_and_the_copies_follow(demo, app_url):
    before = counts(demo)
    result = load("--database-url", app_url, "--seed-rows", "300", "--count", "1", "--mix", "update_active=1")
    assert result.exit_code == 0, result.output
    after = counts(demo)
    for table in ("customer", "address", "payment"):
        assert after[table] == before[table] + 300
    assert after["sanitized_customer"] == after["customer"]
    assert after["sanitized_payment"] == after["payment"]


def test_every_write_is_accounted_for(demo, app_url):
    """The summary's events match what changed in the database, to the row."""
    assert load("--database-url", app_url, "--seed-rows", "200", "--count", "1",
                "--mix", "update_active=1").exit_code == 0
    before = counts(demo)
    result = load("--database-url", app_url, "--count", "600", "--connections", "3", "--batch", "25", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    events = summary["events"]
    assert summary["writes"] == 600
    assert sum(summary["writes_by_kind"].values()) == 600
    assert set(events) == set(parse_mix(DEFAULT_MIX))  # every kind of the mix happened
    assert not summary["failed"] and not summary["lost"]
    after = counts(demo)
    assert after["customer"] == before["customer"] + events["insert_customer"] - events["delete_customer"]
    assert after["address"] == before["address"] + events["insert_customer"] - events["delete_customer"]
    assert after["sanitized_customer"] == after["customer"]
    assert after["sanitized_payment"] == after["payment"]
    assert summary["latency_ms"]["p50"] > 0


def test_the_mix_decides_what_happens(demo, app_url):
    assert load("--database-url", app_url, "--seed-rows", "100", "--count", "1",
                "--mix", "update_active=1").exit_code == 0
    emails_before = dict(demo.execute("SELECT customer_id, email FROM customer").fetchall())
    result = load("--database-url", app_url, "--count", "40", "--batch", "10", "--mix", "update_email=1", "--json")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["events"] == {"update_email": 40}
    emails_after = dict(demo.execute("SELECT customer_id, email FROM customer").fetchall())
    assert emails_after.keys() == emails_before.keys()
    changed = sum(emails_after[k] != emails_before[k] for k in emails_before)
    assert 10 <= changed <= 40  # within a batch each customer is changed once at most


def test_the_rate_is_a_ceiling_that_is_met(demo, app_url):
    result = load("--database-url", app_url, "--rate", "200", "--duration", "2", "--batch", "10", "--json")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    # 2 s at 200 writes/s, handed out 10 at a time from t=0
    assert 300 <= summary["writes"] <= 410, summary


def test_a_stop_ends_the_run_with_whole_batches_only(demo, app_url):
    stop = threading.Event()
    settings = runner.Settings(app_url, parse_mix("insert_customer=1"), rate=500, connections=2, batch=10)
    before = counts(demo)
    threading.Timer(0.7, stop.set).start()
    stats = runner.run(settings, Fakes(1), stop)
    assert stop.is_set() and stats.fatal is None
    inserted = stats.events["insert_customer"]
    assert inserted > 0 and inserted % 5 == 0  # batches of 10 writes, 2 per customer
    assert counts(demo)["customer"] == before["customer"] + inserted


@pytest.fixture
def own_server():
    """A server of this test's own, to restart under the loader's feet."""
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


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_server_restart_mid_run_loses_nothing_silently_and_inserts_nothing_twice(own_server, mode):
    root, url = own_server
    with psycopg.connect(url, autocommit=True) as admin:
        app_url = login_urls(admin, url, ["app"])["app"]
    settings = runner.Settings(app_url, parse_mix("insert_customer=2,insert_payment=1,delete_customer=1"),
                               rate=400, duration=5, connections=2, batch=10, reconnect_timeout=30)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.setdefault("stats", runner.run(settings, Fakes(2), threading.Event())))
    worker.start()
    time.sleep(1.5)
    sandbox.restart(root, mode)
    worker.join()
    stats = result["stats"]
    assert stats.fatal is None
    assert stats.reconnects >= 1
    with psycopg.connect(url) as admin:
        customers, sanitized = admin.execute(
            "SELECT (SELECT count(*) FROM customer), (SELECT count(*) FROM sanitized.customer)").fetchone()
    net = stats.events["insert_customer"] - stats.events["delete_customer"]
    # A batch whose fate is unknown is reported, not rerun: the database holds
    # exactly the committed events, give or take the lost batches' customers.
    assert net - 5 * stats.lost <= customers <= net + 5 * stats.lost, stats.summary()
    assert sanitized == customers
