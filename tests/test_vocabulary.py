"""The peers' masking vocabulary (docs/vocabulary.md): each peer strategy set as a rule and
read through the compiled output, odd inputs that must not fail, pg_anon's function names,
and extra Faker provider dictionaries loaded at install."""

from __future__ import annotations

import argparse
import re

import psycopg
import pytest
from alembic import command
from alembic.util import CommandError
from typer.testing import CliRunner

from pgveil import dictionaries, migrate
from pgveil.cli import app
from pgveil.errors import PgveilError
from tests.helpers import label

# Rows of public.people: ordinary values first, then odd ones that no rule may fail on.
PEOPLE = [
    (1, "john.doe@gmail.com", "+1-555-123-4567", "123-45-6789", "1234 Main St, San Francisco, CA 94102", "John"),
    (2, "a@b@corp.example.org", "(555) 123-4567", "987 65 4321", "1 Elm St, Apt 5, Springfield, IL 62704", "émile"),
    (3, "no-at-sign", "12", "", "0487 Hull Village Suite 759\nLake Curtis, WA 19432", "  Ann"),
    (4, "trailing@", "no digits", "x", "Main St, Springfield IL 62704", ""),
    (5, "", "", "-- //", "no comma at all", "   "),
    (6, None, None, None, None, None),
    (7, "@", "+44 20 7946 0958 ext. 12", "ABC-12", ",,,", "Ö"),
]


@pytest.fixture
def people(toolkit):
    toolkit.execute(
        "CREATE TABLE public.people (id int PRIMARY KEY, email text, phone text, ssn text, address text,"
        " first_name text)"
    )
    with toolkit.admin.cursor() as cur:
        cur.executemany("INSERT INTO public.people VALUES (%s, %s, %s, %s, %s, %s)", PEOPLE)
    label(toolkit, "COLUMN", "public.people.id", "NOT MASKED")
    return toolkit


def masked(db, column: str, rule: str, target: str = "export") -> dict[int, str | None]:
    """Set one rule in policy mask and read the column through the compiled query, by id."""
    label(db, "COLUMN", f"public.people.{column}", f"MASKED WITH FUNCTION {rule}")
    query = db.scalar("SELECT veil_private.compiled_select('mask', 'public.people'::regclass, %s)", (target,))
    return {row[0]: row[1] for row in db.execute(f"SELECT id, {column} FROM ({query}) AS q ORDER BY id")}


# Confiture: email ------------------------------------------------------------


@pytest.mark.parametrize("target", ["export", "rewrite", "view"])
def test_email_with_a_fixed_domain(people, target):
    out = masked(people, "email", "veil.email_with_domain(email, 'anon.local')", target)
    assert out[6] is None
    for key, value in out.items():
        if key != 6:
            assert re.fullmatch(r"user_[0-9a-f]{8}@anon\.local", value), value
    assert len({v for v in out.values() if v}) == len(PEOPLE) - 1


def test_email_with_a_fixed_domain_and_a_seed_is_deterministic(people):
    first = masked(people, "email", "veil.email_with_domain(email, '@anon.local', '12345')")
    assert first == masked(people, "email", "veil.email_with_domain(email, 'anon.local', '12345')")
    other_seed = masked(people, "email", "veil.email_with_domain(email, 'anon.local', '54321')")
    assert first[6] is None
    for key, value in first.items():
        if key != 6:
            assert re.fullmatch(r"user_[0-9a-f]{8}@anon\.local", value), value
            assert value != other_seed[key]
    # Salt and value cannot trade characters.
    assert people.scalar("SELECT veil.email_with_domain('bc', 'd', 'a')") != people.scalar(
        "SELECT veil.email_with_domain('c', 'd', 'ab')"
    )


@pytest.mark.parametrize("rule", ["veil.email_keep_domain(email)", "veil.email_keep_domain(email, 'seed')"])
def test_email_preserving_the_domain(people, rule):
    out = masked(people, "email", rule)
    domains = {key: value.split("@", 1)[1] for key, value in out.items() if value is not None}
    assert domains == {1: "gmail.com", 2: "corp.example.org", 3: "invalid", 4: "invalid", 5: "invalid", 7: "invalid"}
    assert out[6] is None
    for value in out.values():
        if value is not None:
            assert re.fullmatch(r"user_[0-9a-f]{8}@.+", value), value
    if "seed" in rule:
        assert out == masked(people, "email", rule)


