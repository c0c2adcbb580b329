"""Reviewing a policy: every column with its rule and the scan's verdict
(:func:`view_fields`), and a page of a table's rows, original beside masked
(:func:`view_data`, through ``veil.preview``: governors only, it shows raw values).

Both read only. Neither logs or raises with a data value in it: errors name
tables, columns, policies and files, never what a row holds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from pgveil.errors import PgveilError
from pgveil.services.scan import REPORT_FORMAT, USER_TABLE, USER_TABLE_PARAMS, findings_by_column

# Every column of every user table (scan.USER_TABLE), with its rule in the policy if any.
FIELDS_QUERY = f"""
SELECT n.nspname::text, c.relname::text, a.attname::text,
       pg_catalog.format_type(a.atttypid, a.atttypmod), r.label, r.kind
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN veil_private.column_rules r ON r.policy = %(policy)s AND r.relid = c.oid AND r.attnum = a.attnum
WHERE {USER_TABLE}
ORDER BY n.nspname, c.relname, a.attnum
"""


@dataclass
class FieldRow:
    """One column: where it is, its type, its rule in the policy, and the scan's verdict."""

    schema: str
    table: str
    column: str
    type: str
    rule: str | None  # the rule's label in the policy; None: the column has no rule
    rule_kind: str | None  # 'function', 'value', 'not_masked' or None
    sensitive: bool | None = None  # the scan's verdict; None: not in the scan (or no scan)
    kind: str | None = None
    embedded: list[str] = field(default_factory=list)
    paths: list[dict[str, Any]] = field(default_factory=list)
    confidence: float | None = None
    reason: str | None = None

    @property
    def masked(self) -> bool:
        """The policy changes this column (a FUNCTION or VALUE rule, not NOT MASKED)."""
        return self.rule_kind in ("function", "value")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DataColumn:
    """A column of a previewed table and what the policy does with it."""

    name: str
    rule: str  # the rule's label, or '(no rule: …)' saying what the policy delivers


@dataclass
class DataRow:
    """One row of the page: its position in primary-key order (from 1) and, per
    column in table order, the original and the masked value as text."""

    number: int
    values: list[tuple[str | None, str | None]]


@dataclass
class DataPage:
    """A page of a table's rows under a policy, original beside masked."""

    table: str
    policy: str
    limit: int
    offset: int
    columns: list[DataColumn]  # empty when the page has no rows
    rows: list[DataRow]

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "policy": self.policy,
            "limit": self.limit,
            "offset": self.offset,
            "columns": [{"name": c.name, "rule": c.rule} for c in self.columns],
            "rows": [
                {
                    "row": r.number,
                    "values": {
                        c.name: {"original": original, "masked": masked}
                        for c, (original, masked) in zip(self.columns, r.values, strict=True)
                    },
                }
                for r in self.rows
            ],
        }


def _policy_exists(conn: psycopg.Connection[Any], policy: str) -> None:
    found = conn.execute("SELECT EXISTS (SELECT FROM veil.policies WHERE policy = %s)", (policy,)).fetchone()
    if not (found and found[0]):
        raise PgveilError(f"there is no policy {policy!r} — `SELECT policy FROM veil.policies` lists them")


