"""TantorLabs pg_anon's dictionaries, read as data, and its rules mapped to pgveil's.

pg_anon keeps its dictionaries in ``.py`` files: a dict literal, or one assignment
``name = {...}``. They are read here with :func:`ast.parse` and never run: the module
must be exactly one such statement whose value is made of literals (dicts, lists,
strings, numbers, booleans, None); anything else is refused with the file and line.
``.json`` files are read as JSON, with line numbers too.

- :func:`load_meta_dict` reads a meta-dictionary (the scan rules) into :class:`MetaDict`,
  with the matching helpers a scan needs (``is_skipped``, ``field_rule_for``,
  ``scans_type``, ``anon_func_for_type``, ...).
- :func:`load_sens_dict` / :func:`load_no_sens_dict` read the sensitive and
  non-sensitive dictionaries; :func:`dump_sens_dict` / :func:`dump_no_sens_dict` write
  files pg_anon loads.
- :func:`map_anon_rule` turns a pg_anon rule (``anon_funcs.digest("%s", 'salt', 'md5')``)
  into a pgveil label (``MASKED WITH FUNCTION veil.digest(email, 'salt', 'md5')``), or
  says why it cannot. It parses SQL with a small tokenizer; nothing is evaluated.

See docs/pg_anon_dictionaries.md.
"""

from __future__ import annotations

import ast
import bisect
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Protocol

import psycopg

from pgveil.errors import PgveilError

# pg_anon's defaults (its constants module; the manual's sens_pg_types section).
DEFAULT_SENS_PG_TYPES = ("text", "character", "varchar", "mvarchar", "json", "integer", "bigint")
BUILTIN_ANON_FUNC = "anon_funcs.digest(\"%s\", 'salt_word', 'md5')"

__all__ = [
    "BUILTIN_ANON_FUNC",
    "DEFAULT_SENS_PG_TYPES",
    "DataConst",
    "DataFuncRule",
    "DataRegexRule",
    "ExcludeRule",
    "FieldRule",
    "FuncTemplate",
    "MappedRule",
    "MetaDict",
    "NoSensDict",
    "NoSensEntry",
    "ObjectRule",
    "SensDict",
    "SensEntry",
    "SqlCondition",
    "base_type",
    "dump_no_sens_dict",
    "dump_sens_dict",
    "load_meta_dict",
    "load_no_sens_dict",
    "load_sens_dict",
    "map_anon_rule",
    "normalize_type",
    "parse_meta_dict",
    "parse_no_sens_dict",
    "parse_sens_dict",
    "parse_tables_dict",
    "quote_ident",
    "quote_literal",
]

Format = Literal["py", "json"]


# ---------------------------------------------------------------------------
# Reading a file as located data
# ---------------------------------------------------------------------------


@dataclass
class _Node:
    """A value read from a dictionary file, with the line it starts on.

    ``value`` is a str/int/float/bool/None, a ``dict[str, _Node]`` or a ``list[_Node]``;
    ``key_lines`` gives the line of each key of a dict.
    """

    value: Any
    line: int
    key_lines: dict[str, int] = field(default_factory=dict)


def _describe(node: ast.AST) -> str:
    """What a non-literal AST node is, in words, for an error message."""
    if isinstance(node, ast.Call):
        return "a function call"
    if isinstance(node, ast.Name):
        return f"a name ({node.id})"
    if isinstance(node, ast.Attribute):
        return "an attribute access"
    if isinstance(node, ast.Lambda):
        return "a lambda"
    if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
        return "a comprehension"
    if isinstance(node, ast.JoinedStr):
        return "an f-string"
    if isinstance(node, ast.BinOp | ast.BoolOp | ast.UnaryOp):
        return "an operator expression"
    if isinstance(node, ast.Compare):
        return "a comparison"
    if isinstance(node, ast.Subscript):
        return "a subscript"
    if isinstance(node, ast.IfExp):
        return "a conditional expression"
    if isinstance(node, ast.NamedExpr):
        return "an assignment expression"
    if isinstance(node, ast.Starred):
        return "an unpacking"
    if isinstance(node, ast.Await | ast.Yield | ast.YieldFrom):
        return "an await or yield"
    if isinstance(node, ast.Import | ast.ImportFrom):
        return "an import"
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return "a function definition"
    if isinstance(node, ast.ClassDef):
        return "a class definition"
    return f"{type(node).__name__}"


def _from_ast(node: ast.expr, source: str) -> _Node:
    line = getattr(node, "lineno", 0)

    def refuse(what: str) -> PgveilError:
        return PgveilError(f"{source}: line {line}: {what}")

    if isinstance(node, ast.Constant):
        value = node.value
        if value is None or isinstance(value, str | bool | int | float):
            return _Node(value, line)
        if isinstance(value, bytes):
            raise refuse("a bytes literal is not accepted: use a string")
        raise refuse(f"{type(value).__name__} literal is not data")
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub | ast.UAdd)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in (int, float)
    ):
        number: int | float = node.operand.value  # type: ignore[assignment]
        return _Node(-number if isinstance(node.op, ast.USub) else number, line)
    if isinstance(node, ast.Dict):
        items: dict[str, _Node] = {}
        key_lines: dict[str, int] = {}
        for key, value_node in zip(node.keys, node.values, strict=True):
            if key is None:
                raise PgveilError(f"{source}: line {value_node.lineno}: a ** unpacking is not data")
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                if isinstance(key, ast.Constant):
                    raise PgveilError(f"{source}: line {key.lineno}: a dictionary key must be a string")
                raise PgveilError(f"{source}: line {key.lineno}: {_describe(key)} is not data")
            if key.value in items:
                raise PgveilError(
                    f"{source}: line {key.lineno}: key {key.value!r} appears twice in one dictionary"
                    f" (first on line {key_lines[key.value]})"
                )
            key_lines[key.value] = key.lineno
            items[key.value] = _from_ast(value_node, source)
        return _Node(items, line, key_lines)
    if isinstance(node, ast.List | ast.Tuple):
        return _Node([_from_ast(item, source) for item in node.elts], line)
    if isinstance(node, ast.Set):
        raise refuse("a set is not accepted: use a list [...]")
    raise refuse(f"{_describe(node)} is not data")


def _read_python(text: str, source: str) -> _Node | None:
    try:
        module = ast.parse(text, filename=source)
    except SyntaxError as exc:
        raise PgveilError(f"{source}: line {exc.lineno}: not valid Python syntax ({exc.msg})") from None
    value: ast.expr | None = None
    for statement in module.body:
        if isinstance(statement, ast.Expr):
            value = statement.value
        elif isinstance(statement, ast.Assign):
            if len(statement.targets) != 1 or not isinstance(statement.targets[0], ast.Name):
                raise PgveilError(
                    f"{source}: line {statement.lineno}: only an assignment to one plain name (name = {{...}})"
                    " is accepted"
                )
            value = statement.value
        else:
            raise PgveilError(f"{source}: line {statement.lineno}: {_describe(statement)} is not data")
    if len(module.body) > 1:
        raise PgveilError(
            f"{source}: line {module.body[1].lineno}: a second statement: a dictionary file holds one dict"
            " literal, or one assignment name = {...}"
        )
    return None if value is None else _from_ast(value, source)


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")