# Confiture: phone ------------------------------------------------------------


@pytest.mark.parametrize("target", ["export", "view"])
def test_phone_redacting_the_last_digits_keeps_the_format(people, target):
    out = masked(people, "phone", "veil.redact_digits(phone, 7)", target)
    assert out == {
        1: "+1-555-000-0000",
        2: "(555) 000-0000",
        3: "00",
        4: "no digits",
        5: "",
        6: None,
        7: "+44 20 7940 0000 ext. 00",
    }


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [
        ("+1-555-123-4567", 4, "+1-555-123-0000"),
        ("+1-555-123-4567", 0, "+1-555-123-4567"),
        ("+1-555-123-4567", -3, "+1-555-123-4567"),
        ("+1-555-123-4567", 2147483647, "+0-000-000-0000"),
        ("+1-555-123-4567", -2147483648, "+1-555-123-4567"),
        ("4567", 4, "0000"),
        ("1", 1, "0"),
        ("٣٤٥ 123", 2, "٣٤٥ 100"),  # other scripts' digits are not 0-9: left as they are
    ],
)
def test_redact_digits_on_odd_counts(toolkit, value, digits, expected):
    assert toolkit.scalar("SELECT veil.redact_digits(%s, %s)", (value, digits)) == expected


def test_redact_digits_on_a_long_value(toolkit):
    value = "-".join(["12345"] * 2000)
    out = toolkit.scalar("SELECT veil.redact_digits(%s, 9000)", (value,))
    assert out == "-".join(["12345"] * 200 + ["00000"] * 1800)


# Confiture: redact -----------------------------------------------------------


def test_redact_keeps_the_format(people):
    assert masked(people, "ssn", "veil.redact(ssn)") == {
        1: "***-**-****",
        2: "*** ** ****",
        3: "",
        4: "*",
        5: "-- //",
        6: None,
        7: "***-**",
    }


def test_redact_with_a_replacement_keeps_nulls(people):
    out = masked(people, "ssn", "veil.redact(ssn, '***-**-****')")
    assert out == {key: (None if key == 6 else "***-**-****") for key in out}


# Confiture: address ----------------------------------------------------------


@pytest.mark.parametrize("target", ["export", "view"])
def test_address_keeping_city_state_and_zip(people, target):
    assert masked(people, "address", "veil.redact_street(address)", target) == {
        1: "[REDACTED], San Francisco, CA 94102",
        2: "[REDACTED], Springfield, IL 62704",
        3: "[REDACTED]\nLake Curtis, WA 19432",
        4: "[REDACTED], Springfield IL 62704",
        5: "[REDACTED ADDRESS]",
        6: None,
        7: "[REDACTED],,",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "[REDACTED ADDRESS]"),
        (",", "[REDACTED],"),
        ("San Francisco, CA 94102", "[REDACTED], CA 94102"),
        ("1 Main St,\n\nSpringfield, IL", "[REDACTED]\nSpringfield, IL"),
        ("a, b, c, d, e, f", "[REDACTED], e, f"),
        ("1 Main St, Springfield, IL 62704, ", "[REDACTED], IL 62704, "),
    ],
)
def test_redact_street_on_odd_addresses(toolkit, value, expected):
    assert toolkit.scalar("SELECT veil.redact_street(%s)", (value,)) == expected


# Confiture: name -------------------------------------------------------------


@pytest.mark.parametrize("rule", ["veil.name_keep_initial(first_name)", "veil.name_keep_initial(first_name, '12345')"])
def test_name_keeping_the_initial(people, rule):
    out = masked(people, "first_name", rule)
    initials = {1: "J-", 2: "é-", 3: "A-", 4: "", 5: "", 7: "Ö-"}
    assert out[6] is None
    for key, initial in initials.items():
        assert re.fullmatch(re.escape(initial) + r"User-[0-9A-F]{6}", out[key]), out[key]
    if "12345" in rule:
        assert out == masked(people, "first_name", rule)
        assert out != masked(people, "first_name", "veil.name_keep_initial(first_name, '54321')")


