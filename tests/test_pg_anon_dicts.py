"""pg_anon's dictionaries read as data (pgveil/pg_anon_dicts.py, docs/pg_anon_dictionaries.md): the
meta-dictionary's sections and matching, the sensitive and non-sensitive dictionaries, files that
are code rather than data, and pg_anon rules mapped to pgveil labels that the database accepts."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import psycopg
import pytest

from pgveil.errors import PgveilError
from pgveil.pg_anon_dicts import (
    BUILTIN_ANON_FUNC,
    MetaDict,
    dump_no_sens_dict,
    dump_sens_dict,
    load_meta_dict,
    load_no_sens_dict,
    load_sens_dict,
    map_anon_rule,
    normalize_type,
    parse_meta_dict,
    parse_sens_dict,
    quote_ident,
)
from tests.helpers import label

# The README's complete meta-dictionary, in its `var = {...}` form, with comments and r-strings.
FULL_META = '''\
# scan rules for the test database
var = {
    "field": {  # by name, without reading data
        "rules": ["^fld_5_em", "^amount"],
        "constants": ["usd", "name"],
    },
    "skip_rules": [
        {"schema": "schm_skip", "table": "card_numbers", "fields": ["val_skip"]},
    ],
    "include_rules": [
        {"schema": "schm_other_2", "table": "tbl_test_anon_functions", "fields": ["fld_5_email"]},
    ],
    "data_regex": {
        "rules": [
            r"""[A-Za-z0-9]+([._-][A-Za-z0-9]+)*@[A-Za-z0-9-]+(\\.[A-Za-z]{2,})+""",  # email
            r"^(7?\\d{10})$",  # phone
        ]
    },
    "data_const": {
        "constants": ["simpson", "account", "secret company name"],
        "partial_constants": ["@example.com", "login_"],
    },
    "data_func": {
        "text": [
            {
                "scan_func": "my_custom_functions.check_by_users_table",
                "anon_func": "anon_funcs.digest(\\"%s\\", 'salt_word', 'md5')",
                "n_count": 100,
            },
        ],
    },
    "data_sql_condition": [
        {
            "schema": "schm_skip",
            "table_mask": "*",
            "sql_condition": """
            WHERE created > '2024-01-01' AND created < '2024-12-31'
            """,
        }
    ],
    "sens_pg_types": ["text", "integer", "bigint", "varchar", "json"],
    "funcs": {
        "text": "anon_funcs.digest(\\"%s\\", 'salt_word', 'md5')",
        "numeric": "anon_funcs.noise(\\"%s\\", 10)",
        "timestamp": "anon_funcs.dnoise(\\"%s\\",  interval '6 month')",
        "default": "anon_funcs.digest(\\"%s\\", 'MySecretSaltWord', 'sha256')",
    },
}
'''


def write(tmp_path: Path, text: str, name: str = "dict.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_readme_meta_dictionary_is_read_section_by_section(tmp_path: Path) -> None:
    meta = load_meta_dict(write(tmp_path, FULL_META))

    assert [r.pattern for r in meta.field_rules] == ["^fld_5_em", "^amount"]
    assert [r.line for r in meta.field_rules] == [4, 4]
    assert meta.field_constants == ("usd", "name")
    assert len(meta.skip_rules) == 1 and meta.skip_rules[0].schema == "schm_skip"
    assert meta.skip_rules[0].fields == ("val_skip",) and meta.skip_rules[0].table == "card_numbers"
    assert meta.include_rules[0].fields == ("fld_5_email",)
    assert [r.pattern for r in meta.data_regex] == [
        r"[A-Za-z0-9]+([._-][A-Za-z0-9]+)*@[A-Za-z0-9-]+(\.[A-Za-z]{2,})+",
        r"^(7?\d{10})$",
    ]
    assert [r.line for r in meta.data_regex] == [15, 16]
    assert meta.data_const.constants == ("simpson", "account", "secret company name")
    assert meta.data_const.partial_constants == ("@example.com", "login_")
    (rule,) = meta.data_func["text"]
    assert (rule.scan_func, rule.scan_func_per_field, rule.n_count) == (
        "my_custom_functions.check_by_users_table",
        None,
        100,
    )
    assert rule.anon_func == "anon_funcs.digest(\"%s\", 'salt_word', 'md5')"
    (condition,) = meta.data_sql_condition
    assert condition.sql_condition == "created > '2024-01-01' AND created < '2024-12-31'"  # WHERE stripped
    assert meta.sql_condition_for("schm_skip", "any_table") == condition.sql_condition
    assert meta.sql_condition_for("public", "any_table") is None
    assert meta.sens_pg_types == ("text", "integer", "bigint", "character varying", "json")
    assert set(meta.funcs) == {"text", "numeric", "timestamp without time zone"}
    assert meta.default_func is not None and "MySecretSaltWord" in meta.default_func.template

    # Matching as pg_anon's scan would.
    assert meta.is_skipped("schm_skip", "card_numbers", "val_skip")
    assert not meta.is_skipped("schm_skip", "card_numbers", "other")
    assert meta.is_included("schm_other_2", "tbl_test_anon_functions", "fld_5_email")
    assert not meta.is_included("public", "tbl_test_anon_functions", "fld_5_email")
    assert meta.field_rule_for("fld_5_email") == "^fld_5_em"
    assert meta.field_rule_for("usd") == "usd"
    assert meta.field_rule_for("fld_5_emaiX") == "^fld_5_em"
    assert meta.field_rule_for("my_amount") is None
    assert meta.scans_type("character varying(20)") and not meta.scans_type("numeric(10,2)")
    assert meta.anon_func_for_type("timestamp(6) without time zone") == "anon_funcs.dnoise(\"%s\",  interval '6 month')"


def test_an_empty_or_missing_section_takes_pg_anons_defaults(tmp_path: Path) -> None:
    for text in ("", "# nothing yet\n", "{}", '{"sens_pg_types": []}'):
        meta = load_meta_dict(write(tmp_path, text))
        assert meta.sens_pg_types == (
            "text",
            "character",
            "character varying",
            "mvarchar",
            "json",
            "integer",
            "bigint",
        )
        assert meta.is_included("any", "table", "column") and not meta.is_skipped("any", "table", "column")
        assert meta.anon_func_for_type("text") == BUILTIN_ANON_FUNC


def test_a_json_meta_dictionary_is_read_with_lines(tmp_path: Path) -> None:
    path = write(tmp_path, '{\n  "field": {"rules": ["^a"],\n  "constants": ["b"]}\n}\n', "meta.json")
    meta = load_meta_dict(path)
    assert meta.field_rules[0].pattern == "^a" and meta.field_rules[0].line == 2
    bad = write(tmp_path, '{\n  "field": {"rules": ["^a"]},\n  "fields": []\n}\n', "bad.json")
    with pytest.raises(PgveilError, match=r"bad\.json: line 3: unknown key 'fields' in the meta-dictionary"):
        load_meta_dict(bad)
    broken = write(tmp_path, '{\n  "field": {"rules": ["^a",]}\n}\n', "broken.json")
    with pytest.raises(PgveilError, match=r"broken\.json: line 2: not valid JSON"):
        load_meta_dict(broken)


# --- The manual's matching tables (the example database of its meta-dictionary sections) ---

COLUMNS = [
    ("public", "employees", "id"),
    ("public", "employees", "full_name"),
    ("public", "employees", "email"),
    ("public", "employees", "password"),
    ("public", "employees", "phone"),
    ("public", "employees", "hire_date"),
    ("public", "salaries", "employee_id"),
    ("public", "salaries", "monthly_salary"),
    ("public", "salaries", "currency"),
    ("ecommerce", "orders", "product_id"),
    ("ecommerce", "orders", "client_name"),
    ("ecommerce", "orders", "client_phone"),
    ("ecommerce", "orders", "client_delivery_address"),
    ("ecommerce", "orders", "count"),
    ("ecommerce", "orders", "created"),
    ("ecommerce", "orders", "status"),
    ("tmp_some_1", "tbl_1", "content"),
    ("tmp_some_2", "tbl_2", "content"),
]

# The manual's skip_rules and include_rules example, with its misspelt "schema_msk" corrected
# (pgveil refuses the misspelling: see test_the_manuals_misspelt_key_is_refused_with_its_line).
OBJECT_RULES = """[
    {"schema_mask": "^tmp.*"},
    {"schema": "ecommerce", "table_mask": "^client_.*"},
    {"schema": "public", "fields": ["currency", "id", "employee_id"]},
    {"schema": "ecommerce", "table": "orders", "fields": ["count"]},
]"""

# The manual's "Is skipped" column. Its table marks ecommerce.orders.client_* as skipped by the
# table_mask "^client_.*", but that mask names tables and the table is "orders": by the rule
# combinations the manual states (and pg_anon's code), those three fields are not matched.
SKIPPED = {
    ("public", "employees", "id"),
    ("public", "salaries", "currency"),
    ("ecommerce", "orders", "count"),
    ("tmp_some_1", "tbl_1", "content"),
    ("tmp_some_2", "tbl_2", "content"),
    # the manual has employee_id "No" too, although it is in the rule's fields: a second slip;
    # the rule names it, so it is skipped.
    ("public", "salaries", "employee_id"),
}


@pytest.mark.parametrize("column", COLUMNS, ids=".".join)
def test_skip_rules_match_the_manuals_table(column: tuple[str, str, str]) -> None:
    meta = parse_meta_dict(f'{{"skip_rules": {OBJECT_RULES}}}')
    assert meta.is_skipped(*column) == (column in SKIPPED)


@pytest.mark.parametrize("column", COLUMNS, ids=".".join)
def test_include_rules_match_the_manuals_table(column: tuple[str, str, str]) -> None:
    meta = parse_meta_dict(f'{{"include_rules": {OBJECT_RULES}}}')
    # The include table is the skip table's complement (the same rules, the same two slips).
    assert meta.is_included(*column) == (column in SKIPPED)


FIELD_TABLE = {
    "email": "email",
    "password": "password",
    "phone": ".*phone.*",
    "client_name": "^client_",
    # The manual names ".*phone.*" for client_phone; both rules match it, and like pg_anon
    # pgveil reports the first in the file's order.
    "client_phone": "^client_",
    "client_delivery_address": "^client_",
}


@pytest.mark.parametrize("column", COLUMNS, ids=".".join)
def test_field_section_matches_the_manuals_table(column: tuple[str, str, str]) -> None:
    meta = parse_meta_dict('{"field": {"rules": ["^client_", ".*phone.*"], "constants": ["password", "email"]}}')
    assert meta.field_rule_for(column[2]) == FIELD_TABLE.get(column[2])


@pytest.mark.parametrize(
    ("type_name", "scanned"),
    [
        ("text", True),
        ("integer", True),
        ("bigint", True),
        ("numeric(10,2)", True),  # exact
        ("numeric(12,4)", False),  # neither exact nor base: "numeric" alone is not listed
        ("character varying(20)", True),  # base: varchar
        ("character varying", True),
        ("mchar", True),
        ("json", True),
        ("jsonb", False),  # no substring matching
        ("smallint", False),
        ("timestamp without time zone", False),
    ],
)
def test_sens_pg_types_resolution(type_name: str, scanned: bool) -> None:
    meta = parse_meta_dict(
        '{"sens_pg_types": ["text", "integer", "bigint", "numeric(10,2)", "varchar", "mchar", "json"]}'
    )
    assert meta.scans_type(type_name) is scanned


DATA_FUNC = """{
    "data_func": {
        "anyelement": [
            {"scan_func_per_field": "custom_funcs.fulltext_search_by_organizations",
             "anon_func": "anon_funcs.digest(\\"%s\\", 'salt', 'md5')"},
            {"scan_func": "custom_funcs.is_employee_email",
             "anon_func": "anon_funcs.digest(\\"%s\\", 'salt', 'md5')", "n_count": 5},
        ],
        "varchar(20)": [{"scan_func": "f.exact", "anon_func": "anon_funcs.random_string(20)"}],
        "varchar": [{"scan_func": "f.base", "anon_func": "anon_funcs.random_string(5)"}],
        "int": [{"scan_func_per_field": "f.int", "anon_func": "anon_funcs.random_int_between(1, 9)"}],
    }
}"""


@pytest.mark.parametrize(
    ("type_name", "functions"),
    [
        (
            "character varying(20)",
            ["f.exact", "custom_funcs.fulltext_search_by_organizations", "custom_funcs.is_employee_email"],
        ),
        (
            "character varying(30)",
            ["f.base", "custom_funcs.fulltext_search_by_organizations", "custom_funcs.is_employee_email"],
        ),
        ("integer", ["f.int", "custom_funcs.fulltext_search_by_organizations", "custom_funcs.is_employee_email"]),
        ("text", ["custom_funcs.fulltext_search_by_organizations", "custom_funcs.is_employee_email"]),
    ],
)
def test_data_func_type_resolution(type_name: str, functions: list[str]) -> None:
    meta = parse_meta_dict(DATA_FUNC)
    rules = meta.data_funcs_for_type(type_name)
    assert [r.scan_func or r.scan_func_per_field for r in rules] == functions
    assert meta.data_func["anyelement"][0].n_count == 1  # the default
    assert meta.data_func["anyelement"][1].n_count == 5


FUNCS = """{
    "funcs": {
        "text": "anon_funcs.digest(\\"%s\\", 'salt_word', 'md5')",
        "numeric(10,2)": "anon_funcs.noise(\\"%s\\", 10)",
        "numeric": "anon_funcs.noise(\\"%s\\", 30)",
        "varchar(10)": "anon_funcs.random_string(10)",
        "varchar(20)": "anon_funcs.random_string(20)",
        "varchar": "anon_funcs.digest(\\"%s\\", 'varchar_salt_word', 'sha256')",
        "timestamp": "anon_funcs.dnoise(\\"%s\\",  interval '6 month')",
        "default": "anon_funcs.digest(\\"%s\\", 'MySecretSaltWord', 'sha256')"
    }
}"""


@pytest.mark.parametrize(
    ("type_name", "template"),
    [
        ("text", "anon_funcs.digest(\"%s\", 'salt_word', 'md5')"),
        ("numeric(10,2)", 'anon_funcs.noise("%s", 10)'),  # exact
        ("numeric(8,3)", 'anon_funcs.noise("%s", 30)'),  # base
        ("character varying(10)", "anon_funcs.random_string(10)"),
        ("varchar(20)", "anon_funcs.random_string(20)"),
        ("character varying(99)", "anon_funcs.digest(\"%s\", 'varchar_salt_word', 'sha256')"),
        ("timestamp(3) without time zone", "anon_funcs.dnoise(\"%s\",  interval '6 month')"),
        ("integer", "anon_funcs.digest(\"%s\", 'MySecretSaltWord', 'sha256')"),  # default
    ],
)
def test_funcs_resolution(type_name: str, template: str) -> None:
    assert parse_meta_dict(FUNCS).anon_func_for_type(type_name) == template


def test_funcs_without_default_fall_back_to_pg_anons_builtin() -> None:
    meta = parse_meta_dict('{"funcs": {"text": "md5(%s)"}}')
    assert meta.anon_func_for_type("integer") == "anon_funcs.digest(\"%s\", 'salt_word', 'md5')"
    assert meta.anon_func_for_type("text") == "md5(%s)"


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("varchar(20)", "character varying(20)"),
        ("char(3)", "character(3)"),
        ("bpchar", "character"),
        ("int", "integer"),
        ("int4", "integer"),
        ("int8", "bigint"),
        ("int2", "smallint"),
        ("timestamp", "timestamp without time zone"),
        ("timestamptz", "timestamp with time zone"),
        ("timestamp(3)", "timestamp(3) without time zone"),
        ("bool", "boolean"),
        ("float8", "double precision"),
        ("Numeric(10, 2)", "numeric(10,2)"),
    ],
)
def test_type_aliases_are_format_types_spelling(alias: str, canonical: str) -> None:
    assert normalize_type(alias) == canonical
    meta = parse_meta_dict(f'{{"sens_pg_types": ["{alias}"], "funcs": {{"{alias}": "md5(%s)"}}}}')
    assert meta.scans_type(canonical)
    assert meta.anon_func_for_type(canonical) == "md5(%s)"


def test_data_sql_condition_exact_and_masks() -> None:
    meta = parse_meta_dict(
        """{"data_sql_condition": [
            {"schema": "public", "table": "salaries", "sql_condition": "where hire_date >= '2024-01-01'"},
            {"schema_mask": "^pub", "table_mask": "^sal", "sql_condition": "id < 10"},
        ]}"""
    )
    assert meta.sql_condition_for("public", "salaries") == "hire_date >= '2024-01-01'"
    assert meta.sql_condition_for("public", "salary_history") == "id < 10"
    assert meta.sql_condition_for("other", "salaries") is None


# --- Refusals: code, and the wrong shapes ---


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("import os\nvar = {}\n", r"line 1: an import is not data"),
        ("__import__('os')\n", r"line 1: a function call is not data"),
        ("var = {\n  'field': __import__('os').system('true'),\n}\n", r"line 2: a function call is not data"),
        ("a = {}\nb = {}\n", r"line 2: a second statement"),
        ("var = lambda: {}\n", r"line 1: a lambda is not data"),
        ("{'field': {'rules': [r for r in 'ab']}}\n", r"line 1: a comprehension is not data"),
        ("{\n f'{1}': 1}\n", r"line 2: an f-string is not data"),
        ("{'skip_rules': SKIP}\n", r"line 1: a name \(SKIP\) is not data"),
        ("{'skip_rules': os.environ}\n", r"line 1: an attribute access is not data"),
        ("{'field': {'constants': ['a' + 'b']}}\n", r"line 1: an operator expression is not data"),
        ("def f():\n    pass\n", r"line 1: a function definition is not data"),
        ("a.b = {}\n", r"line 1: only an assignment to one plain name"),
        ("a = b = {}\n", r"line 1: only an assignment to one plain name"),
        ("{'field': {}, **extra}\n", r"line 1: a \*\* unpacking is not data"),
        ("{'field': {}, 'field': {}}\n", r"line 1: key 'field' appears twice"),
        ("{'field': {'constants': {'a', 'b'}}}\n", r"line 1: a set is not accepted"),
        ("[1, 2]\n", r"line 1: the dictionary must be a dict"),
        ("{'field': \n", r"line 1: not valid Python syntax"),
    ],
)
def test_code_is_refused_with_its_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PgveilError, match=rf"^{path}: {message}"):
        load_meta_dict(path)


def test_a_refused_file_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = write(tmp_path, f"var = {{'field': open({str(marker)!r}, 'w').write('x')}}\n")
    with pytest.raises(PgveilError, match="a function call is not data"):
        load_meta_dict(path)
    assert not marker.exists()


def test_the_manuals_misspelt_key_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        {
            "skip_rules": [
                {
                  "schema_msk": "^tmp.*"
                },
            ]
        }
        """,
    )
    with pytest.raises(PgveilError) as error:
        load_meta_dict(path)
    assert str(error.value) == (
        f"{path}: line 4: unknown key 'schema_msk' in skip_rules[0]"
        " (expected schema, schema_mask, table, table_mask, fields)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{\n"field": {\n"rules": ["^ok", "(unclosed"]}}',
            r"line 3: field.rules\[1\] is not a valid regular expression: missing \), unterminated subpattern at position 0",
        ),
        (
            '{"skip_rules": [\n{"schema": "a", "schema_mask": "^a"}]}',
            r"line 2: skip_rules\[0\] has both schema and schema_mask",
        ),
        ('{"skip_rules": [\n{"table": "t"}]}', r"line 2: skip_rules\[0\] needs schema or schema_mask"),
        (
            '{"include_rules": [{"schema": "a",\n "table_mask": "[z-a]"}]}',
            r"line 2: include_rules\[0\].table_mask is not a valid regular expression: bad character range z-a at position 1",
        ),
        ('{"skip_rules": [{"schema": "a", "fields": "id"}]}', r"line 1: skip_rules\[0\].fields must be a list"),
        ('{"skip_rules": [{"schema": "a", "fields": []}]}', r"line 1: skip_rules\[0\].fields is empty"),
        ('{"field": {"rules": "^a"}}', r"line 1: field.rules must be a list \[...\], not a string"),
        (
            '{"data_func": {"text": [\n{"scan_func": "f", "anon_func": "g", "n_count": 0}]}}',
            r"line 2: data_func\['text'\]\[0\].n_count must be a positive integer",
        ),
        (
            '{"data_func": {"text": [{"scan_func": "f", "anon_func": "g", "n_count": True}]}}',
            r"n_count must be a positive integer",
        ),
        (
            '{"data_func": {"text": [{"scan_func": "f", "anon_func": "g", "n_count": "5"}]}}',
            r"n_count must be a positive integer",
        ),
        ('{"data_func": {"text": [{"anon_func": "g"}]}}', r"needs exactly one of scan_func and scan_func_per_field"),
        (
            '{"data_func": {"text": [{"scan_func": "f", "scan_func_per_field": "g", "anon_func": "g"}]}}',
            r"needs exactly one of",
        ),
        ('{"data_func": {"text": [{"scan_func": "f"}]}}', r"needs anon_func"),
        (
            '{"data_func": {"text": [{"scan_func_per_field": "f", "anon_func": "g", "n_count": 3}]}}',
            r"n_count applies to scan_func only",
        ),
        (
            '{"data_func": {"varchar": [],\n "character varying": []}}',
            r"line 2: data_func: 'character varying' and 'varchar' \(line 1\) name the same type",
        ),
        ('{"data_sql_condition": [{"schema": "a", "sql_condition": "x"}]}', r"needs table or table_mask"),
        ('{"data_sql_condition": [{"schema": "a", "table": "t"}]}', r"needs sql_condition"),
        (
            '{"data_sql_condition": [{"schema": "a", "table": "t", "sql_condition": "WHERE "}]}',
            r"sql_condition is empty",
        ),
        (
            '{"data_sql_condition": [{"schema": "a", "table": "t", "sql_condition": "true; DROP TABLE t"}]}',
            r"contains ';'",
        ),
        ('{"data_sql_condition": [{"schema": "a", "table": "t", "sql_condition": "true) OR (true"}]}', r"unbalanced"),
        ('{"data_const": {"constants": ["a", 1]}}', r"data_const.constants\[1\] must be a string, not a number"),
        ('{"funcs": {"text": 5}}', r"funcs\['text'\] must be a string"),
        (
            '{"no_sens_dictionary": []}',
            r"unknown key 'no_sens_dictionary' in the meta-dictionary .*non-sensitive dictionary",
        ),
    ],
)
def test_wrong_shapes_are_refused(text: str, message: str) -> None:
    with pytest.raises(PgveilError, match=message):
        parse_meta_dict(text, "meta.py")