class _JsonReader:
    """JSON with the line of every value and key (the json module gives none)."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line(self, pos: int) -> int:
        return bisect.bisect_right(self.line_starts, pos)

    def fail(self, pos: int, what: str) -> PgveilError:
        return PgveilError(f"{self.source}: line {self.line(pos)}: not valid JSON ({what})")

    def skip(self, pos: int) -> int:
        match = _JSON_WHITESPACE.match(self.text, pos)
        assert match is not None
        return match.end()

    def string(self, pos: int) -> tuple[str, int]:
        try:
            return json.decoder.scanstring(self.text, pos + 1, True)  # type: ignore[attr-defined,no-any-return]
        except json.JSONDecodeError as exc:
            raise self.fail(exc.pos, exc.msg) from None

    def value(self, pos: int) -> tuple[_Node, int]:
        pos = self.skip(pos)
        line = self.line(pos)
        char = self.text[pos : pos + 1]
        if char == "{":
            items: dict[str, _Node] = {}
            key_lines: dict[str, int] = {}
            pos = self.skip(pos + 1)
            if self.text[pos : pos + 1] == "}":
                return _Node(items, line, key_lines), pos + 1
            while True:
                pos = self.skip(pos)
                if self.text[pos : pos + 1] != '"':
                    raise self.fail(pos, "expected a string key")
                key_line = self.line(pos)
                key, pos = self.string(pos)
                if key in items:
                    raise PgveilError(
                        f"{self.source}: line {key_line}: key {key!r} appears twice in one dictionary"
                        f" (first on line {key_lines[key]})"
                    )
                pos = self.skip(pos)
                if self.text[pos : pos + 1] != ":":
                    raise self.fail(pos, "expected ':'")
                items[key], pos = self.value(pos + 1)
                key_lines[key] = key_line
                pos = self.skip(pos)
                if self.text[pos : pos + 1] == ",":
                    pos += 1
                elif self.text[pos : pos + 1] == "}":
                    return _Node(items, line, key_lines), pos + 1
                else:
                    raise self.fail(pos, "expected ',' or '}'")
        if char == "[":
            elements: list[_Node] = []
            pos = self.skip(pos + 1)
            if self.text[pos : pos + 1] == "]":
                return _Node(elements, line), pos + 1
            while True:
                element, pos = self.value(pos)
                elements.append(element)
                pos = self.skip(pos)
                if self.text[pos : pos + 1] == ",":
                    pos += 1
                elif self.text[pos : pos + 1] == "]":
                    return _Node(elements, line), pos + 1
                else:
                    raise self.fail(pos, "expected ',' or ']'")
        if char == '"':
            text, pos = self.string(pos)
            return _Node(text, line), pos
        for word, constant in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, pos):
                return _Node(constant, line), pos + len(word)
        number = _JSON_NUMBER.match(self.text, pos)
        if number:
            literal = number.group(0)
            parsed: int | float = float(literal) if number.group(1) or number.group(2) else int(literal)
            return _Node(parsed, line), number.end()
        raise self.fail(pos, "expected a value")

    def document(self) -> _Node | None:
        pos = self.skip(0)
        if pos == len(self.text):
            return None
        node, pos = self.value(pos)
        pos = self.skip(pos)
        if pos != len(self.text):
            raise self.fail(pos, "extra data after the value")
        return node


def _read(text: str, source: str, fmt: Format) -> _Node:
    """The file's top-level dict; an empty file (or one of comments only) is an empty dict."""
    node = _JsonReader(text, source).document() if fmt == "json" else _read_python(text, source)
    if node is None:
        return _Node({}, 1)
    if not isinstance(node.value, dict):
        raise PgveilError(f"{source}: line {node.line}: the dictionary must be a dict {{...}}, not {_kind(node)}")
    return node


def _read_file(path: str | Path) -> tuple[str, str, Format]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PgveilError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PgveilError(f"{path}: not UTF-8 text") from None
    return text, str(path), "json" if path.suffix.lower() == ".json" else "py"


# ---------------------------------------------------------------------------
# Shape checks
# ---------------------------------------------------------------------------


def _kind(node: _Node) -> str:
    value = node.value
    if isinstance(value, dict):
        return "a dict"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return "None"


class _Checker:
    """Shape checks that name the file, the line and the place in the dictionary."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, line: int, what: str) -> PgveilError:
        return PgveilError(f"{self.source}: line {line}: {what}")

    def keys(self, node: _Node, where: str, allowed: tuple[str, ...], hint: str = "") -> dict[str, _Node]:
        items = self.as_dict(node, where)
        for key in items:
            if key not in allowed:
                raise self.error(
                    node.key_lines[key],
                    f"unknown key {key!r} in {where} (expected {', '.join(allowed)}){hint}",
                )
        return items

    def as_dict(self, node: _Node, where: str) -> dict[str, _Node]:
        if not isinstance(node.value, dict):
            raise self.error(node.line, f"{where} must be a dict {{...}}, not {_kind(node)}")
        return node.value

    def as_list(self, node: _Node, where: str) -> list[_Node]:
        if not isinstance(node.value, list):
            raise self.error(node.line, f"{where} must be a list [...], not {_kind(node)}")
        return node.value

    def as_str(self, node: _Node, where: str, *, empty: bool = False) -> str:
        if not isinstance(node.value, str):
            raise self.error(node.line, f"{where} must be a string, not {_kind(node)}")
        if not empty and not node.value.strip():
            raise self.error(node.line, f"{where} is empty")
        return node.value

    def strings(self, node: _Node, where: str) -> tuple[str, ...]:
        return tuple(self.as_str(item, f"{where}[{i}]") for i, item in enumerate(self.as_list(node, where)))

    def python_regex(self, node: _Node, where: str, *, star: bool = False) -> str:
        pattern = self.as_str(node, where)
        if star and pattern == "*":
            return pattern
        try:
            re.compile(pattern)
        except re.error as exc:
            raise self.error(
                node.line, f"{where} is not a valid regular expression: {exc.msg} at position {exc.pos}"
            ) from None
        return pattern


# ---------------------------------------------------------------------------
# Type names
# ---------------------------------------------------------------------------

_TYPE_ALIASES = {
    "varchar": "character varying",
    "char": "character",
    "bpchar": "character",
    "int": "integer",
    "int4": "integer",
    "int2": "smallint",
    "int8": "bigint",
    "bool": "boolean",
    "float": "double precision",
    "float8": "double precision",
    "float4": "real",
    "decimal": "numeric",
    "dec": "numeric",
    "varbit": "bit varying",
    "timestamptz": "timestamp with time zone",
    "timetz": "time with time zone",
}
_TYPE_PATTERN = re.compile(
    r"^(?P<base>[^()\[\]]+?)\s*(?:\((?P<mods>[^()]*)\)\s*(?P<suffix>[^()\[\]]*?))?\s*(?P<arr>(?:\[\d*\])*)$"
)


def _split_type(type_name: str) -> tuple[str, str, str]:
    """(base, modifiers, array suffix) in format_type()'s spelling: ('character varying', '20', '')."""
    text = re.sub(r"\s+", " ", type_name.strip())
    if '"' not in text:
        text = text.lower()
    match = _TYPE_PATTERN.match(text)
    if not match:
        return text, "", ""
    base = match.group("base")
    mods = re.sub(r"\s+", "", match.group("mods") or "")
    suffix = match.group("suffix")
    arr = re.sub(r"\d", "", match.group("arr"))
    for zone in (" with time zone", " without time zone"):
        if base.endswith(zone):
            base, suffix = base[: -len(zone)], zone.strip()
    base = _TYPE_ALIASES.get(base, base)
    if base.endswith(" with time zone"):  # timestamptz, timetz
        base, suffix = base[: -len(" with time zone")], "with time zone"
    if base in ("timestamp", "time") and not suffix:
        suffix = "without time zone"
    if suffix:
        base = f"{base}\x00{suffix}"  # the modifiers go between base and suffix
    return base, mods, arr


