"""The loader, run for real as the demo's application role."""

from __future__ import annotations

import json
import random
import threading
import time
from array import array
from collections import Counter

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from demo.flow import login_urls
from loader import runner
from loader.fakes import Fakes
from loader.mix import DEFAULT_MIX, KINDS, MixError, parse_mix
from pgveil import sandbox
from pgveil.cli import app
from tests.helpers import login

cli = CliRunner()


def counts(db) -> dict[str, int]:
    return dict(
        zip(
            ("customer", "address", "payment", "sanitized_customer", "sanitized_payment"),
            db.admin.execute(
                "SELECT (SELECT count(*) FROM customer), (SELECT count(*) FROM address), (SELECT count(*) FROM payment),"
                " (SELECT count(*) FROM sanitized.customer), (SELECT count(*) FROM sanitized.payment)"
            ).fetchone(),
            strict=True,
        )
    )


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


@pytest.mark.parametrize(
    "mix, message",
    [
        ("bogus=1", "unknown kind 'bogus'"),
        ("insert_customer", "is not kind=weight"),
        ("insert_customer=x", "must be a number"),
        ("insert_customer=-1", ">= 0"),
        ("insert_customer=nan", ">= 0"),
        ("insert_customer=0", "at least one kind"),
        ("insert_customer=1,insert_customer=2", "given twice"),
    ],
)
def test_a_bad_mix_is_refused(mix, message):
    with pytest.raises(MixError, match=message):
        parse_mix(mix)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rate", "0"], "--rate"),
        (["--rate", "-5"], "--rate"),
        (["--rate", "fast"], "--rate"),
        (["--count", "0"], "--count"),
        (["--batch", "0"], "--batch"),
        (["--connections", "0"], "--connections"),
        (["--mix", "insert_customer=1,teleport=2"], "unknown kind 'teleport'"),
        (["--locale", "xx_YY"], "unknown Faker locale"),
    ],
)
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
    assert (
        load("--database-url", app_url, "--seed-rows", "200", "--count", "1", "--mix", "update_active=1").exit_code == 0
    )
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
    assert (
        load("--database-url", app_url, "--seed-rows", "100", "--count", "1", "--mix", "update_active=1").exit_code == 0
    )
    emails_before = dict(demo.execute("SELECT customer_id, email FROM customer").fetchall())
    result = load("--database-url", app_url, "--count", "40", "--batch", "10", "--mix", "update_email=1", "--json")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["events"] == {"update_email": 40}
    emails_after = dict(demo.execute("SELECT customer_id, email FROM customer").fetchall())
    assert emails_after.keys() == emails_before.keys()
    changed = sum(emails_after[k] != emails_before[k] for k in emails_before)
    assert 10 <= changed <= 40  # within a batch each customer is changed once at most


