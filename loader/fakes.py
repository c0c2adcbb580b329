"""Faker-generated values, drawn from seeded pools.

Faker takes tens of microseconds per value; at thousands of writes a second
that would be the loader's bottleneck. Pools built once from a seeded Faker
and combined at random give realistic, reproducible values at a fraction of
the cost.
"""

from __future__ import annotations

import random
import unicodedata

from faker import Faker
from faker.config import AVAILABLE_LOCALES

POOL_SIZE = 1000


class LocaleError(ValueError):
    pass


def _ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in folded.lower() if c.isalnum()) or "user"


class Fakes:
    def __init__(self, seed: int, locale: str = "en_US", pool_size: int = POOL_SIZE):
        if locale not in AVAILABLE_LOCALES:
            raise LocaleError(f"unknown Faker locale {locale!r} (e.g. en_US, de_DE, fr_FR)")
        fake = Faker(locale)
        fake.seed_instance(seed)
        pool = range(pool_size)
        self.first_names = [fake.first_name() for _ in pool]
        self.last_names = [fake.last_name() for _ in pool]
        self.streets = [fake.street_address() for _ in pool]
        self.cities = [fake.city() for _ in pool]
        self.districts = [
            fake.administrative_unit() if hasattr(fake, "administrative_unit") else fake.city() for _ in pool
        ]
        self.postcodes = [fake.postcode() for _ in pool]
        self.phones = [fake.phone_number() for _ in pool]
        self.domains = [fake.free_email_domain() for _ in range(20)]

    def name(self, rng: random.Random) -> tuple[str, str]:
        return rng.choice(self.first_names), rng.choice(self.last_names)

    def email(self, rng: random.Random, first: str, last: str) -> str:
        return f"{_ascii_slug(first)}.{_ascii_slug(last)}{rng.randrange(10_000)}@{rng.choice(self.domains)}"

    def address(self, rng: random.Random) -> tuple[str, str, str, str, str]:
        """(address, district, city, postal_code, phone)"""
        return (
            rng.choice(self.streets),
            rng.choice(self.districts),
            rng.choice(self.cities),
            rng.choice(self.postcodes),
            rng.choice(self.phones),
        )

    def customer(self, rng: random.Random) -> tuple[str, str, str, str, str, int, str, str, str]:
        """(address, district, city, postal_code, phone, store_id, first_name, last_name, email)"""
        first, last = self.name(rng)
        return (*self.address(rng), rng.randint(1, 2), first, last, self.email(rng, first, last))

    def amount(self, rng: random.Random) -> str:
        return f"{rng.randint(99, 99_99) / 100:.2f}"