def test_a_star_mask_means_any() -> None:
    meta = parse_meta_dict('{"skip_rules": [{"schema_mask": "*", "table_mask": "*", "fields": ["secret"]}]}')
    assert meta.is_skipped("any", "table", "secret") and not meta.is_skipped("any", "table", "other")


def test_server_regexes_are_checked_by_postgresql(toolkit) -> None:
    meta = parse_meta_dict('{"data_regex": {"rules": [\n"^(7?\\\\d{10})$",\n"[[:alpha:]]+",\n"(unclosed"]}}', "m.py")
    with psycopg.connect(toolkit.url, autocommit=True) as conn:
        with pytest.raises(
            PgveilError,
            match=r"^m\.py: line 4: data_regex rule 3 is not a valid PostgreSQL regular expression: invalid regular expression: parentheses \(\) not balanced$",
        ):
            meta.check_server_regexes(conn)
        MetaDict(data_regex=meta.data_regex[:2]).check_server_regexes(conn)  # the valid ones pass


# --- Sensitive and non-sensitive dictionaries ---

SENS_EXAMPLE = '''{
    "dictionary": [
        {
            "schema": "public",
            "table": "employees",
            "fields": {
                "full_name": "anon_funcs.digest(\\"full_name\\", 'salt_word', 'sha256')",
                "email": "md5(\\"email\\") || @abc.com",
            },
        },
        {"schema": "public", "table": "salaries", "fields": {"monthly_salary": "10000"}},
        {
            "schema": "ecommerce",
            "table": "orders",
            "fields": {
                "client_name": "anon_funcs.digest(\\"client_name\\", 'salt_word', 'sha256')",
                "delivery_address": "anon_funcs.digest(\\"delivery_address\\", 'salt_word', 'sha256')",
            },
            "sql_condition": """
                WHERE created > NOW() - '7 days'::interval
                AND status = 'done'
            """,
        },
    ],
    "dictionary_exclude": [{"schema_mask": "tenant_.*", "table_mask": "*"}],
}'''

