"""Attacks on dynamic masking, tried for real as the demo's masked role.

Each attack must fail, or return only masked values: no raw name, email,
address or phone of the seeded rows may appear anywhere the analyst can see.
"""

from __future__ import annotations

import subprocess

import psycopg
import pytest

from pgveil import sandbox
from tests.helpers import demo_analyst, label, seed

DENIED = psycopg.errors.InsufficientPrivilege
RAW = ("first1", "last1", "c1@example.com", "street 1", "555-0101")


def assert_no_raw(text: str) -> None:
    for raw in RAW:
        assert raw not in text, f"raw value {raw!r} leaked: {text[:500]}"


@pytest.fixture
def analyst(demo):
    seed(demo, customers=30, payments=30)
    demo.execute("UPDATE address SET phone = '555-01' || lpad(address_id::text, 2, '0')")
    demo.execute("ANALYZE")
    return demo_analyst(demo)


@pytest.mark.parametrize(
    "attack",
    [
        "SELECT * FROM public.customer",
        "SELECT email FROM public.customer WHERE customer_id = 1",
        "SELECT * FROM public.address",
        "COPY public.customer TO STDOUT",
        "COPY public.customer (email) TO STDOUT",
        "SELECT * FROM veil_private.keys",
        "SELECT * FROM veil_private.column_rules",
        "SELECT * FROM veil.rules",
        "SELECT veil.token('c1@example.com', 'email')",
        "SELECT veil.pseudo_email('c1@example.com'::text)",
        "SELECT veil_private.mask_view_query('mask', 'public.customer'::regclass)",
        "SELECT * FROM sanitized.customer",
        "SELECT * FROM pg_statistic",
        "INSERT INTO public.customer (store_id, first_name, last_name, address_id) VALUES (1, 'x', 'y', 1)",
        "UPDATE public.customer SET email = 'x'",
        "DELETE FROM public.customer",
        "TRUNCATE public.customer",
        "CREATE TABLE mask_public.mine (x int)",
        "SET ROLE pgveil",
        "SET SESSION AUTHORIZATION pgveil",
    ],
)
def test_the_analyst_is_refused(analyst, attack):
    with analyst.connect() as conn, pytest.raises(psycopg.Error) as refused:
        conn.execute(attack)
    assert isinstance(refused.value, DENIED), refused.value
    assert_no_raw(str(refused.value))


@pytest.mark.parametrize(
    "attack",
    [
        "INSERT INTO customer (store_id, first_name, last_name, address_id) VALUES (1, 'x', 'y', 1)",
        "UPDATE customer SET email = 'x'",
        "DELETE FROM customer",
        "TRUNCATE customer",
    ],
)
def test_writes_through_the_views_fail_and_change_nothing(demo, analyst, attack):
    before = demo.execute("SELECT * FROM public.customer ORDER BY customer_id").fetchall()
    with analyst.connect() as conn, pytest.raises(psycopg.Error):
        conn.execute(attack)
    assert demo.execute("SELECT * FROM public.customer ORDER BY customer_id").fetchall() == before


def test_set_search_path_to_public_reaches_nothing(analyst):
    with analyst.connect() as conn:
        conn.execute("SET search_path = public")
        with pytest.raises(DENIED):
            conn.execute("SELECT * FROM customer")


def test_a_same_named_object_earlier_in_the_path_reaches_nothing(demo, analyst):
    demo.execute("CREATE SCHEMA analyst AUTHORIZATION analyst")
    with analyst.connect() as conn:
        conn.execute('SET search_path = "$user", mask_public, public')
        for attack in (
            "CREATE VIEW analyst.customer AS SELECT * FROM public.customer",
            "CREATE TEMPORARY VIEW customer AS SELECT * FROM public.customer",
            "CREATE TEMPORARY TABLE customer AS SELECT * FROM public.customer",
        ):
            # Creating a view checks nothing; reading through it is refused.
            with pytest.raises(DENIED):
                conn.execute(attack)
                conn.execute("SELECT * FROM customer")
            conn.rollback()
        conn.execute('SET search_path = "$user", mask_public, public')
        conn.execute("CREATE VIEW analyst.customer AS SELECT * FROM mask_public.customer")
        rows = conn.execute("SELECT first_name, email FROM customer").fetchall()
    assert len(rows) == 30
    assert_no_raw(repr(rows))


@pytest.mark.parametrize("security_barrier", [False, True])
def test_a_leaky_function_in_where_sees_only_masked_values(demo, analyst, security_barrier):
    demo.execute("SELECT veil.alter_policy('mask', security_barrier => %s)", (security_barrier,))
    notices: list[str] = []
    with analyst.connect() as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("""
            CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
            BEGIN RAISE NOTICE 'leak: %', $1; RETURN true; END $$""")
        for column in ("first_name", "last_name", "email"):
            conn.execute(f"SELECT count(*) FROM customer WHERE pg_temp.leak({column})").fetchall()
            conn.execute(f"SELECT count(*) FROM customer WHERE store_id = 1 AND pg_temp.leak({column})").fetchall()
        conn.execute("SELECT count(*) FROM address WHERE pg_temp.leak(address) AND pg_temp.leak(phone)").fetchall()
    assert len(notices) > 100
    assert_no_raw("\n".join(notices))


