"""Unique-safe rules: colliding rules refused on unique columns of static policies; generators injective."""

from __future__ import annotations

import re

import psycopg
import pytest

REJECTED = psycopg.errors.RaiseException


@pytest.fixture
def shop(toolkit):
    """A static policy and a table with every kind of unique index."""
    toolkit.execute("SELECT veil.create_policy('st', 'static')")
    toolkit.execute(
        "CREATE TABLE public.person ("
        " id integer CONSTRAINT person_pkey PRIMARY KEY,"
        " email text CONSTRAINT person_email_key UNIQUE,"
        " phone text, login text, code varchar(12), note text,"
        " tenant integer NOT NULL, local_id integer NOT NULL, nick text,"
        " CONSTRAINT person_tenant_local_key UNIQUE (tenant, local_id))"
    )
    toolkit.execute("CREATE UNIQUE INDEX person_phone_idx ON public.person (phone)")
    toolkit.execute("CREATE UNIQUE INDEX person_login_lower_idx ON public.person (lower(login))")
    toolkit.execute("CREATE UNIQUE INDEX person_code_idx ON public.person (code)")
    toolkit.execute(
        "INSERT INTO public.person (id, email, phone, login, code, note, tenant, local_id, nick)"
        " SELECT g, 'p' || g || '@example.org', '+44 20 7946 ' || lpad(g::text, 4, '0'), 'user' || g,"
        " 'C' || g, 'n', g % 3, g, 'nick' || g FROM generate_series(1, 50) g"
    )
    return toolkit


def set_rule(db, column: str, label: str | None, policy: str = "st") -> None:
    db.execute("SELECT veil.security_label(%s, 'COLUMN', %s, %s)", (policy, f"public.person.{column}", label))


def rule(db, column: str, policy: str = "st"):
    return db.scalar(
        "SELECT expression FROM veil.rules WHERE policy = %s AND table_name = 'person' AND column_name = %s",
        (policy, column),
    )


def refused(db, column: str, label: str, constraint: str) -> str:
    before = rule(db, column)
    with pytest.raises(REJECTED) as caught:
        set_rule(db, column, label)
    message = caught.value.diag.message_primary or ""
    assert constraint in message, message
    assert rule(db, column) == before  # nothing changed
    return message


@pytest.mark.parametrize(
    ("column", "label", "constraint", "suggestion"),
    [
        (
            "id",
            "MASKED WITH FUNCTION veil.random_int_between(1, 100)",
            "primary key person_pkey",
            "veil.unique_int(id)",
        ),
        ("id", "MASKED WITH VALUE 7", "primary key person_pkey", "veil.unique_int(id)"),
        (
            "email",
            "MASKED WITH FUNCTION veil.fake_email()",
            "unique constraint person_email_key",
            "veil.unique_email(email)",
        ),
        ("email", "MASKED WITH FUNCTION veil.partial_email(email)", "person_email_key", "veil.unique_email(email)"),
        ("email", "MASKED WITH FUNCTION veil.pseudo_email(email)", "person_email_key", "veil.unique_email(email)"),
        ("email", "MASKED WITH FUNCTION left(md5(email), 8)", "person_email_key", "veil.unique_email(email)"),
        ("email", "MASKED WITH FUNCTION veil.digest(email, 'salt', 'sha256')", "person_email_key", "unique_email"),
        ("email", "MASKED WITH VALUE 'x@example.com'", "person_email_key", "veil.unique_email(email)"),
        (
            "phone",
            "MASKED WITH FUNCTION veil.fake_phone()",
            "unique index person_phone_idx",
            "veil.unique_phone(phone)",
        ),
        ("phone", "MASKED WITH FUNCTION veil.partial(phone, 2, 'xxx', 2)", "person_phone_idx", "unique_phone"),
        # A keyed generator seeded with a column that is not unique by itself.
        ("email", "MASKED WITH FUNCTION veil.token(note, 'n')", "person_email_key", "veil.unique_email(email)"),
        ("email", "MASKED WITH FUNCTION veil.unique_email(tenant)", "person_email_key", "veil.unique_email(email)"),
        # A seed cast that rounds, or arguments that vary per row.
        ("email", "MASKED WITH FUNCTION veil.unique_int(note::integer)", "person_email_key", "unique_email"),
        ("id", "MASKED WITH FUNCTION veil.unique_int(id, local_id)", "person_pkey", "unique_int"),
        ("id", "MASKED WITH FUNCTION veil.unique_int(id, veil.random_int_between(3, 9))", "person_pkey", "unique_int"),
        ("email", "MASKED WITH FUNCTION veil.token(email || 'x')", "person_email_key", "unique_email"),
        # A composite key whose other column is no key by itself.
        ("local_id", "MASKED WITH FUNCTION veil.random_int_between(1, 5)", "person_tenant_local_key", "unique_int"),
    ],
)
def test_colliding_rules_are_refused_naming_the_constraint(shop, column, label, constraint, suggestion):
    message = refused(shop, column, label, constraint)
    assert message.startswith("pgveil: ")
    assert suggestion in message