SENS_TABLE = {
    ("public", "employees", "full_name"),
    ("public", "employees", "email"),
    ("public", "salaries", "monthly_salary"),
    ("ecommerce", "orders", "client_name"),
    ("ecommerce", "orders", "delivery_address"),
}


def test_the_manuals_sensitive_dictionary(tmp_path: Path) -> None:
    sens = load_sens_dict(write(tmp_path, SENS_EXAMPLE, "sens.py"))
    columns = (
        [("public", "employees", c) for c in ("id", "full_name", "email", "hire_date")]
        + [("public", "salaries", c) for c in ("employee_id", "monthly_salary", "currency")]
        + [
            ("ecommerce", "orders", c)
            for c in ("product_id", "count", "client_name", "delivery_address", "created", "status")
        ]
    )
    for column in columns:
        assert sens.is_listed(*column) == (column in SENS_TABLE), column
    assert sens.rule_for("public", "salaries", "monthly_salary") == "10000"
    assert sens.rule_for("public", "employees", "id") is None
    assert (
        sens.sql_condition_for("ecommerce", "orders")
        == "created > NOW() - '7 days'::interval\n                AND status = 'done'"
    )
    assert sens.is_excluded("tenant_a", "projects") and sens.is_excluded("tenant_c", "projects")
    assert not sens.is_excluded("public", "employees")


