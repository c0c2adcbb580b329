"""`pgveil restore`: a pgveil dump loaded by stock pg_restore or psql, checked first.

Everything that can be checked is checked before the target is written to: the
manifest's format, the archive's version against the local pg_restore, the target
server's major version, the archive's integrity (toc.dat parses, every data file
has the size and SHA-256 the manifest records; a plain script ends with pg_dump's
trailer) and the target's state (empty, or --clean; for --mode data, the tables
exist and are empty). A restore that fails leaves the target as it was: a plain
script and ``-j 1`` run in one transaction; ``-j N`` is undone afterwards (the
database made by --create dropped, else the archive's objects dropped or the loaded
tables emptied). Messages quote the tools' own lines, never a row.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import secrets
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pgveil import dump_manifest, pg_archive, pg_tools, preflight
from pgveil.dump_manifest import Manifest
from pgveil.errors import PgveilError, server_message

MODES = ("full", "schema", "data")
# The oldest pg_restore that reads each archive version.
ARCHIVE_READERS = {(1, 14): 12, (1, 15): 16, (1, 16): 17}
TRAILER = "-- PostgreSQL database dump complete"
CHUNK = 1 << 20
# TOC entries naming a relation: what -t/-T select, and what an attached entry
# (index, constraint, data...) belongs to.
RELATIONS = frozenset(("TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE"))
# Entries that follow the objects they describe once these are restored.
ATTACHED = frozenset(("COMMENT", "ACL", "SECURITY LABEL", "SEQUENCE SET", "SEQUENCE OWNED BY"))
# Entries pg_restore handles itself, or only with its own --create: never dropped.
NEVER_DROPPED = frozenset(("DATABASE", "DATABASE PROPERTIES", "ENCODING", "STDSTRINGS", "SEARCHPATH"))
SYSTEM_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'"
NOT_EXTENSION_MEMBER = (
    "NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = {catalog}::regclass"
    " AND d.objid = {oid} AND d.deptype = 'e')"
)


@dataclass(frozen=True)
class RestoreOptions:
    mode: str = "full"
    tables: tuple[str, ...] = ()
    exclude_tables: tuple[str, ...] = ()
    jobs: int = 1
    clean: bool = False
    create: bool = False
    pre_sql: Path | None = None
    post_sql: Path | None = None
    no_owner: bool = False
    no_privileges: bool = False


@dataclass(frozen=True)
class RestoredTable:
    schema: str
    table: str
    # What the manifest says was dumped (0 in schema mode); what the target holds
    # (None: the table is not there).
    expected: int
    restored: int | None

    @property
    def ok(self) -> bool:
        return self.restored == self.expected

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True)
class RestoreResult:
    source: Path
    archive_format: str
    mode: str
    database: str
    created: bool
    manifest: Manifest
    tables: list[RestoredTable] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    @property
    def mismatches(self) -> list[RestoredTable]:
        return [t for t in self.tables if not t.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "archive_format": self.archive_format,
            "mode": self.mode,
            "database": self.database,
            "created": self.created,
            "policy": self.manifest.policy,
            "rules_hash": self.manifest.rules_hash,
            "source_server_version": self.manifest.source_server_version,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "tables": [t.as_dict() for t in self.tables],
        }


# -- the archive -----------------------------------------------------------------------


@dataclass
class _Archive:
    path: Path
    manifest: Manifest
    directory: bool
    toc: pg_archive.Toc | None = None
    gzipped: bool = False


def check_options(options: RestoreOptions) -> None:
    if options.mode not in MODES:
        raise PgveilError(f"--mode is full, schema or data (got {options.mode!r})")
    if options.jobs < 1:
        raise PgveilError("--jobs is at least 1")
    if options.clean and options.create:
        raise PgveilError("--clean and --create exclude each other: a database --create makes has nothing to clean")
    if options.clean and options.mode == "data":
        raise PgveilError("--clean drops and recreates the archive's objects: it does not go with --mode data")
    if options.create and options.mode == "data":
        raise PgveilError("--mode data loads rows into an existing schema: it does not go with --create")
    for flag, path in (("--pre-sql", options.pre_sql), ("--post-sql", options.post_sql)):
        if path is not None and not path.is_file():
            raise PgveilError(f"{flag} {path}: no such file")


def open_archive(path: Path) -> _Archive:
    """The archive at ``path``, checked whole (manifest, version, files) without a database."""
    manifest = dump_manifest.read(path)
    if path.is_dir():
        if manifest.archive_format != "directory":
            raise PgveilError(f"{path}: its manifest describes a {manifest.archive_format} dump, not a directory")
        toc = pg_archive.read(path)
        _check_reader(path, toc)
        _check_data_files(path, manifest, toc)
        return _Archive(path, manifest, True, toc)
    if manifest.archive_format != "plain":
        raise PgveilError(f"{path}: its manifest describes a {manifest.archive_format} dump, not a plain script")
    gzipped = dump_manifest.is_gzip(path)
    _check_trailer(path, gzipped)
    return _Archive(path, manifest, False, None, gzipped)


def _check_reader(path: Path, toc: pg_archive.Toc) -> None:
    version = toc.header.version[:2]
    needed = ARCHIVE_READERS[(version[0], version[1])]
    have = pg_tools.major_version("pg_restore")
    if have < needed:
        raise PgveilError(
            f"{path} is a pg_dump archive of version {version[0]}.{version[1]}, which pg_restore {needed} or newer "
            f"reads; the pg_restore here is version {have}: install PostgreSQL {needed}'s client programs"
        )


def _data_file(directory: Path, name: str) -> Path | None:
    for candidate in (name, name + ".gz"):
        if candidate and (directory / candidate).is_file():
            return directory / candidate
    return None


def _check_data_files(directory: Path, manifest: Manifest, toc: pg_archive.Toc) -> None:
    for entry in toc.entries:
        if entry.had_dumper and entry.filename and _data_file(directory, entry.filename) is None:
            raise PgveilError(
                f"{directory} is incomplete: the data file {entry.filename} of {entry.namespace}.{entry.tag} is missing"
            )
    for table in manifest.tables:
        if not table.file:
            continue
        path = directory / table.file
        if not path.is_file():
            raise PgveilError(f"{directory} is incomplete: the data file {table.file} of {table.qualified} is missing")
        size = path.stat().st_size
        if size != table.bytes:
            raise PgveilError(
                f"{directory} is corrupt: the data file {table.file} of {table.qualified} has {size} bytes, "
                f"the manifest records {table.bytes}"
            )
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != table.sha256:
            raise PgveilError(
                f"{directory} is corrupt: the data file {table.file} of {table.qualified} does not have the "
                "SHA-256 the manifest records"
            )


def _check_trailer(path: Path, gzipped: bool) -> None:
    """A plain script is complete when pg_dump's trailer is its last statement
    (after it: comment lines, blanks, and pg_dump's ``\\unrestrict`` line)."""
    complete = False
    try:
        with _open_script(path, gzipped) as f:
            for raw in f:
                line = raw.rstrip(b"\r\n")
                if line == TRAILER.encode():
                    complete = True
                elif complete and line.strip() and not line.startswith((b"--", b"\\unrestrict ")):
                    complete = False
    except (OSError, EOFError, zlib.error) as e:
        raise PgveilError(f"{path} is truncated or corrupt ({type(e).__name__}): restore refused") from None
    if not complete:
        raise PgveilError(f"{path} is truncated: it does not end with pg_dump's line {TRAILER!r}")


@contextmanager
def _open_script(path: Path, gzipped: bool) -> Iterator[BinaryIO]:
    if gzipped:
        with gzip.open(path, "rb") as g:
            yield g  # type: ignore[misc]
    else:
        with path.open("rb") as f:
            yield f


# -- table selection -------------------------------------------------------------------


def parse_name(name: str) -> tuple[str, str]:
    """``schema.table`` as SQL writes it: unquoted parts fold to lower case."""
    parts: list[str] = []
    i, text = 0, name.strip()
    while True:
        if text[i : i + 1] == '"':
            end = i + 1
            part = ""
            while True:
                close = text.find('"', end)
                if close < 0:
                    raise PgveilError(f"{name!r} is not a schema.table name: a double quote is not closed")
                part += text[end:close]
                if text[close + 1 : close + 2] == '"':
                    part += '"'
                    end = close + 2
                    continue
                i = close + 1
                break
        else:
            match = re.match(r"[^.\"]+", text[i:])
            if match is None:
                raise PgveilError(f"{name!r} is not a schema.table name")
            part = match.group(0).strip().lower()
            i += match.end()
        parts.append(part)
        if i >= len(text):
            break
        if text[i] != ".":
            raise PgveilError(f"{name!r} is not a schema.table name")
        i += 1
    if len(parts) != 2 or not all(parts):
        raise PgveilError(f"{name!r} is not a schema.table name (e.g. public.customer)")
    return parts[0], parts[1]


def select_entries(toc: pg_archive.Toc, tables: Sequence[str], exclude: Sequence[str]) -> set[int]:
    """The dump ids a restore of ``tables`` (all when empty) without ``exclude``
    needs: each table with what hangs on it (data, indexes, constraints, defaults,
    owned sequences, comments, grants; a foreign key only when the table it
    references comes along) and what it needs (schemas, types, functions)."""
    entries = toc.by_id()
    relations = {(e.namespace, e.tag): e.dump_id for e in toc.entries if e.desc in RELATIONS}

    def ids(names: Sequence[str]) -> set[int]:
        found = set()
        for name in names:
            key = parse_name(name)
            if key not in relations:
                raise PgveilError(f"the archive has no table {key[0]}.{key[1]}")
            found.add(relations[key])
        return found

    # What belongs to some relation: the relations and, transitively, what depends on one.
    bound = set(relations.values())
    _close_over(toc.entries, bound, lambda e, s: any(d in s for d in e.dependencies))
    if tables:
        chosen = ids(tables)

        def attached(e: pg_archive.Entry, s: set[int]) -> bool:
            if e.desc in RELATIONS:
                return False
            hangs_on = [d for d in e.dependencies if d in bound]
            return bool(hangs_on) and all(d in s for d in hangs_on)

        _close_over(toc.entries, chosen, attached)
        needed = set(chosen)
        stack = list(chosen)
        while stack:
            for d in entries[stack.pop()].dependencies:
                if d in entries and d not in needed:
                    needed.add(d)
                    stack.append(d)
        _close_over(
            toc.entries, needed, lambda e, s: e.desc in ATTACHED and bool(e.dependencies) and set(e.dependencies) <= s
        )
        chosen = needed
    else:
        chosen = set(entries)
    if exclude:
        dropped = ids(exclude)
        _close_over(toc.entries, dropped, lambda e, s: any(d in s for d in e.dependencies))
        chosen -= dropped
    return chosen


def _close_over(
    entries: Sequence[pg_archive.Entry], members: set[int], joins: Callable[[pg_archive.Entry, set[int]], bool]
) -> None:
    changed = True
    while changed:
        changed = False
        for e in entries:
            if e.dump_id not in members and joins(e, members):
                members.add(e.dump_id)
                changed = True


# -- the target ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    url: str
    database: str
    conninfo: str
    env: dict[str, str]


def _target(url: str) -> _Target:
    params = conninfo_to_dict(url)
    database = str(params.get("dbname") or "")
    if not database:
        raise PgveilError("the target URL names no database (postgresql://…/DBNAME)")
    conninfo, env = pg_tools.connection(url)
    env["PGAPPNAME"] = f"pgveil-restore-{secrets.token_hex(6)}"
    return _Target(url, database, conninfo, env)


def maintenance_url(url: str) -> str:
    """The same server's ``postgres`` database, to create or drop the target from."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))


def _connect(url: str) -> psycopg.Connection[Any]:
    return preflight.connect(url, autocommit=True)


def _check_server(conn: psycopg.Connection[Any], manifest: Manifest) -> None:
    version_num = int(_scalar(conn, "SHOW server_version_num"))
    if version_num // 10000 < manifest.source_major:
        raise PgveilError(
            f"the dump comes from PostgreSQL {manifest.source_major} and the target server is PostgreSQL "
            f"{version_num // 10000}: restoring into an older major version is not supported"
        )


CONTENTS = {
    "tables": f"""SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'f') AND {SYSTEM_SCHEMAS}
          AND {NOT_EXTENSION_MEMBER.format(catalog="'pg_catalog.pg_class'", oid="c.oid")}""",
    "views": f"""SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('v', 'm') AND {SYSTEM_SCHEMAS}
          AND {NOT_EXTENSION_MEMBER.format(catalog="'pg_catalog.pg_class'", oid="c.oid")}""",
    "sequences": f"""SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'S' AND {SYSTEM_SCHEMAS}
          AND {NOT_EXTENSION_MEMBER.format(catalog="'pg_catalog.pg_class'", oid="c.oid")}""",
    "functions": f"""SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE {SYSTEM_SCHEMAS} AND {NOT_EXTENSION_MEMBER.format(catalog="'pg_catalog.pg_proc'", oid="p.oid")}""",
    "types": f"""SELECT count(*) FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
        WHERE {SYSTEM_SCHEMAS} AND t.typelem = 0
          AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c')
          AND {NOT_EXTENSION_MEMBER.format(catalog="'pg_catalog.pg_type'", oid="t.oid")}""",
}


def contents(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """How many objects of each kind a database holds outside the system schemas
    (extensions' members not counted)."""
    return {kind: int(_scalar(conn, query)) for kind, query in CONTENTS.items()}


def _describe(counts: dict[str, int]) -> str:
    def one(kind: str, n: int) -> str:
        return f"{n} {kind if n != 1 else kind[:-1]}"

    return ", ".join(one(k, n) for k, n in counts.items() if n)


def _names(conn: psycopg.Connection[Any], query: str) -> set[str]:
    return {str(r[0]) for r in conn.execute(query).fetchall()}


def _can_set_replication_role(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT rolsuper OR pg_catalog.has_parameter_privilege(current_user, 'session_replication_role', 'SET')"
        " FROM pg_catalog.pg_roles WHERE rolname = current_user"
    ).fetchone()
    return bool(row and row[0])


def _scalar(conn: psycopg.Connection[Any], query: Any, params: Sequence[Any] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _relid(conn: psycopg.Connection[Any], schema: str, name: str) -> int | None:
    found = _scalar(
        conn,
        "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    )
    return None if found is None else int(found)


def _relation(schema: str, table: str) -> sql.Composable:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


# -- running the tools -----------------------------------------------------------------


@dataclass
class _Run:
    returncode: int
    lines: list[str]


def _run(argv: list[str], env: dict[str, str], stdin: Iterable[bytes] | None = None) -> _Run:
    """Run a tool, its stderr kept in memory (never on disk); Ctrl-C stops it too."""
    return _Run(*pg_tools.run(argv, env, stdin))


def _chunks(path: Path, gzipped: bool) -> Iterator[bytes]:
    with _open_script(path, gzipped) as f:
        while chunk := f.read(CHUNK):
            yield chunk


# -- restore ---------------------------------------------------------------------------


def restore(
    source: Path,
    target_url: str,
    options: RestoreOptions,
    progress: Callable[[str], None] | None = None,
) -> RestoreResult:
    """Check ``source`` and the target, then restore; a failure leaves the target as it was."""
    started = time.monotonic()
    check_options(options)
    say = progress or (lambda step: None)
    say("checking the archive")
    archive = open_archive(source)
    mode = _effective_mode(archive, options)
    _check_format_options(archive, options, mode)
    selected: set[int] | None = None
    if archive.toc is not None and (options.tables or options.exclude_tables):
        selected = select_entries(archive.toc, options.tables, options.exclude_tables)
    target = _target(target_url)
    say("checking the target")
    state = _prepare(archive, target, options, mode, selected)
    try:
        if options.create:
            with _connect(maintenance_url(target_url)) as maintenance:
                maintenance.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(target.database))
                )
            state.created = True
        if options.pre_sql is not None:
            say("running --pre-sql")
            try:
                _run_sql_file(target, options.pre_sql, "--pre-sql")
            except PgveilError as e:
                if state.created:
                    _drop_database(target)
                    raise PgveilError(f"{e}. The database {target.database} this restore created was dropped") from None
                raise PgveilError(f"{e}. Nothing was restored; the file's changes were rolled back") from None
        say("restoring")
        with tempfile.TemporaryDirectory(prefix="pgveil-restore-") as scratch:
            run = _restore(archive, target, options, mode, selected, state, Path(scratch))
    except KeyboardInterrupt:
        _undo(archive, target, options, mode, selected, state)
        raise
    if run.returncode != 0:
        tool = "pg_restore" if archive.directory else "psql"
        message = pg_tools.error_lines(run.lines, tool)
        undone = _undo(archive, target, options, mode, selected, state)
        raise PgveilError(f"{tool} failed: {message}. {undone}")
    say("counting rows")
    tables = _count(archive, target, mode, selected)
    if options.post_sql is not None:
        say("running --post-sql")
        try:
            _run_sql_file(target, options.post_sql, "--post-sql")
        except PgveilError as e:
            raise PgveilError(
                f"{e}. The restore itself completed; the file's changes were rolled back (it ran in one transaction)"
            ) from None
    return RestoreResult(
        source, archive.manifest.archive_format, mode, target.database, state.created, archive.manifest, tables,
        time.monotonic() - started,
    )  # fmt: skip


def _effective_mode(archive: _Archive, options: RestoreOptions) -> str:
    sections = archive.manifest.sections
    if sections == "schema" and options.mode == "data":
        raise PgveilError(f"{archive.path} holds no data (it was dumped with --schema-only): --mode data has nothing")
    if sections == "data":
        if options.mode == "schema":
            raise PgveilError(f"{archive.path} holds no schema (it was dumped with --data-only): --mode schema")
        if options.clean or options.create:
            raise PgveilError(f"{archive.path} holds data only (--data-only): it loads into an existing schema")
        return "data"
    if sections == "schema" and options.mode == "full":
        return "schema"
    return options.mode


def _check_format_options(archive: _Archive, options: RestoreOptions, mode: str) -> None:
    if archive.directory:
        return
    plain = f"{archive.path} is a plain script, restored whole by psql in one transaction"
    if options.tables or options.exclude_tables:
        raise PgveilError(f"{plain}: it cannot select tables (-t/-T need a directory archive)")
    if options.jobs > 1:
        raise PgveilError(f"{plain}: -j needs a directory archive")
    if options.clean:
        raise PgveilError(f"{plain}: it holds no DROP statements, so --clean needs a directory archive")
    if options.no_owner or options.no_privileges:
        raise PgveilError(
            f"{plain}: its OWNER and GRANT statements are part of it, so --no-owner/--no-privileges need "
            "a directory archive"
        )
    wanted = {"all": "full", "schema": "schema", "data": "data"}[archive.manifest.sections]
    if mode != wanted:
        raise PgveilError(f"{plain}: --mode {mode} needs a directory archive (this script restores --mode {wanted})")


@dataclass
class _State:
    """What the target held before, to put it back after a failed restore."""

    schemas: set[str] = field(default_factory=set)
    extensions: set[str] = field(default_factory=set)
    sequences: dict[tuple[str, str], tuple[int, bool]] = field(default_factory=dict)
    replication_role: bool = False
    created: bool = False
    # Once a tool may have written to the target, a failure is undone.
    written: bool = False


def _prepare(
    archive: _Archive, target: _Target, options: RestoreOptions, mode: str, selected: set[int] | None
) -> _State:
    state = _State()
    if options.create:
        with _connect(maintenance_url(target.url)) as conn:
            _check_server(conn, archive.manifest)
            if _scalar(conn, "SELECT true FROM pg_catalog.pg_database WHERE datname = %s", (target.database,)):
                raise PgveilError(
                    f"database {target.database} exists: --create makes a new one (drop it, or restore without --create)"
                )
        return state
    with _connect(target.url) as conn:
        _check_server(conn, archive.manifest)
        state.schemas = _names(conn, "SELECT nspname FROM pg_catalog.pg_namespace")
        state.extensions = _names(conn, "SELECT extname FROM pg_catalog.pg_extension")
        if mode == "data":
            _check_data_target(conn, archive, target, selected, state)
        elif not options.clean:
            counts = contents(conn)
            if any(counts.values()):
                raise PgveilError(
                    f"database {target.database} is not empty: it holds {_describe(counts)}. Restore into an empty "
                    "database, pass --clean to drop the archive's objects first, or --create a new database"
                )
    return state


def _data_tables(archive: _Archive, selected: set[int] | None) -> list[tuple[str, str]]:
    if archive.toc is None:
        return [(t.schema, t.table) for t in archive.manifest.tables]
    return [
        (str(e.namespace), str(e.tag))
        for e in archive.toc.entries
        if e.desc == "TABLE DATA" and (selected is None or e.dump_id in selected)
    ]


def _data_sequences(archive: _Archive, selected: set[int] | None) -> list[tuple[str, str]]:
    if archive.toc is None:
        return []
    return [
        (str(e.namespace), str(e.tag))
        for e in archive.toc.entries
        if e.desc == "SEQUENCE SET" and (selected is None or e.dump_id in selected)
    ]


def _check_data_target(
    conn: psycopg.Connection[Any], archive: _Archive, target: _Target, selected: set[int] | None, state: _State
) -> None:
    tables = _data_tables(archive, selected)
    missing, filled, relids = [], [], []
    for schema, table in tables:
        relid = _relid(conn, schema, table)
        if relid is None:
            missing.append(f"{schema}.{table}")
            continue
        relids.append(relid)
        if _scalar(conn, sql.SQL("SELECT EXISTS (SELECT FROM ONLY {})").format(_relation(schema, table))):
            filled.append(f"{schema}.{table}")
    if missing:
        raise PgveilError(
            f"--mode data loads rows into an existing schema, and database {target.database} lacks "
            f"{len(missing)} of the archive's tables ({', '.join(missing[:5])}): restore the schema first "
            "(--mode schema)"
        )
    if filled:
        raise PgveilError(
            f"--mode data loads into empty tables, and {len(filled)} of the archive's tables in database "
            f"{target.database} hold rows ({', '.join(filled[:5])}): empty them first"
        )
    state.replication_role = _can_set_replication_role(conn)
    if not state.replication_role:
        foreign_keys = int(
            _scalar(
                conn,
                "SELECT count(*) FROM pg_catalog.pg_constraint WHERE contype = 'f'"
                " AND (conrelid = ANY(%s::oid[]) OR confrelid = ANY(%s::oid[]))",
                (relids, relids),
            )
        )
        if foreign_keys:
            role = _scalar(conn, "SELECT current_user")
            raise PgveilError(
                f"--mode data loads tables that have {foreign_keys} foreign keys: loading them in any order "
                f"needs session_replication_role = replica, which role {role} may not set. Restore as a superuser, "
                f"or GRANT SET ON PARAMETER session_replication_role TO {role}"
            )
    for schema, seq in _data_sequences(archive, selected):
        found = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(_relation(schema, seq))).fetchone()
        if found is not None:
            state.sequences[(schema, seq)] = (int(found[0]), bool(found[1]))


