"""Fake dictionaries, fake_* and pseudo_*: contents, randomness, determinism, collisions."""

from __future__ import annotations

from pgveil import migrate

FAKES = ["first_name", "last_name", "email", "phone", "address", "city", "country", "company", "iban", "postcode"]
PSEUDOS = ["first_name", "last_name", "email", "city", "country", "company", "iban", "address", "phone"]


def test_dictionaries_are_loaded_with_many_distinct_values(toolkit):
    sizes = dict(toolkit.execute("SELECT name, size FROM veil.dictionaries").fetchall())
    # Faker has fewer distinct first/last names and countries than that.
    for name in ["email", "phone", "address", "city", "company", "iban", "postcode", "domain"]:
        assert sizes[name] >= 10_000, name
    assert sizes["first_name"] > 500 and sizes["last_name"] >= 1000 and sizes["country"] > 200
    # ids are 1..size, distinct values
    for name, size in sizes.items():
        ids, distinct, low, high = toolkit.execute(
            "SELECT count(*), count(DISTINCT value), min(id), max(id) FROM veil.dictionary WHERE name = %s", (name,)
        ).fetchone()
        assert (ids, distinct, low, high) == (size, size, 1, size)


def test_fake_functions_draw_varied_values_from_their_dictionary(toolkit):
    for name in FAKES:
        drawn, distinct, outside = toolkit.execute(
            f"SELECT count(*), count(DISTINCT v), count(*) FILTER (WHERE NOT EXISTS ("
            f"  SELECT FROM veil.dictionary d WHERE d.name = '{name}' AND d.value = v))"
            f" FROM (SELECT veil.fake_{name}() AS v FROM generate_series(1, 2000)) s"
        ).fetchone()
        assert drawn == 2000 and outside == 0, name
        assert distinct > 150, name  # even the 243 countries are well covered


def test_a_plain_role_may_call_fake_functions(toolkit):
    plain = toolkit.role("plain")
    with plain.connect() as conn:
        assert conn.execute("SELECT veil.fake_email()").fetchone()[0]


def test_pseudo_functions_are_deterministic_and_keyed(toolkit):
    for name in PSEUDOS:
        first = toolkit.scalar(f"SELECT veil.pseudo_{name}('alice'::text)")
        assert first == toolkit.scalar(f"SELECT veil.pseudo_{name}('alice'::text)")
        assert toolkit.scalar(f"SELECT veil.pseudo_{name}(NULL::text)") is None
    before = [toolkit.scalar("SELECT veil.pseudo_email(i) FROM generate_series(1, 1) i")]
    toolkit.execute("SELECT veil.rotate_key()")
    assert [toolkit.scalar("SELECT veil.pseudo_email(i) FROM generate_series(1, 1) i")] != before


def test_pseudo_collisions_follow_the_dictionary_size(toolkit):
    """m distinct seeds over a dictionary of N values: about N(1-(1-1/N)^m) distinct pseudonyms."""
    m = 100_000
    size = toolkit.scalar("SELECT size FROM veil.dictionaries WHERE name = 'city'")
    distinct = toolkit.scalar(f"SELECT count(DISTINCT veil.pseudo_city(i)) FROM generate_series(1, {m}) i")
    expected = size * (1 - (1 - 1 / size) ** m)
    assert abs(distinct - expected) < 0.01 * expected
    # Uniform spread: no city is picked much more often than m/N.
    busiest = toolkit.scalar(
        f"SELECT max(n) FROM (SELECT count(*) n FROM generate_series(1, {m}) i GROUP BY veil.pseudo_city(i)) s"
    )
    assert busiest < 4 * m / size + 10


def test_pseudo_email_stays_distinct_on_100k_inputs(toolkit):
    m = 100_000
    distinct = toolkit.scalar(f"SELECT count(DISTINCT veil.pseudo_email(i)) FROM generate_series(1, {m}) i")
    assert distinct / m > 0.999
    assert "@" in toolkit.scalar("SELECT veil.pseudo_email(1)")


def test_the_locale_is_configurable(bare):
    migrate.upgrade(bare.url, locale="de_DE")
    assert bare.scalar("SELECT DISTINCT locale FROM veil.dictionaries") == "de_DE"
    german = {r[0] for r in bare.execute("SELECT value FROM veil.dictionary WHERE name = 'city'")}
    assert any(city.endswith(("burg", "berg", "stadt", "dorf")) for city in german)
