"""The labeled database of bench/scan.py: tables whose columns are known to hold a
kind of personal data, or none.

Built with Faker, seeded, so every run writes the same rows. Each column
carries a ``Label``: its kind in the scan engine's vocabulary (email, phone,
payment_card, iban, national_id, ip_address, birth_date, postal_address,
person_name, secret, free_text, json) or None for a column without personal
data (the hard negatives: UUIDs, hashes, SKUs, amounts, timestamps, dates that
are not birth dates, enum codes, numeric ids, lorem text, ...). A free-text
column's label names the kinds embedded in it; a JSON column's label names the
paths that hold personal data and their kinds.

Some personal columns have names in German, French, Spanish or Russian
(transliterated and Cyrillic), and some have meaningless names (``c7``,
``field_12``) so that only their values reveal them.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from faker import Faker
from psycopg import sql

SEED = 20261204
SCHEMA = "public"


@dataclass(frozen=True)
class Label:
    """What a column holds: a kind, or None when it holds no personal data."""

    kind: str | None
    embedded: tuple[str, ...] = ()  # free_text: the kinds found inside the text
    paths: tuple[tuple[str, str], ...] = ()  # json: (path, kind) pairs holding personal data


NONE = Label(None)


def pii(kind: str) -> Label:
    return Label(kind)


@dataclass
class Column:
    name: str
    type: str
    make: Callable[[int], Any]  # row number -> value (None for NULL)
    label: Label


@dataclass
class Table:
    name: str
    columns: list[Column] = field(default_factory=list)

    def add(self, name: str, type_: str, make: Callable[[int], Any], label: Label = NONE) -> None:
        self.columns.append(Column(name, type_, make, label))


class Sources:
    """Seeded Faker instances and a seeded random generator shared by the tables."""

    def __init__(self, seed: int = SEED) -> None:
        self.rnd = random.Random(seed)
        self.en = self._faker("en_US", seed)
        self.de = self._faker("de_DE", seed + 1)
        self.fr = self._faker("fr_FR", seed + 2)
        self.es = self._faker("es_ES", seed + 3)
        self.ru = self._faker("ru_RU", seed + 4)
        self.seed = seed

    @staticmethod
    def _faker(locale: str, seed: int) -> Faker:
        faker = Faker(locale)
        faker.seed_instance(seed)
        return faker

    # Values the Faker providers do not make (or not in the format wanted) ------

    def snils(self) -> str:
        """A Russian SNILS, ``123-456-789 01``, with its check number."""
        while True:
            digits = [self.rnd.randrange(10) for _ in range(9)]
            number = "".join(map(str, digits))
            if number > "001001998":  # the checksum is defined above this number
                break
        total = sum(d * (9 - i) for i, d in enumerate(digits))
        check = total if total < 100 else (0 if total in (100, 101) else total % 101)
        check = 0 if check == 100 else check
        return f"{number[:3]}-{number[3:6]}-{number[6:]} {check:02d}"

    def luhn_bigint(self) -> int:
        """A random 16-digit number (about one in ten passes Luhn, as chance has it)."""
        return self.rnd.randrange(10**15, 10**16)

    def maybe_null(self, value: Any, rate: float = 0.03) -> Any:
        return None if self.rnd.random() < rate else value

    def ticket_body(self, kinds: tuple[str, ...], rate: float = 0.35) -> str:
        """A paragraph of lorem text; in ``rate`` of the rows it mentions an e-mail
        address or a phone number (of the kinds given)."""
        text = self.en.paragraph(nb_sentences=3)
        if self.rnd.random() >= rate:
            return text
        kind = self.rnd.choice(kinds)
        if kind == "email":
            mention = self.rnd.choice(
                ["Please reply to {} as soon as possible.", "My e-mail is {}.", "Contact: {}", "cc {} on this"]
            ).format(self.en.email())
        else:
            mention = self.rnd.choice(
                ["Call me back on {}.", "Phone: {}", "You can reach me at {} after 5pm.", "tel {}"]
            ).format(self.en.phone_number())
        return f"{text} {mention}" if self.rnd.random() < 0.5 else f"{mention} {text}"

    def product_name(self) -> str:
        adjective = self.rnd.choice(
            ["Ergonomic", "Rustic", "Sleek", "Refined", "Compact", "Durable", "Handmade", "Smart", "Classic"]
        )
        material = self.rnd.choice(["Steel", "Wooden", "Cotton", "Granite", "Plastic", "Rubber", "Bamboo", "Glass"])
        noun = self.rnd.choice(["Chair", "Lamp", "Table", "Keyboard", "Bottle", "Backpack", "Kettle", "Shelf", "Mug"])
        return f"{adjective} {material} {noun}"

    def sku(self) -> str:
        return f"SKU-{self.rnd.randrange(10000, 100000)}-{self.rnd.choice(['BL', 'RD', 'GR', 'WH', 'BK', 'XL'])}"

    def hexdigest(self, algorithm: str) -> str:
        return hashlib.new(algorithm, self.rnd.randbytes(16)).hexdigest()

    def timestamp(self) -> datetime:
        start = datetime(2021, 1, 1, tzinfo=UTC)
        return start + timedelta(seconds=self.rnd.randrange(0, 5 * 365 * 86400))

    def recent_date(self) -> date:
        return date(2022, 1, 1) + timedelta(days=self.rnd.randrange(0, 4 * 365))

    def birth_date(self) -> date:
        return self.en.date_of_birth(minimum_age=18, maximum_age=90)

    def password_hash(self) -> str:
        salt = self.rnd.randbytes(8).hex()
        return f"pbkdf2_sha256$600000${salt}${hashlib.sha256(salt.encode()).hexdigest()}"

    def version(self) -> str:
        return f"{self.rnd.randrange(0, 6)}.{self.rnd.randrange(0, 20)}.{self.rnd.randrange(0, 40)}"

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rnd.getrandbits(128), version=4)

    def money(self, top: int = 100_000) -> Decimal:
        return Decimal(self.rnd.randrange(100, top * 100)) / 100


def tables(s: Sources) -> list[Table]:
    """The labeled tables, their columns and how each column's values are made."""
    en, de, fr, es, ru, rnd = s.en, s.de, s.fr, s.es, s.ru, s.rnd

    customers = Table("customers")
    customers.add("customer_id", "bigint PRIMARY KEY", lambda i: i)
    customers.add("customer_uuid", "uuid", lambda i: s.uuid())
    customers.add("first_name", "text", lambda i: en.first_name(), pii("person_name"))
    customers.add("last_name", "text", lambda i: en.last_name(), pii("person_name"))
    customers.add("email", "text", lambda i: s.maybe_null(en.email()), pii("email"))
    customers.add("phone", "text", lambda i: s.maybe_null(en.phone_number()), pii("phone"))
    customers.add("birth_date", "date", lambda i: s.maybe_null(s.birth_date()), pii("birth_date"))
    customers.add("ssn", "text", lambda i: en.ssn(), pii("national_id"))
    customers.add("street_address", "text", lambda i: en.street_address(), pii("postal_address"))
    customers.add("password", "text", lambda i: s.password_hash(), pii("secret"))
    customers.add("c7", "text", lambda i: en.email(), pii("email"))
    customers.add("col_3", "text", lambda i: en.name(), pii("person_name"))
    customers.add("external_id", "bigint", lambda i: rnd.randrange(10**9, 10**10))
    customers.add(
        "profile",
        "jsonb",
        lambda i: json.dumps(
            {
                "contact": {"email": en.email(), "phone": en.phone_number()},
                "preferences": {"theme": rnd.choice(["dark", "light"]), "newsletter": rnd.random() < 0.5},
                "loyalty": {"tier": rnd.choice(["GOLD", "SILVER", "BRONZE"]), "points": rnd.randrange(0, 5000)},
            }
        ),
        Label("json", paths=(("$.contact.email", "email"), ("$.contact.phone", "phone"))),
    )
    customers.add("status", "text", lambda i: rnd.choice(["NEW", "ACTIVE", "SUSPENDED", "CLOSED"]))
    customers.add("is_active", "boolean", lambda i: rnd.random() < 0.8)
    customers.add("country_code", "char(2)", lambda i: en.country_code())
    customers.add("created_at", "timestamptz", lambda i: s.timestamp())

    employees = Table("employees")
    employees.add("mitarbeiter_id", "integer PRIMARY KEY", lambda i: i)
    employees.add("vorname", "text", lambda i: en.first_name(), pii("person_name"))
    employees.add("nachname", "text", lambda i: en.last_name(), pii("person_name"))
    employees.add("nom_complet", "text", lambda i: en.name(), pii("person_name"))
    employees.add("familiya", "text", lambda i: en.last_name(), pii("person_name"))
    employees.add("geburtsdatum", "date", lambda i: s.birth_date(), pii("birth_date"))
    employees.add("strasse", "text", lambda i: de.street_address(), pii("postal_address"))
    employees.add("telefonnummer", "text", lambda i: de.phone_number(), pii("phone"))
    employees.add("courriel", "text", lambda i: fr.email(), pii("email"))
    employees.add("dni", "text", lambda i: es.nif(), pii("national_id"))
    employees.add("snils", "text", lambda i: s.snils(), pii("national_id"))
    employees.add("телефон", "text", lambda i: ru.phone_number(), pii("phone"))
    employees.add("passwd", "text", lambda i: s.password_hash(), pii("secret"))
    employees.add("department", "text", lambda i: rnd.choice(["HR", "ENG", "OPS", "FIN", "SALES"]))
    employees.add("salary", "numeric(10,2)", lambda i: s.money(200_000))
    employees.add("hired_on", "date", lambda i: s.recent_date())
    employees.add("contract_start", "date", lambda i: date(1990, 1, 1) + timedelta(days=rnd.randrange(0, 20 * 365)))
    employees.add("employer", "text", lambda i: en.company())

    orders = Table("orders")
    orders.add("order_id", "bigint PRIMARY KEY", lambda i: i)
    orders.add("order_uuid", "text", lambda i: str(s.uuid()))
    orders.add("sku", "text", lambda i: s.sku())
    orders.add("amount", "numeric(10,2)", lambda i: s.money(5_000))
    orders.add("currency", "char(3)", lambda i: en.currency_code())
    orders.add("status", "text", lambda i: rnd.choice(["NEW", "PAID", "SHIPPED", "DELIVERED", "RETURNED"]))
    orders.add("created_at", "timestamp", lambda i: s.timestamp().replace(tzinfo=None))
    orders.add("shipped_on", "date", lambda i: s.recent_date())
    orders.add("shipping_address", "text", lambda i: en.address(), pii("postal_address"))
    orders.add("direccion_envio", "text", lambda i: es.street_address(), pii("postal_address"))
    orders.add("adresse_facturation", "text", lambda i: fr.address(), pii("postal_address"))
    orders.add("field_12", "text", lambda i: en.phone_number(), pii("phone"))
    orders.add("tracking_md5", "text", lambda i: s.hexdigest("md5"))

    payments = Table("payments")
    payments.add("payment_id", "bigint PRIMARY KEY", lambda i: i)
    payments.add("card_number", "text", lambda i: en.credit_card_number(), pii("payment_card"))
    payments.add("field_9", "text", lambda i: en.credit_card_number(), pii("payment_card"))
    payments.add("iban", "text", lambda i: en.iban(), pii("iban"))
    payments.add("cuenta_bancaria", "text", lambda i: es.iban(), pii("iban"))
    payments.add("kontonummer", "text", lambda i: de.iban(), pii("iban"))
    payments.add("txn_ref", "bigint", lambda i: s.luhn_bigint())
    payments.add("shipment_ref", "text", lambda i: str(s.luhn_bigint()))
    payments.add("c2", "text", lambda i: en.iban(), pii("iban"))
    payments.add("amount", "numeric(10,2)", lambda i: s.money(2_000))
    payments.add("currency", "text", lambda i: en.currency_code())
    payments.add("receipt_sha256", "text", lambda i: s.hexdigest("sha256"))
    payments.add("paid_at", "timestamptz", lambda i: s.timestamp())
    payments.add("is_refunded", "boolean", lambda i: rnd.random() < 0.05)

    tickets = Table("support_tickets")
    tickets.add("ticket_id", "integer PRIMARY KEY", lambda i: i)
    tickets.add("subject", "text", lambda i: en.sentence(nb_words=6))
    tickets.add(
        "body", "text", lambda i: s.ticket_body(("email", "phone")), Label("free_text", embedded=("email", "phone"))
    )
    tickets.add("notes", "text", lambda i: s.ticket_body(("email",), 0.2), Label("free_text", embedded=("email",)))
    tickets.add(
        "commentaire", "text", lambda i: s.ticket_body(("phone",), 0.2), Label("free_text", embedded=("phone",))
    )
    tickets.add("resolution", "text", lambda i: en.text(max_nb_chars=300))
    tickets.add("priority", "text", lambda i: rnd.choice(["LOW", "MEDIUM", "HIGH", "URGENT"]))
    tickets.add("opened_at", "timestamptz", lambda i: s.timestamp())
    tickets.add("telefono_contacto", "text", lambda i: es.phone_number(), pii("phone"))
    tickets.add("correo", "text", lambda i: es.email(), pii("email"))

    sessions = Table("sessions")
    sessions.add("session_id", "uuid PRIMARY KEY", lambda i: s.uuid())
    sessions.add("ip_address", "text", lambda i: en.ipv4(), pii("ip_address"))
    sessions.add("client_addr", "inet", lambda i: en.ipv4() if rnd.random() < 0.6 else en.ipv6(), pii("ip_address"))
    sessions.add("c5", "text", lambda i: en.ipv6(), pii("ip_address"))
    sessions.add("hostname", "text", lambda i: en.hostname())
    sessions.add("app_version", "text", lambda i: s.version())
    sessions.add("token_sha256", "text", lambda i: s.hexdigest("sha256"))
    sessions.add("started_at", "timestamptz", lambda i: s.timestamp())
    sessions.add("duration_ms", "integer", lambda i: rnd.randrange(10, 3_600_000))
    sessions.add("user_id", "bigint", lambda i: rnd.randrange(1, 10**9))

    products = Table("products")
    products.add("product_id", "integer PRIMARY KEY", lambda i: i)
    products.add("name", "text", lambda i: s.product_name())
    products.add("sku", "text", lambda i: s.sku())
    products.add("ean", "text", lambda i: en.ean13())
    products.add("price", "numeric(10,2)", lambda i: s.money(1_000))
    products.add("supplier", "text", lambda i: en.company())
    products.add("origin_country", "char(2)", lambda i: en.country_code())
    products.add("image_path", "text", lambda i: en.file_path(depth=3))
    products.add("description", "text", lambda i: en.text(max_nb_chars=200))
    products.add("in_stock", "boolean", lambda i: rnd.random() < 0.7)
    products.add("launched_on", "date", lambda i: s.recent_date())

    audit = Table("audit_events")
    audit.add("event_id", "bigint PRIMARY KEY", lambda i: i)
    audit.add("occurred_at", "timestamptz", lambda i: s.timestamp())
    audit.add("action", "text", lambda i: rnd.choice(["LOGIN", "LOGOUT", "UPDATE", "DELETE", "EXPORT"]))
    audit.add("actor_ip", "inet", lambda i: en.ipv4(), pii("ip_address"))
    audit.add("object_path", "text", lambda i: en.file_path(depth=2))
    audit.add("payload_md5", "text", lambda i: s.hexdigest("md5"))
    audit.add("server", "text", lambda i: en.hostname())
    audit.add("imya", "text", lambda i: en.first_name(), pii("person_name"))
    audit.add("data_rozhdeniya", "date", lambda i: s.birth_date(), pii("birth_date"))
    audit.add("adres", "text", lambda i: en.street_address(), pii("postal_address"))
    audit.add("f1", "text", lambda i: en.street_address(), pii("postal_address"))
    audit.add(
        "details",
        "jsonb",
        lambda i: json.dumps(
            {
                "actor": {"email": en.email(), "role": rnd.choice(["admin", "clerk", "auditor"])},
                "request": {"client_ip": en.ipv4(), "method": rnd.choice(["GET", "POST"]), "ms": rnd.randrange(900)},
                "items": [{"sku": s.sku(), "qty": rnd.randrange(1, 9)} for _ in range(rnd.randrange(1, 3))],
            }
        ),
        Label("json", paths=(("$.actor.email", "email"), ("$.request.client_ip", "ip_address"))),
    )

    return [customers, employees, orders, payments, tickets, sessions, products, audit]