def _join_type(base: str, mods: str, arr: str) -> str:
    name, _, suffix = base.partition("\x00")
    return name + (f"({mods})" if mods else "") + (f" {suffix}" if suffix else "") + arr


def normalize_type(type_name: str) -> str:
    """A type name as format_type() prints it: 'varchar(20)' -> 'character varying(20)'."""
    return _join_type(*_split_type(type_name))


def base_type(type_name: str) -> str:
    """The type without its modifiers: 'numeric(10,2)' -> 'numeric', 'timestamp(3)' -> 'timestamp without time zone'."""
    base, _, arr = _split_type(type_name)
    return _join_type(base, "", arr)


# ---------------------------------------------------------------------------
# The meta-dictionary
# ---------------------------------------------------------------------------


def _mask_matches(mask: str, compiled: re.Pattern[str] | None, name: str) -> bool:
    return mask == "*" or (compiled is not None and compiled.search(name) is not None)


@dataclass(frozen=True)
class ObjectRule:
    """A skip_rules, include_rules or dictionary_exclude entry: which schemas, tables and fields it names."""

    schema: str | None
    schema_mask: str | None
    table: str | None
    table_mask: str | None
    fields: tuple[str, ...] | None
    line: int = field(default=0, compare=False)

    def _schema_matches(self, schema: str) -> bool:
        if self.schema is not None:
            return schema == self.schema
        assert self.schema_mask is not None
        return _mask_matches(self.schema_mask, _compiled(self.schema_mask), schema)

    def _table_matches(self, table: str) -> bool:
        if self.table is not None:
            return table == self.table
        if self.table_mask is not None:
            return _mask_matches(self.table_mask, _compiled(self.table_mask), table)
        return True

    def matches(self, schema: str, table: str, column: str | None = None) -> bool:
        """pg_anon's rule: schema (exact, or mask by re.search; "*" is any), then table if named, then fields."""
        return (
            self._schema_matches(schema)
            and self._table_matches(table)
            and (self.fields is None or column is None or column in self.fields)
        )


_COMPILED: dict[str, re.Pattern[str] | None] = {}


def _compiled(pattern: str) -> re.Pattern[str] | None:
    """Masks are checked when read; "*" alone compiles to nothing (it means any)."""
    if pattern not in _COMPILED:
        try:
            _COMPILED[pattern] = re.compile(pattern)
        except re.error:
            _COMPILED[pattern] = None
    return _COMPILED[pattern]


@dataclass(frozen=True)
class FieldRule:
    """A field.rules regex (Python syntax, matched with re.search on the column name)."""

    pattern: str
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class DataRegexRule:
    """A data_regex rule, kept as text: the scan evaluates it in PostgreSQL (see check_server_regexes)."""

    pattern: str
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class DataConst:
    constants: tuple[str, ...] = ()
    partial_constants: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataFuncRule:
    """One data_func rule: a scan function (per value or per field) and the rule to apply when it fires."""

    scan_func: str | None
    scan_func_per_field: str | None
    anon_func: str
    n_count: int = 1
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class SqlCondition:
    """A data_sql_condition entry; ``sql_condition`` has no leading WHERE."""

    schema: str | None
    schema_mask: str | None
    table: str | None
    table_mask: str | None
    sql_condition: str
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class FuncTemplate:
    template: str
    line: int = field(default=0, compare=False)


class _Connection(Protocol):
    def execute(self, query: Any, params: Any = ...) -> Any: ...


@dataclass(frozen=True)
class MetaDict:
    """A pg_anon meta-dictionary. Type keys (data_func, funcs, sens_pg_types) are normalized with normalize_type."""

    source: str = field(default="<meta-dictionary>", compare=False)
    field_rules: tuple[FieldRule, ...] = ()
    field_constants: tuple[str, ...] = ()
    skip_rules: tuple[ObjectRule, ...] = ()
    include_rules: tuple[ObjectRule, ...] = ()
    data_regex: tuple[DataRegexRule, ...] = ()
    data_const: DataConst = DataConst()
    data_func: Mapping[str, tuple[DataFuncRule, ...]] = field(default_factory=lambda: MappingProxyType({}))
    data_sql_condition: tuple[SqlCondition, ...] = ()
    sens_pg_types: tuple[str, ...] = tuple(normalize_type(t) for t in DEFAULT_SENS_PG_TYPES)
    funcs: Mapping[str, FuncTemplate] = field(default_factory=lambda: MappingProxyType({}))
    default_func: FuncTemplate | None = None

    def is_skipped(self, schema: str, table: str, column: str) -> bool:
        return any(rule.matches(schema, table, column) for rule in self.skip_rules)

    def is_included(self, schema: str, table: str, column: str) -> bool:
        """True when include_rules is empty or one of them names the column."""
        return not self.include_rules or any(rule.matches(schema, table, column) for rule in self.include_rules)

    def field_rule_for(self, column: str) -> str | None:
        """The field constant equal to the name, else the first field rule found in it (re.search), else None."""
        if column in self.field_constants:
            return column
        for rule in self.field_rules:
            if re.search(rule.pattern, column):
                return rule.pattern
        return None

    def scans_type(self, type_name: str) -> bool:
        """pg_anon's resolution: the exact type (as format_type prints it), then its base type."""
        return normalize_type(type_name) in self.sens_pg_types or base_type(type_name) in self.sens_pg_types

    def sql_condition_for(self, schema: str, table: str) -> str | None:
        """An entry naming the schema and table exactly wins; otherwise the last entry matching with masks."""
        found: str | None = None
        for rule in self.data_sql_condition:
            exact_schema = rule.schema is not None and rule.schema == schema
            exact_table = rule.table is not None and rule.table == table
            if exact_schema and exact_table:
                return rule.sql_condition
            mask_schema = rule.schema_mask is not None and _mask_matches(
                rule.schema_mask, _compiled(rule.schema_mask), schema
            )
            mask_table = rule.table_mask is not None and _mask_matches(
                rule.table_mask, _compiled(rule.table_mask), table
            )
            if (mask_schema or exact_schema) and (mask_table or exact_table):
                found = rule.sql_condition
        return found

    def anon_func_for_type(self, type_name: str) -> str:
        """The funcs template for the exact type, else the base type, else default, else pg_anon's built-in."""
        for key in (normalize_type(type_name), base_type(type_name)):
            if key in self.funcs:
                return self.funcs[key].template
        return self.default_func.template if self.default_func else BUILTIN_ANON_FUNC

    def data_funcs_for_type(self, type_name: str) -> tuple[DataFuncRule, ...]:
        """The rules of the exact type (or, if it has none, of the base type), then those of anyelement."""
        own = self.data_func.get(normalize_type(type_name)) or self.data_func.get(base_type(type_name)) or ()
        return own + self.data_func.get("anyelement", ())

    def check_server_regexes(self, conn: _Connection) -> None:
        """Compile each data_regex rule in PostgreSQL; the first invalid one raises PgveilError with its line.

        One statement per rule, stopping at the first error: on a connection inside a
        transaction, that error aborts the transaction (use an autocommit connection).
        """
        for number, rule in enumerate(self.data_regex, start=1):
            try:
                conn.execute("SELECT ''::pg_catalog.text OPERATOR(pg_catalog.~) %s::pg_catalog.text", (rule.pattern,))
            except psycopg.errors.InvalidRegularExpression as exc:
                message = exc.diag.message_primary or str(exc)
                raise PgveilError(
                    f"{self.source}: line {rule.line}: data_regex rule {number} is not a valid PostgreSQL"
                    f" regular expression: {message}"
                ) from None


