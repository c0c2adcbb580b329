"""Anonymized dumps that stock pg_restore and psql load (docs/dump.md).

The schema is pg_dump's own (services/export_schema.py: the archive of everything
but the tables' rows, pgveil's objects left out). pgveil adds a TABLE DATA entry
per table to its table of contents,
with a data file written from ``COPY (<the policy's SELECT>) TO STDOUT`` by ``jobs``
workers on the same snapshot, and leaves pgveil's own objects out. A plain script is
that archive rendered by ``pg_restore -f``.

The output appears whole or not at all: everything is written beside it under a
``.pgveil-partial`` name and renamed at the end; any failure or interruption removes it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import pgveil
from pgveil import dump_manifest, pg_archive
from pgveil.dump_manifest import DumpedTable, Manifest
from pgveil.errors import PgveilError
from pgveil.services import export, export_copy, export_schema, subset
from pgveil.services.export import ExportTable, Snapshot
from pgveil.services.export_copy import Piece
from pgveil.services.export_schema import PG_CLASS

FORMATS = ("directory", "plain")
# zlib's default, which pg_dump's default gzip compression uses.
DEFAULT_GZIP_LEVEL = 6
# pg_dump ends a table's data with the end-of-copy marker.
END_OF_COPY = b"\\.\n\n\n"
PARTIAL_SUFFIX = ".pgveil-partial"


@dataclass(frozen=True, kw_only=True)
class DumpOptions(export_schema.Selection):
    output: Path
    archive_format: str = "directory"
    jobs: int = 1
    # gzip level 0-9; None: pg_dump's default (directory) or no compression (plain).
    compress: int | None = None
    schema_only: bool = False
    data_only: bool = False

    @property
    def compression(self) -> list[str]:
        return [] if self.compress is None else [f"--compress={self.compress}"]


@dataclass(frozen=True)
class Progress:
    """A report while dumping: ``table`` read ``rows``/``bytes`` more (done: its last).
    The first report names no table and gives the plan's totals."""

    table: str
    rows: int
    bytes: int
    done: bool
    estimated_rows: int | None = None
    tables: int | None = None


@dataclass(frozen=True)
class Plan:
    tables: list[ExportTable]
    # pgveil's own objects outside its schemas that the archive leaves out.
    left_out: list[str]
    # Per table a subset restricts (relid), the rows it keeps.
    kept_rows: dict[int, int]


@dataclass(frozen=True)
class DumpResult:
    manifest: Manifest
    output: Path
    seconds: float
    bytes: int
    left_out: list[str]


@dataclass(frozen=True)
class Validation:
    table: str
    error: str | None


def check_options(options: DumpOptions) -> None:
    if options.archive_format not in FORMATS:
        raise PgveilError(f"--format is directory or plain (got {options.archive_format!r})")
    if options.schema_only and options.data_only:
        raise PgveilError("--schema-only and --data-only exclude each other")
    if options.compress is not None and not 0 <= options.compress <= 9:
        raise PgveilError(f"--compress is a gzip level from 0 to 9 (got {options.compress})")
    if options.jobs < 1:
        raise PgveilError("--jobs is at least 1")
    export_schema.check_uncovered(options.uncovered)
    subset.check(options.subset)


def dump(source_url: str, options: DumpOptions, progress: Callable[[Progress], None] | None = None) -> DumpResult:
    """Write the dump; nothing is left at ``options.output`` unless it is complete."""
    check_options(options)
    started = time.monotonic()
    output = options.output
    _check_output(output)
    partial = output.with_name(output.name + PARTIAL_SUFFIX)
    _remove(partial)
    try:
        with export.exported_snapshot(source_url) as (conn, snapshot):
            if options.archive_format == "directory":
                manifest, left_out = _directory_archive(conn, snapshot, source_url, options, partial, progress)
            else:
                manifest, left_out = _plain_script(conn, snapshot, source_url, options, partial, progress)
        if output.is_dir():
            output.rmdir()  # empty, checked above; pg_dump accepts one too
        partial.rename(output)
        _fsync_parent(output)
    except OSError as e:
        _remove(partial)
        raise PgveilError(f"could not write the dump ({e.strerror or e}); the partial output was removed") from None
    except BaseException:
        _remove(partial)
        raise
    return DumpResult(manifest, output, time.monotonic() - started, _size(output), left_out)


