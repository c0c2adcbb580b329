"""pg_anon 1.9's synchronous stateless endpoints: check a connection, list fields
with their dictionary rules, show a page of rows before and after those rules,
and browse schemas and tables (digest /tmp/h21/pg_anon_api.md, section 3).

Every database read opens its own short connection to the database the request
names, with ``default_transaction_read_only`` on and a read-only transaction on
top: these endpoints never write, not even to a temporary table. Errors carry
pg_anon's codes; their messages never hold the request's password or a value read
from a table (a database error that may quote one is reduced to its SQLSTATE).

view-data evaluates each rule in the database as pgveil would run it: the rule is
mapped to pgveil's grammar (:func:`pgveil.pg_anon_dicts.map_anon_rule`: a constant
or one call of a trusted function, so nothing else runs) and selected next to the
original value from the same row, so ``rows_before[i]`` and ``rows_after[i]`` are
one row, in primary-key order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Path
from psycopg import sql
from psycopg.types.string import TextLoader
from pydantic import BaseModel, field_validator

from pgveil.api.models import ApiError, DbConnectionParams, DictionaryContent, success
from pgveil.api.security import scrub, secrets_of
from pgveil.errors import PgveilError
from pgveil.pg_anon_dicts import ExcludeRule, SensDict, SensEntry, map_anon_rule, parse_sens_dict
from pgveil.services.install import TOOLKIT_SCHEMAS
from pgveil.services.scan import USER_TABLE, USER_TABLE_PARAMS

CONNECT_TIMEOUT = 5  # seconds; pg_anon waits asyncpg's 60
STATEMENT_TIMEOUT_MS = 60_000
VIEW_FIELDS_DEFAULT_LIMIT = 5000  # pg_anon's, for fields_limit_count null or 0
VIEW_DATA_ZERO_LIMIT = 100  # pg_anon: limit 0 falls back to its CLI default
VIEW_DATA_MAX_LIMIT = 1000  # as `pgveil view-data`: a page, not an export
# SQLSTATE classes whose messages name objects, not data values: syntax and
# access (42), transaction state (25), invalid catalog or schema (3D, 3F),
# unsupported feature (0A), operator intervention such as a timeout (57).
_MESSAGE_SAFE_CLASSES = ("42", "25", "3D", "3F", "0A", "57")

router = APIRouter(prefix="/api/stateless")


# -- requests --------------------------------------------------------------------------


def _check_mask(value: str | None) -> str | None:
    if value is not None and value != "*":
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc.msg} at position {exc.pos}") from None
    return value


class ViewFieldsRequest(BaseModel):
    db_connection_params: DbConnectionParams
    sens_dict_contents: list[DictionaryContent] | None = None
    schema_name: str | None = None
    schema_mask: str | None = None
    table_name: str | None = None
    table_mask: str | None = None
    view_only_sensitive_fields: bool = False
    fields_limit_count: int | None = None

    _masks = field_validator("schema_mask", "table_mask")(_check_mask)


class ViewDataRequest(BaseModel):
    db_connection_params: DbConnectionParams
    sens_dict_contents: list[DictionaryContent] | None = None
    schema_name: str
    table_name: str
    limit: int = 10
    offset: int = 0


class PreviewSchemasRequest(BaseModel):
    db_connection_params: DbConnectionParams
    schema_filter: str | None = None


class PreviewSchemaTablesRequest(BaseModel):
    db_connection_params: DbConnectionParams
    sens_dict_contents: list[DictionaryContent] | None = None
    limit: int = 20
    offset: int = 0
    table_filter: str | None = None
    view_only_sensitive_tables: bool = False


# -- dictionaries ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Rules:
    """The sensitive dictionaries of a request, their lists concatenated in order;
    each entry remembers the dictionary it came from (view-fields' dict_data)."""

    entries: tuple[tuple[SensEntry, DictionaryContent], ...]
    merged: SensDict

    def has_table(self, schema: str, table: str) -> bool:
        return any(e.schema == schema and e.table == table for e, _ in self.entries)

    def field(self, schema: str, table: str, column: str) -> tuple[str, DictionaryContent] | None:
        """The rule of the first entry naming the column (and the dictionary holding it)."""
        for entry, source in self.entries:
            if entry.schema == schema and entry.table == table and column in entry.fields:
                return entry.fields[column], source
        return None

    def is_excluded(self, schema: str, table: str) -> bool:
        return self.merged.is_excluded(schema, table)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _rules(contents: Sequence[DictionaryContent] | None) -> _Rules:
    """Parse each dictionary, JSON text as JSON (``true``, ``null``) and anything else
    as a Python literal (``True``, comments, single quotes), as pg_anon reads it."""
    entries: list[tuple[SensEntry, DictionaryContent]] = []
    excludes: list[ExcludeRule] = []
    for number, content in enumerate(contents or []):
        source = f"sens_dict_contents[{number}] ({content.name!r})"
        try:
            parsed = parse_sens_dict(content.content, source, "json" if _is_json(content.content) else "py")
        except PgveilError as exc:
            raise ApiError("INVALID_DICT_FILE", str(exc)) from None
        entries.extend((entry, content) for entry in parsed.entries)
        excludes.extend(parsed.exclude)
    merged = SensDict(tuple(e for e, _ in entries), tuple(excludes))
    return _Rules(tuple(entries), merged)


def _dict_data(source: DictionaryContent) -> dict[str, Any]:
    return {"name": source.name, "additional_info": source.additional_info}


@dataclass(frozen=True)
class _Filter:
    """view-fields' schema and table filters as one pg_anon table rule (digest §8.4)."""

    schema: str | None
    schema_mask: str | None
    table: str | None
    table_mask: str | None

    @classmethod
    def of(cls, body: ViewFieldsRequest) -> _Filter | None:
        schema_given = body.schema_name is not None or body.schema_mask is not None
        table_given = body.table_name is not None or body.table_mask is not None
        if not (schema_given or table_given):
            return None
        return cls(
            body.schema_name,
            body.schema_mask if schema_given else "*",
            body.table_name,
            body.table_mask if table_given else "*",
        )

    def matches(self, schema: str, table: str) -> bool:
        schema_exact = self.schema is not None and self.schema == schema
        table_exact = self.table is not None and self.table == table
        schema_mask = self.schema_mask is not None and _mask_matches(self.schema_mask, schema)
        table_mask = self.table_mask is not None and _mask_matches(self.table_mask, table)
        return (
            (schema_exact and table_exact)
            or (schema_mask and table_exact)
            or (schema_exact and table_mask)
            or (schema_mask and table_mask)
        )


def _mask_matches(mask: str, name: str) -> bool:
    return mask == "*" or re.search(mask, name) is not None


def _rule_expression(rule: str, column: str, where: str, source: DictionaryContent) -> str:
    """The SQL pgveil evaluates for a pg_anon rule: the mapped label's function call
    or constant. pg_anon's "SQL:" prefix only turns its cast off; pgveil always casts
    the result to the column's type, so the prefix is dropped before mapping."""
    text = rule[4:] if rule.startswith("SQL:") else rule
    mapped = map_anon_rule(text, column)
    if mapped.label is None:
        raise ApiError(
            "INVALID_DICT_FILE",
            f"dictionary {source.name!r}: the rule for {where} ({rule}) cannot be evaluated by pgveil: {mapped.problem}",
        )
    for prefix in ("MASKED WITH FUNCTION ", "MASKED WITH VALUE "):
        if mapped.label.startswith(prefix):
            return mapped.label[len(prefix) :]
    raise AssertionError(mapped.label)


# -- connections and errors ------------------------------------------------------------


def _scrub(text: str, params: DbConnectionParams) -> str:
    return scrub(text, secrets_of(params.model_dump()))


def _db_message(exc: psycopg.Error, params: DbConnectionParams) -> str:
    """A database error in words that hold no data value: the server's message for
    errors about objects (missing column, permission, timeout), else only its name."""
    state = exc.sqlstate or ""
    primary = exc.diag.message_primary if state[:2] in _MESSAGE_SAFE_CLASSES else None
    return _scrub(f"{primary or type(exc).__name__} (SQLSTATE {state or 'unknown'})", params)


def _where(params: DbConnectionParams) -> str:
    return f"database {params.db_name!r} at {params.host}:{params.port} as {params.user_login!r}"


@contextmanager
def _reading(params: DbConnectionParams) -> Iterator[psycopg.Connection[Any]]:
    """A connection in one read-only, repeatable-read transaction, rolled back at the end.

    Connection failures are 400 DB_CONNECTION_FAILED; any other database error not
    handled by the caller is 500 DB_QUERY_FAILED (pg_anon answers 500 to both).
    """
    try:
        conn = psycopg.connect(
            params.url(),
            connect_timeout=CONNECT_TIMEOUT,
            application_name="pgveil api",
            options=f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS}",
        )
    except (psycopg.Error, UnicodeError) as exc:
        # A host name the resolver cannot even encode fails as a UnicodeError, not a psycopg error.
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        raise ApiError(
            "DB_CONNECTION_FAILED", _scrub(f"cannot connect to {_where(params)}: {detail}", params)
        ) from None
    try:
        # pg_anon shows a json value as its text (asyncpg's), not as a parsed object.
        conn.adapters.register_loader("json", TextLoader)
        conn.adapters.register_loader("jsonb", TextLoader)
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction(force_rollback=True):
            # Type names as format_type() qualifies them when they are not in pg_catalog.
            conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
            yield conn
    except psycopg.Error as exc:
        raise ApiError(
            "DB_QUERY_FAILED", f"query failed on {_where(params)}: {_db_message(exc, params)}", status_code=500
        ) from None
    finally:
        conn.close()


