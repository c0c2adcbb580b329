"""The rule catalog: grammar, identity, validation inside the database."""

from __future__ import annotations

import psycopg
import pytest

REJECTED = psycopg.errors.RaiseException


@pytest.fixture
def client(toolkit):
    toolkit.execute(
        'CREATE TABLE public."Client Data" (id int PRIMARY KEY, "E-mail" text, name text, age int, name2 text)'
    )
    toolkit.execute("CREATE TABLE public.other_table (password text)")
    return toolkit


def label(db, object_name, text, policy="mask", object_type="COLUMN"):
    db.execute("SELECT veil.security_label(%s, %s, %s, %s)", (policy, object_type, object_name, text))


def rules(db):
    return db.execute(
        "SELECT policy, object_type, schema_name, table_name, column_name, role_name, kind, expression"
        " FROM veil.rules ORDER BY 1, 2, 3, 4, 5, 6"
    ).fetchall()


def test_the_two_policies_exist(toolkit):
    assert toolkit.execute("SELECT policy, delivery FROM veil.policies ORDER BY 1").fetchall() == [
        ("mask", "views"),
        ("sanitized", "copy"),
    ]


def test_column_rules_with_quoted_odd_names(client):
    label(client, 'public."Client Data"."E-mail"', "MASKED WITH FUNCTION veil.partial(\"E-mail\", 2, '***', 2)")
    label(client, 'public."Client Data".name', "masked with value 'CONFIDENTIAL'")
    label(client, 'public."Client Data".id', "NOT MASKED")
    label(client, 'public."Client Data".age', "MASKED WITH VALUE NULL")
    assert rules(client) == [
        (
            "mask",
            "COLUMN",
            "public",
            "Client Data",
            "E-mail",
            None,
            "function",
            "veil.partial(\"E-mail\", 2, '***'::text, 2)",
        ),
        ("mask", "COLUMN", "public", "Client Data", "age", None, "value", "NULL::text"),
        ("mask", "COLUMN", "public", "Client Data", "id", None, "not_masked", None),
        ("mask", "COLUMN", "public", "Client Data", "name", None, "value", "'CONFIDENTIAL'::text"),
    ]


def test_a_null_label_removes_the_rule(client):
    label(client, 'public."Client Data".name', "NOT MASKED")
    label(client, 'public."Client Data".name', None)
    assert rules(client) == []


def test_a_column_can_have_different_rules_per_policy(client):
    label(client, 'public."Client Data"."E-mail"', 'MASKED WITH FUNCTION veil.partial_email("E-mail")')
    label(client, 'public."Client Data"."E-mail"', 'MASKED WITH FUNCTION veil.token("E-mail")', policy="sanitized")
    assert {(r[0], r[7]) for r in rules(client)} == {
        ("mask", 'veil.partial_email("E-mail")'),
        ("sanitized", 'veil.token("E-mail")'),
    }


def test_renames_keep_rules_and_their_expressions(client):
    label(client, 'public."Client Data".name', "MASKED WITH FUNCTION veil.partial(name || name2, 1, '*', 1)")
    client.execute('ALTER TABLE public."Client Data" RENAME COLUMN name TO full_name')
    client.execute('ALTER TABLE public."Client Data" RENAME COLUMN name2 TO "Nick Name"')
    client.execute('ALTER TABLE public."Client Data" RENAME TO clients')
    client.execute("CREATE SCHEMA crm")
    client.execute("ALTER TABLE public.clients SET SCHEMA crm")
    assert rules(client) == [
        (
            "mask",
            "COLUMN",
            "crm",
            "clients",
            "full_name",
            None,
            "function",
            "veil.partial((full_name || \"Nick Name\"), 1, '*'::text, 1)",
        )
    ]


def test_dropping_a_column_or_table_removes_its_rules(client):
    label(client, 'public."Client Data".name', "NOT MASKED")
    label(client, 'public."Client Data".age', "MASKED WITH VALUE 0")
    client.execute('ALTER TABLE public."Client Data" DROP COLUMN name')
    assert [r[4] for r in rules(client)] == ["age"]
    assert client.scalar("SELECT count(*) FROM veil_private.column_rules") == 1
    client.execute('DROP TABLE public."Client Data"')
    assert client.scalar("SELECT count(*) FROM veil_private.column_rules") == 0
    # A new table that might reuse the oid starts with no rules.
    client.execute('CREATE TABLE public."Client Data" (id int, name text)')
    assert rules(client) == []