def load_scan(path: str | Path) -> dict[str, Any]:
    """A scan result written by ``pgveil scan --format json``; a file that is not one
    is refused with an error naming the file and what is wrong (never its content)."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PgveilError(f"scan file {where} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PgveilError(f"cannot read scan file {where} ({type(exc).__name__})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # The decoder's message gives the position only, not the text.
        raise PgveilError(
            f"{where} is not a pgveil scan file: not JSON ({exc.msg} at line {exc.lineno})"
            " — write one with `pgveil scan --format json --output FILE`"
        ) from None
    if not isinstance(data, dict) or "pgveil_scan" not in data:
        raise PgveilError(
            f'{where} is not a pgveil scan file: no "pgveil_scan" marker'
            " — write one with `pgveil scan --format json --output FILE`"
        )
    version = data["pgveil_scan"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PgveilError(f'{where} is not a pgveil scan file: "pgveil_scan" is not a format number')
    if version > REPORT_FORMAT:
        raise PgveilError(
            f"{where} is a scan of format {version}; this pgveil reads format {REPORT_FORMAT} — upgrade pgveil"
        )
    columns = data.get("columns")
    if not isinstance(columns, list):
        raise PgveilError(f'{where} is not a pgveil scan file: "columns" is not a list')
    for number, entry in enumerate(columns, start=1):
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(key), str) for key in ("schema", "table", "column")
        ):
            raise PgveilError(
                f"{where} is not a pgveil scan file: column entry {number} lacks schema, table or column names"
            )
        confidence = entry.get("confidence")
        if confidence is not None and (not isinstance(confidence, (int, float)) or isinstance(confidence, bool)):
            raise PgveilError(f"{where} is not a pgveil scan file: column entry {number} has a non-numeric confidence")
        for key in ("embedded", "paths"):
            if entry.get(key) is not None and not isinstance(entry[key], list):
                raise PgveilError(f"{where} is not a pgveil scan file: column entry {number} has {key} not a list")
    return data


def view_fields(
    conn: psycopg.Connection[Any],
    policy: str,
    *,
    only_sensitive: bool = False,
    scan: dict[str, Any] | None = None,
) -> list[FieldRow]:
    """Every column of every user table (not pgveil's schemas, mask schemas or
    PostgreSQL's), by schema, table and column order, with its rule in the policy
    and, from a scan result (:func:`load_scan`), the scan's verdict.

    ``only_sensitive`` keeps the columns the policy masks (a FUNCTION or VALUE rule)
    and those the scan judged sensitive. Reads the rule catalog: governors only.
    """
    _policy_exists(conn, policy)
    found = findings_by_column(scan)
    rows = conn.execute(
        FIELDS_QUERY,
        {"policy": policy, **USER_TABLE_PARAMS},
    ).fetchall()
    fields_: list[FieldRow] = []
    for schema, table, column, type_, label, kind in rows:
        entry = found.get((schema, table, column), {})
        confidence = entry.get("confidence")
        row = FieldRow(
            schema=schema,
            table=table,
            column=column,
            type=type_,
            rule=label,
            rule_kind=kind,
            sensitive=bool(entry["sensitive"]) if entry.get("sensitive") is not None else None,
            kind=entry.get("kind"),
            embedded=list(entry.get("embedded") or []),
            paths=list(entry.get("paths") or []),
            confidence=float(confidence) if confidence is not None else None,
            reason=entry.get("reason"),
        )
        if only_sensitive and not (row.masked or row.sensitive):
            continue
        fields_.append(row)
    return fields_


def view_data(conn: psycopg.Connection[Any], table: str, policy: str, limit: int, offset: int) -> DataPage:
    """A page of ``table``'s rows in primary-key order, each column's original value
    beside what ``policy`` delivers (``veil.preview``). It shows raw values: the
    database refuses anyone but the toolkit owner, its members and superusers."""
    if not 1 <= limit <= 1000:
        raise PgveilError(f"--limit is 1 to 1000 rows (got {limit})")
    if offset < 0:
        raise PgveilError(f"--offset is 0 or more (got {offset})")
    with conn.transaction():
        try:
            found = conn.execute("SELECT pg_catalog.to_regclass(%s)::oid", (table,)).fetchone()
        except psycopg.errors.InvalidName:
            raise PgveilError(f"{table!r} is not a table name (schema.table, quoted as in SQL)") from None
        if not found or found[0] is None:
            raise PgveilError(f"there is no table {table!r}")
        relid = int(found[0])
        # The table's name as SQL writes it, schema-qualified (this transaction only).
        conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
        name_row = conn.execute("SELECT %s::pg_catalog.oid::pg_catalog.regclass::text", (relid,)).fetchone()
        assert name_row is not None
        rows = conn.execute(
            "SELECT row_number, column_name::text, rule, original, masked"
            " FROM veil.preview(%s, %s::pg_catalog.oid::pg_catalog.regclass, %s, %s)",
            (policy, relid, limit, offset),
        ).fetchall()
    columns: list[DataColumn] = []
    page: list[DataRow] = []
    for number, column, rule, original, masked in rows:
        if not page or page[-1].number != number:
            page.append(DataRow(int(number), []))
        if len(page) == 1:
            columns.append(DataColumn(column, rule))
        page[-1].values.append((original, masked))
    return DataPage(str(name_row[0]), policy, limit, offset, columns, page)