def test_the_manuals_non_sensitive_dictionary(tmp_path: Path) -> None:
    no_sens = load_no_sens_dict(
        write(
            tmp_path,
            """{
                "no_sens_dictionary": [
                    {"schema": "public", "table": "employees", "fields": ["id", "hire_date",]},
                    {"schema": "public", "table": "salaries", "fields": ["employee_id", "currency",]},
                ]
            }""",
            "no_sens.py",
        )
    )
    listed = {("employees", "id"), ("employees", "hire_date"), ("salaries", "employee_id"), ("salaries", "currency")}
    for table, column in [
        ("employees", "id"),
        ("employees", "full_name"),
        ("employees", "email"),
        ("employees", "hire_date"),
        ("salaries", "employee_id"),
        ("salaries", "monthly_salary"),
        ("salaries", "currency"),
    ]:
        assert no_sens.is_listed("public", table, column) == ((table, column) in listed)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"dictionary": [{"schema": "s", "table": "t", "fields": ["a"]}]}', r"dictionary\[0\].fields must be a dict"),
        ('{"dictionary": [{"schema": "s", "fields": {}}]}', r"dictionary\[0\] needs table"),
        (
            '{"dictionary": [{"schema": "s", "table": "t", "fields": {}, "schema_mask": "x"}]}',
            r"unknown key 'schema_mask'",
        ),
        (
            '{"dictionary": [{"schema": "s", "table": "t", "fields": {"a": "1"}},\n{"schema": "s", "table": "t", "fields": {"a": "2"}}]}',
            r"line 2: s.t.a is listed twice \(first on line 1\)",
        ),
        ('{"dictionary_exclude": [{"schema": "s"}]}', r"needs table or table_mask"),
        ('{"dictionary_exclude": [{"schema": "s", "schema_mask": "s", "table": "t"}]}', r"both schema and schema_mask"),
        ('{"field": {}}', r"unknown key 'field' in the sensitive dictionary .*meta-dictionary"),
    ],
)
def test_sensitive_dictionary_shapes(text: str, message: str) -> None:
    with pytest.raises(PgveilError, match=message):
        parse_sens_dict(text, "sens.py")


