"""Anonymized dumps that stock pg_restore and psql load (docs/dump.md).

The schema is pg_dump's own: it runs twice on the export's snapshot, first
``--schema-only`` (which tables the selection holds), then with every one of those
tables' data excluded (the archive: schema, sequence values, materialized view
refreshes). pgveil then adds a TABLE DATA entry per table to its table of contents,
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
import queue
import re
import shutil
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import pgveil
from pgveil import dump_manifest, pg_archive, pg_tools
from pgveil.dump_manifest import DumpedTable, Manifest
from pgveil.errors import PgveilError, server_message
from pgveil.services import export
from pgveil.services.export import ExportTable, Snapshot

FORMATS = ("directory", "plain")
# zlib's default, which pg_dump's default gzip compression uses.
DEFAULT_GZIP_LEVEL = 6
# Rows are compressed a buffer at a time, on a thread of their own.
BUFFER_BYTES = 1 << 20
# pg_dump ends a table's data with the end-of-copy marker.
END_OF_COPY = b"\\.\n\n\n"
PARTIAL_SUFFIX = ".pgveil-partial"
# Tables whose heap is this large are read through psql (see _dump_table).
PSQL_FROM_BYTES = 16 << 20
# The catalog of TOC entries naming a relation.
PG_CLASS = "1259"


@dataclass(frozen=True)
class DumpOptions:
    policy: str
    output: Path
    archive_format: str = "directory"
    jobs: int = 1
    # gzip level 0-9; None: pg_dump's default (directory) or no compression (plain).
    compress: int | None = None
    tables: tuple[str, ...] = ()
    exclude_tables: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()
    exclude_schemas: tuple[str, ...] = ()
    schema_only: bool = False
    data_only: bool = False
    uncovered: str | None = None
    # Large objects cannot be masked: a database that has some is refused unless
    # they are left out.
    no_large_objects: bool = False
    # As pg_dump's -O and -x: a plain script without ownership or grants (for a
    # server without the source's roles); pg_restore has them for an archive too.
    no_owner: bool = False
    no_privileges: bool = False


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
    if options.uncovered is not None and options.uncovered not in ("refuse", "keep", "null"):
        raise PgveilError(f"--uncovered is refuse, keep or null (got {options.uncovered!r})")


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
        _, tables, left_out, _ = _schema_and_tables(conn, snapshot, source_url, options, scratch)
        return Plan(tables, left_out)


def validate(source_url: str, options: DumpOptions, limit: int = 100) -> list[Validation]:
    """Run each table's query on its first ``limit`` rows (``--validate``): every
    table's problem, not only the first; writes nothing."""
    found = plan(source_url, options)
    results = []
    with export.exported_snapshot(source_url) as (_, snapshot):
        uncovered = ""
        for table in found.tables:
            with export.open_reader(source_url, snapshot) as reader:
                uncovered = uncovered or export.resolved_uncovered(reader, options.policy, options.uncovered)
                try:
                    with reader.cursor().copy(
                        sql.SQL("COPY ({} LIMIT {}) TO STDOUT").format(sql.SQL(table.query), limit)
                    ) as copy:
                        for _ in copy:
                            pass
                    results.append(Validation(table.qualified, None))
                except psycopg.Error as e:
                    state = e.sqlstate or "XX000"
                    results.append(
                        Validation(
                            table.qualified,
                            export.failure(source_url, snapshot, options.policy, table, state, uncovered),
                        )
                    )
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
        schema_toc, tables, left_out, toolkit = _schema_and_tables(conn, snapshot, url, options, scratch)
        export.lock_tables(conn, tables)
        uncovered = export.resolved_uncovered(conn, options.policy, options.uncovered)
        if progress is not None and not options.schema_only:
            progress(Progress("", 0, 0, False, sum(t.estimated_rows for t in tables), len(tables)))
        if options.schema_only:
            shutil.copytree(scratch, target)
            toc = schema_toc
        else:
            extra = ["--data-only"] if options.data_only else []
            raw = [(t.schema, t.table) for t in tables] + export.extension_config_tables(conn)
            extra += [f"--exclude-table-data={_exact_pattern(schema, table)}" for schema, table in raw]
            _pg_dump(url, snapshot, options, target, toolkit, extra)
            toc = pg_archive.read(target)
            _refuse_raw_data(toc)
        toc.entries = _without_toolkit(toc.entries, toolkit.objects)
        dumped = _write_data(url, snapshot, options, uncovered, toc, schema_toc, tables, target, progress)
        pg_archive.write(target, toc)
        manifest = _manifest(conn, snapshot, options, uncovered, "directory", dumped)
        dump_manifest.write_directory(target, manifest)
    return manifest, left_out


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
            _render_plain(archive, out, options)
    return manifest, left_out