def test_an_expression_index_refuses_all_but_not_masked(shop):
    message = refused(shop, "login", "MASKED WITH FUNCTION veil.unique_name(login)", "person_login_lower_idx")
    assert "expressions" in message
    set_rule(shop, "login", "NOT MASKED")


def test_a_generator_too_long_for_the_column_is_refused(shop):
    # A cast to varchar(12) would cut a token or an address into repeats.
    refused(shop, "code", "MASKED WITH FUNCTION veil.token(code)", "code")
    refused(shop, "code", "MASKED WITH FUNCTION veil.unique_email(id)", "code")
    refused(shop, "code", "MASKED WITH FUNCTION veil.unique_text(id, 'AA-9999-9999-9')", "code")
    set_rule(shop, "code", "MASKED WITH FUNCTION veil.unique_text(id, 'AA-99999')")


@pytest.mark.parametrize(
    ("column", "label"),
    [
        ("id", "NOT MASKED"),
        ("id", "MASKED WITH FUNCTION veil.unique_int(id)"),
        ("id", "MASKED WITH FUNCTION veil.unique_int(id, 6, 'person')"),
        ("email", "MASKED WITH VALUE NULL"),
        ("email", "MASKED WITH FUNCTION veil.token(email, 'email')"),
        ("email", "MASKED WITH FUNCTION veil.token(id::text, 'person')"),
        ("email", "MASKED WITH FUNCTION veil.unique_email(email)"),
        ("email", "MASKED WITH FUNCTION veil.unique_email(id, 'example.net')"),
        ("email", "MASKED WITH FUNCTION veil.unique_name(email)"),
        ("phone", "MASKED WITH FUNCTION veil.unique_phone(phone)"),
        ("phone", "MASKED WITH FUNCTION veil.unique_phone(phone, 2, 'phone')"),
        ("phone", "MASKED WITH FUNCTION veil.unique_text(id, '+44 9999 999999')"),
        ("local_id", "MASKED WITH FUNCTION veil.unique_int(local_id)"),
        ("local_id", "MASKED WITH FUNCTION veil.unique_int(id)"),
        # No unique index on the column: anything goes.
        ("note", "MASKED WITH FUNCTION veil.fake_email()"),
    ],
)
def test_unique_safe_rules_are_accepted(shop, column, label):
    set_rule(shop, column, label)
    assert rule(shop, column) is not None or label == "NOT MASKED"


def test_a_composite_key_keeps_when_another_column_is_a_key(shop):
    shop.execute("ALTER TABLE public.person ADD CONSTRAINT person_local_key UNIQUE (local_id)")
    # local_id is unique by itself: tenant may become anything.
    set_rule(shop, "tenant", "MASKED WITH VALUE 1")
    # ... but then local_id's rule must stay injective.
    refused(shop, "local_id", "MASKED WITH VALUE 1", "person_tenant_local_key")


def test_null_breaks_a_nulls_not_distinct_index(shop):
    shop.execute("CREATE UNIQUE INDEX person_nick_idx ON public.person (nick) NULLS NOT DISTINCT")
    message = refused(shop, "nick", "MASKED WITH VALUE NULL", "person_nick_idx")
    assert "NULLs as not distinct" in message
    shop.execute("DROP INDEX public.person_nick_idx")
    set_rule(shop, "nick", "MASKED WITH VALUE NULL")


def test_a_null_column_of_a_composite_key_keeps_it(shop):
    shop.execute("ALTER TABLE public.person ALTER tenant DROP NOT NULL")
    set_rule(shop, "tenant", "MASKED WITH VALUE NULL")
    set_rule(shop, "local_id", "MASKED WITH FUNCTION veil.random_int_between(1, 5)")


def test_views_and_copy_policies_are_not_checked(shop):
    shop.execute("SELECT veil.create_policy('copy2', 'copy')")
    set_rule(shop, "email", "MASKED WITH FUNCTION veil.fake_email()", policy="mask")
    set_rule(shop, "email", "MASKED WITH FUNCTION veil.fake_email()", policy="copy2")
    assert rule(shop, "email", policy="mask") == "veil.fake_email()"


