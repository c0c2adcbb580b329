"""Streaming: backfilling a sanitized copy batch by batch, and re-tokenizing every copy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from pgveil.services import keys

Progress = Callable[[int], None]


def _no_progress(rows: int) -> None:
    pass


def estimated_rows(conn: psycopg.Connection[Any], source: str) -> int | None:
    """The planner's row estimate (an exact count of a big table takes long); None if unknown."""
    row = conn.execute(
        "SELECT reltuples::bigint FROM pg_catalog.pg_class WHERE oid = %s::regclass", (source,)
    ).fetchone()
    estimate = int(row[0]) if row else -1
    return estimate if estimate >= 0 else None


def backfill(conn: psycopg.Connection[Any], source: str, batch_size: int, progress: Progress = _no_progress) -> int:
    """The steps of CALL veil.backfill(), one committed transaction per batch.

    ``conn`` must be in autocommit mode; ``progress`` gets the rows of each batch.
    Returns the rows copied by this run (a resumed run counts only its own).
    """
    row = conn.execute("SELECT veil_private.backfill_start(%s::regclass, %s)", (source, batch_size)).fetchone()
    last_key = row[0] if row else None
    total = 0
    while True:
        with conn.transaction():
            batch = conn.execute(
                "SELECT last_key, copied, done FROM veil_private.backfill_batch(%s::regclass, %s, %s::text[])",
                (source, batch_size, last_key),
            ).fetchone()
        assert batch is not None
        last_key, copied, done = batch
        total += int(copied)
        progress(copied)
        if done:
            break
    conn.execute("SELECT veil_private.backfill_finish(%s::regclass)", (source,))
    return total


def rekey(conn: psycopg.Connection[Any], batch_size: int = 10_000) -> int:
    """Make a new token key current, re-tokenize every sanitized copy in committed
    batches, and destroy the old keys (CALL veil.rekey()); returns the new key's version.

    ``conn`` must be in autocommit mode: the procedure commits per batch.
    """
    conn.execute("CALL veil.rekey(%s)", (batch_size,))
    return keys.current_version(conn)