def test_dropping_a_column_that_a_rule_reads_removes_that_rule(client):
    label(client, 'public."Client Data".name', "MASKED WITH FUNCTION veil.partial(name2, 1, '*', 1)")
    client.execute('ALTER TABLE public."Client Data" DROP COLUMN name2')
    assert rules(client) == []


@pytest.mark.parametrize(
    "bad_label, message",
    [
        ("MASKED WITH FUNCTION pg_read_file('/etc/passwd')", "pg_read_file(text) is not trusted"),
        ("MASKED WITH FUNCTION md5((SELECT password FROM public.other_table))", "no subqueries"),
        ("MASKED WITH VALUE (SELECT password FROM public.other_table LIMIT 1)", "no subqueries"),
        ("MASKED WITH FUNCTION 'x'); DROP TABLE public.other_table; --", "may not contain ';'"),
        ("MASKED WITH FUNCTION md5(name) /* x */", "may not contain"),
        ("MASKED WITH FUNCTION md5(current_setting('server_version'))", "current_setting(text) is not trusted"),
        ("MASKED WITH FUNCTION public.evil(name)", "public.evil(text) is not trusted"),
        ("MASKED WITH FUNCTION partial(name, 1, '*', 1)", "does not exist"),
        (
            "MASKED WITH FUNCTION public.partial(name, 1, '*', 1)",
            "public.partial(text,integer,text,integer) is not trusted",
        ),
        ("MASKED WITH FUNCTION md5(name OPERATOR(public.###) 'x')", "operator public.###(text,text) is not trusted"),
        ("MASKED WITH FUNCTION md5(name) || 'x'", "one function call"),
        ("MASKED WITH VALUE md5('x')", "takes a constant"),
        ("MASKED WITH VALUE 'not a number'", "invalid input syntax for type integer"),
        ("MASKED WITH VALUE '2020-01-01'::date", "cannot cast type date to integer"),
        ("MASKED WITH FUNCTION md5(nosuchcolumn)", "does not exist"),
        ("MASKED WITH FUNCTION veil.rotate_key()", "veil.rotate_key() is not trusted"),
        ("SHOW ME EVERYTHING", "unknown column label"),
    ],
)
def test_rejected_rules_raise_one_clear_error_and_change_nothing(client, bad_label, message):
    client.execute("CREATE FUNCTION public.evil(text) RETURNS integer LANGUAGE sql AS 'SELECT 1'")
    client.execute("CREATE FUNCTION public.partial(text, int, text, int) RETURNS integer LANGUAGE sql AS 'SELECT 1'")
    client.execute("CREATE FUNCTION public.concat_op(text, text) RETURNS text LANGUAGE sql AS 'SELECT $1'")
    client.execute("CREATE OPERATOR public.### (LEFTARG = text, RIGHTARG = text, FUNCTION = public.concat_op)")
    label(client, 'public."Client Data".age', "MASKED WITH VALUE 42")
    before = rules(client)
    with pytest.raises(REJECTED) as caught:
        label(client, 'public."Client Data".age', bad_label)
    assert message in str(caught.value)
    assert str(caught.value).startswith("pgveil:")
    assert rules(client) == before
    assert client.scalar("SELECT to_regclass('public.other_table')") is not None


def test_a_trusted_schema_admits_its_functions(client):
    client.execute("CREATE SCHEMA masks")
    client.execute("CREATE FUNCTION masks.initials(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT left($1, 1)'")
    with pytest.raises(REJECTED, match="not trusted"):
        label(client, 'public."Client Data".name', "MASKED WITH FUNCTION masks.initials(name)")
    label(client, "masks", "TRUSTED", object_type="SCHEMA")
    label(client, 'public."Client Data".name', "MASKED WITH FUNCTION masks.initials(name)")
    assert ("mask", "SCHEMA", "masks", None, None, None, None, None) in rules(client)
    # Trust is per policy.
    with pytest.raises(REJECTED, match="not trusted"):
        label(client, 'public."Client Data".name', "MASKED WITH FUNCTION masks.initials(name)", policy="sanitized")