_OBJECT_KEYS = ("schema", "schema_mask", "table", "table_mask", "fields")


def _object_rule(check: _Checker, node: _Node, where: str, *, fields: bool = True) -> ObjectRule:
    allowed = _OBJECT_KEYS if fields else _OBJECT_KEYS[:4]
    items = check.keys(node, where, allowed)
    names: dict[str, str | None] = {}
    for exact, mask, required in (("schema", "schema_mask", True), ("table", "table_mask", False)):
        if exact in items and mask in items:
            raise check.error(items[mask].line, f"{where} has both {exact} and {mask}: give one")
        if required and exact not in items and mask not in items:
            raise check.error(node.line, f"{where} needs {exact} or {mask}")
        names[exact] = check.as_str(items[exact], f"{where}.{exact}") if exact in items else None
        names[mask] = check.python_regex(items[mask], f"{where}.{mask}", star=True) if mask in items else None
    field_names: tuple[str, ...] | None = None
    if "fields" in items:
        field_names = check.strings(items["fields"], f"{where}.fields")
        if not field_names:
            raise check.error(
                items["fields"].line,
                f"{where}.fields is empty: it would match nothing (leave it out to match every field)",
            )
    return ObjectRule(
        names["schema"], names["schema_mask"], names["table"], names["table_mask"], field_names, node.line
    )


_WHERE = re.compile(r"^\s*where\b\s*", re.IGNORECASE)


def _sql_condition(check: _Checker, node: _Node, where: str) -> str:
    condition = _WHERE.sub("", check.as_str(node, where)).strip()
    if not condition:
        raise check.error(node.line, f"{where} is empty")
    try:
        tokens = _tokenize(condition, template=False)
    except _Unmapped as exc:
        raise check.error(node.line, f"{where} is not a valid condition: {exc}") from None
    depth = 0
    for token in tokens:
        if token.kind == "semi":
            raise check.error(node.line, f"{where} contains ';': it must be one condition")
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
            if depth < 0:
                raise check.error(node.line, f"{where} has an unbalanced ')'")
    if depth:
        raise check.error(node.line, f"{where} has an unbalanced '('")
    return condition


_META_KEYS = (
    "field",
    "skip_rules",
    "include_rules",
    "data_regex",
    "data_const",
    "data_func",
    "data_sql_condition",
    "sens_pg_types",
    "funcs",
)


def _type_key(check: _Checker, seen: dict[str, tuple[str, int]], key: str, line: int, where: str) -> str:
    if not key.strip():
        raise check.error(line, f"{where} has an empty type name")
    normalized = "anyelement" if key.strip().lower() == "anyelement" else normalize_type(key)
    if normalized in seen and seen[normalized][0] != key:
        raise check.error(
            line,
            f"{where}: {key!r} and {seen[normalized][0]!r} (line {seen[normalized][1]}) name the same type {normalized!r}",
        )
    seen[normalized] = (key, line)
    return normalized


def _meta_from_node(root: _Node, source: str) -> MetaDict:
    check = _Checker(source)
    hint = ""
    if isinstance(root.value, dict) and "no_sens_dictionary" in root.value:
        hint = "; no_sens_dictionary belongs in a non-sensitive dictionary file"
    elif isinstance(root.value, dict) and "dictionary" in root.value:
        hint = "; this looks like a sensitive dictionary"
    items = check.keys(root, "the meta-dictionary", _META_KEYS, hint)
    kwargs: dict[str, Any] = {}

    if "field" in items:
        section = check.keys(items["field"], "field", ("rules", "constants"))
        if "rules" in section:
            rules = check.as_list(section["rules"], "field.rules")
            kwargs["field_rules"] = tuple(
                FieldRule(check.python_regex(rule, f"field.rules[{i}]"), rule.line) for i, rule in enumerate(rules)
            )
        if "constants" in section:
            kwargs["field_constants"] = check.strings(section["constants"], "field.constants")

    for name in ("skip_rules", "include_rules"):
        if name in items:
            kwargs[name] = tuple(
                _object_rule(check, rule, f"{name}[{i}]") for i, rule in enumerate(check.as_list(items[name], name))
            )

    if "data_regex" in items:
        section = check.keys(items["data_regex"], "data_regex", ("rules",))
        if "rules" in section:
            kwargs["data_regex"] = tuple(
                DataRegexRule(check.as_str(rule, f"data_regex.rules[{i}]"), rule.line)
                for i, rule in enumerate(check.as_list(section["rules"], "data_regex.rules"))
            )

    if "data_const" in items:
        section = check.keys(items["data_const"], "data_const", ("constants", "partial_constants"))
        kwargs["data_const"] = DataConst(
            check.strings(section["constants"], "data_const.constants") if "constants" in section else (),
            check.strings(section["partial_constants"], "data_const.partial_constants")
            if "partial_constants" in section
            else (),
        )

    if "data_func" in items:
        section = check.as_dict(items["data_func"], "data_func")
        seen: dict[str, tuple[str, int]] = {}
        by_type: dict[str, tuple[DataFuncRule, ...]] = {}
        for type_name, rules_node in section.items():
            key = _type_key(check, seen, type_name, items["data_func"].key_lines[type_name], "data_func")
            by_type[key] = tuple(
                _data_func_rule(check, rule, f"data_func[{type_name!r}][{i}]")
                for i, rule in enumerate(check.as_list(rules_node, f"data_func[{type_name!r}]"))
            )
        kwargs["data_func"] = MappingProxyType(by_type)

    if "data_sql_condition" in items:
        conditions = []
        for i, node in enumerate(check.as_list(items["data_sql_condition"], "data_sql_condition")):
            where = f"data_sql_condition[{i}]"
            entry = check.keys(node, where, (*_OBJECT_KEYS[:4], "sql_condition"))
            if "sql_condition" not in entry:
                raise check.error(node.line, f"{where} needs sql_condition")
            rule = _object_rule(
                check,
                _Node({k: v for k, v in entry.items() if k != "sql_condition"}, node.line, node.key_lines),
                where,
                fields=False,
            )
            if rule.table is None and rule.table_mask is None:
                raise check.error(node.line, f"{where} needs table or table_mask")
            conditions.append(
                SqlCondition(
                    rule.schema, rule.schema_mask, rule.table, rule.table_mask,
                    _sql_condition(check, entry["sql_condition"], f"{where}.sql_condition"), node.line,
                )
            )  # fmt: skip
        kwargs["data_sql_condition"] = tuple(conditions)

    if "sens_pg_types" in items:
        types = check.strings(items["sens_pg_types"], "sens_pg_types")
        if types:  # pg_anon: an empty list means the defaults
            kwargs["sens_pg_types"] = tuple(dict.fromkeys(normalize_type(t) for t in types))

    if "funcs" in items:
        section = check.as_dict(items["funcs"], "funcs")
        seen = {}
        funcs: dict[str, FuncTemplate] = {}
        for type_name, template_node in section.items():
            line = items["funcs"].key_lines[type_name]
            template = FuncTemplate(check.as_str(template_node, f"funcs[{type_name!r}]"), template_node.line)
            if type_name == "default":
                kwargs["default_func"] = template
            else:
                funcs[_type_key(check, seen, type_name, line, "funcs")] = template
        kwargs["funcs"] = MappingProxyType(funcs)

    return MetaDict(source=source, **kwargs)