# -- check_db_connection -------------------------------------------------------------------


@router.post("/check_db_connection", tags=["Stateless"])
def check_db_connection(body: DbConnectionParams) -> None:
    """200 with body null when the database accepts the login (pg_anon 1.9.1)."""
    try:
        with _reading(body) as conn:
            conn.execute("SELECT 1")
    except ApiError:
        raise ApiError("DB_CONNECTION_FAILED", "Connection is unreachable") from None


# -- view-fields -------------------------------------------------------------------------

# Columns pg_anon lists: of user tables (pgveil's definition: not PostgreSQL's or
# pgveil's schemas, partitioned tables by their root), without primary-key columns
# and columns filled by a sequence they own (serial, identity).
FIELDS_QUERY = f"""
SELECT n.nspname::text, c.relname::text, a.attname::text,
       pg_catalog.lower(pg_catalog.format_type(a.atttypid, a.atttypmod))
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE {USER_TABLE}
  AND a.attidentity = ''
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_index i
                  WHERE i.indrelid = c.oid AND i.indisprimary AND a.attnum = ANY (i.indkey::smallint[]))
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                  JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    AND d.refobjid = c.oid AND d.refobjsubid = a.attnum AND d.deptype IN ('a', 'i'))
ORDER BY n.nspname, c.relname, a.attnum
"""