def plan(source_url: str, options: DumpOptions) -> Plan:
    """Per table, what a dump would run (``--dry-run``); writes nothing but a
    scratch schema listing, removed at once."""
    check_options(options)
    with export.exported_snapshot(source_url) as (conn, snapshot), _scratch_dir(options.output) as scratch:
        planned = _schema(conn, snapshot, source_url, options, scratch)
        restricted = {t.relid: t.restriction for t in planned.tables if t.restriction is not None}
        return Plan(planned.tables, planned.left_out, subset.kept_rows(conn, restricted))


def validate(source_url: str, options: DumpOptions, limit: int = 100) -> list[Validation]:
    """Run each table's query on its first ``limit`` rows (``--validate``): every
    table's problem, not only the first; writes nothing but a scratch schema
    listing, removed at once."""
    check_options(options)
    results = []
    with export.exported_snapshot(source_url) as (conn, snapshot), _scratch_dir(options.output) as scratch:
        planned = _schema(conn, snapshot, source_url, options, scratch)
        uncovered = export.resolved_uncovered(conn, options.policy, options.uncovered)
        for table in planned.tables:
            # A reader of its own per table: a failed query ends its transaction.
            with export.open_reader(source_url, snapshot) as reader:
                try:
                    with reader.cursor().copy(
                        sql.SQL("COPY ({} LIMIT {}) TO STDOUT").format(sql.SQL(table.query), limit)
                    ) as copy:
                        for _ in copy:
                            pass
                    results.append(Validation(table.qualified, None))
                except psycopg.Error as e:
                    state = e.sqlstate or "XX000"
                    reason = export.failure(source_url, snapshot, options.policy, table, state, uncovered)
                    results.append(Validation(table.qualified, reason))
    return results


# -- the archive ---------------------------------------------------------------


def _directory_archive(
    conn: psycopg.Connection[Any],
    snapshot: Snapshot,
    url: str,
    options: DumpOptions,
    target: Path,
    progress: Callable[[Progress], None] | None,
) -> tuple[Manifest, list[str]]:
    with _scratch_dir(target) as scratch:
        planned = _schema(conn, snapshot, url, options, scratch)
        export.lock_tables(conn, planned.tables)
        uncovered = export.resolved_uncovered(conn, options.policy, options.uncovered)
        if progress is not None and not options.schema_only:
            estimate = sum(t.estimated_rows for t in planned.tables if t.restriction is None)
            progress(Progress("", 0, 0, False, estimate, len(planned.tables)))
        if options.schema_only:
            shutil.copytree(scratch, target)
            toc = planned.toc
        else:
            extra = [*options.compression, *(["--data-only"] if options.data_only else [])]
            toc = export_schema.archive_without_rows(conn, snapshot, url, options, planned, target, extra)
        dumped = _write_data(url, snapshot, options, uncovered, toc, planned.toc, planned.tables, target, progress)
        pg_archive.write(target, toc)
        manifest = _manifest(conn, snapshot, options, uncovered, "directory", dumped)
        dump_manifest.write_directory(target, manifest)
    return manifest, planned.left_out


def _plain_script(
    conn: psycopg.Connection[Any],
    snapshot: Snapshot,
    url: str,
    options: DumpOptions,
    target: Path,
    progress: Callable[[Progress], None] | None,
) -> tuple[Manifest, list[str]]:
    """The directory archive (uncompressed, beside the output) rendered as SQL."""
    with _scratch_dir(target) as scratch:
        archive = scratch / "archive"
        directory_options = replace(options, archive_format="directory", compress=0)
        manifest, left_out = _directory_archive(conn, snapshot, url, directory_options, archive, progress)
        manifest = replace(
            manifest,
            archive_format="plain",
            tables=tuple(replace(t, file="", bytes=0, sha256="") for t in manifest.tables),
        )
        level = options.compress or 0
        with _open_output(target, level) as out:
            out.write(dump_manifest.plain_line(manifest).encode())
            for chunk in export_schema.sql_script(archive, options):
                out.write(chunk)
    return manifest, left_out