def _psql(target: _Target) -> list[str]:
    """psql that stops at the first error and commits all or nothing."""
    return [
        pg_tools.program("psql"),
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "-d",
        target.conninfo,
    ]


def _run_sql_file(target: _Target, path: Path, flag: str) -> None:
    run = _run([*_psql(target), "-f", str(path)], target.env)
    if run.returncode != 0:
        raise PgveilError(f"{flag} {path} failed: {pg_tools.error_lines(run.lines, 'psql')}")


def _tool_env(target: _Target, mode: str, state: _State) -> dict[str, str]:
    env = dict(target.env)
    if mode == "data" and state.replication_role:
        env["PGOPTIONS"] = (env.get("PGOPTIONS", "") + " -c session_replication_role=replica").strip()
    return env


def _restore(
    archive: _Archive,
    target: _Target,
    options: RestoreOptions,
    mode: str,
    selected: set[int] | None,
    state: _State,
    scratch: Path,
) -> _Run:
    env = _tool_env(target, mode, state)
    state.written = True
    if not archive.directory:
        return _run([*_psql(target), "-f", "-"], env, _chunks(archive.path, archive.gzipped))
    argv = [pg_tools.program("pg_restore"), "--exit-on-error", "-d", target.conninfo]
    if mode == "schema":
        argv.append("--schema-only")
    elif mode == "data":
        argv.append("--data-only")
    if options.clean:
        argv += ["--clean", "--if-exists"]
    if options.no_owner:
        argv.append("--no-owner")
    if options.no_privileges:
        argv.append("--no-privileges")
    if options.jobs > 1:
        argv.append(f"--jobs={options.jobs}")
    else:
        argv.append("--single-transaction")
    if selected is not None:
        argv.append(f"--use-list={_write_list(archive.path, selected, scratch, env)}")
    return _run([*argv, str(archive.path)], env)