@router.post("/view-fields", tags=["Stateless"])
def view_fields(body: ViewFieldsRequest) -> dict[str, Any]:
    """The fields of the database's tables with the rule the dictionaries give each."""
    limit = body.fields_limit_count or VIEW_FIELDS_DEFAULT_LIMIT
    if limit < 0:
        raise ApiError("INVALID_LIMIT", f"fields_limit_count is 0 or more (got {limit})")
    rules = _rules(body.sens_dict_contents)
    wanted = _Filter.of(body)
    with _reading(body.db_connection_params) as conn:
        rows = conn.execute(FIELDS_QUERY, USER_TABLE_PARAMS).fetchall()
    content: list[dict[str, Any]] = []
    for schema, table, column, type_ in rows:
        if len(content) == limit:
            break
        if (wanted is not None and not wanted.matches(schema, table)) or rules.is_excluded(schema, table):
            continue
        found = rules.field(schema, table, column)
        if found is None and body.view_only_sensitive_fields:
            continue
        content.append(
            {
                "schema_name": schema,
                "table_name": table,
                "field_name": column,
                "type": type_,
                "dict_data": None if found is None else _dict_data(found[1]),
                "rule": None if found is None else found[0],
            }
        )
    return success(content)


# -- view-data ----------------------------------------------------------------------------


