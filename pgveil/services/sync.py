"""Database-to-database sync (docs/sync.md): the export engine of a dump, with a
database as its sink.

Everything is planned on the source before the target is touched (the snapshot,
pg_dump's schema, every table's compiled SELECT, the units): every refusal comes
first. The source is only read, through connections whose transactions are read
only. Then, in the target:

1. pre-data (pg_dump's schema without indexes, constraints and triggers) and the
   progress schema ``pgveil_sync``, in one transaction;
2. the units, each one transaction: ``COPY … FROM STDIN`` of its rows, streamed
   from ``COPY (<the policy's SELECT>) TO STDOUT`` on the source a buffer at a time,
   and the row marking it done. A unit is a table, or a key range of a large one;
   ``jobs`` units at once, on one snapshot;
3. sequence values and post-data (indexes, constraints, triggers, materialized
   view refreshes), with the progress schema dropped, in one transaction;
4. the end check: rows per table, every constraint valid.

A sync stopped anywhere (SIGKILL included) resumes with ``resume``: the units done
are kept, the others are copied on a new snapshot.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from pgveil import pg_archive, pg_tools, preflight
from pgveil.errors import PgveilError, server_message
from pgveil.services import export, export_copy, export_schema, restore, server_identity, subset
from pgveil.services.export import ExportTable, Snapshot
from pgveil.services.export_copy import Piece

# A table whose heap is larger is copied in key ranges of about this much heap
# each: units that resume separately. A unit costs a transaction and a range
# read by index rather than one sequential scan: 64 MB units cost a quarter more
# than whole tables on the benchmark with cheap rules; at this size a resume
# copies again at most a few seconds' work.
UNIT_BYTES = 256 << 20
PROGRESS_SCHEMA = "pgveil_sync"
READ_ONLY = "-c default_transaction_read_only=on"
# Integer types a key range can be taken on.
INTEGER_TYPES = ("int2", "int4", "int8")

# A table's single-column integer primary key.
INTEGER_KEY = """
SELECT a.attname FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE i.indrelid = %s AND i.indisprimary AND i.indnkeyatts = 1 AND t.typname = ANY (%s)
"""

# The target's foreign keys: (constraint, child schema, child, parent schema, parent,
# deferrable, the child's referencing columns, whether all of them are nullable,
# the child's row key: its primary key, else a unique index on NOT NULL columns, or NULL).
TARGET_FOREIGN_KEYS = """
SELECT k.conname, cn.nspname, c.relname, pn.nspname, p.relname, k.condeferrable,
       ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(k.conkey) WITH ORDINALITY AS u(n, o)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.o),
       NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                   WHERE a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey) AND a.attnotnull),
       (SELECT ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS u(n, o)
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.n
                     WHERE u.o <= i.indnkeyatts ORDER BY u.o)
        FROM pg_catalog.pg_index i
        WHERE i.indrelid = k.conrelid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
          AND i.indexprs IS NULL
          AND NOT EXISTS (SELECT FROM pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS u(n, o)
                          JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.n
                          WHERE u.o <= i.indnkeyatts AND NOT a.attnotnull)
        ORDER BY i.indisprimary DESC, i.indnkeyatts, i.indexrelid LIMIT 1)
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_catalog.pg_class p ON p.oid = k.confrelid JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
WHERE k.contype = 'f'
ORDER BY 1
"""

# Constraints of the given target tables that are not valid.
NOT_VALID = """
SELECT n.nspname || '.' || c.relname || ': ' || k.conname
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE NOT k.convalidated AND (n.nspname, c.relname) IN (SELECT u.s, u.t FROM unnest(%s::text[], %s::text[]) AS u(s, t))
ORDER BY 1
"""

# Schemas of a target that is not empty, besides what restore.contents counts.
OTHER_SCHEMAS = """
SELECT count(*) FROM pg_catalog.pg_namespace n
WHERE n.nspname NOT IN ('public', 'pg_catalog', 'information_schema', %s) AND n.nspname !~ '^pg_(toast|temp_)'
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_namespace'::regclass
                  AND d.objid = n.oid AND d.deptype = 'e')
"""

PROGRESS_TABLES = """
CREATE SCHEMA {schema};
COMMENT ON SCHEMA {schema} IS 'pgveil sync: progress of an unfinished sync (dropped when it completes)';
CREATE TABLE {schema}.run (
    source text NOT NULL, policy text NOT NULL, rules_hash text NOT NULL, options text NOT NULL,
    snapshot_at text NOT NULL, started_at timestamptz NOT NULL DEFAULT pg_catalog.now());
CREATE TABLE {schema}.unit (
    unit_id integer NOT NULL, seq integer NOT NULL, schema_name text NOT NULL, table_name text NOT NULL,
    key_column text, lower_bound bigint, upper_bound bigint, level integer NOT NULL,
    PRIMARY KEY (unit_id, seq));
CREATE TABLE {schema}.done (
    unit_id integer NOT NULL, seq integer NOT NULL, rows bigint NOT NULL,
    done_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(), PRIMARY KEY (unit_id, seq));