def labels(built: list[Table]) -> dict[tuple[str, str, str], Label]:
    """(schema, table, column) -> label."""
    return {(SCHEMA, table.name, column.name): column.label for table in built for column in table.columns}


def build(conn: psycopg.Connection[Any], rows: int = 3000, seed: int = SEED) -> dict[tuple[str, str, str], Label]:
    """Create the labeled tables with ``rows`` rows each; return their labels."""
    sources = Sources(seed)
    built = tables(sources)
    for table in built:
        name = sql.Identifier(SCHEMA, table.name)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
        definition = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(column.name), sql.SQL(column.type))  # types are this file's text
            for column in table.columns
        )
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(name, definition))
        columns = sql.SQL(", ").join(sql.Identifier(column.name) for column in table.columns)
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(name, columns)) as copy:
            for i in range(1, rows + 1):
                copy.write_row([column.make(i) for column in table.columns])
        conn.execute(sql.SQL("ANALYZE {}").format(name))
    return labels(built)


def summary(table_labels: dict[tuple[str, str, str], Label]) -> str:
    tables_ = {key[1] for key in table_labels}
    positives = sum(1 for label in table_labels.values() if label.kind is not None)
    return (
        f"{len(table_labels)} labeled columns over {len(tables_)} tables: "
        f"{positives} with personal data, {len(table_labels) - positives} without"
    )