@router.post("/view-data", tags=["Stateless"])
def view_data(body: ViewDataRequest) -> dict[str, Any]:
    """A page of a table's rows, each before and after the dictionaries' rules, in
    primary-key order (physical order without one); cells as Python's str() of the
    value, "None" for NULL. It shows raw values: the connecting user's rights decide."""
    if body.limit < 0 or body.limit > VIEW_DATA_MAX_LIMIT:
        raise ApiError("INVALID_LIMIT", f"limit is 0 to {VIEW_DATA_MAX_LIMIT} (got {body.limit})")
    if body.offset < 0:
        raise ApiError("INVALID_OFFSET", f"offset is 0 or more (got {body.offset})")
    limit = body.limit or VIEW_DATA_ZERO_LIMIT
    schema, table = body.schema_name, body.table_name
    shown = f"{schema}.{table}"
    rules = _rules(body.sens_dict_contents)
    params = body.db_connection_params
    with _reading(params) as conn:
        found = conn.execute(
            "SELECT c.oid, c.relkind::text FROM pg_catalog.pg_class c"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            (schema, table),
        ).fetchone()
        if found is None:
            raise ApiError("TABLE_NOT_FOUND", f'Table "{shown}" does not exist')
        if rules.is_excluded(schema, table):
            raise ApiError("TABLE_EXCLUDED", f'Table "{shown}" is excluded by dictionary_exclude')
        relid, relkind = found
        columns = conn.execute(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a"
            " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (relid,),
        ).fetchall()
        key = [
            name
            for (name,) in conn.execute(
                "SELECT a.attname::text FROM pg_catalog.pg_index i"
                " CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::smallint[]) WITH ORDINALITY AS k(attnum, position)"
                " JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
                " WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.position",
                (relid,),
            ).fetchall()
        ]
        src = sql.Identifier("veil_src")
        after: list[sql.Composable] = []
        uses_veil = False
        for name, type_ in columns:
            rule = rules.field(schema, table, name)
            if rule is None:
                after.append(sql.SQL("{}.{}").format(src, sql.Identifier(name)))
                continue
            expression = _rule_expression(rule[0], name, f"{shown}.{name}", rule[1])
            uses_veil = uses_veil or "veil." in expression
            # Vetted SQL: map_anon_rule emits a constant or one call of a trusted function.
            after.append(sql.SQL("({})::{}").format(sql.SQL(expression), sql.SQL(type_)))
        if uses_veil and conn.execute("SELECT pg_catalog.to_regnamespace('veil')").fetchone() == (None,):
            raise ApiError(
                "SCHEMA_NOT_INITIALIZED",
                f"the rules of {shown} call pgveil's functions (veil.*) and pgveil is not installed in database"
                f" {params.db_name!r}: install it there (pgveil install), or use rules of pg_catalog functions",
            )
        relation = sql.SQL("{only}{}.{}").format(
            sql.Identifier(schema), sql.Identifier(table), only=sql.SQL("ONLY " if relkind == "r" else "")
        )
        total = conn.execute(sql.SQL("SELECT pg_catalog.count(*) FROM {}").format(relation)).fetchone()
        assert total is not None
        condition = rules.merged.sql_condition_for(schema, table)
        order = [sql.SQL("{}.{}").format(src, sql.Identifier(name)) for name in key] or [
            sql.SQL("{}.tableoid").format(src),
            sql.SQL("{}.ctid").format(src),
        ]
        query = sql.SQL(
            "SELECT {before}, {after} FROM {relation} AS {src}{where} ORDER BY {order} LIMIT {limit} OFFSET {offset}"
        ).format(
            before=sql.SQL(", ").join(sql.SQL("{}.{}").format(src, sql.Identifier(name)) for name, _ in columns),
            after=sql.SQL(", ").join(after),
            relation=relation,
            src=src,
            where=sql.SQL(" WHERE ({})").format(sql.SQL(condition)) if condition else sql.SQL(""),
            order=sql.SQL(", ").join(order),
            limit=sql.Literal(limit),
            offset=sql.Literal(body.offset),
        )
        try:
            with conn.transaction():
                rows = conn.execute(query).fetchall()
        except psycopg.Error as exc:
            if not (condition or any(rules.field(schema, table, name) for name, _ in columns)):
                raise  # no rule of the request's in it: a failure of the database (500)
            raise ApiError(
                "INVALID_DICT_FILE",
                f"the rules of {shown} failed in the database: {_db_message(exc, params)}",
            ) from None
    width = len(columns)
    return success(
        {
            "schema_name": schema,
            "table_name": table,
            "field_names": [name for name, _ in columns],
            "total_rows_count": int(total[0]),
            "rows_before": [[str(value) for value in row[:width]] for row in rows],
            "rows_after": [[str(value) for value in row[width:]] for row in rows],
        }
    )


# -- preview --------------------------------------------------------------------------------