def test_run_time_check_sees_constraints_added_later(shop):
    set_rule(shop, "note", "MASKED WITH FUNCTION veil.fake_email()")
    assert shop.scalar("SELECT count(*) FROM veil_private.unique_safe_problems('st', 'public.person'::regclass)") == 0
    shop.execute("CREATE UNIQUE INDEX person_note_idx ON public.person (note, id)")
    problems = shop.execute(
        "SELECT attnum, problem FROM veil_private.unique_safe_problems('st', 'public.person'::regclass)"
    ).fetchall()
    # (note, id): id is kept (no rule) and a key, so the index still holds.
    assert problems == []
    set_rule(shop, "id", "MASKED WITH FUNCTION veil.random_int_between(1, 10)", policy="mask")
    shop.execute("DROP INDEX public.person_note_idx")
    shop.execute("UPDATE public.person SET note = 'n' || id")
    shop.execute("CREATE UNIQUE INDEX person_note_idx ON public.person (note)")
    problems = shop.execute(
        "SELECT attnum, problem FROM veil_private.unique_safe_problems('st', 'public.person'::regclass)"
    ).fetchall()
    assert [p[0] for p in problems] == [6]
    assert "person_note_idx" in problems[0][1]
    with pytest.raises(REJECTED, match="person_note_idx"):
        shop.execute(
            "SELECT veil_private.check_unique_safe('st', 'public.person'::regclass, 6::smallint, r.kind, r.expression)"
            " FROM veil_private.column_rules r WHERE r.policy = 'st' AND r.attnum = 6"
        )


def test_uncovered_null_is_checked_at_run_time(shop):
    shop.execute("CREATE UNIQUE INDEX person_nick_idx ON public.person (nick) NULLS NOT DISTINCT")
    assert shop.scalar("SELECT count(*) FROM veil_private.unique_safe_problems('st', 'public.person'::regclass)") == 0
    problems = shop.execute(
        "SELECT problem FROM veil_private.unique_safe_problems('st', 'public.person'::regclass, 'null')"
    ).fetchall()
    assert any("person_nick_idx" in p[0] for p in problems)


def test_no_raw_value_in_the_messages(shop):
    with pytest.raises(psycopg.Error) as caught:
        shop.execute("SELECT veil.unique_text(123456789, 'AA')")
    assert "123456789" not in str(caught.value)
    with pytest.raises(psycopg.Error) as caught:
        shop.execute("SELECT veil.unique_phone(repeat('7', 40))")
    assert "7777" not in str(caught.value)


# --- the generators -------------------------------------------------------------------------


def test_unique_int_keeps_sign_and_digit_count_and_is_a_bijection(toolkit):
    rows = toolkit.execute("SELECT g, veil.unique_int(g) FROM generate_series(-99999, 99999) g").fetchall()
    assert len({out for _, out in rows}) == len(rows)
    assert all(len(str(abs(g))) == len(str(abs(out))) and (g < 0) == (out < 0) for g, out in rows)
    # A permutation of each class: 1000..9999 onto itself.
    four = toolkit.execute(
        "SELECT array_agg(x ORDER BY x) FROM (SELECT veil.unique_int(g) x FROM generate_series(1000, 9999) g) s"
    ).fetchone()[0]
    assert four == list(range(1000, 10000))
    # Not the identity.
    assert toolkit.scalar("SELECT count(*) FROM generate_series(1000, 9999) g WHERE veil.unique_int(g) = g") < 50


def test_unique_int_edges_of_each_type(toolkit):
    assert toolkit.scalar("SELECT pg_typeof(veil.unique_int(5::smallint))::text") == "smallint"
    assert toolkit.scalar("SELECT pg_typeof(veil.unique_int(5))::text") == "integer"
    assert toolkit.scalar("SELECT pg_typeof(veil.unique_int(5::bigint))::text") == "bigint"
    for typ, top in (("smallint", 32767), ("integer", 2147483647), ("bigint", 9223372036854775807)):
        values = toolkit.execute(
            f"SELECT veil.unique_int(v::{typ}) FROM unnest(ARRAY[{top}, {top} - 1, -{top}, -{top} - 1, 0]::{typ}[]) v"
        ).fetchall()
        outs = [v[0] for v in values]
        assert len(set(outs)) == 5
        assert len(str(outs[0])) == len(str(top)) and outs[0] <= top
        assert outs[3] == -top - 1