def test_name_without_initial_has_the_peer_shape_from_trusted_builtins(people):
    out = masked(people, "first_name", "concat('User-', upper(left(md5(concat('12345', first_name)), 8)))")
    assert out[1] == "User-" + people.scalar("SELECT upper(left(md5('12345John'), 8))")
    assert all(re.fullmatch(r"User-[0-9A-F]{8}", v) for k, v in out.items() if k != 6)


# Through a mask view and a stream ------------------------------------------------


def test_a_masked_role_reads_every_strategy_through_its_view(people):
    for column, rule in (
        ("email", "veil.email_keep_domain(email)"),
        ("phone", "veil.redact_digits(phone, 7)"),
        ("ssn", "veil.redact(ssn)"),
        ("address", "veil.redact_street(address)"),
        ("first_name", "veil.name_keep_initial(first_name)"),
    ):
        label(people, "COLUMN", f"public.people.{column}", f"MASKED WITH FUNCTION {rule}")
    analyst = people.role("analyst")
    label(people, "ROLE", analyst.name, "MASKED")
    with analyst.connect() as conn:
        rows = conn.execute("SELECT id, email, phone, ssn, address, first_name FROM people ORDER BY id").fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM public.people")
    first = rows[0]
    assert first[1].endswith("@gmail.com") and first[1].startswith("user_")
    assert first[2:5] == ("+1-555-000-0000", "***-**-****", "[REDACTED], San Francisco, CA 94102")
    assert first[5].startswith("J-User-")
    assert rows[5] == (6, None, None, None, None, None)


def test_a_streamed_table_takes_odd_rows_under_every_strategy(people):
    for column, rule in (
        ("id", "NOT MASKED"),
        ("email", "MASKED WITH FUNCTION veil.email_keep_domain(email, 's')"),
        ("phone", "MASKED WITH FUNCTION veil.redact_digits(phone, 7)"),
        ("ssn", "MASKED WITH FUNCTION veil.redact(ssn, 'XXX')"),
        ("address", "MASKED WITH FUNCTION veil.redact_street(address)"),
        ("first_name", "MASKED WITH FUNCTION veil.name_keep_initial(first_name)"),
    ):
        label(people, "COLUMN", f"public.people.{column}", rule, policy="sanitized")
    people.execute("SELECT veil.stream('public.people')")
    people.execute("CALL veil.backfill('public.people')")
    with people.admin.cursor() as cur:
        cur.executemany(
            "INSERT INTO public.people VALUES (%s, %s, %s, %s, %s, %s)",
            [(100 + key, *values) for key, *values in PEOPLE],
        )
    people.execute("UPDATE public.people SET phone = '7', address = ',' WHERE id > 100")
    assert people.scalar("SELECT count(*) FROM sanitized.people") == 2 * len(PEOPLE)
    assert people.execute("SELECT phone, address FROM sanitized.people WHERE id = 101").fetchone() == (
        "0",
        "[REDACTED],",
    )


# Declarations --------------------------------------------------------------------

VOCABULARY = {
    "veil.email_with_domain(text,text)": ("v", "r"),
    "veil.email_with_domain(text,text,text)": ("i", "s"),
    "veil.email_keep_domain(text)": ("v", "r"),
    "veil.email_keep_domain(text,text)": ("i", "s"),
    "veil.redact_digits(text,integer)": ("i", "s"),
    "veil.redact(text)": ("i", "s"),
    "veil.redact(text,text)": ("i", "s"),
    "veil.redact_street(text)": ("i", "s"),
    "veil.name_keep_initial(text)": ("v", "r"),
    "veil.name_keep_initial(text,text)": ("i", "s"),
}