def _data_func_rule(check: _Checker, node: _Node, where: str) -> DataFuncRule:
    items = check.keys(node, where, ("scan_func", "scan_func_per_field", "anon_func", "n_count"))
    if ("scan_func" in items) == ("scan_func_per_field" in items):
        raise check.error(node.line, f"{where} needs exactly one of scan_func and scan_func_per_field")
    if "anon_func" not in items:
        raise check.error(node.line, f"{where} needs anon_func")
    n_count = 1
    if "n_count" in items:
        count = items["n_count"]
        if "scan_func" not in items:
            raise check.error(count.line, f"{where}.n_count applies to scan_func only, not scan_func_per_field")
        if isinstance(count.value, bool) or not isinstance(count.value, int) or count.value < 1:
            raise check.error(count.line, f"{where}.n_count must be a positive integer")
        n_count = count.value
    return DataFuncRule(
        check.as_str(items["scan_func"], f"{where}.scan_func") if "scan_func" in items else None,
        check.as_str(items["scan_func_per_field"], f"{where}.scan_func_per_field")
        if "scan_func_per_field" in items
        else None,
        check.as_str(items["anon_func"], f"{where}.anon_func"),
        n_count,
        node.line,
    )


def parse_meta_dict(text: str, source: str = "<meta-dictionary>", fmt: Format = "py") -> MetaDict:
    """Read a meta-dictionary from its text; every error names ``source`` and the line."""
    return _meta_from_node(_read(text, source, fmt), source)


def load_meta_dict(path: str | Path) -> MetaDict:
    """Read a meta-dictionary file (``.py`` as a Python literal, ``.json`` as JSON)."""
    return parse_meta_dict(*_read_file(path))


# ---------------------------------------------------------------------------
# Sensitive and non-sensitive dictionaries
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SensEntry:
    schema: str
    table: str
    fields: Mapping[str, str]
    sql_condition: str | None = None
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class ExcludeRule:
    """A dictionary_exclude entry: schema or schema_mask, and table or table_mask."""

    rule: ObjectRule

    def matches(self, schema: str, table: str) -> bool:
        return self.rule.matches(schema, table)


@dataclass(frozen=True)
class SensDict:
    entries: tuple[SensEntry, ...] = ()
    exclude: tuple[ExcludeRule, ...] = ()
    source: str = field(default="<sensitive dictionary>", compare=False)

    def _entry(self, schema: str, table: str, column: str) -> SensEntry | None:
        for entry in self.entries:
            if entry.schema == schema and entry.table == table and column in entry.fields:
                return entry
        return None

    def rule_for(self, schema: str, table: str, column: str) -> str | None:
        entry = self._entry(schema, table, column)
        return None if entry is None else entry.fields[column]

    def is_listed(self, schema: str, table: str, column: str) -> bool:
        return self._entry(schema, table, column) is not None

    def is_excluded(self, schema: str, table: str) -> bool:
        """Named by dictionary_exclude and by no dictionary entry (an entry wins, as in pg_anon)."""
        if any(entry.schema == schema and entry.table == table for entry in self.entries):
            return False
        return any(rule.matches(schema, table) for rule in self.exclude)

    def sql_condition_for(self, schema: str, table: str) -> str | None:
        for entry in self.entries:
            if entry.schema == schema and entry.table == table and entry.sql_condition is not None:
                return entry.sql_condition
        return None


@dataclass(frozen=True)
class NoSensEntry:
    schema: str
    table: str
    fields: tuple[str, ...]
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class NoSensDict:
    entries: tuple[NoSensEntry, ...] = ()
    source: str = field(default="<non-sensitive dictionary>", compare=False)

    def is_listed(self, schema: str, table: str, column: str) -> bool:
        return any(e.schema == schema and e.table == table and column in e.fields for e in self.entries)


def parse_sens_dict(text: str, source: str = "<sensitive dictionary>", fmt: Format = "py") -> SensDict:
    root = _read(text, source, fmt)
    check = _Checker(source)
    hint = "; this looks like a meta-dictionary" if any(k in _META_KEYS for k in root.value) else ""
    items = check.keys(root, "the sensitive dictionary", ("dictionary", "dictionary_exclude"), hint)
    entries: list[SensEntry] = []
    seen: dict[tuple[str, str, str], int] = {}
    for i, node in enumerate(check.as_list(items["dictionary"], "dictionary") if "dictionary" in items else []):
        where = f"dictionary[{i}]"
        entry = check.keys(node, where, ("schema", "table", "fields", "sql_condition"))
        for required in ("schema", "table", "fields"):
            if required not in entry:
                raise check.error(node.line, f"{where} needs {required}")
        schema = check.as_str(entry["schema"], f"{where}.schema")
        table = check.as_str(entry["table"], f"{where}.table")
        fields_node = entry["fields"]
        fields: dict[str, str] = {}
        for name, rule in check.as_dict(fields_node, f"{where}.fields").items():
            line = fields_node.key_lines[name]
            if (schema, table, name) in seen:
                raise check.error(
                    line, f"{schema}.{table}.{name} is listed twice (first on line {seen[schema, table, name]})"
                )
            seen[schema, table, name] = line
            fields[name] = check.as_str(rule, f"{where}.fields[{name!r}]")
        condition = (
            _sql_condition(check, entry["sql_condition"], f"{where}.sql_condition")
            if "sql_condition" in entry
            else None
        )
        entries.append(SensEntry(schema, table, MappingProxyType(fields), condition, node.line))
    exclude: list[ExcludeRule] = []
    if "dictionary_exclude" in items:
        for i, node in enumerate(check.as_list(items["dictionary_exclude"], "dictionary_exclude")):
            where = f"dictionary_exclude[{i}]"
            object_rule = _object_rule(check, node, where, fields=False)
            if object_rule.table is None and object_rule.table_mask is None:
                raise check.error(node.line, f"{where} needs table or table_mask")
            exclude.append(ExcludeRule(object_rule))
    return SensDict(tuple(entries), tuple(exclude), source)


def load_sens_dict(path: str | Path) -> SensDict:
    return parse_sens_dict(*_read_file(path))


def parse_no_sens_dict(text: str, source: str = "<non-sensitive dictionary>", fmt: Format = "py") -> NoSensDict:
    root = _read(text, source, fmt)
    check = _Checker(source)
    items = check.keys(root, "the non-sensitive dictionary", ("no_sens_dictionary",))
    entries: list[NoSensEntry] = []
    nodes = check.as_list(items["no_sens_dictionary"], "no_sens_dictionary") if "no_sens_dictionary" in items else []
    for i, node in enumerate(nodes):
        where = f"no_sens_dictionary[{i}]"
        entry = check.keys(node, where, ("schema", "table", "fields"))
        for required in ("schema", "table", "fields"):
            if required not in entry:
                raise check.error(node.line, f"{where} needs {required}")
        entries.append(
            NoSensEntry(
                check.as_str(entry["schema"], f"{where}.schema"),
                check.as_str(entry["table"], f"{where}.table"),
                check.strings(entry["fields"], f"{where}.fields"),
                node.line,
            )
        )
    return NoSensDict(tuple(entries), source)


def load_no_sens_dict(path: str | Path) -> NoSensDict:
    return parse_no_sens_dict(*_read_file(path))


def parse_tables_dict(text: str, source: str = "<tables dictionary>", fmt: Format = "py") -> tuple[ObjectRule, ...]:
    """pg_anon's tables dictionary, ``{"tables": [{schema|schema_mask, table|table_mask}]}``:
    the tables a partial dump or restore takes (or leaves out)."""
    root = _read(text, source, fmt)
    check = _Checker(source)
    items = check.keys(root, "the tables dictionary", ("tables",))
    rules = []
    for i, node in enumerate(check.as_list(items["tables"], "tables") if "tables" in items else []):
        rule = _object_rule(check, node, f"tables[{i}]", fields=False)
        if rule.table is None and rule.table_mask is None:
            raise check.error(node.line, f"tables[{i}] needs table or table_mask")
        rules.append(rule)
    return tuple(rules)


