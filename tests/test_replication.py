"""Logical replication of the sanitized copies: veil.publish_sanitized and its guards,
and a real subscriber on a second server that receives every change of sanitized.*
and never a raw value.

The two-server tests start servers of their own: a publisher with wal_level = logical
(the shared test server has the default) and a subscriber.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

import pgveil.alembic_ops
from pgveil import migrate, sandbox
from pgveil.config import sqlalchemy_url
from pgveil.services import audit as audit_service
from tests.conftest import Database, Role, Server
from tests.helpers import seed

PUBLICATION = "pgveil_sanitized"
COPIES = {
    "customer": "SELECT * FROM sanitized.customer ORDER BY customer_id",
    "payment": "SELECT * FROM sanitized.payment ORDER BY payment_id",
}
RAW_VALUES = "SELECT email, first_name, last_name FROM public.customer"
# What a pgveil publication holds, its options, and pgveil's record of it:
# compared before and after a refused statement.
PUBLICATION_STATE = """
    SELECT p.pubname, p.pubowner::regrole::text, p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate,
           ARRAY(SELECT r.prrelid::regclass::text FROM pg_publication_rel r WHERE r.prpubid = p.oid ORDER BY 1),
           ARRAY(SELECT n.pnnspid::regnamespace::text FROM pg_publication_namespace n WHERE n.pnpubid = p.oid ORDER BY 1),
           EXISTS (SELECT FROM veil_private.publications vp WHERE vp.pubid = p.oid)
    FROM pg_publication p ORDER BY p.pubname"""


def publication_state(db: Database) -> list[tuple[Any, ...]]:
    return db.execute(PUBLICATION_STATE).fetchall()


def published(db: Database, name: str = PUBLICATION) -> list[str]:
    rows = db.execute(
        "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1", (name,)
    ).fetchall()
    return [r[0] for r in rows]


def problems(db: Database) -> list[tuple[Any, ...]]:
    return db.execute('SELECT publication, "table", problem FROM veil_private.publication_problems()').fetchall()


# --- One server: the publication and its guards --------------------------------------------


def test_publish_holds_every_sanitized_copy_and_nothing_else(demo):
    assert demo.scalar("SELECT veil.publish_sanitized()") == 2
    assert published(demo) == ["sanitized.customer", "sanitized.payment"]
    # Every kind of change, so that deletes and truncates (erasure) travel too.
    assert demo.execute(
        "SELECT pubinsert, pubupdate, pubdelete, pubtruncate, puballtables FROM pg_publication WHERE pubname = %s",
        (PUBLICATION,),
    ).fetchone() == (True, True, True, True, False)
    # The change log stays home: its positions are this server's transaction ids.
    assert demo.scalar("SELECT count(*) FROM pg_publication_tables WHERE schemaname <> 'sanitized'") == 0
    assert demo.execute("SELECT publication, tables::text[] FROM veil.publications").fetchall() == [
        (PUBLICATION, ["sanitized.customer", "sanitized.payment"])
    ]
    # Publishing again brings it in step and changes nothing else.
    before = publication_state(demo)
    assert demo.scalar("SELECT veil.publish_sanitized(%s)", (PUBLICATION,)) == 2
    assert publication_state(demo) == before
    assert problems(demo) == []
    demo.execute("SELECT veil.unpublish_sanitized()")
    assert demo.scalar("SELECT count(*) FROM pg_publication") == 0
    assert demo.scalar("SELECT count(*) FROM veil_private.publications") == 0


def test_a_stream_added_later_joins_the_publication_and_unstream_leaves_it(demo):
    demo.execute("SELECT veil.publish_sanitized()")
    demo.execute("SELECT veil.publish_sanitized('second_feed')")
    demo.execute("SELECT veil.security_label('sanitized', 'COLUMN', 'public.address.address_id', 'NOT MASKED')")
    demo.execute("SELECT veil.stream('public.address')")
    for name in (PUBLICATION, "second_feed"):
        assert published(demo, name) == ["sanitized.address", "sanitized.customer", "sanitized.payment"]
    demo.execute("SELECT veil.unstream('public.address')")
    for name in (PUBLICATION, "second_feed"):
        assert published(demo, name) == ["sanitized.customer", "sanitized.payment"]
    assert problems(demo) == []


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER PUBLICATION pgveil_sanitized ADD TABLE public.customer",
        "ALTER PUBLICATION pgveil_sanitized ADD TABLE ONLY public.address",
        "ALTER PUBLICATION pgveil_sanitized SET TABLE sanitized.customer, public.payment",
        "ALTER PUBLICATION pgveil_sanitized ADD TABLES IN SCHEMA public",
        "ALTER PUBLICATION pgveil_sanitized ADD TABLE veil_private.keys",
        # Erasure: without deletes and truncates, an erased customer would stay on subscribers.
        "ALTER PUBLICATION pgveil_sanitized SET (publish = 'insert, update')",
    ],
)
def test_altering_the_publication_to_hold_a_raw_table_is_refused(demo, statement):
    demo.execute("SELECT veil.publish_sanitized()")
    before = publication_state(demo)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="pgveil: a pgveil publication holds"):
        demo.execute(statement)
    assert publication_state(demo) == before


def test_a_renamed_publication_stays_guarded_and_a_dropped_one_is_forgotten(demo):
    demo.execute("SELECT veil.publish_sanitized()")
    demo.execute("ALTER PUBLICATION pgveil_sanitized RENAME TO renamed_feed")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="public.customer"):
        demo.execute("ALTER PUBLICATION renamed_feed ADD TABLE public.customer")
    demo.execute("DROP PUBLICATION renamed_feed")
    assert demo.scalar("SELECT count(*) FROM veil_private.publications") == 0
    # Other publications are none of pgveil's business.
    demo.execute("CREATE PUBLICATION app_feed FOR TABLE public.address")
    demo.execute("ALTER PUBLICATION app_feed ADD TABLE public.customer")
    demo.execute("SELECT veil_private.sync_publications()")
    assert published(demo, "app_feed") == ["public.address", "public.customer"]


def test_where_no_event_trigger_guards_it_the_audit_reports_a_raw_table_and_sync_removes_it(demo):
    demo.execute("SELECT veil.publish_sanitized()")
    demo.execute("ALTER EVENT TRIGGER veil_check_publications DISABLE")
    try:
        demo.execute("ALTER PUBLICATION pgveil_sanitized ADD TABLE public.customer")
        demo.execute("ALTER PUBLICATION pgveil_sanitized DROP TABLE sanitized.payment")
        demo.execute("ALTER PUBLICATION pgveil_sanitized SET (publish = 'insert, update')")
        assert problems(demo) == [
            (PUBLICATION, "public.customer", "not a sanitized copy"),
            (PUBLICATION, "sanitized.payment", "sanitized copy not published"),
            (PUBLICATION, None, "does not publish delete, truncate"),
        ]
        # No raw value in what the audit reads: names of tables only.
        assert "@" not in repr(problems(demo))
        found = {(p.problem, p.object) for p in audit_service.audit(demo.admin).problems}
        assert {
            ("publication: not a sanitized copy", f"{PUBLICATION} public.customer"),
            ("publication: sanitized copy not published", f"{PUBLICATION} sanitized.payment"),
            ("publication: does not publish delete, truncate", PUBLICATION),
        } <= found
        with demo.admin.cursor() as cur:
            notices: list[str] = []
            demo.admin.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
            cur.execute("SELECT veil_private.sync_publications()")
        assert any("public.customer, which is not a sanitized copy" in n for n in notices)
        assert problems(demo) == []
        assert published(demo) == ["sanitized.customer", "sanitized.payment"]
        assert demo.scalar("SELECT pubdelete AND pubtruncate FROM pg_publication WHERE pubname = %s", (PUBLICATION,))
    finally:
        demo.execute("ALTER EVENT TRIGGER veil_check_publications ENABLE")


def test_sync_is_a_no_op_without_a_publication(demo):
    before = publication_state(demo)
    demo.execute("SELECT veil_private.sync_publications()")
    assert publication_state(demo) == before == []


BAD_NAMES = [
    (None, "needs a name"),
    ("", "needs a name"),
    ("Sanitized", "lower-case identifiers"),
    ("feed; DROP TABLE public.customer", "lower-case identifiers"),
    ('"quoted"', "lower-case identifiers"),
    ("x" * 64, "at most 63"),
    ("app_feed", "exists already and is not pgveil's"),
]


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
def test_bad_publication_names_are_refused_and_nothing_changes(demo, name, message):
    demo.execute("CREATE PUBLICATION app_feed FOR TABLE public.address")
    demo.execute("SELECT veil.publish_sanitized()")
    before = publication_state(demo)
    with pytest.raises(psycopg.DatabaseError) as raised:
        demo.execute("SELECT veil.publish_sanitized(%s)", (name,))
    assert message in str(raised.value)
    assert str(raised.value).count("pgveil:") == 1
    assert publication_state(demo) == before


@pytest.mark.parametrize(
    ("name", "message"),
    [("app_feed", "no pgveil publication app_feed"), ("nothing_here", "no pgveil publication"), ("", "needs a name")],
)
def test_unpublish_refuses_what_is_not_a_pgveil_publication(demo, name, message):
    demo.execute("CREATE PUBLICATION app_feed FOR TABLE public.address")
    demo.execute("SELECT veil.publish_sanitized()")
    before = publication_state(demo)
    with pytest.raises(psycopg.DatabaseError, match=message):
        demo.execute("SELECT veil.unpublish_sanitized(%s)", (name,))
    assert publication_state(demo) == before


def test_only_a_governor_publishes_and_a_consumer_cannot_reach_the_publication(demo):
    reader = demo.role("reader")
    demo.execute(f"SELECT veil.grant_consumer('{reader.name}')")
    demo.execute("SELECT veil.publish_sanitized()")
    before = publication_state(demo)
    with reader.connect(autocommit=True) as conn:
        for statement in (
            "SELECT veil.publish_sanitized('mine')",
            "SELECT veil.unpublish_sanitized()",
            "SELECT veil_private.sync_publications()",
            "SELECT * FROM veil_private.publication_problems()",
            "ALTER PUBLICATION pgveil_sanitized ADD TABLE public.customer",
            "ALTER PUBLICATION pgveil_sanitized SET TABLE sanitized.customer",
            "CREATE PUBLICATION mine FOR TABLE public.customer",
            "CREATE PUBLICATION mine FOR TABLE sanitized.customer",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    assert publication_state(demo) == before


def test_a_non_superuser_database_owner_publishes_without_event_triggers(bare):
    owner = bare.role("owner")
    bare.execute(f'ALTER DATABASE "{bare.name}" OWNER TO "{owner.name}"')
    bare.execute(f'ALTER SCHEMA public OWNER TO "{owner.name}"')
    migrate.upgrade(owner.url)
    assert bare.scalar("SELECT count(*) FROM pg_event_trigger WHERE evtname = 'veil_check_publications'") == 0
    with owner.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE public.member (member_id int PRIMARY KEY, email text)")
        conn.execute("SELECT veil.security_label('sanitized', 'COLUMN', 'public.member.member_id', 'NOT MASKED')")
        conn.execute(
            "SELECT veil.security_label('sanitized', 'COLUMN', 'public.member.email',"
            " 'MASKED WITH FUNCTION veil.token(email)')"
        )
        conn.execute("SELECT veil.alter_policy('sanitized', on_ddl => 'break')")
        conn.execute("SELECT veil.stream('public.member')")
        assert conn.execute("SELECT veil.publish_sanitized()").fetchone() == (1,)
        # Without the event trigger nothing stops the owner; the audit's query reports it.
        conn.execute("ALTER PUBLICATION pgveil_sanitized ADD TABLE public.member")
        assert conn.execute('SELECT "table", problem FROM veil_private.publication_problems()').fetchall() == [
            ("public.member", "not a sanitized copy")
        ]
        conn.execute("SELECT veil_private.sync_publications()")
        assert conn.execute("SELECT count(*) FROM veil_private.publication_problems()").fetchone() == (0,)
        assert conn.execute(
            "SELECT pubowner::regrole::text FROM pg_publication WHERE pubname = 'pgveil_sanitized'"
        ).fetchone() == (owner.name,)
        conn.execute("SELECT veil.unpublish_sanitized()")
    assert bare.scalar("SELECT count(*) FROM pg_publication") == 0


def run_ops(db: Database, steps: Callable[[Operations], None]) -> None:
    engine = create_engine(sqlalchemy_url(db.url), poolclass=NullPool)
    with engine.begin() as connection:
        steps(Operations(MigrationContext.configure(connection)))


def test_op_publish_sanitized_and_its_reverse(demo):
    run_ops(demo, lambda op: op.publish_sanitized("bi_feed"))
    assert published(demo, "bi_feed") == ["sanitized.customer", "sanitized.payment"]
    run_ops(demo, lambda op: op.invoke(pgveil.alembic_ops.PublishSanitizedOp("bi_feed").reverse()))
    assert demo.scalar("SELECT count(*) FROM pg_publication") == 0
    run_ops(demo, lambda op: op.publish_sanitized())
    run_ops(demo, lambda op: op.unpublish_sanitized())
    assert demo.scalar("SELECT count(*) FROM pg_publication") == 0


# --- Two servers: a real subscriber -----------------------------------------------------------


@dataclass
class Cluster:
    """A server this module started, reached as its superuser."""

    root: Path
    server: Server

    def url(self, dbname: str) -> str:
        return self.server.url(dbname)

    def database(self, dbname: str) -> Database:
        return Database(self.server, psycopg.connect(self.url(dbname), autocommit=True))


def start_cluster(prefix: str, settings: dict[str, str]) -> Cluster:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    state = sandbox.start(root)
    with psycopg.connect(state.url, autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    sandbox.restart(root)
    return Cluster(root, Server("127.0.0.1", state.port, sandbox.SUPERUSER, state.password))


TEMPLATE = "shop_template"


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[Cluster, Cluster]]:
    """(publisher, subscriber). The publisher has a template database with pgveil and the demo."""
    started: list[Cluster] = []
    try:
        publisher = start_cluster("pgveil-publisher-", {"wal_level": "logical"})
        started.append(publisher)
        # Re-enabled subscriptions and new table syncs start without the default 5 s pause.
        subscriber = start_cluster("pgveil-subscriber-", {"wal_retrieve_retry_interval": "200ms"})
        started.append(subscriber)
        with psycopg.connect(publisher.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
        migrate.upgrade(publisher.url(TEMPLATE), with_demo=True)
        yield publisher, subscriber
    finally:
        for cluster in started:
            sandbox.stop(cluster.root)
            shutil.rmtree(cluster.root, ignore_errors=True)


@dataclass
class Replica:
    publisher: Database
    subscriber: Database
    publisher_cluster: Cluster
    replicator: Role
    subscription: str | None = None


def pg_program(name: str) -> str:
    return str(sandbox.find_bindir() / name)


def copy_ddl(publisher: Database, *selection: str) -> str:
    """The copies' DDL, as a DBA takes it: pg_dump --schema-only of sanitized (or of some tables)."""
    done = subprocess.run(
        [pg_program("pg_dump"), "--schema-only", "--no-owner", "--no-privileges", *(selection or ("--schema=sanitized",)),
         f"--dbname={publisher.url}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


def load_ddl(subscriber: Database, ddl: str) -> None:
    subprocess.run(
        [pg_program("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={subscriber.url}"],
        input=ddl, capture_output=True, text=True, check=True,
    )  # fmt: skip


def conninfo(cluster: Cluster, dbname: str, user: str, password: str) -> str:
    return make_conninfo(host="127.0.0.1", port=cluster.server.port, dbname=dbname, user=user, password=password)


@pytest.fixture
def shop(clusters) -> Iterator[Replica]:
    """A published demo database on the publisher (seeded), an empty subscriber
    database with the copies' tables, and a replication role that may read the copies."""
    publisher_cluster, subscriber_cluster = clusters
    name = f"shop_{secrets.token_hex(4)}"
    with psycopg.connect(publisher_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE)))
    with psycopg.connect(subscriber_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    publisher = publisher_cluster.database(name)
    subscriber = subscriber_cluster.database(name)
    replica = None
    try:
        seed(publisher)
        assert publisher.scalar("SELECT veil.publish_sanitized()") == 2
        # The subscription's role on the publisher: REPLICATION (a privileged
        # attribute, see docs/replication.md), and SELECT on the copies only,
        # for their initial copy.
        replicator = publisher.role("replicator", "REPLICATION")
        publisher.execute(f'GRANT USAGE ON SCHEMA sanitized TO "{replicator.name}"')
        publisher.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA sanitized TO "{replicator.name}"')
        publisher.execute(
            f'ALTER DEFAULT PRIVILEGES FOR ROLE {sandbox.SUPERUSER} IN SCHEMA sanitized GRANT SELECT ON TABLES TO "{replicator.name}"'
        )
        load_ddl(subscriber, copy_ddl(publisher))
        replica = Replica(publisher, subscriber, publisher_cluster, replicator)
        yield replica
    finally:
        if replica is not None and replica.subscription is not None:
            subscriber.execute(sql.SQL("DROP SUBSCRIPTION IF EXISTS {}").format(sql.Identifier(replica.subscription)))
        publisher.admin.close()
        subscriber.admin.close()
        with psycopg.connect(subscriber_cluster.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        with psycopg.connect(publisher_cluster.url("postgres"), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s", (name,)
            )
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def subscribe(replica: Replica) -> None:
    name = f"sub_{secrets.token_hex(4)}"
    info = conninfo(
        replica.publisher_cluster, replica.publisher.name, replica.replicator.name, replica.replicator.password
    )
    replica.subscriber.execute(
        sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {}").format(
            sql.Identifier(name), sql.Literal(info), sql.Identifier(PUBLICATION)
        )
    )
    replica.subscription = name
    wait_until_in_step(replica)


def copies(db: Database, tables: dict[str, str] = COPIES) -> dict[str, list[tuple[Any, ...]]]:
    return {name: db.execute(query).fetchall() for name, query in tables.items()}


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    pause = 0.01
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def wait_until_in_step(replica: Replica, tables: dict[str, str] = COPIES) -> None:
    """The subscriber's tables equal the publisher's copies (all synced, then applied)."""
    wait_for(
        lambda: replica.subscriber.scalar("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'") == 0,
        "the initial table sync",
    )
    expected = copies(replica.publisher, tables)
    try:
        wait_for(lambda: copies(replica.subscriber, tables) == expected, "the subscriber to apply the changes")
    except AssertionError:
        assert copies(replica.subscriber, tables) == expected  # shows the difference
        raise


def token(db: Database, customer_id: int) -> str:
    return str(db.scalar("SELECT veil.token(%s::text, 'customer')", (customer_id,)))


def subscriber_dump(replica: Replica) -> str:
    """Every row of every table of the subscriber's database, as pg_dump writes them."""
    done = subprocess.run(
        [pg_program("pg_dump"), "--data-only", f"--dbname={replica.subscriber.url}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


@pytest.mark.slow
def test_a_subscriber_receives_every_change_and_no_raw_value(shop):
    pub, sub = shop.publisher, shop.subscriber
    raw = {v for row in pub.execute(RAW_VALUES).fetchall() for v in row}
    subscribe(shop)
    assert len(copies(sub)["customer"]) == 200 and len(copies(sub)["payment"]) == 400

    # Inserts.
    pub.execute(
        "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
        " SELECT 1, 'new' || g, 'newlast' || g, 'new' || g || '@example.org', 1 FROM generate_series(1, 5) g"
    )
    pub.execute("INSERT INTO payment (customer_id, amount) SELECT 201 + g % 5, 9.99 FROM generate_series(1, 10) g")
    wait_until_in_step(shop)
    # Updates, in one transaction with a delete.
    with pub.admin.transaction():
        pub.execute("UPDATE customer SET email = 'changed' || customer_id || '@example.net' WHERE customer_id <= 10")
        pub.execute("UPDATE payment SET amount = amount + 1 WHERE payment_id <= 20")
        pub.execute("DELETE FROM payment WHERE payment_id BETWEEN 21 AND 25")
    wait_until_in_step(shop)
    # A key move: the copy's row moves to the new key's token (payments follow by cascade).
    old_token, new_token = token(pub, 11), token(pub, 10011)
    pub.execute("UPDATE customer SET customer_id = 10011 WHERE customer_id = 11")
    wait_until_in_step(shop)
    assert sub.scalar("SELECT count(*) FROM sanitized.customer WHERE customer_id = %s", (old_token,)) == 0
    assert sub.scalar("SELECT count(*) FROM sanitized.customer WHERE customer_id = %s", (new_token,)) == 1
    assert sub.scalar("SELECT count(*) FROM sanitized.payment WHERE customer_id = %s", (new_token,)) == 2
    # Erasure: the customer and their payments leave the subscriber too.
    erased = token(pub, 20)
    assert sub.scalar("SELECT count(*) FROM sanitized.payment WHERE customer_id = %s", (erased,)) > 0
    pub.execute("DELETE FROM customer WHERE customer_id = 20")
    wait_until_in_step(shop)
    for table in ("customer", "payment"):
        assert sub.scalar(f"SELECT count(*) FROM sanitized.{table} WHERE customer_id = %s", (erased,)) == 0
    # A key rotation: new-token rows arrive, old-token rows are deleted.
    pub.execute("CALL veil.rekey(100)")
    wait_until_in_step(shop)
    assert sub.scalar("SELECT count(*) FROM sanitized.customer WHERE customer_id NOT LIKE 'v2:%'") == 0

    # Nothing raw on the subscriber: only the copies' tables exist there, and
    # no raw value of the source (written since, or there from the start) is in them.
    raw |= {v for row in pub.execute(RAW_VALUES).fetchall() for v in row}
    assert sub.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " ORDER BY 1, 2"
    ).fetchall() == [("sanitized", "customer"), ("sanitized", "payment")]
    dump = subscriber_dump(shop)
    assert "sanitized.customer" in dump and len(raw) > 600
    assert [v for v in raw if v in dump] == []
    assert "@" not in dump


@pytest.mark.slow
def test_a_subscriber_that_was_away_catches_up_exactly(shop):
    pub, sub = shop.publisher, shop.subscriber
    subscribe(shop)
    sub.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sql.Identifier(shop.subscription)))
    wait_for(
        lambda: (
            pub.scalar(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s AND NOT active", (shop.subscription,)
            )
            == 1
        ),
        "the subscriber to disconnect",
    )
    while_away = copies(sub)
    erased = token(pub, 30)
    pub.execute(
        "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
        " SELECT 2, 'late' || g, 'later' || g, 'late' || g || '@example.org', 2 FROM generate_series(1, 50) g"
    )
    pub.execute("UPDATE customer SET active = 0 WHERE customer_id % 7 = 0")
    pub.execute("UPDATE customer SET customer_id = customer_id + 20000 WHERE customer_id IN (31, 32, 33)")
    pub.execute("DELETE FROM payment WHERE payment_id % 10 = 0")
    pub.execute("DELETE FROM customer WHERE customer_id = 30")
    for i in range(20):  # many small transactions, each its own change
        pub.execute("UPDATE payment SET amount = amount + 0.01 WHERE payment_id = %s", (i + 1,))
    # The slot kept the changes; the subscriber saw none of them meanwhile.
    assert copies(sub) == while_away
    assert sub.scalar("SELECT count(*) FROM sanitized.customer WHERE customer_id = %s", (erased,)) == 1

    sub.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(sql.Identifier(shop.subscription)))
    wait_until_in_step(shop)
    assert copies(sub) == copies(pub)
    assert len(copies(sub)["customer"]) == 249
    for table in ("customer", "payment"):
        assert sub.scalar(f"SELECT count(*) FROM sanitized.{table} WHERE customer_id = %s", (erased,)) == 0


