"""pg_temp cannot hijack pgveil's SECURITY DEFINER functions.

PostgreSQL searches a session's temporary schema first for relations and types
unless search_path names it. A function fixed to ``search_path = pg_catalog``
alone would resolve an unqualified type such as ``json`` or ``text`` to a
domain the caller put in pg_temp, and run that domain's CHECK as the
function's owner; so every pgveil function says ``pg_catalog, pg_temp``. The
attacks are tried for real by a role that may only write the demo tables.
"""

from __future__ import annotations

import pytest

from tests.helpers import seed

# Raises only where it runs with another role's rights than the caller's.
SNITCH = """
CREATE FUNCTION pg_temp.snitch(anyelement) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF current_user <> session_user THEN
        RAISE EXCEPTION 'hijacked: ran as %', current_user;
    END IF;
    RETURN true;
END $$"""
TYPES = (
    "text",
    "json",
    "jsonb",
    "name",
    "bool",
    "int4",
    "int8",
    "oid",
    "regclass",
    "regprocedure",
    "bytea",
    "numeric",
    "interval",
    "timestamptz",
    "xid8",
)


@pytest.fixture
def writer(demo):
    seed(demo, customers=3, payments=3)
    role = demo.role("writer")
    demo.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON customer, payment TO "{role.name}"')
    demo.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{role.name}"')
    demo.execute(f'CREATE SCHEMA AUTHORIZATION "{role.name}"')
    return role


@pytest.mark.parametrize(
    "statements",
    [
        ["INSERT INTO customer (store_id, first_name, last_name, email, address_id) VALUES (1, 'a', 'b', 'c', 1)"],
        ["UPDATE customer SET email = 'x', customer_id = 100 WHERE customer_id = 1"],
        ["DELETE FROM payment WHERE payment_id = 2"],
        ["TRUNCATE payment"],
        ["SELECT veil.version()", "SELECT veil.unfollow_changes()"],
        # The DDL event triggers fire for the writer's own tables too.
        [
            "CREATE TABLE t (id int PRIMARY KEY, note text)",
            "ALTER TABLE t RENAME COLUMN note TO remark",
            "DROP TABLE t",
        ],
    ],
    ids=["insert", "update", "delete", "truncate", "functions", "ddl"],
)
def test_a_temporary_domain_never_runs_with_the_owners_rights(writer, statements):
    with writer.connect(autocommit=True) as conn:
        conn.execute(f'SET search_path = "{writer.name}", public')
        conn.execute(SNITCH)
        for type_name in TYPES:
            conn.execute(f"CREATE DOMAIN pg_temp.{type_name} AS pg_catalog.{type_name} CHECK (pg_temp.snitch(VALUE))")
        # Following makes the stream triggers build and send notifications too.
        conn.execute("SELECT veil.follow_changes()")
        for statement in statements:
            conn.execute(statement)
