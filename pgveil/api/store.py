"""The API's record of operations, their logs and their webhook attempts.

Kept in SQLite under the service's state directory (``<data-dir>/state/
operations.sqlite3``): it must survive a restart of the service, the service
serves many databases (each request names its own) so none of them is its home,
and SQLite is transactional, needs no server and ships with Python. A request is
recorded without its secrets (database passwords, webhook headers): what a
record holds may be shown to any API caller.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    operation_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    created TEXT NOT NULL,
    started TEXT,
    ended TEXT,
    request TEXT NOT NULL,
    result TEXT,
    error TEXT,
    error_code TEXT,
    files TEXT NOT NULL,
    webhook_url TEXT
);
CREATE INDEX IF NOT EXISTS operations_created ON operations (created);
CREATE TABLE IF NOT EXISTS logs (
    id TEXT NOT NULL REFERENCES operations ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    at TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (id, seq)
);
CREATE TABLE IF NOT EXISTS webhook_attempts (
    id TEXT NOT NULL REFERENCES operations ON DELETE CASCADE,
    event TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at TEXT NOT NULL,
    http_status INTEGER,
    error TEXT
);
"""

QUEUED, IN_PROGRESS, SUCCESS, ERROR, CANCELLED = "queued", "in_progress", "success", "error", "cancelled"
FINISHED = (SUCCESS, ERROR, CANCELLED)
STATUSES = (QUEUED, IN_PROGRESS, SUCCESS, ERROR, CANCELLED)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Operation:
    id: str  # the service's own (pg_anon's internal_operation_id)
    operation_id: str  # the caller's (pg_anon's operation_id)
    kind: str
    status: str
    created: str
    started: str | None
    ended: str | None
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    error_code: str | None
    files: tuple[str, ...]
    webhook_url: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "internal_operation_id": self.id,
            "operation_id": self.operation_id,
            "kind": self.kind,
            "status": self.status,
            "created": self.created,
            "started": self.started,
            "ended": self.ended,
            "request": self.request,
            "result": self.result,
            "error": self.error,
            "error_code": self.error_code,
            "files": list(self.files),
            "webhook_status_url": self.webhook_url,
        }


def _operation(row: sqlite3.Row) -> Operation:
    return Operation(
        id=row["id"],
        operation_id=row["operation_id"],
        kind=row["kind"],
        status=row["status"],
        created=row["created"],
        started=row["started"],
        ended=row["ended"],
        request=json.loads(row["request"]),
        result=json.loads(row["result"]) if row["result"] else None,
        error=row["error"],
        error_code=row["error_code"],
        files=tuple(json.loads(row["files"])),
        webhook_url=row["webhook_url"],
    )


class Store:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "operations.sqlite3"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def create(
        self,
        kind: str,
        operation_id: str | None,
        request: dict[str, Any],
        files: Sequence[str],
        webhook_url: str | None,
    ) -> Operation:
        internal = uuid.uuid4().hex
        with self._transaction() as db:
            db.execute(
                "INSERT INTO operations (id, operation_id, kind, status, created, request, files, webhook_url)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    internal,
                    operation_id or internal,
                    kind,
                    QUEUED,
                    now(),
                    json.dumps(request),
                    json.dumps(list(files)),
                    webhook_url,
                ),
            )
        found = self.get(internal)
        assert found is not None
        return found

    def get(self, internal: str) -> Operation | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM operations WHERE id = ?", (internal,)).fetchone()
        return _operation(row) if row else None

    def find(
        self, *, kind: str | None = None, status: str | None = None, operation_id: str | None = None,
        offset: int = 0, limit: int = 50,
    ) -> tuple[list[Operation], int]:  # fmt: skip
        """A page of operations, newest first, and how many match in all."""
        where, params = [], []
        for column, value in (("kind", kind), ("status", status), ("operation_id", operation_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        condition = (" WHERE " + " AND ".join(where)) if where else ""
        with self._lock:
            total = self._db.execute(f"SELECT count(*) FROM operations{condition}", params).fetchone()[0]
            rows = self._db.execute(
                f"SELECT * FROM operations{condition} ORDER BY created DESC, id LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
        return [_operation(r) for r in rows], int(total)

    def start(self, internal: str) -> bool:
        """Queued → in progress; False when it was cancelled meanwhile."""
        with self._transaction() as db:
            done = db.execute(
                "UPDATE operations SET status = ?, started = ? WHERE id = ? AND status = ?",
                (IN_PROGRESS, now(), internal, QUEUED),
            )
            return done.rowcount == 1

    def finish(
        self, internal: str, status: str, *, result: dict[str, Any] | None = None, error: str | None = None,
        error_code: str | None = None,
    ) -> None:  # fmt: skip
        with self._transaction() as db:
            db.execute(
                "UPDATE operations SET status = ?, ended = ?, result = ?, error = ?, error_code = ? WHERE id = ?",
                (status, now(), json.dumps(result) if result is not None else None, error, error_code, internal),
            )

    def fail_interrupted(self) -> list[str]:
        """On start: operations the last run of the service left queued or in progress
        failed, for they will never finish; their ids."""
        with self._transaction() as db:
            ids = [
                r["id"] for r in db.execute("SELECT id FROM operations WHERE status IN (?, ?)", (QUEUED, IN_PROGRESS))
            ]
            db.execute(
                "UPDATE operations SET status = ?, ended = ?, error = ?, error_code = ? WHERE status IN (?, ?)",
                (
                    ERROR,
                    now(),
                    "the API service stopped before the operation finished",
                    "service_restarted",
                    QUEUED,
                    IN_PROGRESS,
                ),
            )
        return ids

    def delete(self, internal: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM operations WHERE id = ?", (internal,))

    def log(self, internal: str, message: str) -> None:
        with self._transaction() as db:
            seq = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM logs WHERE id = ?", (internal,)).fetchone()[0]
            db.execute("INSERT INTO logs (id, seq, at, message) VALUES (?, ?, ?, ?)", (internal, seq, now(), message))

    def logs(self, internal: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, at, message FROM logs WHERE id = ? ORDER BY seq", (internal,)
            ).fetchall()
        return [dict(r) for r in rows]

    def webhook_attempt(
        self, internal: str, event: str, attempt: int, http_status: int | None, error: str | None
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO webhook_attempts (id, event, attempt, at, http_status, error) VALUES (?, ?, ?, ?, ?, ?)",
                (internal, event, attempt, now(), http_status, error),
            )

    def webhook_attempts(self, internal: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT event, attempt, at, http_status, error FROM webhook_attempts WHERE id = ? ORDER BY rowid",
                (internal,),
            ).fetchall()
        return [dict(r) for r in rows]
