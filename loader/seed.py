"""`--seed-rows N`: N customers, each with an address and a payment, by COPY.

Each chunk (addresses, customers, payments) is one transaction, so an
interrupted seed leaves whole customers behind, never a half-written chunk.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from loader.fakes import Fakes

CHUNK = 10_000


def _reserve(conn: psycopg.Connection[Any], sequence: str, count: int) -> list[int]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT pg_catalog.nextval(%s::regclass) FROM pg_catalog.generate_series(1, %s)", (sequence, count)
        )
    ]


def seed(
    conn: psycopg.Connection[Any],
    customers: int,
    fakes: Fakes,
    rng: random.Random,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] = lambda n: None,
) -> int:
    """Insert up to ``customers`` customers; returns how many were committed."""
    done = 0
    while done < customers and not (stop and stop.is_set()):
        n = min(CHUNK, customers - done)
        with conn.transaction():
            address_ids = _reserve(conn, "public.address_address_id_seq", n)
            customer_ids = _reserve(conn, "public.customer_customer_id_seq", n)
            rows = [fakes.customer(rng) for _ in range(n)]
            with conn.cursor().copy(
                "COPY public.address (address_id, address, district, city, postal_code, phone) FROM STDIN"
            ) as copy:
                for address_id, row in zip(address_ids, rows, strict=True):
                    copy.write_row((address_id, *row[:5]))
            with conn.cursor().copy(
                "COPY public.customer (customer_id, store_id, first_name, last_name, email, address_id) FROM STDIN"
            ) as copy:
                for customer_id, address_id, row in zip(customer_ids, address_ids, rows, strict=True):
                    copy.write_row((customer_id, *row[5:], address_id))
            with conn.cursor().copy("COPY public.payment (customer_id, amount) FROM STDIN") as copy:
                for customer_id in customer_ids:
                    copy.write_row((customer_id, fakes.amount(rng)))
        done += n
        progress(n)
    return done
