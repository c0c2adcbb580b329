"""The consumer boundary, tried for real as a consumer role."""

from __future__ import annotations

import psycopg
import pytest

from tests.helpers import seed

DENIED = psycopg.errors.InsufficientPrivilege


@pytest.fixture
def consumer(demo):
    seed(demo, customers=50, payments=50)
    demo.execute("ANALYZE")
    role = demo.role("bi")
    demo.execute("SELECT veil.grant_consumer(%s)", (role.name,))
    return role


def test_a_consumer_reads_the_sanitized_copies(demo, consumer):
    with consumer.connect() as conn:
        assert conn.execute("SELECT count(*) FROM sanitized.customer").fetchone()[0] == 50
        joined = conn.execute("SELECT count(*) FROM sanitized.payment JOIN sanitized.customer USING (customer_id)")
        assert joined.fetchone()[0] == 50


@pytest.mark.parametrize(
    "attack",
    [
        "SELECT * FROM public.customer",
        "SELECT email FROM public.customer",
        "SELECT * FROM public.payment",
        "COPY public.customer TO STDOUT",
        "SELECT * FROM veil_private.keys",
        "SELECT * FROM veil_private.column_rules",
        "SELECT * FROM veil.rules",
        "SELECT veil.token('c1@example.com', 'email')",
        "SELECT veil.pseudo_email('c1@example.com'::text)",
        "SELECT veil.rotate_key()",
        "CALL veil.backfill('public.customer')",
        "SELECT veil.grant_consumer(current_user)",
        "INSERT INTO sanitized.customer (customer_id) VALUES ('x')",
        "UPDATE sanitized.customer SET email = 'x'",
        "DELETE FROM sanitized.customer",
        "TRUNCATE sanitized.payment",
        "CREATE TABLE sanitized.mine (x int)",
    ],
)
def test_a_consumer_is_refused(consumer, attack):
    with consumer.connect() as conn, pytest.raises(DENIED) as refused:
        conn.execute(attack)
    assert "example.com" not in str(refused.value)


def test_no_key_and_no_raw_value_in_settings_or_statistics(demo, consumer):
    key_hex = demo.scalar("SELECT encode(key, 'hex') FROM veil_private.keys WHERE is_current")
    with consumer.connect() as conn:
        settings = conn.execute("SELECT string_agg(name || '=' || setting, ' ') FROM pg_settings").fetchone()[0]
        assert key_hex not in settings
        assert conn.execute("SELECT current_setting('veil.key', true)").fetchone()[0] is None
        raw_stats = conn.execute(
            "SELECT count(*) FROM pg_stats WHERE schemaname = 'public' AND tablename IN ('customer', 'payment')"
        )
        assert raw_stats.fetchone()[0] == 0
        with pytest.raises(DENIED):
            conn.execute("SELECT * FROM pg_statistic")


def test_notifications_carry_no_raw_values(demo, consumer):
    with consumer.connect(autocommit=True) as conn:
        conn.execute("SELECT veil.follow_changes()")
        demo.execute(
            "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
            " VALUES (1, 'Rawfirst', 'Rawlast', 'raw@example.com', 1)"
        )
        demo.execute("UPDATE customer SET email = 'raw2@example.com' WHERE first_name = 'Rawfirst'")
        demo.execute("DELETE FROM customer WHERE first_name = 'Rawfirst'")
        payloads = [n.payload for n in conn.notifies(timeout=2)]
    # one each for the insert, the update and the delete
    assert len(payloads) == 3, payloads
    for payload in payloads:
        for raw in ("Rawfirst", "Rawlast", "raw@example.com", "raw2@example.com"):
            assert raw not in payload


def test_grant_consumer_refuses_roles_that_can_read_sources(demo):
    direct = demo.role("direct")
    demo.execute(f'GRANT SELECT ON public.customer TO "{direct.name}"')
    with pytest.raises(psycopg.errors.RaiseException, match="can read source table"):
        demo.execute("SELECT veil.grant_consumer(%s)", (direct.name,))
    reader = demo.role("reader")
    demo.execute(f'GRANT SELECT (amount) ON public.payment TO "{reader.name}"')
    member = demo.role("member")
    demo.execute(f'GRANT "{reader.name}" TO "{member.name}"')
    with pytest.raises(psycopg.errors.RaiseException, match="public.payment"):
        demo.execute("SELECT veil.grant_consumer(%s)", (member.name,))
    boss = demo.role("boss", "SUPERUSER")
    with pytest.raises(psycopg.errors.RaiseException, match="superuser"):
        demo.execute("SELECT veil.grant_consumer(%s)", (boss.name,))
    assert (
        demo.scalar(
            "SELECT count(*) FROM veil_private.consumers c JOIN pg_roles r ON r.oid = c.roleid"
            " WHERE r.rolname LIKE 't\\_%%'"
        )
        == 0
    )


def test_consumers_get_streams_created_later(demo, consumer):
    demo.execute("CREATE TABLE public.store (store_id int PRIMARY KEY, manager text)")
    demo.execute("SELECT veil.security_label('sanitized', 'COLUMN', 'public.store.store_id', 'NOT MASKED')")
    demo.execute("SELECT veil.stream('public.store')")
    demo.execute("INSERT INTO public.store VALUES (1, 'Mike')")
    with consumer.connect() as conn:
        assert conn.execute("SELECT * FROM sanitized.store").fetchall() == [(1,)]
        with pytest.raises(DENIED):
            conn.execute("SELECT * FROM public.store")


def test_revoke_consumer_takes_it_all_back(demo, consumer):
    demo.execute("SELECT veil.revoke_consumer(%s)", (consumer.name,))
    with consumer.connect() as conn, pytest.raises(DENIED):
        conn.execute("SELECT * FROM sanitized.customer")