def test_the_vocabulary_is_declared_truthfully_and_usable_in_rules(toolkit):
    rows = toolkit.execute(
        "SELECT p.oid::regprocedure::text, p.provolatile, p.proparallel, p.proisstrict, p.prosecdef,"
        " p.proconfig, veil_private.is_masking_function(p.oid), has_function_privilege('public', p.oid, 'EXECUTE')"
        " FROM pg_proc p WHERE p.oid = ANY(%s::regprocedure[])",
        (list(VOCABULARY),),
    ).fetchall()
    assert {r[0].replace(" ", "") for r in rows} == set(VOCABULARY)
    for name, volatility, parallel, strict, secdef, config, masking, public in rows:
        assert (volatility, parallel) == VOCABULARY[name.replace(" ", "")], name
        assert strict and not secdef and masking and public, name
        assert config == ["search_path=pg_catalog, pg_temp"], name
    # Not the administrative API by a looser pattern.
    assert not toolkit.scalar(
        "SELECT veil_private.is_masking_function('veil.security_label(text,text,text,text)'::regprocedure)"
    )


# pg_anon's anon_funcs: every documented name is already one of veil's functions -----

ANON_FUNCS = [
    ("amount", "veil.noise(amount, 10)"),
    ("created", "veil.dnoise(created, interval '6 month')"),
    ("note", "veil.digest(note, 'salt_word', 'md5')"),
    ("note", "veil.digest(note, 'MySecretSaltWord', 'sha256')"),
    ("note", "veil.partial(note, 1, '***', 3)"),
    ("note", "veil.partial_email(note)"),
    ("note", "veil.random_string(7)"),
    ("note", "veil.random_zip()"),
    ("created", "veil.random_date_between('2020-02-02 10:10:10'::timestamp, '2022-02-05 10:10:10'::timestamp)"),
    ("created", "veil.random_date()"),
    ("n", "veil.random_int_between(100, 200)"),
    ("big", "veil.random_bigint_between(6000000000, 7000000000)"),
    ("note", "veil.random_phone('+7')"),
    ("note", "veil.random_hash('seed', 'sha512')"),
    ("note", "veil.random_in(array['a', 'b', 'c'])"),
    ("n", "veil.hex_to_int('8AB')"),
    # pg_anon's expression form: lower(anon_funcs.random_string(9)) || '@secret.com'
    ("note", "concat(lower(veil.random_string(9)), '@secret.com')"),
]


@pytest.mark.parametrize(("column", "rule"), ANON_FUNCS)
def test_pg_anon_functions_port_under_their_names(toolkit, column, rule):
    toolkit.execute(
        "CREATE TABLE public.ledger (id int PRIMARY KEY, amount numeric(10,2), created timestamp, note text,"
        " n int, big bigint)"
    )
    toolkit.execute(
        "INSERT INTO public.ledger SELECT g, g * 1.5, '2021-01-01'::timestamp + g * interval '1 day',"
        " 'someone' || g || '@example.com', g, g FROM generate_series(1, 20) g"
    )
    label(toolkit, "COLUMN", "public.ledger.id", "NOT MASKED")
    label(toolkit, "COLUMN", f"public.ledger.{column}", f"MASKED WITH FUNCTION {rule}")
    query = toolkit.scalar("SELECT veil_private.compiled_select('mask', 'public.ledger'::regclass, 'export')")
    rows = toolkit.execute(f"SELECT {column} FROM ({query}) AS q").fetchall()
    assert len(rows) == 20 and all(r[0] is not None for r in rows)


# rds_pg_anon's "any Faker method": extra provider dictionaries -----------------------