ADDRESS = {"address": "SELECT * FROM sanitized.address ORDER BY address_id"}


@pytest.mark.slow
def test_a_stream_added_after_publishing_reaches_the_subscriber_and_unstream_leaves(shop):
    pub, sub = shop.publisher, shop.subscriber
    subscribe(shop)
    pub.execute("SELECT veil.security_label('sanitized', 'COLUMN', 'public.address.address_id', 'NOT MASKED')")
    pub.execute(
        "SELECT veil.security_label('sanitized', 'COLUMN', 'public.address.address',"
        " 'MASKED WITH FUNCTION veil.token(address, ''address'')')"
    )
    pub.execute("SELECT veil.security_label('sanitized', 'COLUMN', 'public.address.city', 'NOT MASKED')")
    pub.execute("SELECT veil.stream('public.address')")
    pub.execute("CALL veil.backfill('public.address')")
    assert published(pub) == ["sanitized.address", "sanitized.customer", "sanitized.payment"]
    # Until the subscriber has the new copy's table, its apply worker stops at the
    # copy's first change (and retries): later changes wait, none is lost.
    before = copies(sub)
    pub.execute("UPDATE customer SET active = 7 WHERE customer_id = 2")
    wait_for(
        lambda: sub.scalar("SELECT apply_error_count FROM pg_stat_subscription_stats WHERE subname = %s",
                           (shop.subscription,)) > 0,
        "the subscriber to stop at the table it lacks",
    )  # fmt: skip
    assert copies(sub) == before

    # The subscriber adds the new copy's table, then refreshes its subscription.
    load_ddl(sub, copy_ddl(pub, "--table=sanitized.address"))
    wait_until_in_step(shop)
    sub.execute(sql.SQL("ALTER SUBSCRIPTION {} REFRESH PUBLICATION").format(sql.Identifier(shop.subscription)))
    wait_until_in_step(shop, ADDRESS)
    assert len(copies(sub, ADDRESS)["address"]) == 10
    pub.execute("INSERT INTO address (address, city) VALUES ('1 Secret Lane', 'Springfield')")
    pub.execute("UPDATE address SET city = 'Shelbyville' WHERE address_id = 1")
    wait_until_in_step(shop, ADDRESS)
    assert "Secret Lane" not in subscriber_dump(shop)

    pub.execute("SELECT veil.unstream('public.address')")
    assert published(pub) == ["sanitized.customer", "sanitized.payment"]
    # The copy was emptied before it was dropped: the erasure reached the subscriber.
    wait_for(lambda: sub.scalar("SELECT count(*) FROM sanitized.address") == 0, "the unstreamed copy to be emptied")
    sub.execute(sql.SQL("ALTER SUBSCRIPTION {} REFRESH PUBLICATION").format(sql.Identifier(shop.subscription)))
    assert sub.scalar(
        "SELECT array_agg(srrelid::regclass::text ORDER BY srrelid::regclass::text) FROM pg_subscription_rel"
    ) == [
        "sanitized.customer",
        "sanitized.payment",
    ]
    pub.execute("UPDATE customer SET active = 5 WHERE customer_id = 1")
    wait_until_in_step(shop)


