"""`pgveil verify --role`: the routes a curious masked role or consumer would try,
tried for real over its own login, with markers planted in a transaction that is
rolled back."""

from __future__ import annotations

import psycopg
import pytest

from pgveil.errors import PgveilError
from pgveil.services.verify_role import RoleReport, verify_role
from tests.conftest import Database
from tests.helpers import label, login, seed

# Everything the check could leave behind: the rows of the application's tables
# and of the sanitized copies (a checksum of each), the statistics, the sequences,
# and every object and role.
SNAPSHOT = {
    "rows": """SELECT string_agg(format('%s:%s', c.oid::regclass, (xpath('/row/c/text()',
                   query_to_xml(format('SELECT count(*) || md5(coalesce(string_agg(t::text, '','' ORDER BY t::text), '''')) AS c FROM %s t',
                                       c.oid::regclass), false, false, '')))[1]), ' ' ORDER BY c.oid::regclass::text)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'r' AND n.nspname IN ('public', 'sanitized', 'veil_private')""",
    "statistics": "SELECT md5(coalesce(string_agg(s::text, ',' ORDER BY s::text), '')) FROM pg_statistic s",
    # The change log's sequence excepted: the markers' rolled-back statements
    # consume numbers of it, and its positions need no dense numbering.
    "sequences": "SELECT string_agg(format('%s=%s', schemaname || '.' || sequencename, last_value), ' ' ORDER BY 1)"
    " FROM pg_sequences WHERE (schemaname, sequencename) <> ('veil_private', 'change_log_seq_seq')",
    "objects": "SELECT string_agg(oid::regclass::text, ' ' ORDER BY 1) FROM pg_class",
    "functions": "SELECT string_agg(oid::regprocedure::text, ' ' ORDER BY 1) FROM pg_proc",
    "types": "SELECT count(*) FROM pg_type",
    "roles": "SELECT string_agg(rolname, ' ' ORDER BY 1) FROM pg_roles",
    "grants": "SELECT md5(string_agg(coalesce(relacl::text, ''), ',' ORDER BY oid)) FROM pg_class",
}


def snapshot(db: Database) -> dict[str, object]:
    return {name: db.scalar(query) for name, query in SNAPSHOT.items()}


def leaked(report: RoleReport) -> dict[str, str]:
    return {r.route: r.detail for r in report.routes if r.outcome == "leaked"}


def outcome(report: RoleReport, route: str) -> str:
    return next(r.outcome for r in report.routes if r.route == route)


@pytest.fixture
def seeded(demo):
    seed(demo, customers=30, payments=30)
    demo.execute("ANALYZE")
    return demo


@pytest.mark.parametrize("role", ["analyst", "consumer"])
def test_the_demo_roles_pass_and_nothing_is_left_behind(seeded, role):
    url = login(seeded, role)
    before = snapshot(seeded)
    report = verify_role(seeded.url, role, url)
    assert snapshot(seeded) == before
    assert report.kind == {"analyst": "masked", "consumer": "consumer"}[role]
    assert not report.leaked, leaked(report)
    assert {"public.customer.email", "public.customer.first_name"} <= set(report.planted)
    assert report.not_planted == ()
    outcomes = {r.route: r.outcome for r in report.routes}
    assert outcomes["SELECT public.customer (qualified)"] == "refused"
    assert outcomes["COPY public.customer TO STDOUT"] == "refused"
    assert outcomes["veil.token() / keyed functions"] == "refused"
    assert outcomes["veil_private"] == "refused"
    read = {"analyst": "customer", "consumer": "sanitized.customer"}[role]
    # The role's own view or copy answers, with the markers masked or tokenized.
    assert outcomes[f"leaky function in WHERE on {read}"] == "masked"
    assert outcomes[f"EXPLAIN (ANALYZE, VERBOSE) on {read}"] == "masked"
    assert outcomes[f"SELECT {read} (the role's own read)"] == "masked"
    for route in (
        "pg_stats on public.customer",
        "search_path changed to public, pg_catalog",
        "shadowing object in pg_temp",
        "change a rule (veil.security_label)",
        "settings (pgveil.*)",
        "SET SESSION AUTHORIZATION pgveil",
    ):
        assert route in outcomes
    assert all(r.detail and "\n" not in r.detail for r in report.routes)


def test_empty_tables_get_a_marker_row_and_no_sequence_advances(demo):
    url = login(demo, "analyst")
    before = snapshot(demo)
    report = verify_role(demo.url, "analyst", url)
    assert snapshot(demo) == before
    # address first, then customer, which references it.
    assert {"public.address.address", "public.customer.email"} <= set(report.planted)
    assert not report.leaked, leaked(report)


def test_a_grant_behind_pgveils_back_is_found(seeded):
    url = login(seeded, "analyst")
    # Replica mode keeps pgveil's event triggers from withholding the grant.
    with seeded.admin.transaction():
        seeded.execute("SET LOCAL session_replication_role = replica")
        seeded.execute("GRANT SELECT (customer_id, email) ON public.customer TO analyst")
    report = verify_role(seeded.url, "analyst", url)
    found = leaked(report)
    assert set(found) == {
        "SELECT public.customer (qualified)",
        "COPY public.customer TO STDOUT",
        "pg_stats on public.customer",
    }
    assert "1 row(s) carry a marker" in found["SELECT public.customer (qualified)"]
    assert "email" in found["pg_stats on public.customer"]