"""


@dataclass(frozen=True, kw_only=True)
class SyncOptions(export_schema.Selection):
    jobs: int = 1
    schema_only: bool = False
    data_only: bool = False
    # data-only: empty the target's tables first (one transaction, no CASCADE).
    truncate: bool = False
    # Drop the source's objects in the target first (pg_restore --clean --if-exists).
    clean: bool = False
    # Continue the unfinished sync recorded in the target.
    resume: bool = False

    def fingerprint(self, uncovered: str) -> str:
        """What decides the rows and schema a sync writes: a resumed sync must
        have the same (jobs, clean and truncate do not change the result)."""
        decided = {
            "tables": self.tables,
            "exclude_tables": self.exclude_tables,
            "schemas": self.schemas,
            "exclude_schemas": self.exclude_schemas,
            "schema_only": self.schema_only,
            "data_only": self.data_only,
            "uncovered": uncovered,
            "no_large_objects": self.no_large_objects,
            "no_owner": self.no_owner,
            "no_privileges": self.no_privileges,
            "subset": dataclasses.asdict(self.subset),
        }
        return hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Part:
    """One table's rows in a unit: all of them, or those whose integer key is in
    [lower, upper) (None: unbounded)."""

    schema: str
    table: str
    key: str | None = None
    lower: int | None = None
    upper: int | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def conditions(self) -> tuple[str, ...]:
        if self.key is None:
            return ()
        column = sql.SQL("src.{}").format(sql.Identifier(self.key))
        found = []
        if self.lower is not None:
            found.append(sql.SQL("{} >= {}").format(column, sql.Literal(self.lower)))
        if self.upper is not None:
            found.append(sql.SQL("{} < {}").format(column, sql.Literal(self.upper)))
        return tuple(s.as_string(None) for s in found)

    def describe(self) -> str:
        if self.key is None:
            return "all rows"
        low = "" if self.lower is None else f"{self.lower} <= "
        high = "" if self.upper is None else f" < {self.upper}"
        return f"{low}{self.key}{high}"


@dataclass(frozen=True)
class Unit:
    """What one target transaction loads: usually one part; the tables of a cycle
    of foreign keys in a data-only sync, together."""

    unit_id: int
    parts: tuple[Part, ...]
    # Data-only: units of a level load once every unit of the levels before it
    # (their tables' parents) is done.
    level: int = 0


@dataclass(frozen=True)
class Progress:
    """A report while syncing: a phase starting (``phase``), rows loaded into
    ``table``, or a unit done (``unit_done``). The first report of the data phase
    gives the totals."""

    phase: str = ""
    table: str = ""
    rows: int = 0
    bytes: int = 0
    unit_done: bool = False
    units: int | None = None
    units_done_before: int | None = None
    estimated_rows: int | None = None


@dataclass(frozen=True)
class SyncedTable:
    schema: str
    table: str
    units: int
    rows_sent: int
    rows_in_target: int

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.qualified,
            "units": self.units,
            "rows_sent": self.rows_sent,
            "rows_in_target": self.rows_in_target,
        }


@dataclass(frozen=True)
class SyncResult:
    policy: str
    tables: list[SyncedTable]
    seconds: float
    units: int
    # Units found done in the target when resuming (their rows come from the
    # interrupted run's snapshot).
    units_resumed: int
    invalid_constraints: list[str]
    snapshot_at: str
    left_out: list[str]

    @property
    def rows(self) -> int:
        return sum(t.rows_sent for t in self.tables)

    @property
    def count_mismatches(self) -> list[SyncedTable]:
        return [t for t in self.tables if t.rows_sent != t.rows_in_target]

    @property
    def ok(self) -> bool:
        return not self.count_mismatches and not self.invalid_constraints

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "tables": [t.as_dict() for t in self.tables],
            "rows": self.rows,
            "units": {"total": self.units, "resumed": self.units_resumed},
            "snapshot_at": self.snapshot_at,
            "checks": {
                "row_counts_match": not self.count_mismatches,
                "count_mismatches": [t.qualified for t in self.count_mismatches],
                "invalid_constraints": self.invalid_constraints,
            },
            "left_out": self.left_out,
        }


@dataclass(frozen=True)
class PlannedTable:
    table: ExportTable
    parts: list[Part]
    # The rows a subset keeps (None: not restricted).
    kept_rows: int | None


@dataclass(frozen=True)
class SyncPlan:
    tables: list[PlannedTable]
    left_out: list[str]


def check_options(options: SyncOptions) -> None:
    if options.schema_only and options.data_only:
        raise PgveilError("--schema-only and --data-only exclude each other")
    if options.truncate and not options.data_only:
        raise PgveilError("--truncate goes with --data-only (a full sync starts from an empty target or --clean)")
    if options.clean and options.data_only:
        raise PgveilError("--clean drops and creates the schema: use --truncate with --data-only")
    if options.clean and options.resume:
        raise PgveilError("--resume continues the sync in the target and --clean starts again: choose one")
    if options.resume and options.schema_only:
        raise PgveilError("a schema-only sync is one transaction: there is nothing to resume")
    if options.jobs < 1:
        raise PgveilError("--jobs is at least 1")
    export_schema.check_uncovered(options.uncovered)
    subset.check(options.subset)


def read_only(url: str) -> str:
    """The URL with every session's transactions read only by default (pg_dump,
    psql and each connection of the sync): the source is never written to."""
    if "://" not in url:
        return f"{url} options='{READ_ONLY}'"
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = " ".join([*(v for k, v in query if k == "options"), READ_ONLY])
    query = [(k, v) for k, v in query if k != "options"] + [("options", options)]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


# -- planning ------------------------------------------------------------------------


def plan(source_url: str, options: SyncOptions) -> SyncPlan:
    """What a sync would copy (``--dry-run``): per table its rows (estimated, or a
    subset's), its rules and its units. Only the source is read."""
    check_options(options)
    source = read_only(source_url)
    with export.exported_snapshot(source) as (conn, snapshot), _scratch() as scratch:
        planned = export_schema.schema(conn, snapshot, source, options, scratch / "schema", not options.schema_only)
        parts = _parts(conn, planned.tables, options.jobs)
        restricted = {t.relid: t.restriction for t in planned.tables if t.restriction is not None}
        kept = subset.kept_rows(conn, restricted)
        return SyncPlan([PlannedTable(t, parts[t.relid], kept.get(t.relid)) for t in planned.tables], planned.left_out)


def _parts(conn: psycopg.Connection[Any], tables: Sequence[ExportTable], jobs: int) -> dict[int, list[Part]]:
    """Each table's parts: the whole table, or key ranges of about UNIT_BYTES of
    heap (and, with several jobs, at least one per job for a table of
    export_copy.SPLIT_FROM_BYTES or more, so that its rules run on several backends)
    for a table with a single-column integer primary key that its rule leaves
    unchanged (the bounds, kept in the target, are then values the target holds
    anyway). A subset's rows are found by the subset's query: not split."""
    found: dict[int, list[Part]] = {}
    for t in tables:
        whole = [Part(t.schema, t.table)]
        found[t.relid] = whole
        wanted = math.ceil(t.relation_bytes / UNIT_BYTES)
        if jobs > 1 and t.relation_bytes >= export_copy.SPLIT_FROM_BYTES:
            wanted = max(wanted, jobs)
        if wanted < 2 or t.restriction is not None:
            continue
        row = conn.execute(INTEGER_KEY, (t.relid, list(INTEGER_TYPES))).fetchone()
        key = None if row is None else str(row[0])
        if key is None or any(c.column == key and c.changes for c in t.columns):
            continue
        if not any(c.column == key for c in t.columns):
            continue
        bounds = conn.execute(
            sql.SQL("SELECT min({k}), max({k}) FROM ONLY {s}.{t}").format(
                k=sql.Identifier(key), s=sql.Identifier(t.schema), t=sql.Identifier(t.table)
            )
        ).fetchone()
        if bounds is None or bounds[0] is None:
            continue
        low, high = int(bounds[0]), int(bounds[1])
        count = min(wanted, high - low + 1)
        if count < 2:
            continue
        edges = [low + (high - low + 1) * i // count for i in range(1, count)]
        ranges = zip([None, *edges], [*edges, None], strict=True)
        found[t.relid] = [Part(t.schema, t.table, key, lo, hi) for lo, hi in ranges]
    return found


# -- the sync ------------------------------------------------------------------------


def sync(
    source_url: str, target_url: str, options: SyncOptions, progress: Callable[[Progress], None] | None = None
) -> SyncResult:
    """Copy the source into the target under the policy; refuses (before writing
    anything) what cannot be done. A sync that stops keeps its finished units in
    the target, for ``resume``."""
    check_options(options)
    started = time.monotonic()
    report = progress or (lambda _: None)
    source = read_only(source_url)
    source_server = server_identity.identify(source)
    target_server = server_identity.identify(target_url)
    if source_server.same_database(target_server):
        raise PgveilError("the target is the source database: choose another target")
    if target_server.major < source_server.major:
        raise PgveilError(
            f"the target server is PostgreSQL {target_server.major} and the source PostgreSQL "
            f"{source_server.major}: syncing into an older major version is not supported"
        )
    with (
        export.exported_snapshot(source) as (conn, snapshot),
        _scratch() as scratch,
        _Target(target_url, snapshot.encoding) as target,
    ):
        run = target.recorded_run()
        if run is not None and not options.resume and not options.clean:
            raise PgveilError(
                "the target holds an unfinished sync: continue it with --resume, or start again with --clean"
            )
        if run is None and options.resume:
            raise PgveilError("the target holds no unfinished sync to resume (a sync that completed leaves none)")
        if run is None and not options.clean and not options.data_only:
            target.refuse_not_empty()

        planned = export_schema.schema(conn, snapshot, source, options, scratch / "schema", not options.schema_only)
        export.lock_tables(conn, planned.tables)
        uncovered = export.resolved_uncovered(conn, options.policy, options.uncovered)
        if options.schema_only:
            pg_archive.write(scratch / "schema", planned.toc)
            report(Progress(phase="schema"))
            target.run_script(
                export_schema.sql_script(scratch / "schema", options, ["pre-data", "post-data"], clean=options.clean),
                before=target.clean_statements(planned.toc) if options.clean else "",
            )
            names = [(e.namespace, e.tag) for e in planned.toc.entries if e.desc == "TABLE" and e.namespace and e.tag]
            checks = target.invalid_constraints(names)
            return SyncResult(
                options.policy, [], time.monotonic() - started, 0, 0, checks, snapshot.taken_at, planned.left_out
            )

        archive = scratch / "archive"
        extra = ["--data-only"] if options.data_only else []
        toc = export_schema.archive_without_rows(conn, snapshot, source, options, planned, archive, extra)
        pg_archive.write(archive, toc)
        identity = {
            "source": source_server.source_key,
            "policy": options.policy,
            "rules_hash": export.rules_hash(conn, options.policy, uncovered),
            "options": options.fingerprint(uncovered),
        }
        by_name = {(t.schema, t.table): t for t in planned.tables}

        if run is not None and options.resume:
            _check_same_run(run, identity)
            units = target.recorded_units()
            missing = sorted(
                {f"{p.schema}.{p.table}" for u in units for p in u.parts} ^ {t.qualified for t in planned.tables}
            )
            if missing:
                raise PgveilError(
                    "the source's tables are not those of the interrupted sync (" + ", ".join(missing[:10]) + "): "
                    "start again with --clean"
                )
        else:
            units = _units(conn, target, planned.tables, options)
            setup = target.progress_statements(identity, snapshot.taken_at, units)
            if options.data_only:
                target.prepare_data_only(planned.tables, options.truncate, setup)
            else:
                report(Progress(phase="pre-data"))
                before = target.clean_statements(toc) if options.clean else ""
                target.run_script(
                    export_schema.sql_script(archive, options, ["pre-data"], options.clean), before=before, after=setup
                )

        done = target.done_units()
        pending = [u for u in units if u.unit_id not in done]
        report(
            Progress(
                phase="data",
                units=len(units),
                units_done_before=len(units) - len(pending),
                estimated_rows=sum(t.estimated_rows for t in planned.tables if t.restriction is None),
            )
        )
        loader = _Loader(source, snapshot, options, uncovered, target, by_name, report)
        loader.load(pending, ordered=options.data_only)

        sent = target.rows_sent()
        report(Progress(phase="post-data"))
        sections = ["data"] if options.data_only else ["data", "post-data"]
        target.run_script(
            export_schema.sql_script(archive, options, sections, clean=False),
            after=sql.SQL("DROP SCHEMA {} CASCADE;\n").format(sql.Identifier(PROGRESS_SCHEMA)).as_string(None),
        )
        names = [(t.schema, t.table) for t in planned.tables]
        counted = target.row_counts(names)
        unit_counts: dict[tuple[str, str], int] = {}
        for u in units:
            for p in u.parts:
                unit_counts[(p.schema, p.table)] = unit_counts.get((p.schema, p.table), 0) + 1
        tables = [SyncedTable(s, t, unit_counts.get((s, t), 0), sent.get((s, t), 0), counted[(s, t)]) for s, t in names]
        return SyncResult(
            options.policy,
            tables,
            time.monotonic() - started,
            len(units),
            len(units) - len(pending),
            target.invalid_constraints(names),
            snapshot.taken_at,
            planned.left_out,
        )


def _check_same_run(run: dict[str, str], identity: dict[str, str]) -> None:
    what = {
        "source": "another source database",
        "policy": "another policy",
        "rules_hash": "other rules (the policy's have changed since, or --uncovered)",
        "options": "other options (tables, schemas, sections, subset, --uncovered, -O, -x)",
    }
    differs = [what[k] for k in what if run.get(k) != identity[k]]
    if differs:
        raise PgveilError(
            "the unfinished sync in the target was started with "
            + "; ".join(differs)
            + ": resume it as it was started, or start again with --clean"
        )


def _units(
    conn: psycopg.Connection[Any], target: _Target, tables: Sequence[ExportTable], options: SyncOptions
) -> list[Unit]:
    """The units, largest first; for a data-only sync, in an order safe for the
    target's foreign keys (parents first), a cycle's tables in one unit."""
    if not options.data_only:
        parts = _parts(conn, tables, options.jobs)
        ordered = sorted(tables, key=lambda t: -t.relation_bytes)
        flat = [p for t in ordered for p in parts[t.relid]]
        return [Unit(i + 1, (p,)) for i, p in enumerate(flat)]
    keys = target.foreign_keys()
    groups = _load_order(tables, keys)
    self_referenced = {k.child_key for k in keys if k.child_key == k.parent_key}
    splittable = [t for t in tables if (t.schema, t.table) not in self_referenced]
    parts = _parts(conn, splittable, options.jobs)
    units: list[Unit] = []
    for level, group in groups:
        if len(group) > 1:
            units.append(Unit(len(units) + 1, tuple(Part(t.schema, t.table) for t in group), level))
            continue
        [t] = group
        for p in parts.get(t.relid, [Part(t.schema, t.table)]):
            units.append(Unit(len(units) + 1, (p,), level))
    return units


@dataclass(frozen=True)
class _ForeignKey:
    name: str
    child_schema: str
    child: str
    parent_schema: str
    parent: str
    deferrable: bool
    columns: tuple[str, ...] = ()
    # Every referencing column is nullable in the target.
    nullable: bool = False
    # The child's primary key (or a unique index on NOT NULL columns): () if none.
    row_key: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.child_schema}.{self.child}.{self.name}"

    @property
    def child_key(self) -> tuple[str, str]:
        return (self.child_schema, self.child)

    @property
    def parent_key(self) -> tuple[str, str]:
        return (self.parent_schema, self.parent)


def _load_order(tables: Sequence[ExportTable], keys: Sequence[_ForeignKey]) -> list[tuple[int, list[ExportTable]]]:
    """Groups of tables with their level, every parent in a lower level than its
    children: one table, or the tables of a cycle of foreign keys in the order
    that breaking the cycle leaves (_break_cycle, which refuses a cycle that
    cannot be broken)."""
    by_key = {(t.schema, t.table): t for t in tables}
    edges = [k for k in keys if k.child_key in by_key and k.parent_key in by_key and k.child_key != k.parent_key]
    parents: dict[tuple[str, str], set[tuple[str, str]]] = {n: set() for n in by_key}
    for k in edges:
        parents[k.child_key].add(k.parent_key)
    components = _strongly_connected(list(by_key), parents)
    levels: dict[tuple[str, str], int] = {}
    result: list[tuple[int, list[ExportTable]]] = []
    for component in components:
        members = set(component)
        outside = [levels[p] for n in component for p in parents[n] if p not in members]
        level = 1 + max(outside) if outside else 0
        levels.update((n, level) for n in component)
        if len(component) == 1:
            result.append((level, [by_key[component[0]]]))
            continue
        inner = [k for k in edges if k.child_key in members and k.parent_key in members]
        cycle = _break_cycle(component, inner, by_key)
        result.append((level, [by_key[n] for n in cycle.order]))
    return sorted(result, key=lambda found: found[0])


@dataclass(frozen=True)
class _Cycle:
    """How the tables of a cycle of foreign keys load, in one transaction: in
    ``order`` (parents first along the foreign keys not postponed); ``deferred``
    ones checked at commit; ``nulled`` ones loaded NULL, then set once every
    table of the cycle holds its rows."""

    order: list[tuple[str, str]]
    deferred: list[_ForeignKey]
    nulled: list[_ForeignKey]


def _break_cycle(
    nodes: Sequence[tuple[str, str]], edges: Sequence[_ForeignKey], tables: Mapping[tuple[str, str], ExportTable]
) -> _Cycle:
    """Postpone foreign keys until no cycle is left: every DEFERRABLE one (SET
    CONSTRAINTS ALL DEFERRED defers them all anyway), then, while a cycle
    remains, one of its foreign keys on nullable columns of a table with a row
    key (the key finds the rows again to set them), on the smallest such table
    (its rows are staged and updated). Refused, named, when a cycle has neither."""
    copied = {n: set(_copied_columns(tables[n])) for n in nodes}
    remaining = [k for k in edges if not k.deferrable]
    nulled: list[_ForeignKey] = []
    while True:
        parents: dict[tuple[str, str], set[tuple[str, str]]] = {n: set() for n in nodes}
        for k in remaining:
            parents[k.child_key].add(k.parent_key)
        order = _strongly_connected(nodes, parents)
        cyclic = next((set(c) for c in order if len(c) > 1), None)
        if cyclic is None:
            return _Cycle([c[0] for c in order], [k for k in edges if k.deferrable], nulled)
        inside = [k for k in remaining if k.child_key in cyclic and k.parent_key in cyclic]
        breakable = [
            k for k in inside if k.nullable and k.row_key and set(k.columns) | set(k.row_key) <= copied[k.child_key]
        ]
        if not breakable:
            raise PgveilError(
                "the target's foreign keys form a cycle that no order can load: tables "
                f"{', '.join(f'{s}.{t}' for s, t in sorted(cyclic))}; constraints "
                f"{', '.join(sorted(k.qualified for k in inside))} — none of them is DEFERRABLE or on nullable "
                "columns of a table with a primary key, where the cycle could be broken: make one of them "
                "DEFERRABLE in the target, or sync the schema too"
            )
        chosen = min(breakable, key=lambda k: (tables[k.child_key].relation_bytes, k.child_key, k.name))
        nulled.append(chosen)
        remaining.remove(chosen)


def _copied_columns(table: ExportTable) -> list[str]:
    """The columns the table's COPY loads: its export's columns (generated ones are
    left out, as they are from the COPY)."""
    return [c.column for c in table.columns]


def _strongly_connected(
    nodes: Sequence[tuple[str, str]], parents: dict[tuple[str, str], set[tuple[str, str]]]
) -> list[list[tuple[str, str]]]:
    """Tarjan's strongly connected components, each after every component it
    depends on (parents first)."""
    index: dict[tuple[str, str], int] = {}
    low: dict[tuple[str, str], int] = {}
    stack: list[tuple[str, str]] = []
    on_stack: set[tuple[str, str]] = set()
    found: list[list[tuple[str, str]]] = []

    def visit(node: tuple[str, str]) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for parent in sorted(parents[node]):
            if parent not in index:
                visit(parent)
                low[node] = min(low[node], low[parent])
            elif parent in on_stack:
                low[node] = min(low[node], index[parent])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            found.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found  # Tarjan emits a component after those it reaches: parents first


# -- loading units -------------------------------------------------------------------


class _TargetFailed(Exception):
    def __init__(self, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.error = error


class _Loader:
    """The sink: each unit's rows into the target in one transaction with the row
    marking it done."""

    def __init__(
        self,
        source: str,
        snapshot: Snapshot,
        options: SyncOptions,
        uncovered: str,
        target: _Target,
        tables: dict[tuple[str, str], ExportTable],
        report: Callable[[Progress], None],
    ) -> None:
        self.source, self.snapshot, self.options, self.uncovered = source, snapshot, options, uncovered
        self.target, self.tables, self.report = target, tables, report
        self.local = threading.local()
        self.connections: list[psycopg.Connection[Any]] = []
        self.lock = threading.Lock()

    def load(self, units: list[Unit], ordered: bool) -> None:
        try:
            if not ordered:
                self._read([(u, 0) for u in units], self.options.jobs)
                return
            # Parents first: a level starts once the levels before it are done.
            for level in sorted({u.level for u in units}):
                here = [u for u in units if u.level == level]
                for unit in (u for u in here if len(u.parts) > 1):
                    self._group(unit)
                self._read([(u, 0) for u in here if len(u.parts) == 1], self.options.jobs)
        finally:
            for c in self.connections:
                with suppress(psycopg.Error):
                    c.close()

    def _pieces(self, work: list[tuple[Unit, int]], workers: int) -> dict[Piece, tuple[Unit, int]]:
        """The readers' pieces. A table's key ranges read side by side by several
        workers are not read by PostgreSQL's parallel workers on top (Piece.setup);
        read one after the other, each may be."""
        ranges: dict[str, int] = {}
        for unit, seq in work:
            ranges[unit.parts[seq].qualified] = ranges.get(unit.parts[seq].qualified, 0) + 1
        found: dict[Piece, tuple[Unit, int]] = {}
        for i, (unit, seq) in enumerate(work):
            part = unit.parts[seq]
            parts = min(ranges[part.qualified], workers) if part.key else 1
            table = self.tables[(part.schema, part.table)]
            found[Piece(i, table, 0 if parts == 1 else 1, parts, part.conditions())] = (unit, seq)
        return found

    def _read(
        self,
        work: list[tuple[Unit, int]],
        workers: int,
        connection: psycopg.Connection[Any] | None = None,
        into: sql.Composed | None = None,
    ) -> None:
        if not work:
            return
        found = self._pieces(work, workers)

        def handle(piece: Piece, copy: Callable[[Callable[[bytes], None]], None]) -> None:
            unit, seq = found[piece]
            self._load(piece, unit, seq, copy, connection, into)

        try:
            export_copy.read_all(self.source, self.snapshot, list(found), workers, handle)
        except export_copy.TableFailed as e:
            reason = export.failure(
                self.source, self.snapshot, self.options.policy, e.table, e.sqlstate, self.uncovered
            )
            raise PgveilError(f"{reason}; {self._kept()}") from None

    def _group(self, unit: Unit) -> None:
        """A cycle's tables in one transaction, the cycle broken as _break_cycle
        says (again here: a resumed sync has only the recorded units): its
        deferrable foreign keys checked at commit; a table with postponed nullable
        ones COPYed into a staging table, inserted with those columns NULL, and
        set from the staging table, by its key, once every table is in."""
        seqs = {(p.schema, p.table): seq for seq, p in enumerate(unit.parts)}
        keys = [
            k
            for k in self.target.foreign_keys()
            if k.child_key in seqs and k.parent_key in seqs and k.child_key != k.parent_key
        ]
        cycle = _break_cycle(list(seqs), keys, self.tables)
        nulled = {n: [k for k in cycle.nulled if k.child_key == n] for n in cycle.order}
        conn = self.target.connect()
        self.connections.append(conn)
        loading = unit.parts[0].qualified
        try:
            if cycle.deferred:
                conn.execute("SET CONSTRAINTS ALL DEFERRED")
            for node in cycle.order:
                seq, loading = seqs[node], unit.parts[seqs[node]].qualified
                if not nulled[node]:
                    self._read([(unit, seq)], 1, conn)
                    continue
                stage = sql.Identifier(f"pgveil_sync_stage_{seq}")
                copied = _copied_columns(self.tables[node])
                columns = [sql.Identifier(c) for c in copied]
                # The COPY's columns only (not LIKE: that would keep a generated column,
                # which the COPY leaves out, NOT NULL).
                conn.execute(
                    sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM ONLY {} WITH NO DATA").format(
                        stage, sql.SQL(", ").join(columns), _table(node)
                    )
                )
                self._read([(unit, seq)], 1, conn, sql.SQL("COPY {} FROM STDIN").format(stage))
                postponed = {c for k in nulled[node] for c in k.columns}
                values = [sql.SQL("NULL") if c in postponed else sql.Identifier(c) for c in copied]
                conn.execute(
                    sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}").format(
                        _table(node), sql.SQL(", ").join(columns), sql.SQL(", ").join(values), stage
                    )
                )
            for node in cycle.order:
                if nulled[node]:
                    loading = unit.parts[seqs[node]].qualified
                    self._set_postponed(conn, node, seqs[node], nulled[node])
            conn.commit()
        except psycopg.Error as e:
            raise self._target_error(loading, e) from None
        for part in unit.parts:
            self.report(Progress(table=part.qualified, unit_done=True))

    def _set_postponed(
        self, conn: psycopg.Connection[Any], node: tuple[str, str], seq: int, keys: Sequence[_ForeignKey]
    ) -> None:
        """The postponed columns of the table's rows set from the staging table,
        joined on the row key (the values inserted from those same staged rows).
        A row not found again (a trigger of the target changed its key, or
        skipped it) stops the sync rather than leave its foreign key NULL."""
        stage, row, staged = sql.Identifier(f"pgveil_sync_stage_{seq}"), sql.Identifier("row"), sql.Identifier("staged")
        postponed = list(dict.fromkeys(c for k in keys for c in k.columns))
        some_set = sql.SQL(" OR ").join(
            sql.SQL("{}.{} IS NOT NULL").format(staged, sql.Identifier(c)) for c in postponed
        )
        found = conn.execute(sql.SQL("SELECT count(*) FROM {} AS {} WHERE {}").format(stage, staged, some_set))
        wanted = int((found.fetchone() or (0,))[0])
        updated = conn.execute(
            sql.SQL("UPDATE ONLY {} AS {} SET {} FROM {} AS {} WHERE {} AND ({})").format(
                _table(node),
                row,
                sql.SQL(", ").join(sql.SQL("{c} = {s}.{c}").format(c=sql.Identifier(c), s=staged) for c in postponed),
                stage,
                staged,
                sql.SQL(" AND ").join(
                    sql.SQL("{r}.{c} = {s}.{c}").format(r=row, c=sql.Identifier(c), s=staged) for c in keys[0].row_key
                ),
                some_set,
            )
        ).rowcount
        if updated != wanted:
            raise PgveilError(
                f"loading {node[0]}.{node[1]} into the target failed: {wanted - updated} of its rows were not found "
                f"by their key to set {', '.join(sorted(k.name for k in keys))} after the insert (a trigger of the "
                f"target changed or skipped them); {self._kept()}"
            )

    def _connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.target.connect()
            self.local.conn = conn
            with self.lock:
                self.connections.append(conn)
        return conn

    def _load(
        self,
        piece: Piece,
        unit: Unit,
        seq: int,
        copy: Callable[[Callable[[bytes], None]], None],
        shared: psycopg.Connection[Any] | None,
        into: sql.Composed | None,
    ) -> None:
        part = unit.parts[seq]
        statement = into or piece.table.copy_statement.strip().rstrip(";")
        from_source: list[BaseException] = []
        rows = 0
        try:
            conn = shared or self._connection()
            with conn.transaction() if shared is None else _nothing():
                with conn.cursor().copy(statement) as target_copy, _Pipe(target_copy.write) as pipe:

                    def take(chunk: bytes) -> None:
                        nonlocal rows
                        pipe.write(chunk)
                        count = chunk.count(b"\n")
                        rows += count
                        self.report(Progress(table=part.qualified, rows=count, bytes=len(chunk)))

                    try:
                        copy(take)
                    except _TargetFailed:
                        raise
                    except BaseException as e:
                        from_source.append(e)
                        raise
                conn.execute(
                    sql.SQL("INSERT INTO {}.done (unit_id, seq, rows) VALUES (%s, %s, %s)").format(
                        sql.Identifier(PROGRESS_SCHEMA)
                    ),
                    (unit.unit_id, seq, rows),
                )
        except BaseException as e:
            if from_source:
                raise from_source[0] from None
            error = e.error if isinstance(e, _TargetFailed) else e
            if isinstance(error, psycopg.Error):
                raise self._target_error(part.qualified, error) from None
            raise
        if shared is None:
            self.report(Progress(table=part.qualified, unit_done=True))

    def _target_error(self, table: str, e: psycopg.Error) -> PgveilError:
        if isinstance(e, psycopg.OperationalError) or e.sqlstate in ("57P01", "57P02", "57P03", "3D000"):
            return PgveilError(
                f"lost the connection to the target while loading {table}: the sync stopped; {self._kept()}"
            )
        # The server's message may quote a value: the SQLSTATE and constraint only.
        constraint = getattr(e.diag, "constraint_name", None)
        on = f", constraint {constraint}" if constraint else ""
        return PgveilError(
            f"loading {table} into the target failed (SQLSTATE {e.sqlstate or 'XX000'}{on}); {self._kept()}"
        )

    def _kept(self) -> str:
        return "the units already done are kept in the target: continue with --resume"


