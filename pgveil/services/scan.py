"""Find the personal data: which columns hold it, how sure we are, and a rule for each.

The database does the reading (``veil.scan_table``, sql/0008_scan/): one pass per
table returns, per column and JSON path, how many values it looked at and how
many showed each kind. This module decides from those counts and the column's
name (:mod:`pgveil.scan_vocabulary`) which columns are personal, and proposes a
rule for each from the policy's delivery. No value ever leaves the server.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from pgveil.errors import PgveilError, server_message
from pgveil.pg_anon_dicts import MetaDict, NoSensDict, SensDict, map_anon_rule, quote_ident
from pgveil.resources import VERSION_TABLE
from pgveil.scan_vocabulary import NameHint, hint_for, words
from pgveil.services.scan_rules import (
    DATE_TYPES,
    JSON_TYPES,
    KIND_TYPES,
    SAMPLED_TYPES,
    Column,
    RuleProposer,
)

KINDS = (
    "email",
    "phone",
    "payment_card",
    "iban",
    "national_id",
    "ip_address",
    "birth_date",
    "postal_address",
    "person_name",
    "secret",
)
# Kinds a value test confirms or refutes: a name hint for one of them that the
# values contradict is dropped ("email_template" holds no addresses).
VERIFIABLE = {"email", "phone", "payment_card", "iban", "ip_address"}
# The share of a column's values that must show a kind, without and with a
# name pointing the same way.
SHARE = {"postal_address": 0.3, "person_name": 0.5}
DEFAULT_SHARE = 0.5
HINTED_SHARE = 0.2
# A date column named for an event (contract_start, hired_on, created_at) holds
# no birth dates, however old its dates are.
EVENT_DATE = re.compile(
    r"(?:^|_)(?:start|starts|started|end|ends|ended|created|updated|modified|deleted|hired?|contract|signed|issued"
    r"|expires?|expiry|valid|due|shipped|paid|ordered|registered|opened|closed|joined|since|until|at|on|from)(?:_|$)"
)
# Free text: PII inside longer text counts from this many values and share.
EMBEDDED_MIN, EMBEDDED_SHARE = 2, 0.005


TOOLKIT_SCHEMAS = ("veil", "veil_private", "veil_ext", "sanitized")
# The JSON report's format number ("pgveil_scan"): readers refuse a newer one.
REPORT_FORMAT = 1


@dataclass(frozen=True)
class ScanOptions:
    """What to scan and how. ``sample`` None (mode full) reads every row."""

    policy: str = "mask"
    mode: str = "partial"
    sample: int = 10_000
    jobs: int = 1
    schemas: Sequence[str] = ()
    tables: Sequence[str] = ()
    meta_dicts: Sequence[MetaDict] = ()
    sens_dict: SensDict | None = None
    no_sens_dict: NoSensDict | None = None
    previous: dict[str, Any] | None = None
    rules: dict[str, str] = field(default_factory=dict)  # kind → label or expression template with %s
    # Check functions f(value text, schema text, table text, column text) → boolean:
    # a column on whose values one returns true is personal (kind "custom").
    checks: Sequence[str] = ()


@dataclass
class PathFinding:
    path: str
    kind: str
    matches: int
    values: int


@dataclass
class ColumnFinding:
    schema: str
    table: str
    column: str
    type: str
    sensitive: bool = False
    kind: str | None = None
    embedded: list[str] = field(default_factory=list)
    paths: list[PathFinding] = field(default_factory=list)
    confidence: float = 0.0
    reason: str = ""
    rule: str | None = None

    @property
    def qualified(self) -> str:
        return ".".join(quote_ident(p) for p in (self.schema, self.table, self.column))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SkippedObject:
    schema: str
    table: str
    column: str | None
    reason: str


@dataclass
class ScanReport:
    database: str
    policy: str
    mode: str
    sample: int | None
    scanned_at: str
    columns: list[ColumnFinding]
    skipped: list[SkippedObject]
    unmapped: list[str]

    @property
    def sensitive(self) -> list[ColumnFinding]:
        return [c for c in self.columns if c.sensitive]

    @property
    def not_sensitive(self) -> list[ColumnFinding]:
        return [c for c in self.columns if not c.sensitive]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"pgveil_scan": REPORT_FORMAT, **data}


@dataclass
class _Table:
    oid: int
    schema: str
    name: str
    estimate: int
    columns: list[Column]


# After each table: its name, its estimated rows, and how many tables the scan reads.
Progress = Callable[[str, int, int], None]


def _no_progress(table: str, rows: int, tables: int) -> None:
    return None


# The application's tables, a partitioned one through its root: not in pgveil's
# schemas (named, or marked 'pgveil'), PostgreSQL's or an extension's, and not
# Alembic's version table. Mask schemas hold views only: relkind leaves them out.
USER_TABLE = """c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname <> ALL (%(toolkit_schemas)s)
  AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  AND pg_catalog.obj_description(n.oid, 'pg_namespace') IS DISTINCT FROM 'pgveil'
  AND NOT (c.relname = %(version_table)s AND EXISTS (
      SELECT FROM pg_catalog.pg_attribute v
      WHERE v.attrelid = c.oid AND v.attname = 'version_num' AND NOT v.attisdropped))
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')"""
USER_TABLE_PARAMS = {"toolkit_schemas": list(TOOLKIT_SCHEMAS), "version_table": VERSION_TABLE}