def test_statistics_of_masked_columns_are_not_visible(analyst):
    with analyst.connect() as conn:
        stats = conn.execute(
            "SELECT count(*), string_agg(most_common_vals::text || histogram_bounds::text, ' ')"
            " FROM pg_stats WHERE schemaname IN ('public', 'mask_public')"
        ).fetchone()
    assert stats[0] == 0, stats


@pytest.mark.parametrize("security_barrier", [False, True])
def test_explain_analyze_verbose_shows_no_raw_value(demo, analyst, security_barrier):
    demo.execute("SELECT veil.alter_policy('mask', security_barrier => %s)", (security_barrier,))
    with analyst.connect() as conn:
        for query in (
            "SELECT * FROM customer WHERE email = 'c1@example.com'",
            "SELECT * FROM customer c JOIN address a USING (address_id) WHERE a.phone LIKE '555%'",
            "SELECT first_name, count(*) FROM customer GROUP BY 1",
        ):
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (ANALYZE, VERBOSE, COSTS OFF) {query}").fetchall())
            # The query's own constant may appear; no value from the table may.
            assert_no_raw(plan.replace("c1@example.com", ""))


def test_copy_of_the_view_query_gives_masked_values(analyst):
    with analyst.connect() as conn, conn.cursor().copy("COPY (SELECT * FROM customer) TO STDOUT") as copy:
        data = b"".join(bytes(block) for block in copy).decode()
    assert data.count("\n") == 30
    assert_no_raw(data)


def test_a_role_the_analyst_is_not_a_member_of_is_out_of_reach(demo, analyst):
    reader = demo.role("reader")
    demo.execute(f'GRANT SELECT ON public.customer TO "{reader.name}"')
    with analyst.connect() as conn, pytest.raises(DENIED):
        conn.execute(f'SET ROLE "{reader.name}"')


def test_keyed_functions_need_the_policy_to_opt_in(demo, analyst):
    with analyst.connect() as conn, pytest.raises(DENIED):
        conn.execute("SELECT veil.token('c1@example.com', 'email')")
    with pytest.raises(psycopg.errors.RaiseException, match="masked_roles_may_compute_pseudonyms"):
        demo.execute("SELECT veil.alter_policy('mask', allow_keyed_functions => true)")
    demo.execute(
        "SELECT veil.alter_policy('mask', allow_keyed_functions => true, masked_roles_may_compute_pseudonyms => true)"
    )
    label(demo, "COLUMN", "public.customer.last_name", "MASKED WITH FUNCTION veil.pseudo_last_name(last_name)")
    with analyst.connect() as conn:
        names = conn.execute("SELECT last_name FROM customer ORDER BY customer_id").fetchall()
        assert conn.execute("SELECT veil.token('x')").fetchone()[0].startswith("v")
    assert names[0][0] == demo.scalar("SELECT veil.pseudo_last_name('last1'::text)")
    assert_no_raw(repr(names))


def test_pg_dump_as_the_analyst_gets_no_raw_value(demo, analyst):
    pg_dump = str(sandbox.find_bindir() / "pg_dump")
    whole = subprocess.run([pg_dump, "--dbname", analyst.url], capture_output=True, text=True)
    assert whole.returncode != 0 and "permission denied" in whole.stderr
    assert_no_raw(whole.stdout + whole.stderr)
    masked_only = subprocess.run(
        [pg_dump, "--dbname", analyst.url, "--schema", "mask_public"], capture_output=True, text=True
    )
    assert masked_only.returncode == 0, masked_only.stderr
    assert "CREATE VIEW mask_public.customer" in masked_only.stdout
    assert_no_raw(masked_only.stdout)


def test_a_function_redefined_earlier_in_the_owners_path_cannot_hijack_a_rule(demo, analyst):
    # Someone who may create functions in a schema early in the governor's
    # path shadows the rule's functions, then DDL rebuilds the views.
    attacker = demo.role("attacker")
    demo.execute(f'CREATE SCHEMA trap AUTHORIZATION "{attacker.name}"')
    with attacker.connect(autocommit=True) as conn:
        for signature in (
            "partial_email(text)",
            "fake_first_name()",
            "split_part(text, text, integer)",
            "left(text, integer)",
            "hashtidextended(tid, bigint)",
        ):
            name, args = signature.split("(")
            params = ", ".join(f"a{i} {t}" for i, t in enumerate(filter(None, args.rstrip(")").split(", "))))
            returns = "bigint" if name == "hashtidextended" else "text"
            body = "0" if returns == "bigint" else "'hijacked'"
            conn.execute(f"CREATE FUNCTION trap.{name}({params}) RETURNS {returns} LANGUAGE sql AS $$ SELECT {body} $$")
        conn.execute("CREATE TABLE trap.customer (first_name text, email text)")
    demo.execute("SET search_path = trap, veil, public")
    demo.execute("ALTER TABLE public.customer ADD COLUMN extra int")  # rebuilds the views
    demo.execute("SELECT veil.refresh_masking()")
    demo.execute("RESET search_path")
    with analyst.connect() as conn:
        rows = conn.execute("SELECT first_name, email FROM customer ORDER BY customer_id").fetchall()
    assert rows and all("hijacked" not in repr(r) for r in rows)
    assert rows[0][1] == demo.scalar("SELECT veil.partial_email('c1@example.com')")
