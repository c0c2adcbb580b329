"""``pgveil verify --source URL (--target URL | --archive DIR)``: show that an
anonymized copy or dump holds none of the source's personal data, and that it is
whole.

1. The leak scan (:mod:`verify_leaks`): the source values of every column the
   policy changes, looked for in every text and JSON column of the copy.
2. Pattern checks: in the copy's columns the policy keeps, values shaped like
   e-mail addresses at the source's domains, phone numbers or card numbers
   (warnings: a kept column may hold such values by design).
3. Structure (:mod:`verify_structure`): rows per table against the archive's
   manifest or the source, foreign keys and unique constraints against the
   rows, sequences against their columns.

The source is only read (read-only transactions), except that ``--archive`` loads
the archive's rows into temporary tables of one source session
(:mod:`verify_archive`).
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import pgveil
from pgveil import dump_manifest, pg_archive, preflight
from pgveil.errors import PgveilError, server_message
from pgveil.services import export, restore, server_identity, verify_archive, verify_leaks, verify_structure
from pgveil.services.verify_leaks import LeakOptions, LeakScan, SearchedTable
from pgveil.services.verify_structure import Check

# The JSON report's format number ("pgveil_verify"): readers refuse a newer one.
REPORT_FORMAT = 1
DOMAINS = "pgveil_leak_domains"


@dataclass(frozen=True)
class VerifyOptions:
    source: str
    target: str | None = None
    archive: Path | None = None
    policy: str | None = None
    uncovered: str | None = None
    leaks: LeakOptions = field(default_factory=LeakOptions)
    # Rows per table the pattern checks read.
    pattern_rows: int = 10_000


@dataclass(frozen=True)
class VerifyReport:
    checked_at: str
    source: str
    searched: str  # "database NAME" or "archive PATH"
    policy: str
    rules_hash: str
    uncovered: str
    leak_scan: LeakScan
    checks: tuple[Check, ...]
    timings: dict[str, float]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warn"]

    @property
    def passed(self) -> bool:
        return not self.leak_scan.leaks and not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "pgveil_verify": REPORT_FORMAT,
            "pgveil_version": pgveil.__version__,
            "result": "pass" if self.passed else "fail",
            "checked_at": self.checked_at,
            "source": self.source,
            "searched": self.searched,
            "policy": self.policy,
            "rules_hash": self.rules_hash,
            "uncovered": self.uncovered,
            "leak_scan": self.leak_scan.as_dict(),
            "checks": [c.as_dict() for c in self.checks],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def check_options(options: VerifyOptions) -> None:
    if (options.target is None) == (options.archive is None):
        raise PgveilError("verify one copy: give --target URL or --archive DIR")
    if options.pattern_rows < 0:
        raise PgveilError(f"--pattern-rows is at least 0 (got {options.pattern_rows})")
    options.leaks.check()
    if options.archive is not None and not options.archive.is_dir():
        raise PgveilError(
            f"{options.archive} is not a directory archive: verify reads pgveil's directory dumps"
            " (restore a plain script and verify the database with --target)"
        )


def verify(options: VerifyOptions) -> VerifyReport:
    check_options(options)
    manifest = toc = None
    if options.archive is not None:
        # Manifest, checksums of the data files and the TOC, before any connection.
        opened = restore.open_archive(options.archive)
        manifest, toc = opened.manifest, opened.toc
    elif options.target is not None:
        source_server = server_identity.identify(options.source)
        if source_server.same_database(server_identity.identify(options.target)):
            raise PgveilError("--target is the source database itself: verify compares a copy with its source")
    timings: dict[str, float] = {}
    checked_at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    seed = verify_leaks.new_seed()
    with _source_session(options.source) as source:
        policy = _policy(source, options.policy, manifest)
        uncovered = export.resolved_uncovered(
            source, policy, options.uncovered or (manifest.uncovered if manifest else None)
        )
        rules_hash = export.rules_hash(source, policy, uncovered)
        checks: list[Check] = []
        if manifest is not None and manifest.rules_hash != rules_hash:
            checks.append(
                Check(
                    "policy", policy, "warn",
                    "the policy's rules changed since the dump was made: the scan looks for the columns the rules"
                    " change now",
                )
            )  # fmt: skip
        source_name = _database(source)
        verify_leaks.use_seed(source, seed)
        columns = verify_leaks.source_columns(source, policy, uncovered)
        with _searching_session(options, seed) as searching:
            started = time.monotonic()
            verify_leaks.create_fingerprint_table(searching)
            fingerprints = verify_leaks.load_fingerprints(source, searching, policy, uncovered, options.leaks)
            timings["fingerprints"] = time.monotonic() - started
            if options.archive is not None:
                assert manifest is not None
                started = time.monotonic()
                loaded = verify_archive.load(searching, options.archive, manifest)
                timings["load archive"] = time.monotonic() - started
                tables = verify_archive.searched(loaded, _text_columns(source))
                searched = f"archive {options.archive}"
            else:
                loaded = []
                tables = verify_leaks.searched_tables(searching)
                searched = f"database {_database(searching)}"
            started = time.monotonic()
            leaks = verify_leaks.search(source, searching, tables, columns, options.leaks)
            timings["search"] = time.monotonic() - started
            started = time.monotonic()
            checks += _patterns(source, searching, tables, columns, options, policy, uncovered)
            timings["patterns"] = time.monotonic() - started
            started = time.monotonic()
            if options.archive is not None:
                assert toc is not None
                checks += _archive_structure(source, searching, toc, loaded)
            else:
                checks += _target_structure(source, searching)
            timings["structure"] = time.monotonic() - started
    scan = LeakScan(
        source_columns=tuple(columns),
        fingerprints=fingerprints,
        searched_tables=len(tables),
        searched_columns=sum(len(t.columns) for t in tables),
        leaks=tuple(leaks),
        options=options.leaks,
    )
    return VerifyReport(
        checked_at=checked_at,
        source=source_name,
        searched=searched,
        policy=policy,
        rules_hash=rules_hash,
        uncovered=uncovered,
        leak_scan=scan,
        checks=tuple(checks),
        timings=timings,
    )


@contextmanager
def _source_session(url: str) -> Iterator[psycopg.Connection[Any]]:
    """The source, read in one read-only transaction (one snapshot for every query)."""
    with preflight.connect(url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
        installed = conn.execute("SELECT pg_catalog.to_regprocedure('veil.leak_columns(text, regclass[], text)')")
        row = installed.fetchone()
        if row is None or row[0] is None:
            raise PgveilError(
                "the source has no pgveil verify functions: install or upgrade pgveil there (`pgveil install`)"
            )
        yield conn


@contextmanager
def _searching_session(options: VerifyOptions, seed: int) -> Iterator[psycopg.Connection[Any]]:
    """Where the search runs: the target, or (for an archive) a session on the
    source holding the archive's rows in temporary tables. Nothing it creates
    outlives it."""
    url = options.target if options.target is not None else options.source
    with preflight.connect(url, autocommit=True) as conn:
        conn.execute("SET search_path = pg_catalog, pg_temp")
        # A search reading the whole copy should not be cut short by a role's defaults.
        conn.execute("SET statement_timeout = 0")
        conn.execute("SET idle_in_transaction_session_timeout = 0")
        verify_leaks.use_seed(conn, seed)
        try:
            yield conn
        except psycopg.Error as e:
            raise PgveilError(f"verify failed: {server_message(e)}") from None


def _policy(conn: psycopg.Connection[Any], named: str | None, manifest: dump_manifest.Manifest | None) -> str:
    policies = [str(r[0]) for r in conn.execute("SELECT name FROM veil_private.policies ORDER BY name")]
    if manifest is not None:
        if named is not None and named != manifest.policy:
            raise PgveilError(f"the archive was made under policy {manifest.policy!r}, not {named!r}")
        named = manifest.policy
    if named is None:
        if len(policies) != 1:
            raise PgveilError(f"name the policy the copy was made under with --policy ({', '.join(policies)})")
        return policies[0]
    if named not in policies:
        raise PgveilError(f"there is no policy {named!r} in the source (policies: {', '.join(policies)})")
    return named


def _database(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT pg_catalog.current_database()").fetchone()
    assert row is not None
    return str(row[0])


def _text_columns(conn: psycopg.Connection[Any]) -> dict[tuple[str, str, str], bool]:
    """The source's text and JSON columns: (schema, table, column) → is JSON."""
    return {
        (t.schema, t.table, name): is_json for t in verify_leaks.searched_tables(conn) for name, is_json in t.columns
    }