def test_dumps_round_trip(tmp_path: Path) -> None:
    sens = load_sens_dict(write(tmp_path, SENS_EXAMPLE, "sens.py"))
    dumped = dump_sens_dict(sens.entries, sens.exclude)
    again = load_sens_dict(write(tmp_path, dumped, "again.py"))
    assert sorted(again.entries, key=lambda e: (e.schema, e.table)) == sorted(
        sens.entries, key=lambda e: (e.schema, e.table)
    )
    assert again.exclude == sens.exclude
    assert load_sens_dict(write(tmp_path, dumped, "again.json")) == again  # JSON too
    assert dump_sens_dict(again.entries, again.exclude) == dumped  # sorted: stable

    rows = [("public", "t", "b", "md5(b)"), ("public", "t", "a", "anon_funcs.digest(\"a\", 's', 'md5')")]
    from_rows = load_sens_dict(write(tmp_path, dump_sens_dict(rows), "rows.py"))
    assert from_rows.rule_for("public", "t", "a") == "anon_funcs.digest(\"a\", 's', 'md5')"
    with pytest.raises(PgveilError, match="two different rules"):
        dump_sens_dict([("s", "t", "a", "md5(a)"), ("s", "t", "a", "10000")])

    columns = [("public", "t", "b"), ("public", "t", "a"), ("app", 'Weird "name"', "é")]
    dumped_no_sens = dump_no_sens_dict(columns)
    no_sens = load_no_sens_dict(write(tmp_path, dumped_no_sens, "no_sens.py"))
    assert [(e.schema, e.table, e.fields) for e in no_sens.entries] == [
        ("app", 'Weird "name"', ("é",)),
        ("public", "t", ("a", "b")),
    ]
    assert dump_no_sens_dict((e.schema, e.table, f) for e in no_sens.entries for f in e.fields) == dumped_no_sens