# Schemas of user data: not PostgreSQL's (the prefix pg_ is reserved for them, so a
# regex on it hides nothing else), nor pgveil's own or its mask schemas.
SCHEMAS_QUERY = """
SELECT n.nspname::text FROM pg_catalog.pg_namespace n
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  AND n.nspname <> ALL (%(toolkit_schemas)s)
  AND pg_catalog.obj_description(n.oid, 'pg_namespace') IS DISTINCT FROM 'pgveil'
  AND (%(filter)s::text IS NULL OR pg_catalog.strpos(n.nspname, %(filter)s::text) > 0)
ORDER BY n.nspname
"""

TABLES_QUERY = f"""
SELECT c.oid, c.relname::text FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE {USER_TABLE} AND n.nspname = %(schema)s
  AND (%(filter)s::text IS NULL OR pg_catalog.strpos(c.relname, %(filter)s::text) > 0)
ORDER BY c.relname
"""

# information_schema.columns' data_type, from the catalog (information_schema lists
# only the columns the user has a privilege on).
COLUMNS_QUERY = """
SELECT a.attrelid, a.attname::text,
       CASE WHEN t.typtype = 'd' THEN
                CASE WHEN bt.typelem <> 0 AND bt.typlen = -1 THEN 'ARRAY'
                     WHEN nbt.nspname = 'pg_catalog' THEN pg_catalog.format_type(t.typbasetype, NULL)
                     ELSE 'USER-DEFINED' END
            WHEN t.typelem <> 0 AND t.typlen = -1 THEN 'ARRAY'
            WHEN nt.nspname = 'pg_catalog' THEN pg_catalog.format_type(a.atttypid, NULL)
            ELSE 'USER-DEFINED' END
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
JOIN pg_catalog.pg_namespace nt ON nt.oid = t.typnamespace
LEFT JOIN pg_catalog.pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
LEFT JOIN pg_catalog.pg_namespace nbt ON nbt.oid = bt.typnamespace
WHERE a.attrelid = ANY (%(oids)s::pg_catalog.oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""


@router.post("/preview", tags=["Stateless | Preview"])
def preview_schemas(body: PreviewSchemasRequest) -> dict[str, Any]:
    """The database's schemas of user data, by name; schema_filter keeps those whose
    name contains it (case-sensitive, taken literally)."""
    with _reading(body.db_connection_params) as conn:
        rows = conn.execute(
            SCHEMAS_QUERY, {"toolkit_schemas": list(TOOLKIT_SCHEMAS), "filter": body.schema_filter}
        ).fetchall()
    return success([name for (name,) in rows])


@router.post("/preview/{schema}", tags=["Stateless | Preview"])
def preview_schema_tables(
    schema: Annotated[str, Path(description="the schema's name, exactly")], body: PreviewSchemaTablesRequest
) -> dict[str, Any]:
    """A page of a schema's tables by name, each with its fields and what the
    dictionaries say of them (view_only_sensitive_tables filters before paging)."""
    if body.limit < 0:
        raise ApiError("INVALID_LIMIT", f"limit is 0 or more (got {body.limit})")
    if body.offset < 0:
        raise ApiError("INVALID_OFFSET", f"offset is 0 or more (got {body.offset})")
    rules = _rules(body.sens_dict_contents)
    with _reading(body.db_connection_params) as conn:
        tables = conn.execute(
            TABLES_QUERY, {**USER_TABLE_PARAMS, "schema": schema, "filter": body.table_filter}
        ).fetchall()
        if body.view_only_sensitive_tables:
            tables = [(oid, name) for oid, name in tables if rules.has_table(schema, name)]
        page = tables[body.offset : body.offset + body.limit]
        fields: dict[int, list[tuple[str, str]]] = {oid: [] for oid, _ in page}
        for relid, column, type_ in conn.execute(COLUMNS_QUERY, {"oids": list(fields)}).fetchall():
            fields[relid].append((column, type_))
    content = []
    for oid, table in page:
        listed = []
        for column, type_ in fields[oid]:
            found = rules.field(schema, table, column)
            listed.append(
                {
                    "field_name": column,
                    "type": type_,
                    "is_sensitive": found is not None,
                    "rule": None if found is None else found[0],
                }
            )
        content.append(
            {
                "table_name": table,
                "is_sensitive": rules.has_table(schema, table),
                "is_excluded": rules.is_excluded(schema, table),
                "fields": listed,
            }
        )
    return success(content)
