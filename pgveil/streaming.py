"""Client side of streaming: a backfill driven batch by batch, for progress display."""

from __future__ import annotations

from collections.abc import Callable

import psycopg


def estimated_rows(conn: psycopg.Connection, source: str) -> int | None:
    """The planner's row estimate (an exact count of a big table takes long); None if unknown."""
    estimate = conn.execute(
        "SELECT reltuples::bigint FROM pg_catalog.pg_class WHERE oid = %s::regclass", (source,)
    ).fetchone()[0]
    return estimate if estimate >= 0 else None


def backfill(conn: psycopg.Connection, source: str, batch_size: int,
             progress: Callable[[int], None] = lambda copied: None) -> int:
    """The steps of CALL veil.backfill(), one committed transaction per batch.

    ``conn`` must be in autocommit mode; ``progress`` gets the rows of each batch.
    Returns the rows copied by this run (a resumed run counts only its own).
    """
    last_key = conn.execute(
        "SELECT veil_private.backfill_start(%s::regclass, %s)", (source, batch_size)
    ).fetchone()[0]
    total = 0
    while True:
        with conn.transaction():
            last_key, copied, done = conn.execute(
                "SELECT last_key, copied, done"
                " FROM veil_private.backfill_batch(%s::regclass, %s, %s::text[])",
                (source, batch_size, last_key),
            ).fetchone()
        total += copied
        progress(copied)
        if done:
            break
    conn.execute("SELECT veil_private.backfill_finish(%s::regclass)", (source,))
    return total