TABLES = f"""
SELECT c.oid::bigint, n.nspname, c.relname, GREATEST(c.reltuples, 0)::bigint
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE {USER_TABLE}
ORDER BY n.nspname, c.relname
"""

COLUMNS = """
SELECT a.attrelid::bigint, a.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
       pg_catalog.format_type(a.atttypid, NULL), NOT a.attnotnull,
       EXISTS (SELECT FROM pg_catalog.pg_index i
               WHERE i.indrelid = a.attrelid AND i.indisunique AND a.attnum = ANY (i.indkey::smallint[]))
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = ANY (%(oids)s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""


def _policy_delivery(conn: psycopg.Connection[Any], policy: str) -> str:
    """How the policy is delivered; a role that may not read the policies (a scan
    needs only SELECT on the tables) gets proposals for views, the strictest."""
    try:
        row = conn.execute("SELECT delivery FROM veil.policies WHERE policy = %s", (policy,)).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return "views"
    if row is None:
        raise PgveilError(f"there is no policy {policy!r} (veil.create_policy creates one)")
    return str(row[0])


def _tables(conn: psycopg.Connection[Any], options: ScanOptions) -> list[_Table]:
    rows = conn.execute(TABLES, USER_TABLE_PARAMS).fetchall()
    wanted = {t for t in options.tables}
    tables: dict[int, _Table] = {}
    for oid, schema, name, estimate in rows:
        if options.schemas and schema not in options.schemas:
            continue
        if wanted and f"{schema}.{name}" not in wanted and name not in wanted:
            continue
        tables[oid] = _Table(oid, schema, name, int(estimate), [])
    missing = wanted - {f"{t.schema}.{t.name}" for t in tables.values()} - {t.name for t in tables.values()}
    if missing:
        raise PgveilError(f"no table named {', '.join(sorted(missing))} to scan")
    for relid, attnum, name, typ, base, nullable, unique in conn.execute(COLUMNS, {"oids": list(tables)}).fetchall():
        tables[relid].columns.append(Column(attnum, name, typ, base, nullable, unique))
    return list(tables.values())


def scan(
    conn: psycopg.Connection[Any], options: ScanOptions, progress: Progress = _no_progress, *, url: str | None = None
) -> ScanReport:
    """Scan the database of ``conn`` (an autocommit connection). With ``jobs`` > 1,
    tables are read by that many connections to ``url`` (default: conn's own)."""
    if options.mode not in ("partial", "full"):
        raise PgveilError(f"--mode is partial or full (got {options.mode!r})")
    if options.sample < 1:
        raise PgveilError("--sample is at least 1")
    if options.jobs < 1:
        raise PgveilError("--jobs is at least 1")
    for kind in options.rules:
        if kind not in KINDS and kind not in ("free_text", "json", "custom"):
            raise PgveilError(
                f"--rule names a kind; {kind!r} is not one of {', '.join(KINDS)}, free_text, json, custom"
            )
    delivery = _policy_delivery(conn, options.policy)
    for meta in options.meta_dicts:
        meta.check_server_regexes(conn)
    _check_functions_exist(conn, options)
    tables = _tables(conn, options)
    sample = None if options.mode == "full" else options.sample
    governs = _governs(conn)

    findings: list[ColumnFinding] = []
    skipped: list[SkippedObject] = []
    unmapped: list[str] = []
    lock = threading.Lock()
    decide = _Decider(options, delivery, unmapped)

    def scan_one(worker: psycopg.Connection[Any], table: _Table) -> None:
        found, table_skipped = _scan_table(worker, table, options, sample, decide)
        with lock:
            findings.extend(found)
            skipped.extend(table_skipped)
        progress(f"{table.schema}.{table.name}", table.estimate, len(tables))

    if options.jobs == 1 or len(tables) <= 1:
        for table in tables:
            scan_one(conn, table)
    else:
        target = url or conn.info.dsn
        local = threading.local()
        workers: list[psycopg.Connection[Any]] = []

        def run(table: _Table) -> None:
            if not hasattr(local, "conn"):
                local.conn = psycopg.connect(target, autocommit=True)
                with lock:
                    workers.append(local.conn)
            scan_one(local.conn, table)

        try:
            with ThreadPoolExecutor(max_workers=options.jobs) as pool:
                for f in [pool.submit(run, t) for t in sorted(tables, key=lambda t: -t.estimate)]:
                    f.result()
        finally:
            for w in workers:
                w.close()

    findings.sort(key=lambda f: (f.schema, f.table, f.column))
    if governs:
        _check_rules(conn, options.policy, findings)
    return ScanReport(
        database=conn.info.dbname,
        policy=options.policy,
        mode=options.mode,
        sample=sample,
        scanned_at=datetime.now(UTC).isoformat(timespec="seconds"),
        columns=findings,
        skipped=skipped,
        unmapped=sorted(set(unmapped)),
    )


def _check_functions_exist(conn: psycopg.Connection[Any], options: ScanOptions) -> None:
    """Every check function named exists with the signature the scan calls, before
    any table is read (one clear error, not a table skipped for each)."""
    named = list(options.checks) + [
        f.scan_func for m in options.meta_dicts for rules in m.data_func.values() for f in rules if f.scan_func
    ]
    for name in dict.fromkeys(named):
        row = conn.execute(
            "SELECT p.prorettype = 'pg_catalog.bool'::pg_catalog.regtype FROM pg_catalog.pg_proc p"
            " WHERE p.oid = pg_catalog.to_regprocedure(%s || '(text, text, text, text)')",
            (name,),
        ).fetchone()
        if row is None or not row[0]:
            raise PgveilError(
                f"there is no function {name}(value text, schema text, table text, column text) returning boolean"
            )


def _governs(conn: psycopg.Connection[Any]) -> bool:
    """Whether this role may change policy (and so try the proposed rules)."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SELECT veil.require_governor()")
    except psycopg.Error:
        return False
    return True


# -- one table -------------------------------------------------------------


def _scan_table(
    conn: psycopg.Connection[Any],
    table: _Table,
    options: ScanOptions,
    sample: int | None,
    decide: _Decider,
) -> tuple[list[ColumnFinding], list[SkippedObject]]:
    findings: list[ColumnFinding] = []
    to_read: list[Column] = []
    specs: list[dict[str, Any]] = []
    previous = findings_by_column(options.previous)
    for column in table.columns:
        base = ColumnFinding(table.schema, table.name, column.name, column.type)
        known = _known(options, table, column, base, previous, decide)
        if known is not None:
            findings.append(known)
            continue
        fired = _per_field_function(conn, options, table, column)
        if fired is not None:
            findings.append(decide.custom(base, column, *fired))
            continue
        if column.base not in SAMPLED_TYPES:
            findings.append(decide.column(base, column, None, f"type {column.type} is not sampled"))
            continue
        spec: dict[str, Any] = {"name": column.name}
        for meta in options.meta_dicts:
            spec.setdefault("regexes", []).extend(r.pattern for r in meta.data_regex)
            spec.setdefault("constants", []).extend(meta.data_const.constants)
            spec.setdefault("partial_constants", []).extend(meta.data_const.partial_constants)
            spec.setdefault("functions", []).extend(
                f.scan_func for f in meta.data_funcs_for_type(column.type) if f.scan_func
            )
        if options.checks:
            spec.setdefault("functions", []).extend(options.checks)
        to_read.append(column)
        specs.append(spec)
    if not to_read:
        return findings, []
    condition = next((c for m in options.meta_dicts if (c := m.sql_condition_for(table.schema, table.name))), None)
    relation = f"{quote_ident(table.schema)}.{quote_ident(table.name)}"
    try:
        # Read only, and never queued for long behind a lock: the scan must not
        # slow the application down nor change anything, whatever a user's
        # condition or check function does.
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("SET LOCAL lock_timeout = '10s'")
            rows = conn.execute(
                "SELECT column_name, path, kinds, matches FROM veil.scan_table(%s::regclass, %s::jsonb, %s, %s)",
                (relation, json.dumps(specs), sample, condition),
            ).fetchall()
    except psycopg.Error as exc:
        reason = f"not read: {server_message(exc)}"
        unread = [
            decide.column(ColumnFinding(table.schema, table.name, c.name, c.type), c, None, reason) for c in to_read
        ]
        return findings + unread, [SkippedObject(table.schema, table.name, None, reason)]
    counts: dict[str, dict[str | None, dict[str, int]]] = {}
    # Each row: how many values showed one combination of kinds ('*': all of them).
    for column_name, path, kinds, matches in rows:
        by_kind = counts.setdefault(column_name, {}).setdefault(path, {})
        for kind in ["*", *kinds]:
            by_kind[kind] = by_kind.get(kind, 0) + int(matches)
    for column in to_read:
        base = ColumnFinding(table.schema, table.name, column.name, column.type)
        findings.append(decide.column(base, column, counts.get(column.name, {}), None))
    return findings, []


def _per_field_function(
    conn: psycopg.Connection[Any], options: ScanOptions, table: _Table, column: Column
) -> tuple[str, str] | None:
    """pg_anon's scan_func_per_field: f(schema, table, column, type) → boolean, called
    once per column; (reason, its anon_func) when one says the column is sensitive."""
    for meta in options.meta_dicts:
        for rule in meta.data_funcs_for_type(column.type):
            if not rule.scan_func_per_field:
                continue
            function = conn.execute(
                "SELECT pg_catalog.to_regprocedure(%s || '(text, text, text, text)')::text",
                (rule.scan_func_per_field,),
            ).fetchone()
            if function is None or function[0] is None:
                raise PgveilError(
                    f"there is no function {rule.scan_func_per_field}(schema text, table text, column text, type text)"
                )
            # The name as PostgreSQL prints a regprocedure: schema-qualified and quoted.
            called = sql.SQL("SELECT {}(%s, %s, %s, %s)").format(sql.SQL(function[0].split("(")[0]))
            fired = conn.execute(called, (table.schema, table.name, column.name, column.type)).fetchone()
            if fired and fired[0]:
                return f"{rule.scan_func_per_field} says the column is sensitive", rule.anon_func
    return None


def findings_by_column(report: dict[str, Any] | None) -> dict[tuple[str, str, str], dict[str, Any]]:
    """A JSON scan report's column findings by (schema, table, column)."""
    if not report:
        return {}
    return {(c["schema"], c["table"], c["column"]): c for c in report.get("columns", [])}


def _known(
    options: ScanOptions,
    table: _Table,
    column: Column,
    base: ColumnFinding,
    previous: dict[tuple[str, str, str], dict[str, Any]],
    decide: _Decider,
) -> ColumnFinding | None:
    """A column the scan need not read: listed in a dictionary, unchanged since
    the previous scan, or left out by a meta-dictionary's rules."""
    where = (table.schema, table.name, column.name)
    if options.sens_dict is not None and (listed := options.sens_dict.rule_for(*where)) is not None:
        return decide.listed_sensitive(base, column, listed)
    if options.no_sens_dict is not None and options.no_sens_dict.is_listed(*where):
        return replace(base, reason="listed in the non-sensitive dictionary")
    earlier = previous.get(where)
    if earlier is not None and earlier.get("type") == column.type:
        paths = [PathFinding(**p) for p in earlier.get("paths", [])]
        return replace(
            base,
            sensitive=bool(earlier.get("sensitive")),
            kind=earlier.get("kind"),
            embedded=list(earlier.get("embedded", [])),
            paths=paths,
            confidence=float(earlier.get("confidence", 0.0)),
            reason="(previous scan) " + str(earlier.get("reason", "")).removeprefix("(previous scan) "),
            rule=earlier.get("rule"),
        )
    for meta in options.meta_dicts:
        if meta.is_skipped(*where) or not meta.is_included(*where):
            return replace(base, reason=f"not scanned: left out by {meta.source}")
        if not meta.scans_type(column.type):
            return decide.column(base, column, None, f"type {column.type} is not in {meta.source}'s sens_pg_types")
    return None


# -- decisions -------------------------------------------------------------

KIND_WORDS = {
    "email": "e-mail addresses",
    "phone": "phone numbers",
    "payment_card": "payment card numbers (Luhn)",
    "iban": "IBANs (mod-97)",
    "national_id": "national identifiers (checked)",
    "ip_address": "IP addresses",
    "birth_date": "dates 16 to 100 years ago",
    "postal_address": "street addresses",
    "person_name": "person names (installed name lists)",
    "secret": "secrets",
}


@dataclass
class _Verdict:
    kind: str | None
    confidence: float
    reason: str
    embedded: list[str] = field(default_factory=list)


class _Decider:
    """Turns counts and names into findings, and findings into rules."""

    def __init__(self, options: ScanOptions, delivery: str, unmapped: list[str]) -> None:
        self.options = options
        self.rules = RuleProposer(delivery, options.rules)
        self.unmapped = unmapped
        self.what = "sampled distinct values" if options.mode == "partial" else "values"

    # A whole column, read or not (counts None: not read, `note` says why).
    def column(
        self,
        finding: ColumnFinding,
        column: Column,
        counts: dict[str | None, dict[str, int]] | None,
        note: str | None,
    ) -> ColumnFinding:
        hint = hint_for(column.name)
        if hint is not None and column.base not in KIND_TYPES[hint.kind] and column.base not in JSON_TYPES:
            hint = None
        meta_rule = next(((m, r) for m in self.options.meta_dicts if (r := m.field_rule_for(column.name))), None)
        if column.base in JSON_TYPES and counts is not None:
            return self._json(finding, column, counts)
        kinds = (counts or {}).get(None, {})
        verdict = self._judge(kinds, hint, column, note)
        custom = self._custom(kinds, column)
        if verdict.kind is None and custom is not None:
            return self.custom(finding, column, custom[0], custom[1])
        if verdict.kind is None and meta_rule is not None:
            meta, matched = meta_rule
            return self.custom(
                finding,
                column,
                f"column name matches {meta.source}'s field rule {matched!r}",
                meta.anon_func_for_type(column.type),
            )
        if verdict.kind is None:
            return replace(finding, reason=verdict.reason)
        return replace(
            finding,
            sensitive=True,
            kind=verdict.kind,
            embedded=verdict.embedded,
            confidence=round(verdict.confidence, 2),
            reason=verdict.reason,
            rule=self.rules.rule(verdict.kind, column),
        )

    def _judge(self, kinds: dict[str, int], hint: NameHint | None, column: Column, note: str | None) -> _Verdict:
        values = kinds.get("*", 0)
        named = f"column name matches {hint.kind} ({hint.locale})" if hint else ""
        if values == 0:
            if hint is not None and hint.strong:
                why = note or f"no {self.what} to look at"
                return _Verdict(hint.kind, 0.6, f"{named}; {why}")
            return _Verdict(None, 0.0, note or f"no personal data by name; no {self.what} to look at")
        best: tuple[str, int, float] | None = None
        for kind in KINDS:
            found = kinds.get(kind, 0)
            if kind == "phone" and hint is not None and hint.kind == "phone":
                found += kinds.get("phone?", 0)
            if kind == "birth_date" and (
                (hint is not None and hint.kind == "birth_date")
                or (kinds.get("birth_date?", 0) >= 0.9 * values and not EVENT_DATE.search(words(column.name)))
            ):
                found += kinds.get("birth_date?", 0)
            need = HINTED_SHARE if hint is not None and hint.kind == kind else SHARE.get(kind, DEFAULT_SHARE)
            share = found / values
            if (
                found
                and share >= need
                and (best is None or share > best[2] or (share == best[2] and hint and hint.kind == kind))
            ):
                best = (kind, found, share)
        if best is not None:
            kind, found, share = best
            agreed = hint is not None and hint.kind == kind
            confidence = min(0.99, 0.7 + 0.3 * share) if agreed else 0.5 + 0.45 * share
            evidence = f"{found} of {values} {self.what} are {KIND_WORDS[kind]}"
            return _Verdict(kind, confidence, f"{named}; {evidence}" if agreed else evidence)
        embedded = sorted(
            k.removeprefix("in:")
            for k, n in kinds.items()
            if k.startswith("in:") and n >= EMBEDDED_MIN and n / values >= EMBEDDED_SHARE
        )
        if embedded:
            share = max(kinds[f"in:{k}"] for k in embedded) / values
            listed = ", ".join(f"{kinds[f'in:{k}']} with {KIND_WORDS[k]}" for k in embedded)
            return _Verdict(
                "free_text", min(0.95, 0.6 + 3 * share), f"free text: of {values} {self.what}, {listed}", embedded
            )
        if hint is not None:
            verifiable = hint.kind in VERIFIABLE or (hint.kind == "birth_date" and column.base in DATE_TYPES)
            if verifiable:
                return _Verdict(None, 0.0, f"{named}, but none of {values} {self.what} are {KIND_WORDS[hint.kind]}")
            if hint.strong:
                return _Verdict(hint.kind, 0.7, f"{named}; its values cannot confirm or refute it")
        return _Verdict(None, 0.0, f"no personal data found in {values} {self.what}")

    def _custom(self, kinds: dict[str, int], column: Column) -> tuple[str, str | None] | None:
        """A meta-dictionary detector or check function that fired: (reason, the
        pg_anon rule template to map, or None for pgveil's own rule).
        Regexes and functions are numbered across the dictionaries, in order."""
        regexes = functions = 0
        for meta in self.options.meta_dicts:
            template = meta.anon_func_for_type(column.type)
            for rule in meta.data_regex:
                regexes += 1
                if kinds.get(f"regex:{regexes}"):
                    found = kinds[f"regex:{regexes}"]
                    return f"{found} values match {meta.source}'s data_regex rule on line {rule.line}", template
            for func in (f for f in meta.data_funcs_for_type(column.type) if f.scan_func):
                functions += 1
                found = kinds.get(f"function:{functions}", 0)
                if found >= func.n_count:
                    return f"{func.scan_func} returned true for {found} values (n_count {func.n_count})", func.anon_func
        for check in self.options.checks:
            functions += 1
            if kinds.get(f"function:{functions}"):
                found = kinds[f"function:{functions}"]
                return f"{check} returned true for {found} values", None
        if kinds.get("constant"):
            return f"{kinds['constant']} values equal a data_const constant", self._first_template(column)
        if kinds.get("partial_constant"):
            return f"{kinds['partial_constant']} values contain a data_const partial constant", self._first_template(
                column
            )
        return None

    def _first_template(self, column: Column) -> str:
        return self.options.meta_dicts[0].anon_func_for_type(column.type)

    def custom(self, finding: ColumnFinding, column: Column, reason: str, template: str | None) -> ColumnFinding:
        if template is None or "custom" in self.options.rules:
            own = self.rules.rule("custom", column)
            return replace(finding, sensitive=True, kind="custom", confidence=0.8, reason=reason, rule=own)
        mapped = map_anon_rule(template, column.name)
        rule = mapped.label
        if rule is None:
            self.unmapped.append(f"{template}: {mapped.problem}")
            rule = self.rules.fallback(column)
            reason += f"; its pg_anon rule could not be mapped ({mapped.problem}), so {rule}"
        return replace(finding, sensitive=True, kind="custom", confidence=0.8, reason=reason, rule=rule)

    def listed_sensitive(self, finding: ColumnFinding, column: Column, listed: str) -> ColumnFinding:
        return self.custom(finding, column, "listed in the sensitive dictionary", listed)

    def _json(self, finding: ColumnFinding, column: Column, counts: dict[str | None, dict[str, int]]) -> ColumnFinding:
        paths: list[PathFinding] = []
        for path, kinds in sorted((p, k) for p, k in counts.items() if p is not None):
            key = path.rstrip("[*]").rsplit(".", 1)[-1].strip('"')
            hint = hint_for(key)
            verdict = self._judge(kinds, hint, column, None)
            if verdict.kind is not None:
                kind = verdict.kind if verdict.kind != "free_text" else verdict.embedded[0]
                paths.append(PathFinding(path, kind, kinds.get(kind, kinds.get(f"in:{kind}", 0)), kinds.get("*", 0)))
        if not paths:
            # The user's own detectors (pg_anon's, --check) judge the document as a whole.
            merged: dict[str, int] = {}
            for leaf, kinds in counts.items():
                if leaf is not None:
                    for kind, n in kinds.items():
                        merged[kind] = merged.get(kind, 0) + n
            custom = self._custom(merged, column)
            if custom is not None:
                return self.custom(finding, column, *custom)
            return replace(finding, reason=f"no personal data found in {merged.get('*', 0)} JSON values")
        listed = ", ".join(f"{p.path} ({p.kind})" for p in paths)
        return replace(
            finding,
            sensitive=True,
            kind="json",
            embedded=sorted({p.kind for p in paths}),
            paths=paths,
            confidence=0.9,
            reason=f"JSON paths hold personal data: {listed}",
            rule=self.rules.json_rule(column, [(p.path, p.kind) for p in paths]),
        )


def _check_rules(conn: psycopg.Connection[Any], policy: str, findings: Iterable[ColumnFinding]) -> None:
    """Try each proposed rule in the database (set, then rolled back): a rule the
    policy would refuse (a unique column, a keyed function in a views policy, a
    cast that fails) becomes the column's fallback, and the reason says why."""
    for f in findings:
        if not f.sensitive or f.rule is None:
            continue
        for candidate in (
            f.rule,
            "MASKED WITH VALUE NULL",
            f"MASKED WITH FUNCTION veil.token({quote_ident(f.column)}, 'scan')",
        ):
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute("SELECT veil.security_label(%s, 'COLUMN', %s, %s)", (policy, f.qualified, candidate))
            except psycopg.Error as exc:
                if candidate == f.rule:
                    f.reason += f"; the first rule proposed was refused ({server_message(exc).splitlines()[0]})"
                continue
            f.rule = candidate
            break
        else:
            f.reason += "; no rule that the policy accepts was found: write one"
            f.rule = None