# --- Mapping pg_anon rules to pgveil labels ---


@pytest.mark.parametrize(
    ("rule", "column", "expected"),
    [
        (
            "anon_funcs.digest(\"%s\", 'salt_word', 'md5')",
            "email",
            "MASKED WITH FUNCTION veil.digest(email, 'salt_word', 'md5')",
        ),
        (
            "anon_funcs.digest(%s, 'salt_word', 'md5')",
            "Email",
            "MASKED WITH FUNCTION veil.digest(\"Email\", 'salt_word', 'md5')",
        ),
        (
            "anon_funcs.dnoise(\"%s\",  interval '6 month')",
            "created",
            "MASKED WITH FUNCTION veil.dnoise(created, interval '6 month')",
        ),
        (
            "anon_funcs.digest(\"full_name\", 'salt_word', 'sha256')",
            "full_name",
            "MASKED WITH FUNCTION veil.digest(full_name, 'salt_word', 'sha256')",
        ),
        ("md5(fld_1)", "fld_1", "MASKED WITH FUNCTION pg_catalog.md5(fld_1)"),
        ("md5(%s)", "user", 'MASKED WITH FUNCTION pg_catalog.md5("user")'),
        ("10000", "monthly_salary", "MASKED WITH VALUE '10000'"),
        ("NULL", "x", "MASKED WITH VALUE NULL"),
        ("'it''s'", "x", "MASKED WITH VALUE 'it''s'"),
        ("anon_funcs.digest(\"%s\", 'a%%b', 'md5')", "x", "MASKED WITH FUNCTION veil.digest(x, 'a%b', 'md5')"),
        (
            "anon_funcs.digest(\"%s\", 's', 'md5')",
            'we"ird',
            "MASKED WITH FUNCTION veil.digest(\"we\"\"ird\", 's', 'md5')",
        ),
    ],
)
def test_mapped_rules(rule: str, column: str, expected: str) -> None:
    mapped = map_anon_rule(rule, column)
    assert (mapped.label, mapped.problem) == (expected, None)


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ("md5(\"email\") || '@abc.com'", r"operator \|\|"),
        ('md5("email") || @abc.com', r"unexpected '@'"),  # the manual's example, verbatim
        ("encode((SELECT encrypt('data', 'password', 'bf')), 'base64')", r"SELECT \(an SQL keyword\)"),
        ("encrypt(\"%s\", 'password', 'bf')", r"pgcrypto's encrypt\(\) is not a trusted rule function"),
        ("digest(\"%s\", 'sha256')", r"pgcrypto's digest\(\)"),
        ("anon_funcs.random_inn()", r"anon_funcs.random_inn\(\) has no equivalent in veil"),
        ("anon_funcs.digest(\"%s\", 'salt', 'sha1')", r"veil.digest\(\) takes the algorithms md5, sha224"),
        ("anon_funcs.partial(\"%s\", 1, '***')", r"takes 4 argument\(s\), the rule gives 3"),
        ('my_schema.mask("%s")', r"function my_schema.mask\(\) is not one pgveil's rules may call"),
        ('"%s"', r"the column itself .* NOT MASKED"),
        ("anon_funcs.random_int_between(1, 9)::text", r"casts its result"),
        ('md5("%s") ; DROP TABLE t', r"';' is not part of a rule"),
        ('md5("%s") -- x', r"a comment"),
        ("'a;b'", r"contains ';'"),
        ("md5('x", r"unterminated string literal"),
        ('anon_funcs.noise("%s" + 1, 2)', r"operator \+"),
        ("CASE WHEN true THEN 1 END", r"CASE \(an SQL keyword\)"),
        ("", r"empty"),
    ],
)
def test_unmapped_rules_say_why(rule: str, problem: str) -> None:
    mapped = map_anon_rule(rule, "email")
    assert mapped.label is None
    assert mapped.problem is not None
    assert re.search(problem, mapped.problem), mapped.problem