def test_unique_int_with_digits(toolkit):
    rows = toolkit.execute("SELECT veil.unique_int(g, 3) FROM generate_series(0, 999) g").fetchall()
    assert sorted(r[0] for r in rows) == list(range(1000))
    # Outside the domain: still injective, and never inside it.
    outside = toolkit.execute("SELECT veil.unique_int(g, 3) FROM generate_series(1000, 5000) g").fetchall()
    assert len(set(outside)) == 4001 and all(r[0] >= 1000 for r in outside)
    with pytest.raises(REJECTED, match="digits must be between 1 and 9"):
        toolkit.execute("SELECT veil.unique_int(5, 10)")


def test_unique_text_formats(toolkit):
    rows = toolkit.execute("SELECT veil.unique_text(g, 'AA-99', 'p') FROM generate_series(0, 67599) g").fetchall()
    values = [r[0] for r in rows]
    assert len(set(values)) == 67600  # every value of the format, once
    assert all(re.fullmatch(r"[A-Z]{2}-[0-9]{2}", v) for v in values)
    ssn = toolkit.scalar("SELECT veil.unique_text(123456, '###-##-####')")
    assert re.fullmatch(r"\d{3}-\d{2}-\d{4}", ssn)
    mixed = toolkit.scalar(r"SELECT veil.unique_text(42, 'xX-a?\9\A')")
    assert re.fullmatch(r"[0-9a-z][0-9A-Z]-[a-z][A-Z]9A", mixed)
    # Purposes give different permutations.
    assert toolkit.scalar("SELECT veil.unique_text(5, 'AAAA', 'a') <> veil.unique_text(5, 'AAAA', 'b')")
    with pytest.raises(REJECTED, match="seed outside"):
        toolkit.execute("SELECT veil.unique_text(100, '99')")
    with pytest.raises(REJECTED, match="at most 2"):
        toolkit.execute("SELECT veil.unique_text(1, repeat('X', 20))")


def test_unique_phone_keeps_the_layout(toolkit):
    rows = toolkit.execute(
        "SELECT p, veil.unique_phone(p) FROM (SELECT '+1 (555) ' || lpad(g::text, 3, '0') || '-0100' p"
        " FROM generate_series(0, 999) g) s"
    ).fetchall()
    assert len({out for _, out in rows}) == 1000
    for raw, out in rows:
        assert re.sub(r"\d", "9", raw) == re.sub(r"\d", "9", out)
    kept = toolkit.scalar("SELECT veil.unique_phone('+44 20 7946 0123', 4)")
    assert kept.startswith("+44 20 ") and kept != "+44 20 7946 0123"
    # More than 18 digits: two blocks, still a permutation.
    long = toolkit.execute(
        "SELECT veil.unique_phone(lpad(g::text, 25, '0')) FROM generate_series(1, 2000) g"
    ).fetchall()
    assert len(set(long)) == 2000 and all(len(r[0]) == 25 and r[0].isdigit() for r in long)
    assert toolkit.scalar("SELECT veil.unique_phone('no digits')") == "no digits"


def test_unique_email_and_name(toolkit):
    email = toolkit.scalar("SELECT veil.unique_email(42)")
    assert re.fullmatch(r"[a-z]+\.[a-z]+\.[0-9]{2}@example\.com", email), email
    email = toolkit.scalar("SELECT veil.unique_email('someone@corp.example', 'test.invalid')")
    assert re.fullmatch(r"[a-z]+\.[A-Za-z0-9_-]{43}@test\.invalid", email), email
    assert len(email.split("@")[0]) <= 64
    name = toolkit.scalar("SELECT veil.unique_name(123)")
    assert re.fullmatch(r".+ .+ [0-9]{3}", name), name
    assert toolkit.scalar("SELECT veil.unique_email(NULL::bigint) IS NULL AND veil.unique_name(NULL::text) IS NULL")


def test_generators_are_deterministic_and_follow_the_key(toolkit):
    query = (
        "SELECT veil.unique_int(123456), veil.unique_text(7, 'AA99'), veil.unique_phone('555-0100'),"
        " veil.unique_email(9), veil.unique_email('a@b.c'), veil.unique_name(3)"
    )
    first = toolkit.execute(query).fetchone()
    assert toolkit.execute(query).fetchone() == first
    toolkit.execute("SELECT veil.rotate_key()")
    assert all(a != b for a, b in zip(first, toolkit.execute(query).fetchone(), strict=True))
    toolkit.execute("SELECT veil.unrotate_key()")
    assert toolkit.execute(query).fetchone() == first


