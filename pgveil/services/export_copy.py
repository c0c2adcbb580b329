"""The rows of an export, read out of the database by parallel workers.

Each table is one piece, or, when it is large and there are several workers, as many
pieces as workers: ranges of its heap's blocks (a TID range scan), so that one large
table's rules run on several backends at once. Every worker reads in the export's
snapshot and hands each piece's rows, a buffer at a time, to the caller's sink (a data
file for a dump). The first failure cancels the other workers' queries.
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from pgveil import pg_tools
from pgveil.errors import PgveilError, server_message
from pgveil.services import export, subset
from pgveil.services.export import ExportTable, Snapshot

# Rows reach the sink in buffers of about this size.
BUFFER_BYTES = 1 << 20
# A piece whose heap is this large is read through psql: psycopg hands every row
# to Python (about half a microsecond a row), psql hands over large reads.
PSQL_FROM_BYTES = 16 << 20
# A table this large is split into one piece per worker.
SPLIT_FROM_BYTES = 64 << 20

T = TypeVar("T")


@dataclass(frozen=True)
class Piece:
    """A table, or the part of its rows that meets ``conditions`` (on src, the table
    in its export query): part ``part`` of ``parts``. ``piece_id`` names it to the
    caller (a dump: the data entry's dump id)."""

    piece_id: int
    table: ExportTable
    part: int = 0
    parts: int = 1
    conditions: tuple[str, ...] = ()

    @property
    def last(self) -> bool:
        return self.part == self.parts - 1

    @property
    def bytes(self) -> int:
        return self.table.relation_bytes // self.parts

    @property
    def setup(self) -> str:
        """What the session sets for this piece: a table read in pieces is read in
        parallel already, and PostgreSQL's parallel workers on top of every piece
        would only crowd the CPUs."""
        workers = "0" if self.parts > 1 else "DEFAULT"
        return f"SET LOCAL max_parallel_workers_per_gather TO {workers}"

    @property
    def query(self) -> str:
        return self.table.select(*self.conditions)

    def stored_query(self) -> str:
        """The query in a session that stored the subset's places (see Restriction)."""
        return self.table.select(*self.conditions, stored=True)

    @property
    def through_psql(self) -> bool:
        # A subset's rows are read where its places are stored: in the worker's session.
        return self.bytes >= PSQL_FROM_BYTES and self.table.restriction is None


def block_range(first: int, end: int | None) -> tuple[str, ...]:
    """Conditions keeping the rows in heap blocks [first, end) (end None: to the end),
    read by a TID range scan."""
    conditions = [f"src.ctid >= '({first},0)'::tid"]
    if end is not None:
        conditions.append(f"src.ctid < '({end},0)'::tid")
    return tuple(conditions)


class TableFailed(Exception):
    """A table's query failed in the database (a rule on some row, most likely)."""

    def __init__(self, table: ExportTable, sqlstate: str) -> None:
        super().__init__(f"{table.qualified}: SQLSTATE {sqlstate}")
        self.table = table
        self.sqlstate = sqlstate


def pieces(jobs: list[tuple[int, ExportTable]], workers: int, block_size: int) -> list[Piece]:
    """The pieces to read, largest first (as pg_dump orders its tables)."""
    found: list[Piece] = []
    for piece_id, table in jobs:
        blocks = table.relation_bytes // block_size
        # A subset's rows are found by place (a TID scan): a block range would not narrow it.
        small = table.relation_bytes < SPLIT_FROM_BYTES or blocks < workers or table.restriction is not None
        if workers == 1 or small:
            found.append(Piece(piece_id, table))
            continue
        edges = [blocks * i // workers for i in range(workers)]
        for part, first in enumerate(edges):
            end = edges[part + 1] if part + 1 < workers else None
            found.append(Piece(piece_id, table, part, workers, block_range(first, end)))
    return sorted(found, key=lambda p: -p.bytes)


def read_all(
    url: str,
    snapshot: Snapshot,
    work: list[Piece],
    workers: int,
    handle: Callable[[Piece, Callable[[Callable[[bytes], None]], None]], T],
) -> dict[Piece, T]:
    """Each piece handed to ``handle(piece, copy)``, ``workers`` at a time, where
    ``copy(take)`` streams the piece's rows into ``take``. The first error is raised
    once every worker has stopped; it cancels the others first."""
    pending: queue.SimpleQueue[Piece] = queue.SimpleQueue()
    for piece in work:
        pending.put(piece)
    results: dict[Piece, T] = {}
    stop = threading.Event()
    running = _Running()

    def worker() -> None:
        with export.open_reader(url, snapshot) as reader:
            running.add(reader.cancel)
            stored = False
            while not stop.is_set():
                try:
                    piece = pending.get_nowait()
                except queue.Empty:
                    return
                if piece.table.restriction is not None and not stored:
                    _store_places(reader, piece.table.restriction)
                    stored = True

                def copy(take: Callable[[bytes], None], piece: Piece = piece) -> None:
                    if piece.through_psql:
                        _copy_through_psql(url, snapshot, piece, take, running)
                    else:
                        _copy_through_psycopg(reader, piece, take)

                results[piece] = handle(piece, copy)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pgveil-export") as pool:
        futures = [pool.submit(worker) for _ in range(min(workers, len(work)))]
        try:
            error = _first_error(futures)
        except BaseException:
            stop.set()
            running.cancel_all()
            raise
        if error is not None:
            stop.set()
            running.cancel_all()
    if error is not None:
        raise error
    return results


def _first_error(futures: list[Future[None]]) -> BaseException | None:
    """The first worker's error as soon as it happens, None when all finished."""
    waiting = set(futures)
    while waiting:
        # A timeout keeps the main thread responsive to Ctrl-C.
        done, waiting = wait(waiting, timeout=0.2, return_when=FIRST_EXCEPTION)
        for f in done:
            if f.exception() is not None:
                return f.exception()
    return None


class _Running:
    """How to stop what the workers run: their connections' queries, their psql."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stops: list[Callable[[], None]] = []

    def add(self, stop: Callable[[], None]) -> None:
        with self.lock:
            self.stops.append(stop)

    def cancel_all(self) -> None:
        with self.lock:
            for stop in self.stops:
                with suppress(psycopg.Error, OSError):
                    stop()


def _store_places(reader: psycopg.Connection[Any], restriction: subset.Restriction) -> None:
    """Evaluate the subset once for this session: every restricted table's query then
    reads its stored places."""
    try:
        reader.execute(restriction.store_places)
    except psycopg.errors.QueryCanceled:
        raise
    except psycopg.OperationalError as e:
        raise PgveilError(f"lost the connection while selecting the subset: {server_message(e)}") from None
    except psycopg.Error as e:
        # The message could quote a value a condition read.
        raise PgveilError(f"selecting the subset's rows failed (SQLSTATE {e.sqlstate or 'XX000'})") from None


def _copy_through_psycopg(reader: psycopg.Connection[Any], piece: Piece, take: Callable[[bytes], None]) -> None:
    buffer = bytearray()
    try:
        reader.execute(piece.setup)
        query = piece.stored_query() if piece.table.restriction is not None else piece.query
        with reader.cursor().copy(sql.SQL("COPY ({}) TO STDOUT").format(sql.SQL(query))) as copy:
            for row in copy:
                buffer += row
                if len(buffer) >= BUFFER_BYTES:
                    take(bytes(buffer))
                    buffer.clear()
    except psycopg.errors.QueryCanceled:
        raise
    except psycopg.OperationalError as e:
        raise PgveilError(f"lost the connection while reading {piece.table.qualified}: {server_message(e)}") from None
    except psycopg.Error as e:
        raise TableFailed(piece.table, e.sqlstate or "XX000") from None
    take(bytes(buffer))


def _copy_through_psql(
    url: str, snapshot: Snapshot, piece: Piece, take: Callable[[bytes], None], running: _Running
) -> None:
    """psql in the same snapshot; its errors as SQLSTATEs only (the message could
    quote a value)."""
    statements = [s.as_string(None) + ";" for s in export.reader_statements(snapshot)]
    statements.append(f"{piece.setup};")
    statements.append(f"COPY ({piece.query}) TO STDOUT;")
    conninfo, env = pg_tools.connection(url)
    argv = [pg_tools.program("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=sqlstate"]
    with subprocess.Popen(
        [*argv, f"--dbname={conninfo}", "--file=-"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        running.add(proc.terminate)
        with pg_tools.stderr_collected(proc) as errors:
            proc.stdin.write("\n".join(statements).encode())
            proc.stdin.close()
            while chunk := proc.stdout.read(BUFFER_BYTES):
                take(chunk)
            proc.wait()
    if proc.returncode != 0:
        stderr = b"".join(errors).decode(errors="replace")
        state = re.search(r"ERROR:\s+([0-9A-Z]{5})\b", stderr)
        if state is None:
            raise PgveilError(
                f"psql could not read {piece.table.qualified}: {pg_tools.error_lines(stderr.splitlines(), 'psql')}"
            )
        if state.group(1) == "57014":  # cancelled, as the other workers are after a failure
            raise psycopg.errors.QueryCanceled("canceled")
        raise TableFailed(piece.table, state.group(1))