def test_quote_ident_as_postgresql() -> None:
    assert [quote_ident(n) for n in ("email", "Email", "user", "a b", 'q"t', "_x1", "1x")] == [
        "email",
        '"Email"',
        '"user"',
        '"a b"',
        '"q""t"',
        "_x1",
        '"1x"',
    ]


# Every pg_anon rule the README and the manual give (funcs, data_func, the sensitive dictionary,
# the function library, the REST examples, the FAQ's expression), and docs/vocabulary.md's pg_anon
# rows, with a column of a type each one suits.
DOCUMENTED = [
    ("anon_funcs.digest(\"%s\", 'salt_word', 'md5')", "email"),
    ("anon_funcs.digest(\"%s\", 'MySecretSaltWord', 'sha256')", "email"),
    ("anon_funcs.digest(\"%s\", 'varchar_salt_word', 'sha256')", "code"),
    ("anon_funcs.digest(\"%s\", 'salt', 'md5')", "email"),
    ("anon_funcs.digest(\"%s\", 'salt', 'sha224')", "email"),
    ("anon_funcs.digest(\"%s\", 'salt', 'sha384')", "email"),
    ("anon_funcs.digest(\"%s\", 'salt', 'sha512')", "email"),
    ("anon_funcs.digest(\"full_name\", 'salt_word', 'sha256')", "full_name"),
    ('anon_funcs.noise("%s", 10)', "amount"),
    ('anon_funcs.noise("%s", 30)', "amount"),
    ('anon_funcs.noise("%s", 1.2)', "salary"),
    ("anon_funcs.dnoise(\"%s\",  interval '6 month')", "created"),
    ("anon_funcs.dnoise(\"%s\", interval '1 month')", "created"),
    ("anon_funcs.partial(\"%s\", 1, '***', 3)", "full_name"),
    ('anon_funcs.partial_email("%s")', "email"),
    ("anon_funcs.random_string(7)", "code"),
    ("anon_funcs.random_string(10)", "code"),
    ("anon_funcs.random_string(20)", "code"),
    ("anon_funcs.random_zip()", "code"),
    ("anon_funcs.random_date_between('2020-02-02 10:10:10'::timestamp, '2022-02-05 10:10:10'::timestamp)", "created"),
    ("anon_funcs.random_date()", "created"),
    ("anon_funcs.random_int_between(100, 200)", "salary"),
    ("anon_funcs.random_bigint_between(6000000000, 7000000000)", "big"),
    ("anon_funcs.random_phone('+7')", "code"),
    ("anon_funcs.random_hash('seed', 'sha512')", "email"),
    ("anon_funcs.random_in(array['a', 'b', 'c'])", "full_name"),
    ("anon_funcs.hex_to_int('8AB')", "salary"),
    ("lower(anon_funcs.random_string(9)) || '@secret.com'", "code"),
    ("md5(%s)", "email"),
    ("md5(email)", "email"),
    ("10000", "salary"),
    ("10000", "full_name"),
    ("NULL", "email"),
    ("'2024-01-01 00:00'::timestamp", "created"),  # a typed constant is a VALUE
]