def test_only_the_toolkit_owner_governs_policy(client):
    intruder = client.role("intruder")
    client.execute(f'GRANT EXECUTE ON FUNCTION veil.security_label(text, text, text, text) TO "{intruder.name}"')
    client.execute("CREATE SCHEMA masks")
    with intruder.connect() as conn:
        for call in (
            "SELECT veil.security_label('mask', 'SCHEMA', 'masks', 'TRUSTED')",
            "SELECT veil.security_label('mask', 'COLUMN', 'public.\"Client Data\".name', NULL)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="only the toolkit owner"):
                conn.execute(call)
            conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT veil.create_policy('mine')")
    assert rules(client) == []


def test_keyed_functions_are_refused_in_views_policies_unless_acknowledged(client):
    with pytest.raises(REJECTED, match="does not allow keyed functions"):
        label(client, 'public."Client Data".name', "MASKED WITH FUNCTION veil.pseudo_first_name(name)")
    with pytest.raises(REJECTED, match="compute the token or pseudonym"):
        client.execute("SELECT veil.alter_policy('mask', allow_keyed_functions => true)")
    client.execute(
        "SELECT veil.alter_policy('mask', allow_keyed_functions => true, masked_roles_may_compute_pseudonyms => true)"
    )
    label(client, 'public."Client Data".name', "MASKED WITH FUNCTION veil.pseudo_first_name(name)")
    with pytest.raises(REJECTED, match="remove them first"):
        client.execute("SELECT veil.alter_policy('mask', allow_keyed_functions => false)")
    # The sanitized copy is written by the owner: keyed functions are its point.
    label(client, 'public."Client Data".name', "MASKED WITH FUNCTION veil.token(name, 'client')", policy="sanitized")


def test_new_policies(client):
    client.execute("SELECT veil.create_policy('partners')")
    label(client, 'public."Client Data".name', "MASKED WITH VALUE 'x'", policy="partners")
    with pytest.raises(REJECTED, match="exists already"):
        client.execute("SELECT veil.create_policy('partners')")
    with pytest.raises(REJECTED, match="lower-case identifiers"):
        client.execute("SELECT veil.create_policy('Bad Name')")
    with pytest.raises(REJECTED, match="there is no policy 'nope'"):
        label(client, 'public."Client Data".name', "NOT MASKED", policy="nope")


@pytest.mark.parametrize(
    "object_type, object_name, message",
    [
        ("COLUMN", "customer.email", "schema.table.column"),
        ("COLUMN", "public.nosuch.email", "there is no table"),
        ("COLUMN", 'public."Client Data".nosuch', "has no column"),
        ("COLUMN", 'public."unterminated', "not a valid object name"),
        ("ROLE", "no_such_role_anywhere", "there is no role"),
        ("SCHEMA", "no_such_schema", "there is no schema"),
        ("TABLE", 'public."Client Data"', "COLUMN, ROLE or SCHEMA"),
    ],
)
def test_bad_object_names(client, object_type, object_name, message):
    with pytest.raises(REJECTED, match=message):
        label(client, object_name, "NOT MASKED", object_type=object_type)


def test_role_rules_refuse_superusers_and_the_toolkit_owner(client):
    analyst = client.role("analyst")
    label(client, analyst.name, "MASKED", object_type="ROLE")
    assert ("mask", "ROLE", None, None, None, analyst.name, None, None) in rules(client)
    boss = client.role("boss", "SUPERUSER")
    with pytest.raises(REJECTED, match="superuser"):
        label(client, boss.name, "MASKED", object_type="ROLE")
    owner = client.scalar("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'veil_private'")
    deputy = client.role("deputy")
    client.execute(f'GRANT "{owner}" TO "{deputy.name}"')
    with pytest.raises(REJECTED, match="toolkit owner"):
        label(client, deputy.name, "MASKED", object_type="ROLE")