class Clock:
    """A clock for the pacer that moves only when told."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_rate_is_met_by_workers_that_keep_up_and_is_a_ceiling():
    clock = Clock()
    pacer = runner.Pacer(rate=200, count=None, duration=2, clock=clock)
    grants = []
    while (grant := pacer.reserve(10)) is not None:
        grants.append(grant)
        clock.now = grant[1] + 0.01  # the worker starts when told; its batch takes 10 ms
    # A batch every 10/200 s from the start, the last one before the deadline:
    # 200 writes a second, to the write (not a batch more).
    assert [writes for writes, _ in grants] == [10] * 40
    assert [start for _, start in grants] == pytest.approx([1000 + i * 0.05 for i in range(40)], rel=0, abs=1e-9)


def test_the_pacer_starts_each_batch_as_early_as_the_rate_allows_and_no_earlier():
    """Workers fast, slow and stalled, as the server is: each batch starts when its
    worker asks, or n/rate seconds after the previous batch of n writes if that is later."""
    rng = random.Random(5)
    clock = Clock()
    rate, duration = 100, 30
    pacer = runner.Pacer(rate=rate, count=None, duration=duration, clock=clock)
    ready = [clock.now] * 3  # when each of three workers asks for its next batch
    previous = None
    behind = 0
    while True:
        worker = min(range(3), key=ready.__getitem__)
        clock.now = ready[worker]
        grant = pacer.reserve(rng.choice([1, 10, 20]))
        due = clock.now if previous is None else previous[1] + previous[0] / rate
        earliest = max(clock.now, due)
        if grant is None:
            assert earliest >= 1000 + duration  # ends at the deadline, not before
            break
        assert grant[1] == pytest.approx(earliest, rel=0, abs=1e-9)
        behind += clock.now > due
        previous = grant
        ready[worker] = grant[1] + rng.choice([0.01, 0.05, 0.3, 1.0])
    assert previous[1] < 1000 + duration
    assert behind > 10  # the workers fell behind at times: no burst made up for it


def test_a_pacer_that_fell_behind_does_not_make_up_for_it_in_a_burst():
    clock = Clock()
    pacer = runner.Pacer(rate=100, count=None, duration=None, clock=clock)
    assert pacer.reserve(10) == (10, 1000)
    clock.now = 1001  # the server was slow for a second: nine batches were not run
    assert pacer.reserve(10) == (10, 1001)  # behind: at once
    assert pacer.reserve(10) == (10, pytest.approx(1001.1))  # and then at the rate again
    assert pacer.reserve(10) == (10, pytest.approx(1001.2))


def test_the_pacer_hands_out_the_count_and_takes_back_what_was_not_used():
    pacer = runner.Pacer(rate=None, count=25, duration=None, clock=Clock())
    assert [pacer.reserve(10)[0] for _ in range(3)] == [10, 10, 5]
    assert pacer.reserve(10) is None
    pacer.give_back(3)
    assert pacer.reserve(10)[0] == 3
    assert pacer.reserve(10) is None


def test_a_real_run_keeps_under_the_rate(demo, app_url):
    """However fast or slow the machine: the last of ten batches of 10 writes at
    100 writes/s starts 0.9 s after the first at the earliest, and a count is met."""
    result = load("--database-url", app_url, "--rate", "100", "--count", "100", "--batch", "10", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["writes"] == 100, summary
    assert summary["elapsed_s"] >= 0.9, summary
    # A duration: no more than rate × duration writes.
    result = load("--database-url", app_url, "--rate", "200", "--duration", "1", "--batch", "10", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 < summary["writes"] <= 200, summary


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


def test_workers_share_out_the_customers_before_any_of_them_writes(demo, app_url, monkeypatch):
    """A worker that starts late does not claim the customers another has inserted
    meanwhile: both would pay for and erase them, and count erasures that found nothing."""
    assert (
        load("--database-url", app_url, "--seed-rows", "20", "--count", "1", "--mix", "update_active=1").exit_code == 0
    )
    before = counts(demo)
    first_commit = threading.Event()
    workers = []

    class LateWorker(runner.Worker):
        def start(self):
            workers.append(self)
            if self.index:  # the others start once the first has committed a batch
                first_commit.wait(30)
            super().start()

    def committed(stats, *args):
        counted(stats, *args)
        first_commit.set()

    counted = runner.Stats.committed
    monkeypatch.setattr(runner.Stats, "committed", committed)
    monkeypatch.setattr(runner, "Worker", LateWorker)
    settings = runner.Settings(
        app_url, parse_mix("insert_customer=3,insert_payment=1,delete_customer=1"), count=300, connections=3, batch=10
    )
    stats = runner.run(settings, Fakes(3), threading.Event())
    assert first_commit.is_set() and stats.fatal is None and not stats.failed, stats.summary()
    owned = [set(worker.customers) for worker in workers]
    assert sum(map(len, owned)) == len(set().union(*owned))  # nobody's customer is another's too
    assert stats.total_writes() == 300  # every erasure found its customer and address
    assert (
        counts(demo)["customer"]
        == before["customer"] + stats.events["insert_customer"] - stats.events["delete_customer"]
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_committed_xid_counts_only_the_batch_that_wrote(demo, app_url, kind):
    """After a crash the server hands out again xids that had not reached its WAL: a
    batch caught before its COMMIT was durable finds its xid another transaction's,
    committed. It is run again; a batch whose COMMIT went through counts, once."""
    assert (
        load("--database-url", app_url, "--seed-rows", "40", "--count", "1", "--mix", "update_active=1").exit_code == 0
    )
    ids = [r[0] for r in demo.execute("SELECT customer_id FROM customer ORDER BY customer_id")]
    settings = runner.Settings(app_url, {kind: 1.0}, connections=2, batch=4)

    def worker(index: int, customers: list[int]) -> runner.Worker:
        return runner.Worker(
            index,
            settings,
            runner.Pacer(None, None, None),
            runner.Stats(),
            threading.Event(),
            Fakes(4),
            array("l", customers),
        )

    mine, theirs = ids[0::2], ids[1::2]
    with psycopg.connect(app_url, autocommit=True) as conn:
        other = worker(1, theirs)
        other_batch = other._plan(4)
        other._commit(conn, other_batch)  # the transaction that got the lost xid
        never_committed = worker(0, mine)
        batch = never_committed._plan(4)
        batch.xid = other_batch.xid
        assert never_committed._after_reconnect(conn, batch) is batch  # to run again
        assert never_committed.stats.retried == 1 and never_committed.stats.confirmed == 0
        assert not never_committed.stats.events

        committed = worker(0, mine)  # the same worker, its COMMIT through, its connection lost
        committed._commit(conn, batch)
        settled = worker(0, mine)
        assert settled._after_reconnect(conn, batch) is None
        assert settled.stats.confirmed == 1 and settled.stats.retried == 0
        assert settled.stats.events == batch.events == Counter({kind: batch.events[kind]}) and batch.events[kind]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_server_restart_mid_run_loses_nothing_silently_and_inserts_nothing_twice(own_server, mode):
    root, url = own_server
    with psycopg.connect(url, autocommit=True) as admin:
        app_url = login_urls(admin, url, ["app"])["app"]
    settings = runner.Settings(
        app_url,
        parse_mix("insert_customer=2,insert_payment=1,delete_customer=1"),
        rate=400,
        duration=5,
        connections=2,
        batch=10,
        reconnect_timeout=30,
    )
    result: dict = {}
    worker = threading.Thread(
        target=lambda: result.setdefault("stats", runner.run(settings, Fakes(2), threading.Event()))
    )
    worker.start()
    time.sleep(1.5)
    sandbox.restart(root, mode)
    worker.join()
    stats = result["stats"]
    assert stats.fatal is None
    assert not stats.failed, stats.summary()  # no batch of one worker acted on another's customers
    assert stats.reconnects >= 1
    with psycopg.connect(url) as admin:
        customers, sanitized = admin.execute(
            "SELECT (SELECT count(*) FROM customer), (SELECT count(*) FROM sanitized.customer)"
        ).fetchone()
    net = stats.events["insert_customer"] - stats.events["delete_customer"]
    # A batch whose fate is unknown is reported, not rerun: the database holds
    # exactly the committed events, give or take the lost batches' customers.
    assert net - 5 * stats.lost <= customers <= net + 5 * stats.lost, stats.summary()
    assert sanitized == customers