TABLE = """CREATE TABLE public.t (
    id int PRIMARY KEY, email text, full_name text, amount numeric(10,2), created timestamp,
    code varchar(20), salary integer, big bigint, "we""ird" text)"""
TYPES = {
    "email": "text",
    "full_name": "text",
    "amount": "numeric(10,2)",
    "created": "timestamp without time zone",
    "code": "character varying(20)",
    "salary": "integer",
    "big": "bigint",
    'we"ird': "text",
}


@pytest.mark.parametrize(("rule", "column"), DOCUMENTED)
def test_documented_rules_map_to_labels_the_database_accepts(toolkit, rule: str, column: str) -> None:
    toolkit.execute(TABLE)
    toolkit.execute(
        "INSERT INTO public.t VALUES (1, 'john.doe@gmail.com', 'John Doe', 100.50, '2024-03-01 10:00',"
        " 'ABC', 42, 6500000000, 'x'), (2, 'a@b.example.org', 'Ann', 7, '2023-01-01', 'Z', 7, 1, 'y')"
    )
    mapped = map_anon_rule(rule, column)
    assert mapped.problem is None and mapped.label is not None, mapped.problem
    label(toolkit, "COLUMN", f"public.t.{quote_ident(column)}", mapped.label)
    stored = toolkit.scalar("SELECT count(*) FROM veil.rules WHERE policy = 'mask' AND column_name = %s", (column,))
    assert stored == 1
    expression = mapped.label.removeprefix("MASKED WITH FUNCTION ").removeprefix("MASKED WITH VALUE ")
    values = toolkit.execute(f"SELECT ({expression})::{TYPES[column]} FROM public.t").fetchall()
    assert len(values) == 2
    if rule != "NULL":
        assert all(value is not None for (value,) in values)


def test_a_quoted_column_maps_and_is_accepted(toolkit) -> None:
    toolkit.execute(TABLE)
    mapped = map_anon_rule("anon_funcs.digest(\"%s\", 'salt_word', 'md5')", 'we"ird')
    assert mapped.label == "MASKED WITH FUNCTION veil.digest(\"we\"\"ird\", 'salt_word', 'md5')"
    label(toolkit, "COLUMN", 'public.t."we""ird"', mapped.label)
    assert toolkit.scalar("SELECT count(*) FROM veil.rules WHERE policy = 'mask'") == 1


def test_a_hostile_column_name_gives_no_label(toolkit) -> None:
    """A column whose name carries SQL is quoted as one identifier; pgveil's validation refuses ';'
    and '--' anywhere, so the mapping says so rather than giving a label that would be refused."""
    toolkit.execute('CREATE TABLE public.h (id int, "x""); DROP TABLE public.h; --" text)')
    mapped = map_anon_rule("anon_funcs.digest(\"%s\", 's', 'md5')", 'x"); DROP TABLE public.h; --')
    assert mapped.label is None and mapped.problem is not None and "';'" in mapped.problem
    # The quoted identifier itself is intact: the same call, set by hand, is refused by the database, not run.
    with pytest.raises(psycopg.errors.RaiseException, match="may not contain"):
        label(
            toolkit,
            "COLUMN",
            'public.h."x""); DROP TABLE public.h; --"',
            "MASKED WITH FUNCTION veil.digest(" + quote_ident('x"); DROP TABLE public.h; --') + ", 's', 'md5')",
        )
    assert toolkit.scalar("SELECT to_regclass('public.h') IS NOT NULL")