def _write_list(directory: Path, selected: set[int], scratch: Path, env: dict[str, str]) -> Path:
    """pg_restore's own list of the archive, cut down to the selected entries."""
    listed = subprocess.run(
        [pg_tools.program("pg_restore"), "--list", str(directory)], env=env, capture_output=True, text=True
    )
    if listed.returncode != 0:
        raise PgveilError(f"pg_restore --list failed: {pg_tools.error_lines(listed.stderr.splitlines(), 'pg_restore')}")
    kept = []
    for line in listed.stdout.splitlines():
        m = re.match(r"\s*(\d+);", line)
        if m is None or int(m.group(1)) in selected:
            kept.append(line)
    path = scratch / "restore.list"
    path.write_text("\n".join(kept) + "\n")
    return path


def _count(archive: _Archive, target: _Target, mode: str, selected: set[int] | None) -> list[RestoredTable]:
    wanted = set(_data_tables(archive, selected)) if archive.toc is not None else None
    result = []
    with _connect(target.url) as conn:
        for t in archive.manifest.tables:
            if wanted is not None and (t.schema, t.table) not in wanted:
                continue
            restored = None
            if _relid(conn, t.schema, t.table) is not None:
                restored = int(_scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(_relation(t.schema, t.table))))
            result.append(RestoredTable(t.schema, t.table, 0 if mode == "schema" else t.rows, restored))
    return result


