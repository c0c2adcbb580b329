"""Fake-value dictionaries, generated with Faker and loaded client-side with COPY.

Seeded, so every install with the same locale gets the same dictionaries; no
server-side file is read. Each dictionary holds up to ``SIZE`` distinct values
(fewer where Faker cannot produce that many, e.g. countries).

Besides the built-in dictionaries (``GENERATORS``), a DBA may name extra Faker
providers — any Faker method that takes no argument, e.g. ``ssn`` or
``license_plate`` — whose dictionaries are generated the same way under the
method's name and read in rules with ``veil.fake_value('ssn')``
(:func:`load_providers`; ``pgveil install --faker-provider ssn`` or
``alembic -x faker_providers=ssn,license_plate upgrade head``).
"""

from __future__ import annotations

import datetime
import decimal
import difflib
import functools
import inspect
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg
from faker import Faker

from pgveil.errors import PgveilError

DEFAULT_LOCALE = "en_US"
SEED = 20261123
SIZE = 10_000
# Stop looking for new distinct values after this many draws in a row add nothing.
PATIENCE = 2_000

GENERATORS: dict[str, Callable[[Faker], str]] = {
    "first_name": lambda f: f.first_name(),
    "last_name": lambda f: f.last_name(),
    "email": lambda f: f.email(),
    "domain": lambda f: f.domain_name(),
    "phone": lambda f: f.phone_number(),
    "address": lambda f: f.address().replace("\n", ", "),
    "city": lambda f: f.city(),
    "country": lambda f: f.country(),
    "company": lambda f: f.company(),
    "iban": lambda f: f.iban(),
    "postcode": lambda f: f.postcode(),
}


def distinct_values(faker: Faker, make: Callable[[Faker], str], size: int = SIZE) -> list[str]:
    seen: dict[str, None] = {}
    misses = 0
    while len(seen) < size and misses < PATIENCE:
        value = make(faker)
        if value in seen or "\x00" in value:  # text cannot hold NUL
            misses += 1
        else:
            seen[value] = None
            misses = 0
    return list(seen)


@functools.lru_cache(maxsize=4)
def generate(locale: str = DEFAULT_LOCALE, size: int = SIZE) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(name, values) per dictionary; deterministic, so cached per process."""
    result = []
    for name, make in GENERATORS.items():
        faker = Faker(locale)
        faker.seed_instance(f"{SEED}:{name}")
        result.append((name, tuple(distinct_values(faker, make, size))))
    return tuple(result)


def load(conn: psycopg.Connection, locale: str = DEFAULT_LOCALE, size: int = SIZE) -> None:
    """Replace the dictionaries in ``veil.dictionary`` with freshly generated ones."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM veil.dictionary")
        cur.execute("DELETE FROM veil.dictionaries")
        for name, values in generate(locale, size):
            _write_dictionary(cur, name, values, locale)


def _write_dictionary(cur: psycopg.Cursor[Any], name: str, values: Sequence[str], locale: str) -> None:
    """One dictionary's values (ids 1..n) and its entry in ``veil.dictionaries``."""
    with cur.copy("COPY veil.dictionary (name, id, value) FROM STDIN") as copy:
        for row_id, value in zip(itertools.count(1), values):
            copy.write_row((name, row_id, value))
    cur.execute("INSERT INTO veil.dictionaries (name, size, locale) VALUES (%s, %s, %s)", (name, len(values), locale))


# Extra Faker providers -----------------------------------------------------

PROVIDER_NAME = re.compile(r"[a-z][a-z0-9_]*")
# Where a DBA finds the valid names (for the locale in the message).
HOW_TO_LIST = "list them with `faker -l {locale}` (the command installed with Faker)"


def parse_providers(requested: str | Iterable[str] | None) -> tuple[str, ...]:
    """Provider names from a comma- or space-separated string or a list of such
    strings (``-x faker_providers=ssn,license_plate``, repeated CLI options),
    without duplicates, in the order given."""
    if requested is None:
        return ()
    parts = [requested] if isinstance(requested, str) else list(requested)
    names = (name.strip() for part in parts for name in re.split(r"[\s,]+", part))
    return tuple(dict.fromkeys(name for name in names if name))


