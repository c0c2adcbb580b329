"""Fake-value dictionaries, generated with Faker and loaded client-side with COPY.

Seeded, so every install with the same locale gets the same dictionaries; no
server-side file is read. Each dictionary holds up to ``SIZE`` distinct values
(fewer where Faker cannot produce that many, e.g. countries).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import psycopg
from faker import Faker

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
        if value in seen:
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
            with cur.copy("COPY veil.dictionary (name, id, value) FROM STDIN") as copy:
                for row_id, value in zip(itertools.count(1), values):
                    copy.write_row((name, row_id, value))
            cur.execute(
                "INSERT INTO veil.dictionaries (name, size, locale) VALUES (%s, %s, %s)",
                (name, len(values), locale),
            )