def _dump(document: dict[str, Any]) -> str:
    # JSON is also a Python literal here (strings, lists and dicts only): pg_anon reads it
    # with ast.literal_eval, pgveil as either.
    return json.dumps(document, indent=4, sort_keys=True, ensure_ascii=False) + "\n"


def dump_no_sens_dict(columns: Iterable[tuple[str, str, str]]) -> str:
    """A non-sensitive dictionary of (schema, table, column): one entry per table, sorted."""
    tables: dict[tuple[str, str], set[str]] = {}
    for schema, table, column in columns:
        tables.setdefault((schema, table), set()).add(column)
    return _dump(
        {
            "no_sens_dictionary": [
                {"schema": schema, "table": table, "fields": sorted(names)}
                for (schema, table), names in sorted(tables.items())
            ]
        }
    )


def dump_sens_dict(
    entries: Iterable[SensEntry | tuple[str, str, str, str]], exclude: Iterable[ExcludeRule] = ()
) -> str:
    """A sensitive dictionary from SensEntry objects or (schema, table, column, rule) rows, sorted by table."""
    tables: dict[tuple[str, str], dict[str, Any]] = {}
    for item in entries:
        if isinstance(item, SensEntry):
            schema, table, fields, condition = item.schema, item.table, dict(item.fields), item.sql_condition
        else:
            schema, table, column, rule = item
            fields, condition = {column: rule}, None
        entry = tables.setdefault((schema, table), {"schema": schema, "table": table, "fields": {}})
        for column, rule in fields.items():
            if entry["fields"].get(column, rule) != rule:
                raise PgveilError(f"{schema}.{table}.{column} is given two different rules")
            entry["fields"][column] = rule
        if condition is not None:
            entry["sql_condition"] = condition
    document: dict[str, Any] = {"dictionary": [tables[key] for key in sorted(tables)]}
    excluded = []
    for excluded_rule in exclude:
        r = excluded_rule.rule
        excluded.append(
            {
                k: v
                for k, v in (
                    ("schema", r.schema),
                    ("schema_mask", r.schema_mask),
                    ("table", r.table),
                    ("table_mask", r.table_mask),
                )
                if v is not None
            }
        )
    if excluded:
        document["dictionary_exclude"] = excluded
    return _dump(document)


# ---------------------------------------------------------------------------
# Mapping pg_anon rules to pgveil labels
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MappedRule:
    """A pgveil label for a pg_anon rule, or why there is none; ``note`` tells a difference in behaviour."""

    label: str | None
    problem: str | None = None
    note: str | None = None


class _Unmapped(Exception):
    """Why a rule cannot be mapped (a message for a person, never with a data value)."""