def test_an_install_loads_extra_faker_providers_for_rules(bare):
    migrate.upgrade(bare.url, faker_providers=["ssn", "license_plate", "city"])
    loaded = dict(bare.execute("SELECT name, locale FROM veil.dictionaries").fetchall())
    assert loaded["ssn"] == loaded["license_plate"] == loaded["first_name"] == "en_US"
    ssns = [r[0] for r in bare.execute("SELECT value FROM veil.dictionary WHERE name = 'ssn' ORDER BY id")]
    assert len(ssns) == dictionaries.SIZE and all(re.fullmatch(r"\d{3}-\d{2}-\d{4}", s) for s in ssns)
    # Seeded: the same values as generating them again.
    assert tuple(ssns) == dictionaries.generate_provider("ssn")
    # Like the others: one jsonb array for the mask views too.
    assert bare.scalar("SELECT jsonb_array_length(items) FROM veil_private.dictionary_items WHERE name = 'ssn'") == len(
        ssns
    )

    bare.execute("CREATE TABLE public.citizen (id int PRIMARY KEY, ssn text, plate text)")
    bare.execute(
        "INSERT INTO public.citizen SELECT g, '000-00-' || lpad(g::text, 4, '0'), 'RAW' || g FROM generate_series(1, 50) g"
    )
    label(bare, "COLUMN", "public.citizen.id", "NOT MASKED")
    label(bare, "COLUMN", "public.citizen.ssn", "MASKED WITH FUNCTION veil.fake_value('ssn')")
    label(bare, "COLUMN", "public.citizen.plate", "MASKED WITH FUNCTION veil.fake_value('license_plate')")
    query = bare.scalar("SELECT veil_private.compiled_select('mask', 'public.citizen'::regclass, 'export')")
    rows = bare.execute(f"SELECT ssn, plate FROM ({query}) AS q").fetchall()
    plates = {r[0] for r in bare.execute("SELECT value FROM veil.dictionary WHERE name = 'license_plate'")}
    assert len(rows) == 50
    assert all(ssn in set(ssns) and plate in plates for ssn, plate in rows)


def test_a_database_at_head_gets_extra_providers_by_upgrading_again(toolkit):
    before = toolkit.execute("SELECT name, size, locale FROM veil.dictionaries ORDER BY 1").fetchall()
    # As `alembic -x faker_providers=... upgrade head` passes them.
    cfg = migrate.alembic_config(toolkit.url)
    cfg.attributes.pop("faker_providers")
    cfg.cmd_opts = argparse.Namespace(x=["faker_providers=license_plate, ean8"])
    command.upgrade(cfg, "head")
    after = toolkit.execute("SELECT name, size, locale FROM veil.dictionaries ORDER BY 1").fetchall()
    assert {r[0] for r in after} - {r[0] for r in before} == {"license_plate", "ean8"}
    assert [r for r in after if r[0] not in ("license_plate", "ean8")] == before
    # And again through the CLI: reloaded the same.
    values = toolkit.execute("SELECT value FROM veil.dictionary WHERE name = 'ean8' ORDER BY id").fetchall()
    result = CliRunner().invoke(app, ["install", "--database-url", toolkit.url, "--faker-provider", "ean8"])
    assert result.exit_code == 0, result.output
    assert toolkit.execute("SELECT value FROM veil.dictionary WHERE name = 'ean8' ORDER BY id").fetchall() == values


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ssnn", r"'ssnn' is not a Faker provider for locale en_US \(did you mean ssn\b.*faker -l en_US"),
        ("seed_instance", r"is not a Faker provider.*faker -l en_US"),
        ("_private", r"is not a Faker provider"),
        ("SSN; DROP TABLE x", r"is not a Faker provider"),
        ("enum", r"needs arguments \(enum_cls\).*faker -l en_US"),
        ("binary", r"does not return one text, number or date"),
        ("pylist", r"does not return one text, number or date"),
    ],
)
def test_an_unusable_provider_is_refused_with_how_to_find_valid_ones(name, message):
    with pytest.raises(PgveilError, match=message):
        dictionaries.check_providers([name])


def test_an_unknown_provider_is_refused_before_anything_changes(toolkit):
    before = toolkit.execute("SELECT name, size FROM veil.dictionaries ORDER BY 1").fetchall()
    with pytest.raises(CommandError, match=r"'no_such_method' is not a Faker provider.*faker -l"):
        migrate.upgrade(toolkit.url, faker_providers=["ssn", "no_such_method"])
    result = CliRunner().invoke(app, ["install", "--database-url", toolkit.url, "--faker-provider", "licence_plate"])
    assert result.exit_code != 0 and "did you mean license_plate" in result.output.replace("\n", " ")
    assert toolkit.execute("SELECT name, size FROM veil.dictionaries ORDER BY 1").fetchall() == before


def test_provider_lists_are_parsed_from_strings_and_repeated_options():
    assert dictionaries.parse_providers(None) == ()
    assert dictionaries.parse_providers("ssn,license_plate , ssn") == ("ssn", "license_plate")
    assert dictionaries.parse_providers(["ssn", "ean8 license_plate", ""]) == ("ssn", "ean8", "license_plate")