def test_a_whole_table_grant_to_a_consumer_is_found_by_marker(seeded):
    url = login(seeded, "consumer")
    seeded.execute("GRANT SELECT ON public.customer TO consumer")
    report = verify_role(seeded.url, "consumer", url)
    found = leaked(report)
    assert "1 row(s) carry a marker" in found["SELECT public.customer (qualified)"]
    assert "marker" in found["COPY public.customer TO STDOUT"]
    # Reading the unqualified name from a path that starts with public reaches it too.
    assert "search_path changed to public, pg_catalog" in found


def test_membership_in_a_role_that_reads_raw_tables_is_found(seeded):
    reader = seeded.role("reader")
    seeded.execute(f'GRANT SELECT ON public.customer TO "{reader.name}"')
    seeded.execute(f'GRANT "{reader.name}" TO analyst')
    url = login(seeded, "analyst")
    report = verify_role(seeded.url, "analyst", url)
    found = leaked(report)
    assert "public.customer" in found[f"SET ROLE {reader.name}"]
    # Membership with INHERIT also opens the direct routes.
    assert "SELECT public.customer (qualified)" in found


def test_membership_without_inherit_is_found_only_by_set_role(seeded):
    bi = seeded.role("bi", "NOINHERIT")
    seeded.execute("SELECT veil.grant_consumer(%s)", (bi.name,))
    reader = seeded.role("reader")
    seeded.execute(f'GRANT SELECT ON public.customer TO "{reader.name}"')
    seeded.execute(f'GRANT "{reader.name}" TO "{bi.name}"')
    report = verify_role(seeded.url, bi.name, bi.url)
    assert report.kind == "consumer"
    assert set(leaked(report)) == {f"SET ROLE {reader.name}"}


def test_a_keyed_function_granted_to_a_consumer_is_found(seeded):
    seeded.execute("GRANT EXECUTE ON FUNCTION veil.token(text, text) TO consumer")
    report = verify_role(seeded.url, "consumer", login(seeded, "consumer"))
    assert set(leaked(report)) == {"veil.token() / keyed functions"}
    assert "veil.token(text,text)" in leaked(report)["veil.token() / keyed functions"]


def test_veil_private_granted_to_a_consumer_is_found(seeded):
    seeded.execute("GRANT USAGE ON SCHEMA veil_private TO consumer")
    seeded.execute("GRANT SELECT ON veil_private.keys TO consumer")
    report = verify_role(seeded.url, "consumer", login(seeded, "consumer"))
    assert set(leaked(report)) == {"veil_private"}
    assert "keys" in leaked(report)["veil_private"]


def test_a_schema_the_role_may_create_in_gets_shadowing_objects_that_are_dropped(seeded):
    seeded.execute("CREATE SCHEMA analyst AUTHORIZATION analyst")
    url = login(seeded, "analyst")
    before = snapshot(seeded)
    report = verify_role(seeded.url, "analyst", url)
    assert snapshot(seeded) == before
    assert outcome(report, "shadowing object in analyst") == "refused"
    assert not report.leaked, leaked(report)


def test_a_view_of_the_roles_own_on_its_path_is_never_run_in_the_admin_session(seeded):
    # "$user" first: analyst.customer would run as the admin's session user.
    seeded.execute("CREATE SCHEMA analyst AUTHORIZATION analyst")
    seeded.execute(f'ALTER ROLE analyst IN DATABASE "{seeded.name}" SET search_path = "$user", mask_public, public')
    url = login(seeded, "analyst")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE VIEW analyst.customer AS SELECT 1 AS x")
    report = verify_role(seeded.url, "analyst", url)
    detail = next(r.detail for r in report.routes if r.route == "SELECT customer (the role's own read)")
    assert "analyst" in detail and "role's connection" in detail


@pytest.mark.parametrize(
    ("role", "url_role", "message"),
    [
        ("nobody_here", None, "there is no role nobody_here"),
        ("consumer", "analyst", "the role URL logs in as analyst, not consumer"),
    ],
)
def test_bad_input_is_one_clear_error_and_changes_nothing(seeded, role, url_role, message):
    url = login(seeded, url_role or "analyst")
    before = snapshot(seeded)
    with pytest.raises(PgveilError) as error:
        verify_role(seeded.url, role, url)
    assert str(error.value) == message
    assert snapshot(seeded) == before


def test_an_admin_that_cannot_set_role_is_told_so(seeded):
    weak = seeded.role("weak")
    seeded.execute(f'GRANT pgveil TO "{weak.name}"')
    with pytest.raises(PgveilError, match="cannot SET ROLE analyst"):
        verify_role(weak.url, "analyst", login(seeded, "analyst"))


def test_an_unreachable_server_is_one_clear_error(seeded):
    with pytest.raises(PgveilError, match="cannot connect with the admin URL"):
        verify_role("postgresql://nobody@127.0.0.1:1/none", "analyst", "postgresql://analyst@127.0.0.1:1/none")


def test_a_rule_that_passes_the_value_through_is_found_in_the_roles_own_reads(seeded):
    label(seeded, "COLUMN", "public.customer.email", "MASKED WITH FUNCTION pg_catalog.lower(email)")
    report = verify_role(seeded.url, "analyst", login(seeded, "analyst"))
    found = leaked(report)
    assert "1 row(s) carry a marker" in found["SELECT customer (the role's own read)"]
    assert "email" in found["leaky function in WHERE on customer"]
    assert "SELECT public.customer (qualified)" not in found