# -- putting the target back -----------------------------------------------------------


def _terminate(target: _Target, conn: psycopg.Connection[Any]) -> None:
    """End the sessions the tools left (a worker of an interrupted pg_restore)."""
    conn.execute(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity"
        " WHERE application_name = %s AND pid <> pg_catalog.pg_backend_pid()",
        (target.env["PGAPPNAME"],),
    )


def _drop_database(target: _Target) -> None:
    with _connect(maintenance_url(target.url)) as maintenance:
        _terminate(target, maintenance)
        maintenance.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target.database)))


def _undo(
    archive: _Archive,
    target: _Target,
    options: RestoreOptions,
    mode: str,
    selected: set[int] | None,
    state: _State,
) -> str:
    """Put the target back as it was; say what was done."""
    if state.created:
        _drop_database(target)
        return f"The database {target.database} this restore created was dropped"
    with _connect(target.url) as conn:
        _terminate(target, conn)
        if not state.written:
            return "Nothing was written"
        if not archive.directory or options.jobs == 1:
            return "Nothing was written: the restore ran in one transaction"
        assert archive.toc is not None
        if mode == "data":
            tables = _data_tables(archive, selected)
            try:
                if tables:
                    conn.execute(
                        sql.SQL("TRUNCATE ONLY {}").format(sql.SQL(", ").join(_relation(s, t) for s, t in tables))
                    )
                for (schema, seq), (value, called) in state.sequences.items():
                    relid = _relid(conn, schema, seq)
                    conn.execute("SELECT pg_catalog.setval(%s::oid::regclass, %s, %s)", (relid, value, called))
            except psycopg.Error as e:
                return f"Emptying the loaded tables again failed ({server_message(e)}): empty them yourself"
            return "The tables it loaded were emptied again"
        left = _drop_entries(conn, archive.toc, selected, state)
    note = " (--clean had dropped their earlier versions)" if options.clean else ""
    if left:
        return f"The objects the archive created were dropped{note}, except {len(left)}: {', '.join(left[:5])}"
    return f"The objects the archive created were dropped{note}"


def _drop_entries(
    conn: psycopg.Connection[Any], toc: pg_archive.Toc, selected: set[int] | None, state: _State
) -> list[str]:
    """Run the drop statements of the restored entries, last first; what could not be dropped."""
    pending = []
    for e in reversed(toc.entries):
        if selected is not None and e.dump_id not in selected:
            continue
        if not e.drop_stmt or e.desc in NEVER_DROPPED:
            continue
        if e.desc == "SCHEMA" and e.tag in state.schemas or e.desc == "EXTENSION" and e.tag in state.extensions:
            continue
        pending.append(e)
    for _ in range(3):
        failed = []
        for e in pending:
            try:
                conn.execute(str(e.drop_stmt))
            except psycopg.errors.UndefinedObject:
                pass
            except psycopg.errors.UndefinedTable:
                pass
            except psycopg.Error:
                failed.append(e)
        if not failed or len(failed) == len(pending):
            pending = failed
            break
        pending = failed
    return [f"{e.desc} {e.namespace + '.' if e.namespace else ''}{e.tag}" for e in pending]
