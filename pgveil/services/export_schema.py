"""The schema side of an export, shared by dump and sync: which tables a selection
holds, pg_dump's archive of everything but their rows, and pgveil's own objects
taken out of it.

pg_dump runs on the export's snapshot: first ``--schema-only`` (which tables the
selection holds, and the plan of each), then, for the archive a dump or a sync
restores, with every one of those tables' data excluded (schema, sequence values,
materialized view refreshes). pgveil's schemas and version tables are excluded by
pattern; its objects elsewhere (stream triggers, event triggers, views calling its
functions) are removed from the table of contents with everything depending on them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from pgveil import pg_archive, pg_tools
from pgveil.errors import PgveilError
from pgveil.services import export, export_copy, subset
from pgveil.services.export import ExportTable, Snapshot

# The catalog of TOC entries naming a relation.
PG_CLASS = "1259"


@dataclass(frozen=True, kw_only=True)
class Selection:
    """What an export takes, as pg_dump's options name it, and under which policy
    (the options of a dump and of a sync extend it)."""

    policy: str
    tables: tuple[str, ...] = ()
    exclude_tables: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()
    exclude_schemas: tuple[str, ...] = ()
    uncovered: str | None = None
    # Large objects cannot be masked: a database that has some is refused unless
    # they are left out.
    no_large_objects: bool = False
    # As pg_dump's -O and -x: no ownership commands, no grants (for a server
    # without the source's roles).
    no_owner: bool = False
    no_privileges: bool = False
    subset: subset.Subset = field(default_factory=subset.Subset)


@dataclass(frozen=True)
class Toolkit:
    """pgveil's own objects: schemas and version tables pg_dump leaves out, and the
    (catalog, oid) of its objects elsewhere, taken out of pg_dump's output."""

    schemas: list[str]
    version_tables: list[tuple[str, str]]
    objects: set[tuple[str, str]]


@dataclass(frozen=True)
class Schema:
    """pg_dump's schema of the selection without pgveil's objects, the plan of
    every table in it that holds rows, what of pgveil was left out."""

    toc: pg_archive.Toc
    tables: list[ExportTable]
    left_out: list[str]
    toolkit: Toolkit


def check_uncovered(uncovered: str | None) -> None:
    if uncovered is not None and uncovered not in ("refuse", "keep", "null"):
        raise PgveilError(f"--uncovered is refuse, keep or null (got {uncovered!r})")


def schema(
    conn: psycopg.Connection[Any],
    snapshot: Snapshot,
    url: str,
    selection: Selection,
    scratch: Path,
    with_rows: bool = True,
    extra: Sequence[str] = (),
) -> Schema:
    """pg_dump's schema-only archive of the selection in ``scratch``, and the
    plan of its tables (none when ``with_rows`` is false: no rule runs, none is
    missing)."""
    refuse_large_objects(conn, selection, with_rows)
    toolkit = _toolkit(conn)
    pg_dump(url, snapshot, selection, scratch, toolkit, ["--schema-only", *extra])
    toc = pg_archive.read(scratch)
    kept = without_toolkit(toc.entries, toolkit.objects)
    kept_ids = {e.dump_id for e in kept}
    left_out = [
        f"{e.desc} {e.namespace + '.' if e.namespace else ''}{e.tag}" for e in toc.entries if e.dump_id not in kept_ids
    ]
    toc.entries = kept
    if not with_rows:
        export.resolved_uncovered(conn, selection.policy, selection.uncovered)
        return Schema(toc, [], left_out, toolkit)
    relations = [int(e.oid or 0) for e in kept if e.desc == "TABLE" and e.table_oid == PG_CLASS]
    plain = [
        int(r[0])
        for r in conn.execute(
            "SELECT c.oid::bigint FROM pg_catalog.pg_class c WHERE c.oid = ANY (%s::oid[]) AND c.relkind = 'r'",
            (relations,),
        )
    ]
    tables = export.plan(conn, selection.policy, plain, selection.uncovered, selection.subset)
    return Schema(toc, tables, left_out, toolkit)


def archive_without_rows(
    conn: psycopg.Connection[Any],
    snapshot: Snapshot,
    url: str,
    selection: Selection,
    planned: Schema,
    directory: Path,
    extra: Sequence[str] = (),
) -> pg_archive.Toc:
    """pg_dump's archive of the selection in ``directory`` with no table's rows
    (nor extension configuration tables': rows no rule covers), and its table of
    contents without pgveil's objects (not yet written back)."""
    raw = [(t.schema, t.table) for t in planned.tables] + export.extension_config_tables(conn)
    excluded = [f"--exclude-table-data={exact_pattern(s, t)}" for s, t in raw]
    pg_dump(url, snapshot, selection, directory, planned.toolkit, [*extra, *excluded])
    toc = pg_archive.read(directory)
    refuse_raw_data(toc)
    toc.entries = without_toolkit(toc.entries, planned.toolkit.objects)
    return toc