def _patterns(
    source: psycopg.Connection[Any],
    searching: psycopg.Connection[Any],
    tables: list[SearchedTable],
    columns: list[verify_leaks.SourceColumn],
    options: VerifyOptions,
    policy: str,
    uncovered: str,
) -> list[Check]:
    """Warnings for kept columns of the copy holding values shaped like personal data."""
    changed = {(c.schema, c.table, c.column) for c in columns}
    described = [
        {"table": t_no, "relation": table.relation.as_string(searching), "column": c_no, "name": name}
        for t_no, table in enumerate(tables, 1)
        for c_no, (name, is_json) in enumerate(table.columns, 1)
        if not is_json and (table.schema, table.table, name) not in changed
    ]
    if not described or options.pattern_rows == 0:
        return []
    searching.execute(
        sql.SQL("CREATE TEMPORARY TABLE {} (fingerprint bigint NOT NULL)").format(sql.Identifier(DOMAINS))
    )
    domain_query = source.execute("SELECT veil.leak_domain_query(%s, %s)", (policy, uncovered)).fetchone()
    if domain_query is not None and domain_query[0] is not None:
        verify_leaks.copy_into(source, domain_query[0], searching, sql.Identifier("pg_temp", DOMAINS))
    row = source.execute(
        "SELECT veil.leak_pattern_query(%s::jsonb, %s)", (json.dumps(described), options.pattern_rows)
    ).fetchone()
    assert row is not None and row[0] is not None
    checks = []
    for table_no, column_no, emails, phones, cards in searching.execute(row[0].encode()):
        table = tables[table_no - 1]
        subject = f"{table.qualified}.{table.columns[column_no - 1][0]}"
        for count, what in (
            (emails, "e-mail addresses at the source's domains"),
            (phones, "phone numbers"),
            (cards, "payment card numbers"),
        ):
            if count:
                checks.append(
                    Check(
                        "pattern",
                        subject,
                        "warn",
                        f"{count} of its first {options.pattern_rows} rows hold {what}; the policy keeps this column",
                    )
                )
    return checks