@dataclass(frozen=True)
class _Token:
    kind: str  # string, estring, dollar, qident, word, number, placeholder, punct, op, semi
    text: str  # the source text (for string: the value; for qident: the name)
    pos: int


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>--|/\*)
  | (?P<placeholder>%s)
  | (?P<estring>[eE]')
  | (?P<string>')
  | (?P<qident>")
  | (?P<dollar>\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<word>[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*)
  | (?P<cast>::)
  | (?P<punct>[(),\[\].])
  | (?P<semi>;)
  | (?P<op>[-+*/<>=~!@\#%^&|`?:]+)
    """,
    re.VERBOSE,
)


def _tokenize(text: str, *, template: bool) -> list[_Token]:
    """SQL tokens; string literals and quoted identifiers are read whole, so nothing inside them counts."""
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _Unmapped(f"unexpected character {text[pos]!r} at position {pos + 1}")
        kind = match.lastgroup
        assert kind is not None
        if kind == "ws":
            pos = match.end()
            continue
        if kind == "comment":
            raise _Unmapped("a comment is not part of a rule")
        if kind in ("string", "estring"):
            start = match.end()
            end = start
            value = []
            while True:
                if end >= len(text):
                    raise _Unmapped("unterminated string literal")
                char = text[end]
                if kind == "estring" and char == "\\":
                    value.append(text[end : end + 2])
                    end += 2
                    continue
                if char == "'":
                    if text[end + 1 : end + 2] == "'":
                        value.append("''" if kind == "estring" else "'")
                        end += 2
                        continue
                    break
                value.append(char)
                end += 1
            literal = "".join(value)
            if template and kind == "string":
                if "%s" in literal.replace("%%", ""):
                    raise _Unmapped("%s inside a string literal")
                literal = literal.replace("%%", "%")
            tokens.append(_Token(kind, literal, pos))
            pos = end + 1
        elif kind == "qident":
            end = pos + 1
            name = []
            while True:
                if end >= len(text):
                    raise _Unmapped("unterminated quoted identifier")
                if text[end] == '"':
                    if text[end + 1 : end + 2] == '"':
                        name.append('"')
                        end += 2
                        continue
                    break
                name.append(text[end])
                end += 1
            tokens.append(_Token("qident", "".join(name), pos))
            pos = end + 1
        elif kind == "dollar":
            tag = match.group(0)
            end = text.find(tag, match.end())
            if end < 0:
                raise _Unmapped("unterminated dollar-quoted string")
            tokens.append(_Token("string", text[match.end() : end], pos))
            pos = end + len(tag)
        else:
            tokens.append(_Token(kind, match.group(0), pos))
            pos = match.end()
    return tokens


# PostgreSQL's reserved, column-name and type-function-name keywords: quote_ident() quotes these.
_KEYWORDS = frozenset(
    [
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "asymmetric",
        "authorization",
        "between",
        "bigint",
        "binary",
        "bit",
        "boolean",
        "both",
        "case",
        "cast",
        "char",
        "character",
        "check",
        "coalesce",
        "collate",
        "collation",
        "column",
        "concurrently",
        "constraint",
        "create",
        "cross",
        "current_catalog",
        "current_date",
        "current_role",
        "current_schema",
        "current_time",
        "current_timestamp",
        "current_user",
        "dec",
        "decimal",
        "default",
        "deferrable",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "exists",
        "extract",
        "false",
        "fetch",
        "float",
        "for",
        "foreign",
        "freeze",
        "from",
        "full",
        "grant",
        "greatest",
        "group",
        "grouping",
        "having",
        "ilike",
        "in",
        "initially",
        "inner",
        "inout",
        "int",
        "integer",
        "intersect",
        "interval",
        "into",
        "is",
        "isnull",
        "join",
        "json",
        "json_array",
        "json_arrayagg",
        "json_exists",
        "json_object",
        "json_objectagg",
        "json_query",
        "json_scalar",
        "json_serialize",
        "json_table",
        "json_value",
        "lateral",
        "leading",
        "least",
        "left",
        "like",
        "limit",
        "localtime",
        "localtimestamp",
        "merge_action",
        "national",
        "natural",
        "nchar",
        "none",
        "normalize",
        "not",
        "notnull",
        "null",
        "nullif",
        "numeric",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "out",
        "outer",
        "overlaps",
        "overlay",
        "placing",
        "position",
        "precision",
        "primary",
        "real",
        "references",
        "returning",
        "right",
        "row",
        "select",
        "session_user",
        "setof",
        "similar",
        "smallint",
        "some",
        "substring",
        "symmetric",
        "system_user",
        "table",
        "tablesample",
        "then",
        "time",
        "timestamp",
        "to",
        "trailing",
        "treat",
        "trim",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "values",
        "varchar",
        "variadic",
        "verbose",
        "when",
        "where",
        "window",
        "with",
        "xmlattributes",
        "xmlconcat",
        "xmlelement",
        "xmlexists",
        "xmlforest",
        "xmlnamespaces",
        "xmlparse",
        "xmlpi",
        "xmlroot",
        "xmlserialize",
        "xmltable",
    ]
)
_PLAIN_IDENT = re.compile(r"^[a-z_][a-z0-9_$]*$")


def quote_ident(name: str) -> str:
    """PostgreSQL's quote_ident(): the name as is when that reads back the same, else in double quotes."""
    if _PLAIN_IDENT.match(name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings, as every supported server has)."""
    return "'" + value.replace("'", "''") + "'"


# pg_anon's anon_funcs and veil's functions of the same name: (min args, max args).
_VEIL_FUNCTIONS: dict[str, tuple[int, int]] = {
    "noise": (2, 2),
    "dnoise": (2, 2),
    "digest": (3, 3),
    "partial": (4, 4),
    "partial_email": (1, 1),
    "random_string": (1, 1),
    "random_zip": (0, 0),
    "random_date_between": (2, 2),
    "random_date": (0, 0),
    "random_int_between": (2, 2),
    "random_bigint_between": (2, 2),
    "random_phone": (0, 1),
    "random_hash": (2, 2),
    "random_in": (1, 1),
    "hex_to_int": (1, 1),
}
_VEIL_NOTES = {
    "random_zip": "veil.random_zip() gives 5 digits, pg_anon's anon_funcs.random_zip() 6",
    "random_int_between": "veil includes both ends of the range; pg_anon's never returns int_stop",
    "random_bigint_between": "veil includes both ends of the range; pg_anon's never returns int_stop",
    "random_phone": "veil's 9 digits may start with 0; pg_anon's never do",
    "partial_email": (
        "veil keeps 2 characters of the domain; pg_anon keeps one fewer than the top-level domain has (2 for .com,"
        " 1 for .ru)"
    ),
}
_DIGEST_ALGORITHMS = ("md5", "sha224", "sha256", "sha384", "sha512")
# pg_catalog functions veil_private.is_allowed_catalog_function() lets a rule call (casts aside).
_TRUSTED_CATALOG = frozenset(
    [
        "md5",
        "sha224",
        "sha256",
        "sha384",
        "sha512",
        "encode",
        "left",
        "right",
        "lower",
        "upper",
        "initcap",
        "concat",
        "concat_ws",
        "substr",
        "substring",
        "length",
        "char_length",
        "btrim",
        "ltrim",
        "rtrim",
        "lpad",
        "rpad",
        "replace",
        "regexp_replace",
        "split_part",
        "translate",
        "repeat",
        "reverse",
        "date_trunc",
        "date_part",
        "round",
        "trunc",
        "floor",
        "ceil",
        "ceiling",
        "abs",
        "mod",
        "to_char",
        "format",
    ]
)
# veil's masking functions (veil_private.is_masking_function); a dictionary written for pgveil may name them.
_VEIL_MASKING = re.compile(
    r"^(noise|dnoise|partial|partial_email|random_[a-z_]+|hex_to_int|digest|fake_[a-z_]+|pseudo_[a-z_]+"
    r"|generalize_[a-z0-9_]+|token|jsonb?_mask(_keyed)?|unique_[a-z_]+"
    r"|email_with_domain|email_keep_domain|redact|redact_digits|redact_street|name_keep_initial)$"
)
_NOT_A_COLUMN = frozenset(
    [
        "select",
        "from",
        "where",
        "case",
        "when",
        "then",
        "else",
        "end",
        "and",
        "or",
        "not",
        "exists",
        "distinct",
        "in",
        "is",
        "like",
        "ilike",
        "similar",
        "between",
        "any",
        "all",
        "some",
        "union",
        "except",
        "intersect",
        "order",
        "group",
        "having",
        "limit",
        "offset",
        "with",
        "as",
        "on",
        "join",
        "using",
        "values",
        "returning",
    ]
)


@dataclass(frozen=True)
class _Expr:
    kind: str  # const, column, call, array, cast
    sql: str  # rendered for pgveil
    reads_column: bool = False
    const_is_string: bool = False
    value_sql: str = ""  # for constants: the form MASKED WITH VALUE takes


class _Parser:
    def __init__(self, tokens: list[_Token], column: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.column = column
        self.notes: list[str] = []

    def peek(self, offset: int = 0) -> _Token | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise _Unmapped("the rule ends too early")
        self.pos += 1
        return token

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text or token.kind not in ("punct", "cast"):
            raise _Unmapped(f"expected {text!r}, found {_show(token)}")

    def at(self, text: str) -> bool:
        token = self.peek()
        return token is not None and token.kind in ("punct", "cast") and token.text == text

    def expression(self) -> _Expr:
        """An operand, possibly combined with ||: rewritten as concat() only where no operand reads a column."""
        parts = [self.operand()]
        while (token := self.peek()) is not None and token.kind == "op" and token.text == "||":
            self.take()
            parts.append(self.operand())
        if len(parts) == 1:
            return parts[0]
        if any(part.reads_column for part in parts):
            raise _Unmapped(
                "the rule joins values with the operator ||, and a NULL column makes || NULL where concat() would"
                " not: pgveil's rule is one call, so write it with concat(...) yourself if that difference is acceptable"
            )
        self.notes.append("|| written as concat(): the same here, since no operand reads a column")
        return _Expr("call", f"concat({', '.join(part.sql for part in parts)})")

    def operand(self) -> _Expr:
        expr = self.primary()
        while self.at("::"):
            self.take()
            type_name = self.type_name()
            if expr.kind == "const" and expr.const_is_string:
                sql = f"{expr.sql}::{type_name}"
                expr = _Expr("const", sql, value_sql=sql, const_is_string=True)
            else:
                expr = _Expr("cast", f"{expr.sql}::{type_name}", expr.reads_column)
        token = self.peek()
        if token is not None and token.kind == "op" and token.text == "=>":
            raise _Unmapped("named arguments (=>) are not mapped")
        if token is not None and token.kind == "op" and token.text != "||":
            raise _Unmapped(
                f"operator {token.text} is not part of pgveil's rule grammar (a constant, or one call of a trusted"
                " function)"
            )
        return expr

    def type_name(self) -> str:
        words: list[str] = []
        while (token := self.peek()) is not None and token.kind in ("word", "qident"):
            self.take()
            words.append(token.text.lower() if token.kind == "word" else quote_ident(token.text))
            if self.at(".") and words:
                self.take()
                words[-1] += "."
        if not words:
            raise _Unmapped("expected a type name after ::")
        name = " ".join(words).replace(". ", ".")
        if self.at("("):
            self.take()
            mods = []
            while not self.at(")"):
                token = self.take()
                if token.kind != "number" and token.text != ",":
                    raise _Unmapped(f"unexpected {_show(token)} in a type modifier")
                mods.append(token.text)
            self.take()
            name += "(" + "".join(mods).replace(",", ", ") + ")"
        while self.at("[") and (after := self.peek(1)) is not None and after.text == "]":
            self.take()
            self.take()
            name += "[]"
        return name

    def call(self, schema: str | None, name: str) -> _Expr:
        self.expect("(")
        args: list[_Expr] = []
        if not self.at(")"):
            while True:
                token = self.peek()
                if token is not None and token.kind == "word" and token.text.lower() in ("distinct", "variadic", "all"):
                    raise _Unmapped(f"{token.text.upper()} in a call is not part of a rule")
                args.append(self.expression())
                after = self.peek()
                if after is not None and after.kind == "op" and after.text == "=>":
                    raise _Unmapped("named arguments (=>) are not mapped")
                if self.at(","):
                    self.take()
                    continue
                break
        self.expect(")")
        return self.resolve(schema, name, args)

    def resolve(self, schema: str | None, name: str, args: list[_Expr]) -> _Expr:
        reads = any(arg.reads_column for arg in args)
        rendered_args = ", ".join(arg.sql for arg in args)
        shown = f"{schema}.{name}" if schema else name
        if schema == "anon_funcs":
            if name not in _VEIL_FUNCTIONS:
                raise _Unmapped(f"anon_funcs.{name}() has no equivalent in veil")
            low, high = _VEIL_FUNCTIONS[name]
            if not low <= len(args) <= high:
                expected = str(low) if low == high else f"{low} to {high}"
                raise _Unmapped(f"anon_funcs.{name}() takes {expected} argument(s), the rule gives {len(args)}")
            algorithm = {"digest": 2, "random_hash": 1}.get(name)
            if algorithm is not None:
                arg = args[algorithm]
                if arg.kind == "const" and arg.const_is_string and arg.sql.lower().strip("'") not in _DIGEST_ALGORITHMS:
                    raise _Unmapped(
                        f"veil.{name}() takes the algorithms {', '.join(_DIGEST_ALGORITHMS)}; the rule asks for {arg.sql}"
                    )
            if name in _VEIL_NOTES:
                self.notes.append(_VEIL_NOTES[name])
            return _Expr("call", f"veil.{name}({rendered_args})", reads)
        if schema in (None, "pg_catalog") and name in _TRUSTED_CATALOG:
            return _Expr("call", f"pg_catalog.{name}({rendered_args})", reads)
        if schema == "veil" and _VEIL_MASKING.match(name):
            return _Expr("call", f"veil.{name}({rendered_args})", reads)
        if schema is None and name in ("digest", "hmac", "encrypt", "decrypt", "encrypt_iv", "crypt", "gen_salt"):
            raise _Unmapped(
                f"pgcrypto's {name}() is not a trusted rule function (for hashing, anon_funcs.digest maps to veil.digest;"
                " encryption has no equivalent on purpose)"
            )
        raise _Unmapped(
            f"function {shown}() is not one pgveil's rules may call: veil's masking functions, a few pg_catalog"
            " functions, or functions of a schema labeled TRUSTED (map it by hand)"
        )

    def name_part(self, token: _Token) -> str:
        return token.text.lower() if token.kind == "word" else token.text

    def primary(self) -> _Expr:
        token = self.take()
        if token.kind == "placeholder":
            return _Expr("column", quote_ident(self.column), reads_column=True)
        if token.kind == "string":
            return _Expr("const", quote_literal(token.text), const_is_string=True, value_sql=quote_literal(token.text))
        if token.kind == "estring":
            sql = f"E'{token.text}'"
            return _Expr("const", sql, const_is_string=True, value_sql=sql)
        if token.kind == "number" or (token.kind == "op" and token.text in ("-", "+") and self._next_is("number")):
            sign = "-" if token.text == "-" else ""
            number = token.text if token.kind == "number" else sign + self.take().text
            return _Expr("const", number, value_sql=quote_literal(number))
        if token.kind == "punct" and token.text == "(":
            inner = self.expression()
            self.expect(")")
            return _Expr(inner.kind, f"({inner.sql})", inner.reads_column, inner.const_is_string, inner.value_sql)
        if token.kind == "qident" and token.text == "%s":
            return _Expr("column", quote_ident(self.column), reads_column=True)
        if token.kind in ("word", "qident"):
            word = self.name_part(token)
            if self.at("."):
                self.take()
                second = self.take()
                if second.kind not in ("word", "qident"):
                    raise _Unmapped(f"unexpected {_show(second)} after '.'")
                if self.at("("):
                    return self.call(word, self.name_part(second))
                raise _Unmapped("a qualified column reference (table.column) is not part of a rule")
            if self.at("("):
                return self.call(None, word)
            if token.kind == "word":
                lowered = token.text.lower()
                if lowered == "null":
                    return _Expr("const", "NULL", value_sql="NULL")
                if lowered in ("true", "false"):
                    return _Expr("const", lowered, value_sql=lowered)
                if lowered == "array" and self.at("["):
                    return self.array()
                following = self.peek()
                if following is not None and following.kind == "string":  # a typed literal: interval '6 month'
                    self.take()
                    sql = f"{lowered} {quote_literal(following.text)}"
                    return _Expr("const", sql, value_sql=sql)
                if lowered in _NOT_A_COLUMN:
                    raise _Unmapped(f"{token.text.upper()} (an SQL keyword) is not part of a rule")
            return _Expr("column", quote_ident(word), reads_column=True)
        raise _Unmapped(f"unexpected {_show(token)}")

    def _next_is(self, kind: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == kind

    def array(self) -> _Expr:
        self.expect("[")
        items: list[_Expr] = []
        if not self.at("]"):
            while True:
                items.append(self.expression())
                if self.at(","):
                    self.take()
                    continue
                break
        self.expect("]")
        return _Expr("array", f"ARRAY[{', '.join(item.sql for item in items)}]", any(i.reads_column for i in items))


def _show(token: _Token) -> str:
    if token.kind == "string":
        return "a string literal"
    if token.kind == "semi":
        return "';'"
    return repr(token.text)


def map_anon_rule(template_or_rule: str, column: str) -> MappedRule:
    """A pg_anon rule (a funcs/anon_func template with %s, or a sensitive dictionary's rule) as a pgveil label.

    The column replaces ``"%s"`` and ``%s``; in a rule without them, names are read as columns of
    the row (PostgreSQL folds unquoted ones to lower case). The label is for
    ``veil.security_label(policy, 'COLUMN', 'schema.table.column', label)``, which checks
    it again in the database. A rule that is not one call of a function pgveil trusts,
    or a constant, is not mapped, and ``problem`` says why.
    """
    template = "%s" in template_or_rule
    try:
        tokens = _tokenize(template_or_rule, template=template)
        if not tokens:
            raise _Unmapped("the rule is empty")
        for token in tokens:
            if token.kind == "semi":
                raise _Unmapped("';' is not part of a rule")
        parser = _Parser(tokens, column)
        expr = parser.expression()
        rest = parser.peek()
        if rest is not None:
            raise _Unmapped(f"unexpected {_show(rest)} after the expression")
        if expr.kind == "const":
            label = f"MASKED WITH VALUE {expr.value_sql}"
        elif expr.kind == "call":
            label = f"MASKED WITH FUNCTION {expr.sql}"
        elif expr.kind == "column":
            if expr.sql == quote_ident(column):
                raise _Unmapped("the rule is the column itself (the value unchanged): in pgveil that is NOT MASKED")
            raise _Unmapped(f"the rule copies column {expr.sql}: pgveil's rule is a constant or one call")
        elif expr.kind == "cast":
            raise _Unmapped(
                "the rule casts its result: pgveil casts a rule's result to the column's type itself, so write the"
                " call without the cast if that is what you want"
            )
        else:
            raise _Unmapped("an ARRAY[...] is not one call or a constant")
        if re.search(r";|--|/\*", label):
            raise _Unmapped(
                "the rule contains ';', '--' or '/*' (inside a literal too), which pgveil's validation refuses"
            )
    except _Unmapped as exc:
        return MappedRule(None, str(exc))
    return MappedRule(label, None, "; ".join(parser.notes) or None)