def refuse_raw_data(toc: pg_archive.Toc) -> None:
    """pg_dump was told to write no rows; should it have (a kind of data this
    version does not know of), the export stops."""
    for e in toc.entries:
        if e.had_dumper:
            raise PgveilError(
                f"pg_dump wrote data pgveil did not compute ({e.desc} {e.namespace}.{e.tag}); nothing was kept"
            )


def refuse_large_objects(conn: psycopg.Connection[Any], selection: Selection, with_rows: bool) -> None:
    row = conn.execute("SELECT pg_catalog.count(*) FROM pg_catalog.pg_largeobject_metadata").fetchone()
    count = int(row[0]) if row else 0
    if count and not selection.no_large_objects and with_rows:
        raise PgveilError(
            f"the database has {count} large objects, which no rule can mask; export with --no-large-objects "
            "to leave them out"
        )


def _toolkit(conn: psycopg.Connection[Any]) -> Toolkit:
    schemas = export.toolkit_schemas(conn)
    objects = {(str(c), str(o)) for c, o in export.toolkit_objects(conn, schemas)}
    return Toolkit(schemas, export.version_tables(conn), objects)


def without_toolkit(entries: Sequence[pg_archive.Entry], pairs: set[tuple[str, str]]) -> list[pg_archive.Entry]:
    """The entries but pgveil's objects and everything that depends on them (their
    comments, privileges); pgveil's schemas were not dumped."""
    dropped = {e.dump_id for e in entries if (e.table_oid, e.oid) in pairs}
    grew = True
    while grew:
        more = {e.dump_id for e in entries if e.dump_id not in dropped and dropped.intersection(e.dependencies)}
        grew = bool(more)
        dropped |= more
    return [e for e in entries if e.dump_id not in dropped]


def pg_dump(
    url: str,
    snapshot: Snapshot,
    selection: Selection,
    directory: Path,
    toolkit: Toolkit,
    extra: Sequence[str],
) -> None:
    """pg_dump of the selection on the snapshot into ``directory`` (directory
    format), pgveil's schemas and large objects left out."""
    conninfo, env = pg_tools.connection(url)
    args = [pg_tools.program("pg_dump"), f"--dbname={conninfo}", "--format=directory", f"--file={directory}"]
    args += [f"--snapshot={snapshot.name}", "--no-blobs"]
    args += ["--no-owner"] if selection.no_owner else []
    args += ["--no-privileges"] if selection.no_privileges else []
    if pg_tools.supports("pg_dump", "--no-statistics"):
        args.append("--no-statistics")  # pg_dump 18: statistics hold raw values
    args += [f"--table={p}" for p in selection.tables]
    args += [f"--exclude-table={p}" for p in selection.exclude_tables]
    args += [f"--schema={p}" for p in selection.schemas]
    args += [f"--exclude-schema={p}" for p in selection.exclude_schemas]
    args += [f"--exclude-schema={quoted_pattern(s)}" for s in toolkit.schemas]
    args += [f"--exclude-table={exact_pattern(s, t)}" for s, t in toolkit.version_tables]
    args += extra
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise PgveilError(f"pg_dump failed: {pg_tools.error_lines(done.stderr.splitlines(), 'pg_dump')}")


def sql_script(
    archive: Path, selection: Selection, sections: Sequence[str] = (), clean: bool = False
) -> Iterator[bytes]:
    """The archive (its ``sections``, all when none) as SQL, pg_restore's rendering,
    streamed a buffer at a time: a dump's plain script, the statements a sync runs."""
    argv = [pg_tools.program("pg_restore"), "--file=-", *(f"--section={s}" for s in sections)]
    argv += ["--clean", "--if-exists"] if clean else []
    argv += ["--no-owner"] if selection.no_owner else []
    argv += ["--no-privileges"] if selection.no_privileges else []
    with subprocess.Popen([*argv, str(archive)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        while chunk := proc.stdout.read(export_copy.BUFFER_BYTES):
            yield chunk
        stderr = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise PgveilError(
            f"pg_restore could not render the archive as SQL: {pg_tools.error_lines(stderr.splitlines(), 'pg_restore')}"
        )


def quoted_pattern(name: str) -> str:
    """A pg_dump pattern matching exactly ``name``: inside double quotes nothing is
    special but a double quote, written twice."""
    return '"' + name.replace('"', '""') + '"'


def exact_pattern(schema: str, table: str) -> str:
    return f"{quoted_pattern(schema)}.{quoted_pattern(table)}"