@contextmanager
def _nothing() -> Iterator[None]:
    yield


class _Pipe:
    """Writes to the target on a thread of its own, one buffer behind the reader:
    the source computes the next rows while the target takes the last ones, and
    no more than two buffers are held."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write_to = write
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgveil-sync-write")
        self.last: Future[None] | None = None

    def __enter__(self) -> _Pipe:
        return self

    def wait(self) -> None:
        if self.last is not None:
            try:
                self.last.result()
            except psycopg.Error as e:
                raise _TargetFailed(e) from None

    def write(self, chunk: bytes) -> None:
        self.wait()
        self.last = self.pool.submit(self.write_to, chunk)

    def __exit__(self, kind: object, *_: object) -> None:
        try:
            if kind is None:
                self.wait()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


# -- the target ------------------------------------------------------------------------


class _Target:
    """The target database: its checks, scripts and progress schema."""

    def __init__(self, url: str, encoding: str) -> None:
        self.url, self.encoding = url, encoding
        self.conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> _Target:
        self.conn = self.connect(autocommit=True)
        return self

    def __exit__(self, *_: object) -> None:
        if self.conn is not None:
            with suppress(psycopg.Error):
                self.conn.close()

    @property
    def admin(self) -> psycopg.Connection[Any]:
        assert self.conn is not None
        return self.conn

    def connect(self, autocommit: bool = False) -> psycopg.Connection[Any]:
        """A session loading rows: the source's encoding (COPY's text is in it), no timeouts."""
        conn = preflight.connect(self.url, autocommit=autocommit)
        for setting, value in (
            ("client_encoding", self.encoding),
            ("datestyle", "ISO"),
            ("statement_timeout", "0"),
            ("lock_timeout", "0"),
            ("idle_in_transaction_session_timeout", "0"),
        ):
            conn.execute(
                sql.SQL("SELECT pg_catalog.set_config({}, {}, false)").format(sql.Literal(setting), sql.Literal(value))
            )
        if not autocommit:
            conn.commit()
        return conn

    def _scalar(self, query: Any, params: Sequence[Any] = ()) -> Any:
        row = self.admin.execute(query, params).fetchone()
        return None if row is None else row[0]

    def recorded_run(self) -> dict[str, str] | None:
        if self._scalar("SELECT to_regclass(%s)", (f"{PROGRESS_SCHEMA}.run",)) is None:
            if self._scalar("SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = %s", (PROGRESS_SCHEMA,)):
                return {}
            return None
        row = self.admin.execute(
            sql.SQL("SELECT source, policy, rules_hash, options FROM {}.run").format(sql.Identifier(PROGRESS_SCHEMA))
        ).fetchone()
        if row is None:
            return {}
        return dict(zip(("source", "policy", "rules_hash", "options"), (str(v) for v in row), strict=True))

    def recorded_units(self) -> list[Unit]:
        rows = self.admin.execute(
            sql.SQL(
                "SELECT unit_id, schema_name, table_name, key_column, lower_bound, upper_bound, level FROM {}.unit"
                " ORDER BY unit_id, seq"
            ).format(sql.Identifier(PROGRESS_SCHEMA))
        ).fetchall()
        units: dict[int, list[Part]] = {}
        levels: dict[int, int] = {}
        for unit_id, schema, table, key, lower, upper, level in rows:
            units.setdefault(int(unit_id), []).append(Part(schema, table, key, lower, upper))
            levels[int(unit_id)] = int(level)
        return [Unit(u, tuple(parts), levels[u]) for u, parts in units.items()]

    def done_units(self) -> set[int]:
        # A group's parts are done together, in one transaction.
        return {
            int(r[0])
            for r in self.admin.execute(
                sql.SQL("SELECT DISTINCT unit_id FROM {}.done").format(sql.Identifier(PROGRESS_SCHEMA))
            )
        }

    def rows_sent(self) -> dict[tuple[str, str], int]:
        rows = self.admin.execute(
            sql.SQL(
                "SELECT u.schema_name, u.table_name, sum(d.rows) FROM {s}.done d"
                " JOIN {s}.unit u USING (unit_id, seq) GROUP BY 1, 2"
            ).format(s=sql.Identifier(PROGRESS_SCHEMA))
        ).fetchall()
        return {(str(s), str(t)): int(n) for s, t, n in rows}

    def refuse_not_empty(self) -> None:
        counts = restore.contents(self.admin)
        counts["schemas"] = int(self._scalar(OTHER_SCHEMAS, (PROGRESS_SCHEMA,)))
        held = [f"{n} {kind if n != 1 else kind[:-1]}" for kind, n in counts.items() if n]
        if held:
            raise PgveilError(
                f"the target database is not empty ({', '.join(held)}): sync into an empty database, or drop "
                "the source's objects there first with --clean"
            )

    def foreign_keys(self) -> list[_ForeignKey]:
        return [
            _ForeignKey(
                str(r[0]),
                str(r[1]),
                str(r[2]),
                str(r[3]),
                str(r[4]),
                bool(r[5]),
                tuple(r[6]),
                bool(r[7]),
                tuple(r[8] or ()),
            )
            for r in self.admin.execute(TARGET_FOREIGN_KEYS)
        ]

    def progress_statements(self, identity: dict[str, str], snapshot_at: str, units: Sequence[Unit]) -> str:
        """The progress schema, the run and its units, as SQL (run in the
        transaction that creates the schema, or empties the tables)."""
        schema = sql.Identifier(PROGRESS_SCHEMA)
        statements = [sql.SQL(PROGRESS_TABLES).format(schema=schema)]
        statements.append(
            sql.SQL("INSERT INTO {}.run (source, policy, rules_hash, options, snapshot_at) VALUES ({});\n").format(
                schema,
                sql.SQL(", ").join(
                    sql.Literal(v)
                    for v in (
                        identity["source"],
                        identity["policy"],
                        identity["rules_hash"],
                        identity["options"],
                        snapshot_at,
                    )
                ),
            )
        )
        values = [
            sql.SQL("({})").format(
                sql.SQL(", ").join(
                    [sql.Literal(u.unit_id), sql.Literal(seq), sql.Literal(p.schema), sql.Literal(p.table)]
                    + [
                        sql.Literal(p.key),
                        sql.SQL("{}::bigint").format(sql.Literal(p.lower)),
                        sql.SQL("{}::bigint").format(sql.Literal(p.upper)),
                        sql.Literal(u.level),
                    ]
                )
            )
            for u in units
            for seq, p in enumerate(u.parts)
        ]
        for i in range(0, len(values), 1000):
            statements.append(
                sql.SQL(
                    "INSERT INTO {}.unit (unit_id, seq, schema_name, table_name, key_column, lower_bound, upper_bound, level)"
                    " VALUES {};\n"
                ).format(schema, sql.SQL(", ").join(values[i : i + 1000]))
            )
        return "".join(s.as_string(self.admin) for s in statements)

    def clean_statements(self, toc: pg_archive.Toc) -> str:
        """Before pg_restore's --clean: an earlier sync's progress, and the foreign
        keys of the tables it drops (pg_restore drops a table before the tables
        referencing it only by luck of order)."""
        tables = [(e.namespace, e.tag) for e in toc.entries if e.desc == "TABLE" and e.namespace and e.tag]
        statements = [sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE;\n").format(sql.Identifier(PROGRESS_SCHEMA))]
        for key in self.foreign_keys():
            if key.child_key in tables:
                statements.append(
                    sql.SQL("ALTER TABLE {}.{} DROP CONSTRAINT IF EXISTS {};\n").format(
                        sql.Identifier(key.child_schema), sql.Identifier(key.child), sql.Identifier(key.name)
                    )
                )
        return "".join(s.as_string(self.admin) for s in statements)

    def prepare_data_only(self, tables: Sequence[ExportTable], truncate: bool, setup: str) -> None:
        """The tables must exist in the target, and be empty unless emptied here, in
        the transaction that records the sync."""
        missing = [
            t.qualified
            for t in tables
            if self._scalar("SELECT to_regclass(%s)", (_regclass(t.schema, t.table),)) is None
        ]
        if missing:
            raise PgveilError(
                f"the target lacks tables of the sync ({', '.join(missing[:10])}): sync the schema too, or leave "
                "them out with -T"
            )
        names = [sql.SQL("{}.{}").format(sql.Identifier(t.schema), sql.Identifier(t.table)) for t in tables]
        if not truncate:
            held = [
                t.qualified
                for t, name in zip(tables, names, strict=True)
                if self._scalar(sql.SQL("SELECT EXISTS (SELECT FROM ONLY {})").format(name))
            ]
            if held:
                raise PgveilError(
                    f"tables of the target hold rows ({', '.join(held[:10])}): empty them with --truncate, or leave "
                    "them out with -T"
                )
        try:
            with self.admin.transaction():
                if truncate and names:
                    self.admin.execute(sql.SQL("TRUNCATE ONLY {}").format(sql.SQL(", ").join(names)))
                self.admin.execute(setup.encode())
        except psycopg.Error as e:
            raise PgveilError(
                f"could not empty the target's tables: {server_message(e)}; nothing was changed"
            ) from None

    def run_script(self, script: Iterable[bytes], before: str = "", after: str = "") -> None:
        """SQL into the target through psql, in one transaction, stopping at the
        first error."""
        conninfo, env = pg_tools.connection(self.url)
        argv = [pg_tools.program("psql"), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", f"--dbname={conninfo}", "--file=-"]
        returncode, lines = pg_tools.run(
            argv, env, itertools.chain([before.encode()], script, [b"\n" + after.encode()])
        )
        if returncode != 0:
            raise PgveilError(
                f"the target refused the schema: {pg_tools.error_lines(lines, 'psql')}; nothing of it was kept"
            )

    def row_counts(self, names: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        return {
            (s, t): int(
                self._scalar(sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(sql.Identifier(s), sql.Identifier(t)))
            )
            for s, t in names
        }

    def invalid_constraints(self, names: Sequence[tuple[str, str]]) -> list[str]:
        rows = self.admin.execute(NOT_VALID, ([s for s, _ in names], [t for _, t in names]))
        return [str(r[0]) for r in rows]


def _table(node: tuple[str, str]) -> sql.Composable:
    return sql.SQL("{}.{}").format(sql.Identifier(node[0]), sql.Identifier(node[1]))


def _regclass(schema: str, table: str) -> str:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table)).as_string(None)


@contextmanager
def _scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pgveil-sync-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