@contextmanager
def _open_output(path: Path, level: int) -> Iterator[Any]:
    with open(path, "wb") as raw:
        if level:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0) as g:
                yield g
        else:
            yield raw
        raw.flush()
        os.fsync(raw.fileno())


def _schema(
    conn: psycopg.Connection[Any], snapshot: Snapshot, url: str, options: DumpOptions, scratch: Path
) -> export_schema.Schema:
    return export_schema.schema(conn, snapshot, url, options, scratch, not options.schema_only, options.compression)


def _write_data(
    url: str,
    snapshot: Snapshot,
    options: DumpOptions,
    uncovered: str,
    toc: pg_archive.Toc,
    schema_toc: pg_archive.Toc,
    tables: list[ExportTable],
    target: Path,
    progress: Callable[[Progress], None] | None,
) -> list[DumpedTable]:
    """Every table's data file, and its TABLE DATA entry in ``toc`` (largest first,
    as pg_dump orders them for a parallel restore)."""
    if not tables:
        return []
    table_entries = {e.oid: e for e in schema_toc.entries if e.desc == "TABLE" and e.table_oid == PG_CLASS}
    in_archive = {e.dump_id for e in toc.entries}
    next_id = max([e.dump_id for e in toc.entries + schema_toc.entries] + [0]) + 1
    jobs = [(next_id + i, t) for i, t in enumerate(tables)]
    level = DEFAULT_GZIP_LEVEL if options.compress is None else options.compress
    suffix = toc.data_suffix()
    if bool(level) != bool(suffix):
        raise PgveilError("pg_dump's archive compression does not match --compress")  # pg_dump decides the suffix
    work = export_copy.pieces(jobs, options.jobs, snapshot.block_size)
    files = _PieceFiles(work, target, suffix, level, progress)
    try:
        written = export_copy.read_all(url, snapshot, work, options.jobs, files.write)
    except export_copy.TableFailed as e:
        reason = export.failure(url, snapshot, options.policy, e.table, e.sqlstate, uncovered)
        raise PgveilError(f"{reason}; the partial dump was removed") from None
    dumped = {dump_id: files.assemble(dump_id, table, written) for dump_id, table in jobs}
    entries = []
    for dump_id, table in jobs:
        entry = pg_archive.table_data_entry(table_entries[str(table.relid)], dump_id, table.copy_statement)
        if entry.dependencies[0] not in in_archive:  # a data-only archive has no TABLE entries
            entry.dependencies = []
        entries.append(entry)
    entries.sort(key=lambda e: -dumped[e.dump_id].bytes)
    at = next(
        (i for i, e in enumerate(toc.entries) if e.section in (pg_archive.SECTION_DATA, pg_archive.SECTION_POST_DATA)),
        len(toc.entries),
    )
    toc.entries[at:at] = entries
    return [dumped[e.dump_id] for e in entries]


@dataclass(frozen=True)
class _Written:
    path: Path
    rows: int
    size: int
    digest: str


