"""Token keys: which version is current, rotating to a new one.

The keys themselves never leave ``veil_private``: only their versions and
dates are read here. Re-tokenizing the sanitized copies under a new key is
:func:`pgveil.services.streaming.rekey`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from pgveil.errors import PgveilError


@dataclass(frozen=True)
class KeyVersion:
    version: int
    is_current: bool
    created_at: datetime


def versions(conn: psycopg.Connection[Any]) -> list[KeyVersion]:
    """Every key version that still exists, oldest first."""
    rows = conn.execute("SELECT version, is_current, created_at FROM veil.key_versions ORDER BY version").fetchall()
    return [KeyVersion(*row) for row in rows]


def current_version(conn: psycopg.Connection[Any]) -> int:
    """The version of the key that new tokens are made with."""
    row = conn.execute("SELECT version FROM veil.key_versions WHERE is_current").fetchone()
    if row is None:
        raise PgveilError("no token key is current — install pgveil (`pgveil install`) first")
    return int(row[0])


def rotate(conn: psycopg.Connection[Any]) -> int:
    """Make a new key current, in one committed transaction; returns its version.

    Older keys stay (tokens already made with them remain reproducible) until
    retired; the sanitized copies keep their tokens until re-tokenized.
    """
    with conn.transaction():
        row = conn.execute("SELECT veil.rotate_key()").fetchone()
    assert row is not None
    return int(row[0])