def _target_structure(source: psycopg.Connection[Any], target: psycopg.Connection[Any]) -> list[Check]:
    skipped = verify_leaks.SKIPPED_SCHEMAS
    checks = _row_counts(source, target)
    checks += verify_structure.check_foreign_keys(target, verify_structure.foreign_keys(target, skipped))
    checks += verify_structure.check_unique_keys(target, verify_structure.unique_keys(target, skipped))
    checks += verify_structure.check_sequences(target, verify_structure.owned_sequences(target, skipped))
    return checks


TABLES = f"""
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND {verify_leaks.USER_SCHEMA}
ORDER BY 1, 2
"""


def _row_counts(source: psycopg.Connection[Any], target: psycopg.Connection[Any]) -> list[Check]:
    """Rows per table of the target against the source's (warnings: the source
    moves on after a copy is taken, and a subset keeps fewer rows)."""
    skipped = {"skipped": list(verify_leaks.SKIPPED_SCHEMAS)}
    in_source = {(str(s), str(t)) for s, t in source.execute(TABLES, skipped)}
    checks = []
    for schema, table in target.execute(TABLES, skipped).fetchall():
        name = sql.Identifier(schema, table)
        copied = _count_rows(target, name)
        if (schema, table) not in in_source:
            checks.append(
                Check("row count", f"{schema}.{table}", "warn", f"{copied} rows; the source has no such table")
            )
            continue
        original = _count_rows(source, name)
        status = "ok" if copied == original else "warn"
        detail = f"{copied} rows" + ("" if copied == original else f"; the source has {original} now")
        checks.append(Check("row count", f"{schema}.{table}", status, detail))
    return checks


def _count_rows(conn: psycopg.Connection[Any], table: sql.Identifier) -> int:
    row = conn.execute(sql.SQL("SELECT pg_catalog.count(*) FROM ONLY {}").format(table)).fetchone()
    assert row is not None
    return int(row[0])


def _archive_structure(
    source: psycopg.Connection[Any],
    searching: psycopg.Connection[Any],
    toc: pg_archive.Toc,
    loaded: list[verify_archive.LoadedTable],
) -> list[Check]:
    """The archive's rows against its manifest, and the source's constraints and
    sequences (the archive's schema is the source's) against the archive's rows."""
    checks = [
        Check(
            "row count", t.table.qualified, "ok" if t.rows == t.table.rows else "fail",
            f"{t.rows} rows" + ("" if t.rows == t.table.rows else f"; the manifest records {t.table.rows}"),
        )
        for t in loaded
    ]  # fmt: skip
    relations = {(t.table.schema, t.table.table): t.relation for t in loaded}

    def relation(table: verify_structure.TableName) -> sql.Composable:
        return relations[table]

    skipped = verify_leaks.SKIPPED_SCHEMAS
    keys = [k for k in verify_structure.foreign_keys(source, skipped) if k.child in relations and k.parent in relations]
    checks += verify_structure.check_foreign_keys(searching, keys, relation)
    uniques = [k for k in verify_structure.unique_keys(source, skipped) if k.table in relations]
    checks += verify_structure.check_unique_keys(searching, uniques, relation)
    values = verify_archive.sequence_values(toc)
    sequences = [
        verify_structure.OwnedSequence(s.sequence, s.table, s.column, values.get(s.sequence), s.column_type)
        for s in verify_structure.owned_sequences(source, skipped)
        if s.table in relations
    ]
    checks += verify_structure.check_sequences(searching, sequences, relation, as_text=True)
    return checks