@pytest.mark.slow
def test_a_consumer_level_role_cannot_subscribe_or_publish_raw_data(shop):
    pub, sub = shop.publisher, shop.subscriber
    password = secrets.token_urlsafe(12)
    pub.execute(sql.SQL("ALTER ROLE consumer PASSWORD {}").format(sql.Literal(password)))
    slots = pub.scalar("SELECT count(*) FROM pg_replication_slots")
    # The demo's consumer reads sanitized.* but has no REPLICATION attribute: the
    # publisher refuses its replication connection, whatever it asks for.
    info = conninfo(shop.publisher_cluster, pub.name, "consumer", password)
    with pytest.raises(psycopg.errors.Error, match="must be superuser or replication role"):
        sub.execute(
            sql.SQL("CREATE SUBSCRIPTION stolen CONNECTION {} PUBLICATION {}").format(
                sql.Literal(info), sql.Identifier(PUBLICATION)
            )
        )
    assert sub.scalar("SELECT count(*) FROM pg_subscription") == 0
    with pytest.raises(psycopg.OperationalError, match="must be superuser or replication role"):
        psycopg.connect(info, replication="database")
    consumer_url = shop.publisher_cluster.server.url(pub.name, "consumer", password)
    with psycopg.connect(consumer_url, autocommit=True) as conn:
        for statement in (
            "SELECT pg_create_logical_replication_slot('stolen', 'test_decoding')",
            "SELECT pg_create_logical_replication_slot('stolen', 'pgoutput')",
            "CREATE PUBLICATION stolen FOR TABLE public.customer",
            "ALTER PUBLICATION pgveil_sanitized ADD TABLE public.customer",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    assert pub.scalar("SELECT count(*) FROM pg_replication_slots") == slots
    assert published(pub) == ["sanitized.customer", "sanitized.payment"]
    assert pub.scalar("SELECT count(*) FROM pg_publication") == 1


@pytest.mark.slow
def test_the_replication_role_is_privileged_it_decodes_every_raw_change(shop):
    """Why docs/replication.md calls the subscription's role privileged: REPLICATION
    reads the WAL itself, whatever it may SELECT. pgveil's guarantee is the publication's
    content, not the role's reach."""
    pub = shop.publisher
    with shop.replicator.connect(autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM public.customer")
        conn.execute("SELECT pg_create_logical_replication_slot('decoder', 'test_decoding')")
        try:
            pub.execute("UPDATE customer SET email = 'planted@example.com' WHERE customer_id = 1")
            changes: list[str] = []

            def decoded() -> bool:
                # The sandbox commits asynchronously: the change is decodable once flushed.
                rows = conn.execute("SELECT data FROM pg_logical_slot_get_changes('decoder', NULL, NULL)")
                changes.extend(r[0] for r in rows)
                return any("planted@example.com" in change for change in changes)

            wait_for(decoded, "the raw change to be decoded")
        finally:
            conn.execute("SELECT pg_drop_replication_slot('decoder')")
    assert any("UPDATE: " in change and "public.customer" in change for change in changes)
