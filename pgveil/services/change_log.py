"""The change log of the sanitized copies, for governors: its size, its consumers'
positions, retention, and trimming (sql/0012_change_log/)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgveil.errors import PgveilError


@dataclass(frozen=True)
class ConsumerPosition:
    role: str
    position: str
    acknowledged_at: datetime | None
    registered_at: datetime
    behind_retention: bool  # entries it had not acknowledged were trimmed: it must resync


@dataclass(frozen=True)
class ChangeLogStatus:
    entries: int
    oldest: datetime | None
    horizon: str  # entries of transactions from here on are not readable yet
    trimmed_through: str
    max_age: timedelta | None
    consumers: list[ConsumerPosition]

    @property
    def behind(self) -> list[str]:
        return [c.role for c in self.consumers if c.behind_retention]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["max_age"] = None if self.max_age is None else self.max_age.total_seconds()
        return data


def status(conn: psycopg.Connection[Any]) -> ChangeLogStatus:
    """The log's size and retention, and every registered consumer's position."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM veil.change_log_status()").fetchone()
        assert row is not None
        consumers = [
            ConsumerPosition(**c)
            for c in cur.execute(
                "SELECT role::text AS role, position, acknowledged_at, registered_at, behind_retention"
                " FROM veil.change_consumers ORDER BY role::text"
            ).fetchall()
        ]
    return ChangeLogStatus(**row, consumers=consumers)


def trim(conn: psycopg.Connection[Any], batch_size: int = 10_000) -> int:
    """Delete what every consumer has acknowledged (or what is older than the maximum
    age), one committed batch at a time; returns the entries deleted.

    ``conn`` must be in autocommit mode: the procedure commits per batch.
    """
    if batch_size < 1:
        raise PgveilError("the batch size must be a positive number of entries")
    row = conn.execute("CALL veil.trim_change_log(%s, 0)", (batch_size,)).fetchone()
    return int(row[0]) if row else 0


def set_retention(conn: psycopg.Connection[Any], max_age: timedelta | None) -> None:
    """Trim entries older than ``max_age`` even if a consumer has not acknowledged them
    (None: never). Such a consumer is told it fell behind and must resync."""
    if max_age is not None and max_age <= timedelta(0):
        raise PgveilError("the maximum age must be positive (or none)")
    with conn.transaction():
        conn.execute("SELECT veil.set_change_log_retention(%s)", (max_age,))
