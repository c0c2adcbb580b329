"""The non-keyed masking functions: noise, partial, random, hashing, generalization.

Each function keeps PostgreSQL Anonymizer's name and contract so rules port
over; where anon's result missed its own contract (a range that does not hold
the value, an end of a random range drawn half as often, an email that leaks
whole), these tests pin the corrected behaviour. Random functions are checked
over a few thousand draws, computed in one query each.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

DRAWS = 4000

# signature -> (provolatile, proparallel, proisstrict)
DECLARED = {
    "veil.noise(anyelement,double precision)": ("v", "r", True),
    "veil.dnoise(anyelement,interval)": ("v", "r", True),
    "veil.partial(text,integer,text,integer)": ("i", "s", True),
    "veil.partial_email(text)": ("i", "s", True),
    "veil.random_string(integer)": ("v", "r", True),
    "veil.random_int_between(integer,integer)": ("v", "r", True),
    "veil.random_bigint_between(bigint,bigint)": ("v", "r", True),
    "veil.random_date_between(timestamp with time zone,timestamp with time zone)": ("v", "r", True),
    "veil.random_date()": ("v", "r", False),
    "veil.random_zip()": ("v", "r", False),
    "veil.random_phone(text)": ("v", "r", True),
    "veil.random_in(anyarray)": ("v", "r", True),
    "veil.random_hash(text,text)": ("v", "r", True),
    "veil.hex_to_int(text)": ("i", "s", True),
    "veil.digest(text,text,text)": ("i", "s", True),
    "veil.generalize_int4range(integer,integer)": ("i", "s", True),
    "veil.generalize_int8range(bigint,bigint)": ("i", "s", True),
    "veil.generalize_numrange(numeric,integer)": ("i", "s", True),
    "veil.generalize_daterange(date,text)": ("i", "s", True),
    "veil.generalize_tsrange(timestamp without time zone,text)": ("i", "s", True),
    # date_trunc() of a timestamptz depends on the TimeZone setting
    "veil.generalize_tstzrange(timestamp with time zone,text)": ("s", "s", True),
}

# One call of each function, as a masked analyst's query would make it.
ONE_CALL_EACH = [
    "veil.noise(42, 0.1)",
    "veil.dnoise(now(), '1 day')",
    "veil.partial('abcdefgh', 1, 'xxxx', 3)",
    "veil.partial_email('daamien@gmail.com')",
    "veil.random_string(8)",
    "veil.random_int_between(1, 6)",
    "veil.random_bigint_between(1, 6)",
    "veil.random_date_between('2000-01-01', '2001-01-01')",
    "veil.random_date()",
    "veil.random_zip()",
    "veil.random_phone()",
    "veil.random_in(ARRAY['a', 'b'])",
    "veil.random_hash('x', 'sha256')",
    "veil.hex_to_int('ff')",
    "veil.digest('x', 'salt', 'sha256')",
    "veil.generalize_int4range(42)",
    "veil.generalize_int8range(42)",
    "veil.generalize_numrange(4.2)",
    "veil.generalize_daterange('1984-06-02')",
    "veil.generalize_tsrange('1984-06-02 10:00')",
    "veil.generalize_tstzrange('1984-06-02 10:00+00')",
]

UNITS = [
    "microseconds",
    "milliseconds",
    "second",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "quarter",
    "year",
    "decade",
    "century",
    "millennium",
]


def one_row(db, query, params=None):
    return db.execute(query, params).fetchone()


# --- declarations -------------------------------------------------------------


def test_every_veil_function_has_a_fixed_search_path(demo):
    rows = demo.execute(
        "SELECT p.oid::regprocedure::text, p.proconfig, p.prokind::text, p.prosrc FROM pg_proc p"
        " WHERE p.pronamespace IN ('veil'::regnamespace, 'veil_private'::regnamespace)"
    ).fetchall()
    assert len(rows) >= len(DECLARED)
    unfixed = [
        name
        for name, config, kind, body in rows
        # pg_temp last: left out, it would be searched first for types.
        if "search_path=pg_catalog, pg_temp" not in (config or [])
        # A procedure that commits may not carry SET: it must fix its path itself.
        and not (kind == "p" and "set_config('search_path', 'pg_catalog, pg_temp', true)" in body)
    ]
    assert unfixed == []


def test_volatility_parallel_safety_and_strictness_are_as_declared(toolkit):
    rows = toolkit.execute(
        "SELECT p.oid::regprocedure::text, p.provolatile::text, p.proparallel::text, p.proisstrict,"
        "       p.proconfig, p.prosecdef, obj_description(p.oid, 'pg_proc')"
        " FROM pg_proc p WHERE p.oid::regprocedure::text = ANY(%s)",
        (list(DECLARED),),
    ).fetchall()
    found = {name: (vol, par, strict) for name, vol, par, strict, *_ in rows}
    assert found == DECLARED
    for name, _, _, _, config, secdef, comment in rows:
        assert config == ["search_path=pg_catalog, pg_temp"], name
        assert not secdef, name  # invokers' rights: these use no secret
        assert comment, name


def test_a_plain_role_can_call_every_function(toolkit):
    role = toolkit.role("plain")
    with role.connect() as conn:
        for call in ONE_CALL_EACH:
            assert conn.execute(f"SELECT {call}").fetchone()[0] is not None, call
    granted = toolkit.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.oid::regprocedure::text = ANY(%s)"
        " AND has_function_privilege('public', p.oid, 'EXECUTE')",
        (list(DECLARED),),
    ).fetchall()
    assert len(granted) == len(DECLARED)


@pytest.mark.parametrize(
    "call",
    [
        "veil.noise(NULL::int, 0.1)",
        "veil.noise(1, NULL)",
        "veil.dnoise(NULL::date, '1 day')",
        "veil.dnoise(now(), NULL)",
        "veil.partial(NULL, 1, '*', 1)",
        "veil.partial('abc', NULL, '*', 1)",
        "veil.partial('abc', 1, NULL, 1)",
        "veil.partial_email(NULL)",
        "veil.random_string(NULL)",
        "veil.random_int_between(NULL, 3)",
        "veil.random_bigint_between(1, NULL)",
        "veil.random_date_between(NULL, now())",
        "veil.random_phone(NULL)",
        "veil.random_in(NULL::int[])",
        "veil.random_hash(NULL, 'md5')",
        "veil.hex_to_int(NULL)",
        "veil.digest(NULL, 'salt', 'md5')",
        "veil.digest('x', NULL, 'md5')",
        "veil.digest('x', 'salt', NULL)",
        "veil.generalize_int4range(NULL)",
        "veil.generalize_int4range(42, NULL)",
        "veil.generalize_int8range(NULL)",
        "veil.generalize_numrange(NULL)",
        "veil.generalize_daterange(NULL)",
        "veil.generalize_daterange('2020-01-01', NULL)",
        "veil.generalize_tsrange(NULL)",
        "veil.generalize_tstzrange(NULL)",
    ],
)
def test_null_in_null_out(toolkit, call):
    assert toolkit.scalar(f"SELECT {call}") is None


# --- partial ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("abcdefgh", 1, "xxxx", 3), "axxxxfgh"),  # anon's documentation
        (("0123456789", 2, "******", 2), "01******89"),
        (("abc", 0, "***", 0), "***"),
        (("abc", 5, "*", 5), "abc*abc"),  # counts larger than the value keep it all, as in anon
        (("", 2, "**", 2), "**"),
    ],
)
def test_partial_keeps_prefix_and_suffix_around_the_padding(toolkit, args, expected):
    assert toolkit.scalar("SELECT veil.partial(%s, %s, %s, %s)", args) == expected


@pytest.mark.parametrize("args", [("abcdef", -2, "*", 0), ("abcdef", 0, "*", -2)])
def test_partial_refuses_negative_counts_rather_than_revealing_the_rest(toolkit, args):
    # left('abcdef', -2) would be 'abcd': a negative count must not be read that way
    with pytest.raises(psycopg.errors.SubstringError):
        toolkit.scalar("SELECT veil.partial(%s, %s, %s, %s)", args)


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("daamien@gmail.com", "da******@gm******.com"),  # anon's documentation
        ("john.doe@mail.example.co.uk", "jo******@ma******.uk"),
        ("a@b.org", "a******@b.******.org"),
        ("first@second@third.example.net", "fi******@th******.net"),
    ],
)
def test_partial_email_keeps_two_characters_of_each_part_and_the_top_level_domain(toolkit, email, expected):
    assert toolkit.scalar("SELECT veil.partial_email(%s)", (email,)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # anon returned 'x@localhost' and 'john.smith' nearly whole as a "top-level domain"
        ("x@localhost", "x******@lo******."),
        ("john.smith", "jo******@******."),
        ("a.b.c@d", "a.******@d******."),
    ],
)
def test_partial_email_reveals_no_more_of_odd_values(toolkit, value, expected):
    assert toolkit.scalar("SELECT veil.partial_email(%s)", (value,)) == expected


# --- random -------------------------------------------------------------------


def test_random_string_has_the_length_and_alphabet(toolkit):
    lengths, bad, alphabet = one_row(
        toolkit,
        "SELECT array_agg(DISTINCT length(s)), count(*) FILTER (WHERE s !~ '^[A-Z0-9]*$'),"
        "       (SELECT count(DISTINCT c) FROM unnest(string_to_array(string_agg(s, ''), NULL)) c)"
        " FROM (SELECT veil.random_string(12) AS s FROM generate_series(1, %s)) d",
        (DRAWS // 4,),
    )
    assert lengths == [12]
    assert bad == 0
    assert alphabet == 36  # every one of A-Z0-9 shows up in 12,000 characters
    assert toolkit.scalar("SELECT veil.random_string(0)") == ""
    assert toolkit.scalar("SELECT veil.random_string(-1)") == ""
    assert toolkit.scalar("SELECT count(DISTINCT veil.random_string(12)) FROM generate_series(1, 100)") == 100


@pytest.mark.parametrize("fn", ["random_int_between", "random_bigint_between"])
def test_random_between_covers_both_ends_and_nothing_outside(toolkit, fn):
    q = sql.SQL(
        "SELECT min(v), max(v), count(DISTINCT v), count(*) FILTER (WHERE v = 1), count(*) FILTER (WHERE v = 6)"
        " FROM (SELECT veil.{}(%s, %s) AS v FROM generate_series(1, %s)) d"
    ).format(sql.Identifier(fn))
    for start, stop in [(1, 6), (6, 1)]:  # either order
        lo, hi, distinct, ones, sixes = one_row(toolkit, q, (start, stop, DRAWS))
        assert (lo, hi, distinct) == (1, 6, 6)
        # uniform: each end about 1/6 of the draws (anon's rounding gave the ends 1/10)
        assert DRAWS / 6 * 0.75 < ones < DRAWS / 6 * 1.25
        assert DRAWS / 6 * 0.75 < sixes < DRAWS / 6 * 1.25
    assert toolkit.scalar(sql.SQL("SELECT veil.{}(7, 7)").format(sql.Identifier(fn))) == 7


def test_random_between_spans_the_whole_type_without_overflow(toolkit):
    lo, hi = one_row(
        toolkit,
        "SELECT min(v), max(v) FROM (SELECT veil.random_int_between(-2147483648, 2147483647) v"
        " FROM generate_series(1, %s)) d",
        (DRAWS,),
    )
    assert lo < -1_000_000_000 and hi > 1_000_000_000
    lo, hi = one_row(
        toolkit,
        "SELECT min(v), max(v) FROM (SELECT veil.random_bigint_between(-9223372036854775808, 9223372036854775807) v"
        " FROM generate_series(1, %s)) d",
        (DRAWS,),
    )
    assert lo < -(10**18) and hi > 10**18
    # beyond 2^53, where a double precision computation loses the last digits
    big = 2**62 + 1
    assert toolkit.scalar("SELECT veil.random_bigint_between(%s, %s)", (big, big)) == big


def test_random_date_between_stays_between_the_bounds(toolkit):
    start = dt.datetime(2021, 3, 20, tzinfo=dt.UTC)
    end = dt.datetime(2021, 4, 5, 12, tzinfo=dt.UTC)
    # a span across a daylight-saving change, in a zone that has one
    toolkit.execute("SET TimeZone = 'Europe/Paris'")
    lo, hi, distinct = one_row(
        toolkit,
        "SELECT min(v), max(v), count(DISTINCT v)"
        " FROM (SELECT veil.random_date_between(%s, %s) v FROM generate_series(1, %s)) d",
        (start, end, DRAWS),
    )
    assert start <= lo < start + (end - start) / 20
    assert end - (end - start) / 20 < hi <= end
    assert distinct > DRAWS * 0.99
    lo, hi = one_row(
        toolkit,
        "SELECT min(v), max(v) FROM (SELECT veil.random_date() v FROM generate_series(1, %s)) d",
        (DRAWS,),
    )
    now = toolkit.scalar("SELECT now()")
    assert dt.datetime(1900, 1, 1, tzinfo=dt.UTC) <= lo and hi <= now
    assert hi - lo > dt.timedelta(days=365 * 100)


def test_random_zip_and_phone_have_their_formats(toolkit):
    zips = [r[0] for r in toolkit.execute("SELECT veil.random_zip() FROM generate_series(1, %s)", (DRAWS,))]
    assert all(re.fullmatch(r"\d{5}", z) for z in zips)
    assert len(set(zips)) > DRAWS * 0.9
    assert any(z.startswith("0") for z in zips)  # leading zeros kept, not dropped
    phones = [r[0] for r in toolkit.execute("SELECT veil.random_phone() FROM generate_series(1, %s)", (DRAWS,))]
    assert all(re.fullmatch(r"0\d{9}", p) for p in phones)
    assert len(set(phones)) > DRAWS * 0.99
    assert re.fullmatch(r"\+33 \d{9}", toolkit.scalar("SELECT veil.random_phone('+33 ')"))


def test_random_in_picks_every_element_and_only_those(toolkit):
    picks = one_row(
        toolkit,
        "SELECT array_agg(DISTINCT v ORDER BY v)"
        " FROM (SELECT veil.random_in(ARRAY['a', 'b', 'c']) v FROM generate_series(1, %s)) d",
        (DRAWS // 4,),
    )[0]
    assert picks == ["a", "b", "c"]
    picks = one_row(
        toolkit,
        "SELECT array_agg(DISTINCT v ORDER BY v)"
        " FROM (SELECT veil.random_in('[0:2]={10,20,30}'::int[]) v FROM generate_series(1, %s)) d",
        (DRAWS // 4,),
    )[0]
    assert picks == [10, 20, 30]  # an array that does not start at 1
    assert toolkit.scalar("SELECT veil.random_in('{}'::int[])") is None
    assert toolkit.scalar("SELECT pg_typeof(veil.random_in(ARRAY[1.5, 2.5]))::text") == "numeric"


@pytest.mark.parametrize(("algorithm", "hex_length"), [("md5", 32), ("sha256", 64), ("sha512", 128)])
def test_random_hash_is_a_fresh_hash_each_call(toolkit, algorithm, hex_length):
    hashes = [
        r[0] for r in toolkit.execute("SELECT veil.random_hash('alice', %s) FROM generate_series(1, 50)", (algorithm,))
    ]
    assert all(re.fullmatch(f"[0-9a-f]{{{hex_length}}}", h) for h in hashes)
    assert len(set(hashes)) == 50
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        toolkit.scalar("SELECT veil.random_hash('alice', 'sha1')")


@pytest.mark.parametrize(
    ("hexval", "expected"),
    [
        ("ff", 255),
        ("FF", 255),
        ("0", 0),
        ("", 0),
        ("7fffffff", 2147483647),
        ("ffffffff", -1),  # 32 bits as two's complement, as anon's x'...'::int
        ("80000000", -2147483648),
        ("00000000000000ab", 171),  # leading zeros are not significant
    ],
)
def test_hex_to_int(toolkit, hexval, expected):
    assert toolkit.scalar("SELECT veil.hex_to_int(%s)", (hexval,)) == expected


def test_hex_to_int_refuses_more_than_32_bits_clearly(toolkit):
    with pytest.raises(psycopg.errors.NumericValueOutOfRange) as raised:
        toolkit.scalar("SELECT veil.hex_to_int('1abcdef12')")
    assert "8 significant hex digits" in str(raised.value)
    assert "1abcdef12" not in str(raised.value)  # the value stays out of the message
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        toolkit.scalar("SELECT veil.hex_to_int('xyz')")


# --- hashing ------------------------------------------------------------------


def pgcrypto(db) -> sql.Identifier:
    return sql.Identifier(
        db.scalar("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pgcrypto'")
    )


@pytest.mark.parametrize("algorithm", ["md5", "sha224", "sha256", "sha384", "sha512"])
@pytest.mark.parametrize(("seed", "salt"), [("alice@example.com", "pepper"), ("back\\slash", ""), ("", "é")])
def test_digest_is_pgcryptos_hex_digest_of_seed_and_salt(toolkit, algorithm, seed, salt):
    expected = toolkit.scalar(
        sql.SQL("SELECT encode({}.digest(%s || %s, %s), 'hex')").format(pgcrypto(toolkit)), (seed, salt, algorithm)
    )
    assert toolkit.scalar("SELECT veil.digest(%s, %s, %s)", (seed, salt, algorithm)) == expected
    if algorithm == "md5":
        assert expected == toolkit.scalar("SELECT md5(%s || %s)", (seed, salt))


@pytest.mark.parametrize("algorithm", ["sha1", "SHA256", "ripemd160", "", "md5 "])
def test_digest_accepts_only_the_listed_algorithms(toolkit, algorithm):
    with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
        toolkit.scalar("SELECT veil.digest('x', 'y', %s)", (algorithm,))
    assert "md5, sha224, sha256, sha384, sha512" in str(raised.value)


# --- noise --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "type_name", "slack"),
    [
        ("1000::smallint", "smallint", 0.5),  # integers are rounded back to their type
        ("1000::integer", "integer", 0.5),
        ("1000::bigint", "bigint", 0.5),
        ("1000.25::numeric", "numeric", 0),
        ("1000::real", "real", 0.001),
        ("1000::double precision", "double precision", 1e-9),
        ("-1000::integer", "integer", 0.5),
    ],
)
def test_noise_stays_within_the_ratio_and_keeps_the_type(toolkit, literal, type_name, slack):
    value = float(toolkit.scalar(f"SELECT {literal}"))
    types, lo, hi, distinct = one_row(
        toolkit,
        f"SELECT array_agg(DISTINCT pg_typeof(v)::text), min(v)::float8, max(v)::float8, count(DISTINCT v)"
        f" FROM (SELECT veil.noise({literal}, 0.2) v FROM generate_series(1, %s)) d",
        (DRAWS,),
    )
    assert types == [type_name]
    spread = abs(value) * 0.2
    assert value - spread - slack <= lo < value - spread * 0.9
    assert value + spread * 0.9 < hi <= value + spread + slack
    assert distinct > 300


def test_noise_keeps_every_digit_of_big_values(toolkit):
    # through double precision 2^62 + 1 would come back as 2^62
    assert toolkit.scalar("SELECT veil.noise(%s::bigint, 0)", (2**62 + 1,)) == 2**62 + 1
    assert toolkit.scalar("SELECT veil.noise(%s::numeric, 0)", (Decimal("12345678901234567890.123"),)) == Decimal(
        "12345678901234567890.123"
    )


@pytest.mark.parametrize("literal", ["'text'::text", "now()", "true", "'1 day'::interval"])
def test_noise_refuses_non_numeric_types_clearly(toolkit, literal):
    with pytest.raises(psycopg.errors.DatatypeMismatch, match=r"noise\(\) takes smallint, integer"):
        toolkit.scalar(f"SELECT veil.noise({literal}, 0.1)")


@pytest.mark.parametrize(
    ("literal", "type_name"),
    [
        ("'2020-06-15 12:00'::timestamp", "timestamp without time zone"),
        ("'2020-06-15 12:00+00'::timestamptz", "timestamp with time zone"),
    ],
)
def test_dnoise_shifts_timestamps_within_the_range_and_keeps_the_type(toolkit, literal, type_name):
    types, lo, hi, original = one_row(
        toolkit,
        f"SELECT array_agg(DISTINCT pg_typeof(v)::text), min(v), max(v), {literal}"
        f" FROM (SELECT veil.dnoise({literal}, '3 hours') v FROM generate_series(1, %s)) d",
        (DRAWS,),
    )
    assert types == [type_name]
    three = dt.timedelta(hours=3)
    assert original - three <= lo < original - three * 0.9
    assert original + three * 0.9 < hi <= original + three


def test_dnoise_moves_dates_by_whole_days_within_the_range_without_drift(toolkit):
    types, lo, hi, mean, distinct = one_row(
        toolkit,
        "SELECT array_agg(DISTINCT pg_typeof(v)::text), min(v), max(v),"
        "       avg(v - date '2020-06-15'), count(DISTINCT v)"
        " FROM (SELECT veil.dnoise(date '2020-06-15', '10 days') v FROM generate_series(1, %s)) d",
        (DRAWS,),
    )
    assert types == ["date"]
    assert (lo, hi) == (dt.date(2020, 6, 5), dt.date(2020, 6, 25))
    assert distinct == 21
    # centred on the original: truncating a shifted timestamp to a date would
    # average half a day early
    assert abs(mean) < Decimal("0.3")
    # less than a day of noise cannot move a date
    assert (
        toolkit.scalar("SELECT count(DISTINCT veil.dnoise(date '2020-06-15', '20 hours')) FROM generate_series(1, 200)")
        == 1
    )


def test_dnoise_refuses_other_types_clearly(toolkit):
    with pytest.raises(psycopg.errors.DatatypeMismatch, match=r"dnoise\(\) takes date, timestamp"):
        toolkit.scalar("SELECT veil.dnoise(42, '1 day')")


# --- generalization -------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        # anon's regression examples
        ("veil.generalize_int4range(42)", "[40,50)"),
        ("veil.generalize_int4range(42, 3)", "[42,45)"),
        ("veil.generalize_int8range(4345646464646, 10000000000)", "[4340000000000,4350000000000)"),
        ("veil.generalize_numrange(0.36683)", "[0,10)"),
        ("veil.generalize_numrange(0.32378, 1)", "[0,1)"),
        ("veil.generalize_daterange('19041107')", "[1900-01-01,1910-01-01)"),
        ("veil.generalize_daterange('19041107', 'month')", "[1904-11-01,1904-12-01)"),
        ("veil.generalize_tsrange('19041107', 'year')", '["1904-01-01 00:00:00","1905-01-01 00:00:00")'),
        # where anon's ranges missed the value
        ("veil.generalize_int4range(-5)", "[-10,0)"),
        ("veil.generalize_numrange(6)", "[0,10)"),
        ("veil.generalize_numrange(-0.5, 1)", "[-1,0)"),
        ("veil.generalize_daterange('19041107', 'hour')", "[1904-11-07,1904-11-08)"),
        # bounds that do not fit the type are left open rather than failing the row
        ("veil.generalize_int4range(2147483647)", "[2147483640,)"),
        ("veil.generalize_int4range(-2147483648)", "(,-2147483640)"),
        ("veil.generalize_int8range(9223372036854775807)", "[9223372036854775800,)"),
        ("veil.generalize_int8range(-9223372036854775808)", "(,-9223372036854775800)"),
    ],
)
def test_generalize_examples(toolkit, call, expected):
    assert toolkit.scalar(f"SELECT {call}::text") == expected


@pytest.mark.parametrize(
    ("fn", "cast", "values", "steps"),
    [
        ("generalize_int4range", "int", [0, 1, 9, 10, 42, -1, -10, -11, 123456789], [1, 3, 10, 1000]),
        ("generalize_int8range", "bigint", [0, 9, -1, -11, 4345646464646, -(2**60) - 7], [1, 7, 10, 10**10]),
        (
            "generalize_numrange",
            "numeric",
            ["0", "9.99", "-0.001", "123.456", "999999999999999999999", "-999999999999999999999.5"],
            [1, 10, 7],
        ),
    ],
)
def test_generalize_numbers_contain_the_value_with_the_step_as_width(toolkit, fn, cast, values, steps):
    for value in values:
        for step in steps:
            contains, width, aligned = one_row(
                toolkit,
                sql.SQL(
                    "SELECT r @> v, upper(r) - lower(r), mod(lower(r), %s) = 0"
                    " FROM (SELECT veil.{}(%s::{}, %s) r, %s::{} v) d"
                ).format(sql.Identifier(fn), sql.SQL(cast), sql.SQL(cast)),
                (step, value, step, value),
            )
            assert (contains, width, aligned) == (True, step, True), (value, step)


def test_generalize_refuses_a_step_that_is_not_positive(toolkit):
    for call in ["generalize_int4range(5, 0)", "generalize_int8range(5, -10)", "generalize_numrange(5, 0)"]:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="step must be positive"):
            toolkit.scalar(f"SELECT veil.{call}")


@pytest.mark.parametrize("unit", UNITS)
def test_generalize_dates_and_times_cover_one_unit_around_the_value(toolkit, unit):
    toolkit.execute("SET TimeZone = 'UTC'")
    ts = "1984-06-02 13:45:12.345678"
    row = one_row(
        toolkit,
        "SELECT r1 @> %(ts)s::timestamp, lower(r1) = date_trunc(%(u)s, %(ts)s::timestamp),"
        "       upper(r1) = date_trunc(%(u)s, %(ts)s::timestamp) + CASE %(u)s WHEN 'quarter' THEN '3 months'"
        "       ELSE ('1 ' || %(u)s)::interval END,"
        "       r2 @> %(ts)s::timestamptz, lower(r2) = date_trunc(%(u)s, %(ts)s::timestamptz),"
        "       upper(r2) - lower(r2) = upper(r1) - lower(r1),"
        "       r3 @> %(ts)s::date, lower(r3) = date_trunc(%(u)s, %(ts)s::date::timestamp)::date,"
        "       upper(r3) = GREATEST(lower(r3) + 1, (date_trunc(%(u)s, %(ts)s::timestamp) + (upper(r1) - lower(r1)))::date)"
        " FROM (SELECT veil.generalize_tsrange(%(ts)s, %(u)s) r1, veil.generalize_tstzrange(%(ts)s, %(u)s) r2,"
        "              veil.generalize_daterange(%(ts)s::date, %(u)s) r3) d",
        {"ts": ts, "u": unit},
    )
    assert row == (True,) * 9


def test_generalize_tstzrange_follows_the_session_time_zone(toolkit):
    # why it is STABLE and not IMMUTABLE
    value = "2020-06-15 23:30+00"
    toolkit.execute("SET TimeZone = 'UTC'")
    utc = toolkit.scalar("SELECT lower(veil.generalize_tstzrange(%s, 'day'))", (value,))
    toolkit.execute("SET TimeZone = 'Asia/Tokyo'")
    tokyo = toolkit.scalar("SELECT lower(veil.generalize_tstzrange(%s, 'day'))", (value,))
    assert utc != tokyo
    assert utc == dt.datetime(2020, 6, 15, tzinfo=dt.UTC)
    assert tokyo == dt.datetime(2020, 6, 15, 15, tzinfo=dt.UTC)  # midnight of 16 June in Tokyo


def test_generalize_dates_refuse_an_unknown_unit(toolkit):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="fortnight"):
        toolkit.scalar("SELECT veil.generalize_daterange('2020-01-01', 'fortnight')")