@functools.lru_cache(maxsize=8)
def provider_methods(locale: str) -> frozenset[str]:
    """The public methods of Faker's providers for ``locale``."""
    faker = Faker(locale)
    return frozenset(
        name
        for provider in faker.factories[0].get_providers()
        for name in dir(provider)
        if not name.startswith("_") and callable(getattr(provider, name))
    )


def as_text(value: object) -> str | None:
    """One Faker value as text, or None when it is not one value (bytes, lists, ...)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float | decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return None


def provider_generator(name: str, locale: str = DEFAULT_LOCALE) -> Callable[[Faker], str]:
    """How to draw one value of the Faker method ``name``, after checking that it
    exists for ``locale``, needs no argument and returns one value."""
    if not PROVIDER_NAME.fullmatch(name) or name not in provider_methods(locale):
        close = difflib.get_close_matches(name, sorted(provider_methods(locale)), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise PgveilError(
            f"pgveil: {name!r} is not a Faker provider for locale {locale}{hint}: valid names are the methods"
            f" of Faker's providers that take no argument, e.g. ssn or license_plate; "
            + HOW_TO_LIST.format(locale=locale)
        )
    faker = Faker(locale)
    method = getattr(faker, name)
    required = [
        p.name
        for p in inspect.signature(method).parameters.values()
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if required:
        raise PgveilError(
            f"pgveil: the Faker provider {name!r} needs arguments ({', '.join(required)}); a dictionary is made"
            " only of methods that take none; " + HOW_TO_LIST.format(locale=locale)
        )
    faker.seed_instance(f"{SEED}:{name}")
    if as_text(method()) is None:
        raise PgveilError(
            f"pgveil: the Faker provider {name!r} does not return one text, number or date per call;"
            " a dictionary holds single values; " + HOW_TO_LIST.format(locale=locale)
        )

    def make(f: Faker) -> str:
        return as_text(getattr(f, name)()) or ""

    return make


def check_providers(names: Iterable[str], locale: str = DEFAULT_LOCALE) -> None:
    """Raise PgveilError for the first name that cannot make a dictionary."""
    for name in names:
        if name not in GENERATORS:
            provider_generator(name, locale)


@functools.lru_cache(maxsize=16)
def generate_provider(name: str, locale: str = DEFAULT_LOCALE, size: int = SIZE) -> tuple[str, ...]:
    """The dictionary of one extra provider; seeded like the built-in ones."""
    make = provider_generator(name, locale)
    faker = Faker(locale)
    faker.seed_instance(f"{SEED}:{name}")
    return tuple(value for value in distinct_values(faker, make, size) if value)


def installed_locale(conn: psycopg.Connection) -> str | None:
    """The locale the database's built-in dictionaries were generated with."""
    with conn.cursor() as cur:
        cur.execute("SELECT min(locale) FROM veil.dictionaries WHERE name = ANY(%s)", (list(GENERATORS),))
        row = cur.fetchone()
    return row[0] if row else None


def load_providers(
    conn: psycopg.Connection, providers: Iterable[str], locale: str | None = None, size: int = SIZE
) -> list[str]:
    """Generate and load (or reload) the dictionaries of extra Faker providers, in
    the locale of the installed dictionaries (``locale`` when there are none yet);
    names of built-in dictionaries are already loaded and skipped. All names are
    checked before anything is written. Returns the names loaded."""
    names = [name for name in parse_providers(providers) if name not in GENERATORS]
    if not names:
        return []
    locale = installed_locale(conn) or locale or DEFAULT_LOCALE
    check_providers(names, locale)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_catalog.to_regclass('veil_private.dictionary_items') IS NOT NULL")
        row = cur.fetchone()
        with_items = bool(row and row[0])
        for name in names:
            values = generate_provider(name, locale, size)
            if not values:
                raise PgveilError(f"pgveil: the Faker provider {name!r} gave no value to make a dictionary of")
            cur.execute("DELETE FROM veil.dictionaries WHERE name = %s", (name,))
            cur.execute("DELETE FROM veil.dictionary WHERE name = %s", (name,))
            _write_dictionary(cur, name, values, locale)
            if with_items:
                # As the built-in dictionaries' (sql/0004_mask/10_catalog.sql).
                cur.execute(
                    "INSERT INTO veil_private.dictionary_items"
                    " SELECT d.name, pg_catalog.jsonb_agg(d.value ORDER BY d.id)"
                    " FROM veil.dictionary d WHERE d.name = %s GROUP BY d.name",
                    (name,),
                )
    return names