def _render_plain(archive: Path, out: Any, options: DumpOptions) -> None:
    argv = [pg_tools.program("pg_restore"), "--file=-"]
    argv += ["--no-owner"] if options.no_owner else []
    argv += ["--no-privileges"] if options.no_privileges else []
    with subprocess.Popen([*argv, str(archive)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        while chunk := proc.stdout.read(BUFFER_BYTES):
            out.write(chunk)
        stderr = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise PgveilError(f"pg_restore could not render the plain script: {_tool_error(stderr)}")


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


def _schema_and_tables(
    conn: psycopg.Connection[Any], snapshot: Snapshot, url: str, options: DumpOptions, scratch: Path
) -> tuple[pg_archive.Toc, list[ExportTable], list[str], _Toolkit]:
    """pg_dump's schema of the selection, without pgveil's objects; the plan of
    every table in it that holds rows; what of pgveil was left out; pgveil's objects."""
    _refuse_large_objects(conn, options)
    toolkit = _toolkit(conn)
    _pg_dump(url, snapshot, options, scratch, toolkit, ["--schema-only"])
    toc = pg_archive.read(scratch)
    kept = _without_toolkit(toc.entries, toolkit.objects)
    kept_ids = {e.dump_id for e in kept}
    left_out = [
        f"{e.desc} {e.namespace + '.' if e.namespace else ''}{e.tag}" for e in toc.entries if e.dump_id not in kept_ids
    ]
    toc.entries = kept
    if options.schema_only:  # no rows: no rule is run, none is missing
        export.resolved_uncovered(conn, options.policy, options.uncovered)
        return toc, [], left_out, toolkit
    relations = [int(e.oid or 0) for e in kept if e.desc == "TABLE" and e.table_oid == PG_CLASS]
    plain = [
        int(r[0])
        for r in conn.execute(
            "SELECT c.oid::bigint FROM pg_catalog.pg_class c WHERE c.oid = ANY (%s::oid[]) AND c.relkind = 'r'",
            (relations,),
        )
    ]
    tables = export.plan(conn, options.policy, plain, options.uncovered)
    return toc, tables, left_out, toolkit


def _refuse_raw_data(toc: pg_archive.Toc) -> None:
    """pg_dump was told to write no rows; should it have (a kind of data this
    version does not know of), the dump stops and its partial output is removed."""
    for e in toc.entries:
        if e.had_dumper:
            raise PgveilError(
                f"pg_dump wrote data pgveil did not compute ({e.desc} {e.namespace}.{e.tag}); the partial dump was removed"
            )


def _refuse_large_objects(conn: psycopg.Connection[Any], options: DumpOptions) -> None:
    row = conn.execute("SELECT pg_catalog.count(*) FROM pg_catalog.pg_largeobject_metadata").fetchone()
    count = int(row[0]) if row else 0
    if count and not options.no_large_objects and not options.schema_only:
        raise PgveilError(
            f"the database has {count} large objects, which no rule can mask; dump with --no-large-objects "
            "to leave them out"
        )


@dataclass(frozen=True)
class _Toolkit:
    """pgveil's own objects: schemas and version tables pg_dump leaves out, and the
    (catalog, oid) of its objects elsewhere, taken out of pg_dump's output."""

    schemas: list[str]
    version_tables: list[tuple[str, str]]
    objects: set[tuple[str, str]]


def _toolkit(conn: psycopg.Connection[Any]) -> _Toolkit:
    schemas = export.toolkit_schemas(conn)
    objects = {(str(c), str(o)) for c, o in export.toolkit_objects(conn, schemas)}
    return _Toolkit(schemas, export.version_tables(conn), objects)


def _without_toolkit(entries: Sequence[pg_archive.Entry], pairs: set[tuple[str, str]]) -> list[pg_archive.Entry]:
    """The entries but pgveil's objects and everything that depends on them (their
    comments, privileges); pgveil's schemas were not dumped."""
    dropped = {e.dump_id for e in entries if (e.table_oid, e.oid) in pairs}
    grew = True
    while grew:
        more = {e.dump_id for e in entries if e.dump_id not in dropped and dropped.intersection(e.dependencies)}
        grew = bool(more)
        dropped |= more
    return [e for e in entries if e.dump_id not in dropped]


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
    written = _run_workers(
        url, snapshot, options.policy, uncovered, jobs, target, suffix, level, options.jobs, progress
    )
    entries = []
    for dump_id, table in jobs:
        entry = pg_archive.table_data_entry(table_entries[str(table.relid)], dump_id, table.copy_statement)
        if entry.dependencies[0] not in in_archive:  # a data-only archive has no TABLE entries
            entry.dependencies = []
        entries.append(entry)
    entries.sort(key=lambda e: -written[e.dump_id].bytes)
    at = next(
        (i for i, e in enumerate(toc.entries) if e.section in (pg_archive.SECTION_DATA, pg_archive.SECTION_POST_DATA)),
        len(toc.entries),
    )
    toc.entries[at:at] = entries
    return [written[e.dump_id] for e in entries]


def _run_workers(
    url: str,
    snapshot: Snapshot,
    policy: str,
    uncovered: str,
    jobs: list[tuple[int, ExportTable]],
    target: Path,
    suffix: str,
    level: int,
    workers: int,
    progress: Callable[[Progress], None] | None,
) -> dict[int, DumpedTable]:
    """Dump the tables, ``workers`` at a time, largest first; the first failure
    cancels the rest."""
    pending: queue.SimpleQueue[tuple[int, ExportTable]] = queue.SimpleQueue()
    for job in sorted(jobs, key=lambda j: -j[1].relation_bytes):
        pending.put(job)
    results: dict[int, DumpedTable] = {}
    stop = threading.Event()
    running = _Running()

    def work() -> None:
        with export.open_reader(url, snapshot) as reader:
            running.add(reader.cancel)
            while not stop.is_set():
                try:
                    dump_id, table = pending.get_nowait()
                except queue.Empty:
                    return
                path = target / f"{dump_id}.dat{suffix}"
                results[dump_id] = _dump_table(reader, url, snapshot, table, path, level, progress, running)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pgveil-dump") as pool:
        futures = [pool.submit(work) for _ in range(min(workers, len(jobs)))]
        try:
            error = _first_error(futures)
        except BaseException:
            error = None
            stop.set()
            running.cancel_all()
            raise
        finally:
            if error is not None:
                stop.set()
                running.cancel_all()
    if error is not None:
        if isinstance(error, _TableFailed):
            raise PgveilError(
                export.failure(url, snapshot, policy, error.table, error.sqlstate, uncovered)
                + "; the partial dump was removed"
            )
        raise error
    return results


def _first_error(futures: list[Future[None]]) -> BaseException | None:
    """The first worker's error as soon as it happens (the others are then
    cancelled), None when all finished."""
    waiting = set(futures)
    while waiting:
        # A timeout keeps the main thread responsive to Ctrl-C.
        done, waiting = wait(waiting, timeout=0.2, return_when=FIRST_EXCEPTION)
        for f in done:
            if f.exception() is not None:
                return f.exception()
    return None


class _Running:
    """How to stop what the workers are running: their connections' queries and
    their psql processes."""

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


class _TableFailed(Exception):
    def __init__(self, table: ExportTable, sqlstate: str) -> None:
        super().__init__(f"{table.qualified}: SQLSTATE {sqlstate}")
        self.table = table
        self.sqlstate = sqlstate


def _dump_table(
    reader: psycopg.Connection[Any],
    url: str,
    snapshot: Snapshot,
    table: ExportTable,
    path: Path,
    level: int,
    progress: Callable[[Progress], None] | None,
    running: _Running,
) -> DumpedTable:
    """One table's rows into its data file, a buffer at a time: read here,
    compressed and written by a second thread (zlib and file writes release the
    GIL). A large table is read through psql, which hands over its rows in large
    reads; psycopg hands every row to Python, about half a microsecond each."""
    sink = _DataFile(path, level)
    rows = 0

    def take(chunk: bytes) -> None:
        nonlocal rows
        sink.write(chunk)
        # COPY's text format ends every row with one newline (a newline in a value is written \n).
        count = chunk.count(b"\n")
        rows += count
        if progress is not None:
            progress(Progress(table.qualified, count, len(chunk), False))

    try:
        if table.relation_bytes >= PSQL_FROM_BYTES:
            _copy_through_psql(reader, url, snapshot, table, take, running)
        else:
            _copy_through_psycopg(reader, table, take)
        sink.write(END_OF_COPY)
        size, digest = sink.close()
    except BaseException:
        sink.abandon()
        raise
    if progress is not None:
        progress(Progress(table.qualified, 0, 0, True))
    return DumpedTable(table.schema, table.table, rows, table.columns, path.name, size, digest)


def _copy_through_psycopg(reader: psycopg.Connection[Any], table: ExportTable, take: Callable[[bytes], None]) -> None:
    buffer = bytearray()
    try:
        with reader.cursor().copy(sql.SQL("COPY ({}) TO STDOUT").format(sql.SQL(table.query))) as copy:
            for row in copy:
                buffer += row
                if len(buffer) >= BUFFER_BYTES:
                    take(bytes(buffer))
                    buffer.clear()
    except psycopg.errors.QueryCanceled:
        raise
    except psycopg.OperationalError as e:
        raise PgveilError(f"lost the connection while dumping {table.qualified}: {server_message(e)}") from None
    except psycopg.Error as e:
        raise _TableFailed(table, e.sqlstate or "XX000") from None
    take(bytes(buffer))


def _copy_through_psql(
    reader: psycopg.Connection[Any],
    url: str,
    snapshot: Snapshot,
    table: ExportTable,
    take: Callable[[bytes], None],
    running: _Running,
) -> None:
    """psql in the same snapshot; its errors as SQLSTATEs only (the message could
    quote a value)."""
    script = [s.as_string(reader) + ";" for s in export.reader_statements(snapshot)]
    script.append(f"COPY ({table.query}) TO STDOUT;")
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
        errors: list[bytes] = []
        collector = threading.Thread(target=lambda: errors.append(proc.stderr.read() if proc.stderr else b""))
        collector.start()
        try:
            proc.stdin.write("\n".join(script).encode())
            proc.stdin.close()
            while chunk := proc.stdout.read(BUFFER_BYTES):
                take(chunk)
            proc.wait()
        except BaseException:
            proc.terminate()
            raise
        finally:
            collector.join()
    if proc.returncode != 0:
        stderr = b"".join(errors).decode(errors="replace")
        state = re.search(r"ERROR:\s+([0-9A-Z]{5})\b", stderr)
        if state is None:
            raise PgveilError(f"psql could not dump {table.qualified}: {_tool_error(stderr)}")
        if state.group(1) == "57014":  # cancelled, as the other workers are after a failure
            raise psycopg.errors.QueryCanceled("canceled")
        raise _TableFailed(table, state.group(1))


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
    )


# -- pg_dump ---------------------------------------------------------------------


def _pg_dump(
    url: str, snapshot: Snapshot, options: DumpOptions, directory: Path, toolkit: _Toolkit, extra: list[str]
) -> None:
    """pg_dump of the selection on the snapshot into ``directory``, pgveil's schemas
    and large objects left out."""
    conninfo, env = pg_tools.connection(url)
    args = [pg_tools.program("pg_dump"), f"--dbname={conninfo}", "--format=directory", f"--file={directory}"]
    args += [f"--snapshot={snapshot.name}", "--no-blobs"]
    args += ["--no-owner"] if options.no_owner else []
    args += ["--no-privileges"] if options.no_privileges else []
    if options.compress is not None:
        args.append(f"--compress={options.compress}")
    if pg_tools.supports("pg_dump", "--no-statistics"):
        args.append("--no-statistics")  # pg_dump 18: statistics hold raw values
    args += [f"--table={p}" for p in options.tables]
    args += [f"--exclude-table={p}" for p in options.exclude_tables]
    args += [f"--schema={p}" for p in options.schemas]
    args += [f"--exclude-schema={p}" for p in options.exclude_schemas]
    args += [f"--exclude-schema={_quoted_pattern(s)}" for s in toolkit.schemas]
    args += [f"--exclude-table={_exact_pattern(s, t)}" for s, t in toolkit.version_tables]
    args += extra
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise PgveilError(f"pg_dump failed: {_tool_error(done.stderr)}")


def _tool_error(stderr: str) -> str:
    lines = [line.removeprefix("pg_dump: ").removeprefix("pg_restore: ") for line in stderr.splitlines()]
    return "; ".join(line.strip() for line in lines if line.strip() and not line.startswith("detail: ")) or "no message"


def _quoted_pattern(name: str) -> str:
    """A pg_dump pattern matching exactly ``name``: inside double quotes nothing is
    special but a double quote, written twice."""
    return '"' + name.replace('"', '""') + '"'


def _exact_pattern(schema: str, table: str) -> str:
    return f"{_quoted_pattern(schema)}.{_quoted_pattern(table)}"


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