class _PieceFiles:
    """Each piece's rows into a data file of its own; a table read in several
    pieces is then the concatenation of its pieces' files, in order: gzip files
    concatenated are one gzip file (pg_restore reads on across members)."""

    def __init__(
        self, work: list[Piece], target: Path, suffix: str, level: int, progress: Callable[[Progress], None] | None
    ) -> None:
        self.target, self.suffix, self.level, self.progress = target, suffix, level, progress
        self.lock = threading.Lock()
        self.unfinished: dict[int, int] = {}
        for piece in work:
            self.unfinished[piece.piece_id] = self.unfinished.get(piece.piece_id, 0) + 1

    def path(self, dump_id: int, part: int | None = None) -> Path:
        return self.target / f"{dump_id}.dat{self.suffix}{'' if part is None else f'.{part}'}"

    def write(self, piece: Piece, copy: Callable[[Callable[[bytes], None]], None]) -> _Written:
        path = self.path(piece.piece_id, None if piece.parts == 1 else piece.part)
        sink = _DataFile(path, self.level)
        rows = 0

        def take(chunk: bytes) -> None:
            nonlocal rows
            sink.write(chunk)
            # COPY's text format ends every row with one newline (a newline in a value is written \\n).
            count = chunk.count(b"\n")
            rows += count
            if self.progress is not None:
                self.progress(Progress(piece.table.qualified, count, len(chunk), False))

        try:
            copy(take)
            if piece.last:
                sink.write(END_OF_COPY)
            size, digest = sink.close()
        except BaseException:
            sink.abandon()
            raise
        with self.lock:
            self.unfinished[piece.piece_id] -= 1
            done = self.unfinished[piece.piece_id] == 0
        if done and self.progress is not None:
            self.progress(Progress(piece.table.qualified, 0, 0, True))
        return _Written(path, rows, size, digest)

    def assemble(self, dump_id: int, table: ExportTable, written: dict[Piece, _Written]) -> DumpedTable:
        parts = sorted((p for p in written if p.piece_id == dump_id), key=lambda p: p.part)
        if len(parts) == 1:
            w = written[parts[0]]
            return DumpedTable(table.schema, table.table, w.rows, table.columns, w.path.name, w.size, w.digest)
        path = self.path(dump_id)
        digest = hashlib.sha256()
        with path.open("wb") as out:
            for piece in parts:
                with written[piece].path.open("rb") as part:
                    while chunk := part.read(export_copy.BUFFER_BYTES):
                        out.write(chunk)
                        digest.update(chunk)
                written[piece].path.unlink()
            out.flush()
            os.fsync(out.fileno())
        rows = sum(written[p].rows for p in parts)
        return DumpedTable(
            table.schema, table.table, rows, table.columns, path.name, path.stat().st_size, digest.hexdigest()
        )


class _DataFile:
    """A data file written (gzip when ``level``), hashed and synced on a thread of
    its own, one buffer behind its producer."""

    def __init__(self, path: Path, level: int) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close() or abandon()
        self.compressor = zlib.compressobj(level, zlib.DEFLATED, 31) if level else None
        self.digest = hashlib.sha256()
        self.size = 0
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgveil-compress")
        self.last: Future[None] | None = None

    def _put(self, data: bytes) -> None:
        if data:
            self.file.write(data)
            self.digest.update(data)
            self.size += len(data)

    def _take(self, chunk: bytes, final: bool) -> None:
        if self.compressor is None:
            self._put(chunk)
        else:
            self._put(self.compressor.compress(chunk))
            if final:
                self._put(self.compressor.flush())

    def write(self, chunk: bytes, final: bool = False) -> None:
        if self.last is not None:
            self.last.result()
        self.last = self.pool.submit(self._take, chunk, final)

    def close(self) -> tuple[int, str]:
        self.write(b"", final=True)
        assert self.last is not None
        self.last.result()
        self.pool.shutdown()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return self.size, self.digest.hexdigest()

    def abandon(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.file.close()


def _manifest(
    conn: psycopg.Connection[Any],
    snapshot: Snapshot,
    options: DumpOptions,
    uncovered: str,
    archive_format: str,
    tables: list[DumpedTable],
) -> Manifest:
    return Manifest(
        pgveil_version=pgveil.__version__,
        archive_format=archive_format,
        policy=options.policy,
        rules_hash=export.rules_hash(conn, options.policy, uncovered),
        uncovered=uncovered,
        source_server_version=snapshot.server_version,
        source_server_version_num=snapshot.server_version_num,
        source_database=snapshot.database,
        snapshot_time=snapshot.taken_at,
        sections="schema" if options.schema_only else "data" if options.data_only else "all",
        tables=tuple(sorted(tables, key=lambda t: (t.schema, t.table))),
        subset=options.subset.shape(),
    )


# -- files -----------------------------------------------------------------------


def _check_output(output: Path) -> None:
    if output.is_dir() and any(output.iterdir()):
        raise PgveilError(f"{output} exists and is not empty: choose a new path")
    if output.exists() and not output.is_dir():
        raise PgveilError(f"{output} exists: choose a new path")
    if not output.parent.is_dir():
        raise PgveilError(f"{output.parent} is not a directory")


@contextmanager
def _scratch_dir(beside: Path) -> Iterator[Path]:
    """A directory next to ``beside`` (same file system), removed afterwards."""
    path = beside.with_name(beside.name + ".pgveil-scratch")
    _remove(path)
    path.mkdir()
    try:
        yield path
    finally:
        _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_parent(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.iterdir())