GENERATORS = (
    "veil.unique_int(bigint, integer, text)",
    "veil.unique_int(integer, integer, text)",
    "veil.unique_int(smallint, integer, text)",
    "veil.unique_text(bigint, text, text)",
    "veil.unique_phone(text, integer, text)",
    "veil.unique_email(bigint, text, text)",
    "veil.unique_email(text, text, text)",
    "veil.unique_name(bigint, text)",
    "veil.unique_name(text, text)",
)


def test_generators_are_keyed_and_not_public(toolkit):
    for fn in GENERATORS:
        assert toolkit.scalar("SELECT veil_private.is_keyed_function(%s::regprocedure)", (fn,)), fn
        assert not toolkit.scalar("SELECT has_function_privilege('public', %s, 'EXECUTE')", (fn,)), fn
        assert toolkit.scalar("SELECT prosecdef FROM pg_proc WHERE oid = %s::regprocedure", (fn,)), fn
    for fn in ("veil.token(text, text)", "veil.pseudo_email(anyelement)"):
        assert toolkit.scalar("SELECT veil_private.is_keyed_function(%s::regprocedure)", (fn,))
    assert not toolkit.scalar("SELECT veil_private.is_keyed_function('veil.fake_email()'::regprocedure)")
    # Nothing of veil_private's machinery is executable by PUBLIC either.
    assert not toolkit.scalar(
        "SELECT bool_or(has_function_privilege('public', p.oid, 'EXECUTE')) FROM pg_proc p"
        " WHERE p.pronamespace = 'veil_private'::regnamespace AND p.proname ~ '^(unique_|check_unique)'"
    )


def test_a_plain_role_cannot_run_them(toolkit):
    role = toolkit.role("plain")
    with role.connect() as conn:
        for call in ("veil.unique_int(1)", "veil.unique_email(1)", "veil.unique_phone('555')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT {call}")
            conn.rollback()


def test_a_masked_role_cannot_run_them(demo):
    from tests.helpers import demo_analyst

    analyst = demo_analyst(demo)
    with analyst.connect() as conn:
        for call in ("veil.unique_text(1, '9999')", "veil.unique_name('x')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT {call}")
            conn.rollback()


def test_views_policies_refuse_them_as_keyed(shop):
    with pytest.raises(REJECTED, match="keyed"):
        set_rule(shop, "email", "MASKED WITH FUNCTION veil.unique_email(email)", policy="mask")


@pytest.mark.slow
def test_generators_are_distinct_at_a_million_rows(toolkit):
    n = 1_000_000
    assert toolkit.scalar("SELECT count(DISTINCT veil.unique_email(g)) FROM generate_series(1, %s) g", (n,)) == n
    assert (
        toolkit.scalar("SELECT count(DISTINCT veil.unique_text(g, 'AA-99999')) FROM generate_series(0, %s - 1) g", (n,))
        == n
    )
    assert (
        toolkit.scalar(
            "SELECT count(DISTINCT veil.unique_phone('+1 555 ' || lpad(g::text, 7, '0'))) FROM generate_series(1, %s) g",
            (n,),
        )
        == n
    )


@pytest.mark.slow
def test_a_million_row_unique_email_column_keeps_its_constraint(toolkit):
    toolkit.execute("SELECT veil.create_policy('st', 'static')")
    toolkit.execute("CREATE TABLE public.big (id bigint PRIMARY KEY, email text UNIQUE NOT NULL)")
    toolkit.execute("INSERT INTO public.big SELECT g, 'user' || g || '@example.org' FROM generate_series(1, 1000000) g")
    toolkit.execute(
        "SELECT veil.security_label('st', 'COLUMN', 'public.big.email', 'MASKED WITH FUNCTION veil.unique_email(email)')"
    )
    toolkit.execute("SELECT veil.security_label('st', 'COLUMN', 'public.big.id', 'NOT MASKED')")
    assert toolkit.execute("SELECT * FROM veil.anonymize_table('public.big', 'st')").fetchall() == [
        ("public.big", 1_000_000)
    ]
    assert toolkit.scalar("SELECT count(*) FROM public.big WHERE email LIKE 'user%@example.org'") == 0
    assert toolkit.scalar("SELECT count(DISTINCT email) FROM public.big") == 1_000_000
    assert toolkit.scalar("SELECT convalidated FROM pg_constraint WHERE conname = 'big_email_key'")
