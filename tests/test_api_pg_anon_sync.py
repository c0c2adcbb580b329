"""pg_anon 1.9's synchronous stateless endpoints, served by the real app against a
real database: check_db_connection, view-fields, view-data, preview, preview/{schema}."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pgveil.api.app import create_app
from pgveil.api.settings import ApiSettings
from tests.conftest import Database
from tests.helpers import catalog

AUTH = {"Authorization": "Bearer t0k3n"}
PASSWORD = "pw-Api-Secret-8812"  # a test role's password, looked for in every answer

SCHEMA = """
ALTER DATABASE :db SET timezone = 'UTC';
CREATE TABLE public.users (id serial PRIMARY KEY, email text, name text, created timestamptz);
INSERT INTO public.users VALUES
    (3, 'carol@example.com', 'Carol', '2024-03-03 03:03:03+00'),
    (1, 'alice@example.com', 'Alice', '2024-01-01 01:01:01+00'),
    (2, 'bob@example.com', NULL, '2024-02-02 02:02:02+00');
-- No primary key: a serial column, listed by no view-fields; rows in physical order.
CREATE TABLE public.notes (n serial, body text, meta jsonb, flag boolean, age integer);
INSERT INTO public.notes (body, meta, flag, age) VALUES ('first', '{"a": 1}', true, 4711), ('second', NULL, false, 30);
CREATE SCHEMA app;
CREATE TABLE app.accounts (login varchar(40) PRIMARY KEY, balance numeric(10,2), code integer GENERATED ALWAYS AS IDENTITY);
CREATE SCHEMA tenant_1;
CREATE TABLE tenant_1.secrets (k integer, v text);
CREATE SCHEMA "pgx_a";  -- pg_anon's LIKE 'pg_%' hides it; pgveil does not
"""

SENS_PY = """# a pg_anon dictionary, as Python: comments, single quotes, trailing commas
{
    'dictionary': [
        {'schema': 'public', 'table': 'users', 'fields': {'email': 'md5("email")', 'name': "SQL:'hidden'",},},
    ],
    'dictionary_exclude': [{'schema_mask': 'tenant_.*', 'table_mask': '*'},],
}
"""
SENS_JSON = json.dumps(
    {
        "dictionary": [
            {"schema": "app", "table": "accounts", "fields": {"balance": "0"}},
            {"schema": "public", "table": "notes", "fields": {"body": "anon_funcs.digest(\"%s\", 'salt', 'md5')"}},
        ]
    },
    indent=4,
)


def dictionaries() -> list[dict[str, Any]]:
    return [
        {"name": "py dict", "content": SENS_PY, "additional_info": "from a file"},
        {"name": "json dict", "content": SENS_JSON},
    ]


@pytest.fixture
def db(toolkit: Database) -> Database:
    toolkit.execute(SCHEMA.replace(":db", sql.Identifier(toolkit.name).as_string(toolkit.admin)))
    return toolkit


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(ApiSettings(data_dir=tmp_path, token="t0k3n", webhook_backoff=0.05))
    with TestClient(app) as test_client:
        yield test_client


def params(url: str) -> dict[str, Any]:
    parts = conninfo_to_dict(url)
    return {
        "host": parts["host"],
        "port": int(parts.get("port") or 5432),
        "db_name": parts["dbname"],
        "user_login": parts["user"],
        "user_password": parts.get("password") or "",
    }


def reader(db: Database) -> dict[str, Any]:
    """A role with a known password that may read the test tables (not a superuser)."""
    role = db.role("reader")
    db.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role.name), sql.Literal(PASSWORD)))
    for schema in ("public", "app", "tenant_1"):
        db.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {0} TO {1}; GRANT SELECT ON ALL TABLES IN SCHEMA {0} TO {1}").format(
                sql.Identifier(schema), sql.Identifier(role.name)
            )
        )
    return {**params(db.url), "user_login": role.name, "user_password": PASSWORD}


def post(client: TestClient, path: str, body: Any) -> Any:
    return client.post(path, json=body, headers=AUTH)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


# -- check_db_connection -------------------------------------------------------------------


def test_check_db_connection_answers_null(client: TestClient, db: Database) -> None:
    answer = post(client, "/api/stateless/check_db_connection", params(db.url))
    assert answer.status_code == 200
    assert answer.text == "null"


@pytest.mark.parametrize("wrong", ["db_name", "port", "host"])
def test_check_db_connection_unreachable(client: TestClient, db: Database, wrong: str) -> None:
    body = reader(db)
    body.update(
        {
            "db_name": {"db_name": "no_such_database_here"},
            "port": {"host": "127.0.0.1", "port": closed_port()},
            "host": {"host": "no-such-host.invalid"},
        }[wrong]
    )
    answer = post(client, "/api/stateless/check_db_connection", body)
    assert answer.status_code == 400
    assert answer.json() == {"error_code": "DB_CONNECTION_FAILED", "message": "Connection is unreachable"}


def test_check_db_connection_wrong_password(client: TestClient, db: Database) -> None:
    body = {**reader(db), "user_password": "Wrong-Pass-7731"}
    try:
        psycopg.connect(
            psycopg.conninfo.make_conninfo(db.url, user=body["user_login"], password="Wrong-Pass-7731")
        ).close()
        server_checks_passwords = False
    except psycopg.OperationalError:
        server_checks_passwords = True
    answer = post(client, "/api/stateless/check_db_connection", body)
    if server_checks_passwords:
        assert answer.status_code == 400
        assert answer.json()["error_code"] == "DB_CONNECTION_FAILED"
    else:  # a trust server lets the role in whatever the password
        assert answer.status_code == 200
    assert "Wrong-Pass-7731" not in answer.text


def test_connection_failure_of_every_endpoint_names_no_password(client: TestClient, db: Database) -> None:
    connection = {**reader(db), "db_name": "no_such_database_here"}
    for path, body in [
        ("/api/stateless/view-fields", {"db_connection_params": connection}),
        (
            "/api/stateless/view-data",
            {"db_connection_params": connection, "schema_name": "public", "table_name": "users"},
        ),
        ("/api/stateless/preview", {"db_connection_params": connection}),
        ("/api/stateless/preview/public", {"db_connection_params": connection}),
    ]:
        answer = post(client, path, body)
        assert answer.status_code == 400, path
        error = answer.json()
        assert error["error_code"] == "DB_CONNECTION_FAILED"
        assert "no_such_database_here" in error["message"]
        assert PASSWORD not in answer.text


def test_password_scrubbed_when_the_server_repeats_it(client: TestClient, db: Database) -> None:
    """A message that would hold the password (here the server quotes a database name
    made of it) has it replaced."""
    connection = {**reader(db), "db_name": f"nodb_{PASSWORD}"}
    answer = post(client, "/api/stateless/preview", {"db_connection_params": connection})
    assert answer.status_code == 400
    assert PASSWORD not in answer.text
    assert 'database "nodb_***" does not exist' in answer.json()["message"]


def test_no_answer_holds_the_password(client: TestClient, db: Database) -> None:
    connection = reader(db)
    bodies = [
        ("/api/stateless/check_db_connection", connection),
        ("/api/stateless/view-fields", {"db_connection_params": connection, "sens_dict_contents": dictionaries()}),
        (
            "/api/stateless/view-data",
            {
                "db_connection_params": connection,
                "sens_dict_contents": dictionaries(),
                "schema_name": "public",
                "table_name": "users",
            },
        ),
        ("/api/stateless/preview", {"db_connection_params": connection}),
        ("/api/stateless/preview/public", {"db_connection_params": connection, "sens_dict_contents": dictionaries()}),
        # Failures after connecting: a query error, a rule error, a missing table.
        (
            "/api/stateless/view-data",
            {"db_connection_params": connection, "schema_name": "veil_private", "table_name": "keys"},
        ),
        (
            "/api/stateless/view-data",
            {
                "db_connection_params": connection,
                "schema_name": "public",
                "table_name": "users",
                "sens_dict_contents": [
                    {
                        "name": "d",
                        "content": '{"dictionary": [{"schema": "public", "table": "users", "fields": {"email": "nope(email)"}}]}',
                    }
                ],
            },
        ),
        ("/api/stateless/view-data", {"db_connection_params": connection, "schema_name": "x", "table_name": "y"}),
    ]
    statuses = []
    for path, body in bodies:
        answer = post(client, path, body)
        statuses.append(answer.status_code)
        assert PASSWORD not in answer.text, path
    assert statuses == [200, 200, 200, 200, 200, 500, 400, 400]


# -- auth and validation ----------------------------------------------------------------------

PATHS = [
    "/api/stateless/check_db_connection",
    "/api/stateless/view-fields",
    "/api/stateless/view-data",
    "/api/stateless/preview",
    "/api/stateless/preview/public",
]


@pytest.mark.parametrize("path", PATHS)
def test_without_token_refused(client: TestClient, db: Database, path: str) -> None:
    connection = params(db.url)
    body = connection if path.endswith("check_db_connection") else {"db_connection_params": connection}
    answer = client.post(path, json=body)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"


def test_missing_fields_are_422(client: TestClient, db: Database) -> None:
    connection = params(db.url)
    no_password = {k: v for k, v in connection.items() if k != "user_password"}
    answer = post(client, "/api/stateless/check_db_connection", no_password)
    assert answer.status_code == 422
    assert [(e["type"], e["loc"]) for e in answer.json()["detail"]] == [("missing", ["body", "user_password"])]

    answer = post(client, "/api/stateless/view-data", {"db_connection_params": connection, "schema_name": "public"})
    assert answer.status_code == 422
    assert [(e["type"], e["loc"]) for e in answer.json()["detail"]] == [("missing", ["body", "table_name"])]

    answer = post(client, "/api/stateless/preview", {})
    assert [(e["type"], e["loc"]) for e in answer.json()["detail"]] == [("missing", ["body", "db_connection_params"])]

    answer = post(client, "/api/stateless/view-fields", {"db_connection_params": connection, "table_mask": "(unclosed"})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "table_mask"]
    assert "not a valid regular expression" in answer.json()["detail"][0]["msg"]


def test_pg_anon_shaped_body_with_unknown_fields(client: TestClient, db: Database) -> None:
    """A body as pg_anon's manual writes it: the port as a string, additional_info of any
    type, fields of later versions (orm_dict_content, web_debug) that are ignored."""
    connection = params(db.url)
    body = {
        "db_connection_params": {**connection, "port": str(connection["port"]), "ssl_mode": "prefer"},
        "sens_dict_contents": [
            {"name": "sens dict for email anonymization", "content": SENS_PY, "additional_info": {"ticket": 42}}
        ],
        "schema_name": "public",
        "table_name": "users",
        "view_only_sensitive_fields": True,
        "fields_limit_count": 0,
        "orm_dict_content": None,
        "web_debug": False,
    }
    answer = post(client, "/api/stateless/view-fields", body)
    assert answer.status_code == 200
    assert [(f["field_name"], f["rule"], f["dict_data"]) for f in answer.json()["content"]] == [
        ("email", 'md5("email")', {"name": "sens dict for email anonymization", "additional_info": {"ticket": 42}}),
        ("name", "SQL:'hidden'", {"name": "sens dict for email anonymization", "additional_info": {"ticket": 42}}),
    ]
    check = post(client, "/api/stateless/check_db_connection", {**connection, "port": str(connection["port"]), "x": 1})
    assert check.status_code == 200


# -- view-fields ----------------------------------------------------------------------------------


def field(
    schema: str, table: str, name: str, type_: str, rule: str | None = None, dictionary: int | None = None
) -> dict[str, Any]:
    dict_data = None
    if dictionary == 0:
        dict_data = {"name": "py dict", "additional_info": "from a file"}
    elif dictionary == 1:
        dict_data = {"name": "json dict", "additional_info": None}
    return {
        "schema_name": schema,
        "table_name": table,
        "field_name": name,
        "type": type_,
        "dict_data": dict_data,
        "rule": rule,
    }


ALL_FIELDS = [
    field("app", "accounts", "balance", "numeric(10,2)", "0", 1),
    field("public", "notes", "body", "text", "anon_funcs.digest(\"%s\", 'salt', 'md5')", 1),
    field("public", "notes", "meta", "jsonb"),
    field("public", "notes", "flag", "boolean"),
    field("public", "notes", "age", "integer"),
    field("public", "users", "email", "text", 'md5("email")', 0),
    field("public", "users", "name", "text", "SQL:'hidden'", 0),
    field("public", "users", "created", "timestamp with time zone"),
]


def view_fields(client: TestClient, db: Database, **extra: Any) -> Any:
    return post(
        client,
        "/api/stateless/view-fields",
        {"db_connection_params": params(db.url), "sens_dict_contents": dictionaries(), **extra},
    )


def test_view_fields_lists_fields_with_their_rules(client: TestClient, db: Database) -> None:
    """Primary keys, serial and identity columns are left out; tenant_1 is excluded by
    the dictionary; pgveil's own schemas are not listed."""
    answer = view_fields(client, db)
    assert answer.status_code == 200
    assert answer.json() == {"status_id": 2, "status": "success", "content": ALL_FIELDS}


def test_view_fields_without_dictionaries(client: TestClient, db: Database) -> None:
    answer = post(client, "/api/stateless/view-fields", {"db_connection_params": params(db.url)})
    content = answer.json()["content"]
    # Without dictionary_exclude, tenant_1's table is listed too.
    assert [(f["schema_name"], f["table_name"], f["field_name"], f["type"]) for f in content] == [
        (f["schema_name"], f["table_name"], f["field_name"], f["type"]) for f in ALL_FIELDS
    ] + [("tenant_1", "secrets", "k", "integer"), ("tenant_1", "secrets", "v", "text")]
    assert all(f["rule"] is None and f["dict_data"] is None for f in content)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"schema_name": "public"}, ALL_FIELDS[1:]),
        ({"table_mask": "^u"}, ALL_FIELDS[5:]),
        ({"schema_mask": "*", "table_name": "accounts"}, ALL_FIELDS[:1]),
        ({"schema_name": "public", "table_name": "notes"}, ALL_FIELDS[1:5]),
        ({"schema_mask": "^pub", "table_mask": "es$"}, ALL_FIELDS[1:5]),
        ({"view_only_sensitive_fields": True}, [f for f in ALL_FIELDS if f["rule"]]),
        ({"fields_limit_count": 2}, ALL_FIELDS[:2]),
        ({"schema_name": "public", "fields_limit_count": 1}, ALL_FIELDS[1:2]),
        ({"schema_name": "tenant_1"}, []),
    ],
)
def test_view_fields_filters(client: TestClient, db: Database, filters: dict[str, Any], expected: list[Any]) -> None:
    answer = view_fields(client, db, **filters)
    assert answer.status_code == 200
    assert answer.json()["content"] == expected


def test_view_fields_refusals(client: TestClient, db: Database) -> None:
    answer = view_fields(client, db, fields_limit_count=-1)
    assert (answer.status_code, answer.json()["error_code"]) == (400, "INVALID_LIMIT")

    for content, expected in [
        ("{'dictionary': [", "not valid Python syntax"),
        ("['not', 'a', 'dict']", "must be a dict"),
        ("{'dictionary': [{'schema': 'public', 'table': 'users'}]}", "dictionary[0] needs fields"),
        ('{"dictionary": [], "funcs": {}}', "unknown key 'funcs'"),
        ("{'dictionary': [{'schema': 'public', 'table': 'users', 'fields': {'email': f'x'}}]}", "f-string"),
    ]:
        bad = [dictionaries()[0], {"name": "broken one", "content": content}]
        answer = post(
            client, "/api/stateless/view-fields", {"db_connection_params": params(db.url), "sens_dict_contents": bad}
        )
        assert answer.status_code == 400, content
        error = answer.json()
        assert error["error_code"] == "INVALID_DICT_FILE"
        assert error["message"].startswith("sens_dict_contents[1] ('broken one'): line 1: "), error
        assert expected in error["message"]


def test_dictionaries_as_json_or_python(client: TestClient, db: Database) -> None:
    """JSON text (true/null are JSON's) and Python text (True/None, comments) both read;
    empty text is a dictionary without rules."""
    json_text = '{"dictionary": [{"schema": "public", "table": "users", "fields": {"email": "NULL"}}], "dictionary_exclude": []}'
    python_text = "{'dictionary': [{'schema': 'public', 'table': 'users', 'fields': {'email': 'NULL'}}]}  # note"
    for text in (json_text, python_text):
        answer = post(
            client,
            "/api/stateless/view-fields",
            {
                "db_connection_params": params(db.url),
                "sens_dict_contents": [{"name": "d", "content": text}, {"name": "empty", "content": "  \n"}],
                "view_only_sensitive_fields": True,
            },
        )
        assert answer.status_code == 200, answer.text
        assert [(f["field_name"], f["rule"]) for f in answer.json()["content"]] == [("email", "NULL")]
    # JSON's literals are JSON's, in a JSON text (here in a place no dictionary allows them).
    answer = post(
        client,
        "/api/stateless/view-fields",
        {
            "db_connection_params": params(db.url),
            "sens_dict_contents": [
                {"name": "d", "content": '{"dictionary": [{"schema": true, "table": "t", "fields": {}}]}'}
            ],
        },
    )
    assert answer.json() == {
        "error_code": "INVALID_DICT_FILE",
        "message": "sens_dict_contents[0] ('d'): line 1: dictionary[0].schema must be a string, not a boolean",
    }


# -- view-data -------------------------------------------------------------------------------------


def view_data(
    client: TestClient, db: Database | dict[str, Any], table: str = "users", schema: str = "public", **extra: Any
) -> Any:
    connection = db if isinstance(db, dict) else params(db.url)
    body = {"db_connection_params": connection, "schema_name": schema, "table_name": table, **extra}
    return post(client, "/api/stateless/view-data", body)


USERS_BEFORE = [
    ["1", "alice@example.com", "Alice", "2024-01-01 01:01:01+00:00"],
    ["2", "bob@example.com", "None", "2024-02-02 02:02:02+00:00"],
    ["3", "carol@example.com", "Carol", "2024-03-03 03:03:03+00:00"],
]


def test_view_data_pairs_rows_before_and_after(client: TestClient, db: Database) -> None:
    answer = view_data(client, db, sens_dict_contents=dictionaries())
    assert answer.status_code == 200
    assert answer.json() == {
        "status_id": 2,
        "status": "success",
        "content": {
            "schema_name": "public",
            "table_name": "users",
            "field_names": ["id", "email", "name", "created"],
            "total_rows_count": 3,
            "rows_before": USERS_BEFORE,
            "rows_after": [[row[0], md5(row[1]), "hidden", row[3]] for row in USERS_BEFORE],
        },
    }


def test_view_data_pages(client: TestClient, db: Database) -> None:
    answer = view_data(client, db, sens_dict_contents=dictionaries(), limit=1, offset=1)
    content = answer.json()["content"]
    assert (content["total_rows_count"], content["rows_before"]) == (3, USERS_BEFORE[1:2])
    assert content["rows_after"] == [["2", md5("bob@example.com"), "hidden", USERS_BEFORE[1][3]]]
    # limit 0 is pg_anon's default of 100; past the end, empty pages.
    assert view_data(client, db, limit=0).json()["content"]["rows_before"] == USERS_BEFORE
    past = view_data(client, db, offset=3).json()["content"]
    assert (past["rows_before"], past["rows_after"], past["total_rows_count"]) == ([], [], 3)


def test_view_data_without_primary_key_and_veil_rule(client: TestClient, db: Database) -> None:
    """Physical order; json as its text, booleans as True/False, NULL as None; the
    anon_funcs.digest rule runs as veil.digest."""
    answer = view_data(client, db, "notes", sens_dict_contents=dictionaries())
    assert answer.status_code == 200, answer.text
    content = answer.json()["content"]
    digest = [db.scalar("SELECT veil.digest(%s::text, 'salt', 'md5')", (v,)) for v in ("first", "second")]
    assert content["field_names"] == ["n", "body", "meta", "flag", "age"]
    assert content["rows_before"] == [
        ["1", "first", '{"a": 1}', "True", "4711"],
        ["2", "second", "None", "False", "30"],
    ]
    assert content["rows_after"] == [
        ["1", digest[0], '{"a": 1}', "True", "4711"],
        ["2", digest[1], "None", "False", "30"],
    ]


def test_view_data_sql_condition_applies_to_both(client: TestClient, db: Database) -> None:
    text = json.dumps(
        {
            "dictionary": [
                {"schema": "public", "table": "users", "fields": {"email": "'x'"}, "sql_condition": "WHERE id >= 2"}
            ]
        }
    )
    content = view_data(client, db, sens_dict_contents=[{"name": "d", "content": text}]).json()["content"]
    assert content["total_rows_count"] == 3
    assert content["rows_before"] == USERS_BEFORE[1:]
    assert content["rows_after"] == [[r[0], "x", r[2], r[3]] for r in USERS_BEFORE[1:]]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        ({"table_name": "nope"}, "TABLE_NOT_FOUND", 'Table "public.nope" does not exist'),
        (
            {"schema_name": "tenant_1", "table_name": "secrets"},
            "TABLE_EXCLUDED",
            'Table "tenant_1.secrets" is excluded by dictionary_exclude',
        ),
        ({"limit": -1}, "INVALID_LIMIT", "limit is 0 to 1000 (got -1)"),
        ({"limit": 1001}, "INVALID_LIMIT", "limit is 0 to 1000 (got 1001)"),
        ({"offset": -1}, "INVALID_OFFSET", "offset is 0 or more (got -1)"),
    ],
)
def test_view_data_refusals(client: TestClient, db: Database, extra: dict[str, Any], code: str, message: str) -> None:
    answer = view_data(client, db, sens_dict_contents=dictionaries(), **extra)
    assert answer.status_code == 400
    assert answer.json() == {"error_code": code, "message": message}


def rule_on(column: str, rule: str, table: str = "users") -> list[dict[str, str]]:
    text = json.dumps({"dictionary": [{"schema": "public", "table": table, "fields": {column: rule}}]})
    return [{"name": "rules", "content": text}]


def test_view_data_unmapped_and_failing_rules(client: TestClient, db: Database) -> None:
    answer = view_data(client, db, sens_dict_contents=rule_on("email", "md5(email) || 'x'"))
    assert answer.status_code == 400
    error = answer.json()
    assert error["error_code"] == "INVALID_DICT_FILE"
    assert error["message"].startswith(
        "dictionary 'rules': the rule for public.users.email (md5(email) || 'x') cannot be evaluated by pgveil: "
        "the rule joins values with the operator ||"
    )
    answer = view_data(client, db, sens_dict_contents=rule_on("email", 'anon_funcs.nope("%s")'))
    assert "anon_funcs.nope() has no equivalent in veil" in answer.json()["message"]

    # Mapped, but the database has no such column: PostgreSQL's message names it.
    answer = view_data(client, db, sens_dict_contents=rule_on("email", "md5(mail)"))
    assert answer.json() == {
        "error_code": "INVALID_DICT_FILE",
        "message": 'the rules of public.users failed in the database: column "mail" does not exist (SQLSTATE 42703)',
    }
    # A rule failing on a value: PostgreSQL's message would quote it, so only its name is given.
    answer = view_data(client, db, "notes", sens_dict_contents=rule_on("age", "concat(age, 'x')", "notes"))
    assert answer.json() == {
        "error_code": "INVALID_DICT_FILE",
        "message": "the rules of public.notes failed in the database: InvalidTextRepresentation (SQLSTATE 22P02)",
    }


def test_view_data_needs_pgveil_for_veil_rules(client: TestClient, bare: Database) -> None:
    bare.execute(
        "CREATE TABLE public.users (id integer PRIMARY KEY, email text); INSERT INTO users VALUES (1, 'a@b.c')"
    )
    answer = view_data(client, bare, sens_dict_contents=rule_on("email", "anon_funcs.digest(\"%s\", 'salt', 'md5')"))
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "SCHEMA_NOT_INITIALIZED"
    assert "pgveil is not installed in database" in answer.json()["message"]
    # Rules of pg_catalog's functions need nothing installed.
    answer = view_data(client, bare, sens_dict_contents=rule_on("email", 'md5("email")'))
    assert answer.json()["content"]["rows_after"] == [["1", md5("a@b.c")]]


def test_view_data_reads_only(client: TestClient, db: Database) -> None:
    """A rule whose function writes is stopped by the read-only transaction; nothing changes."""
    db.execute(
        "CREATE TABLE public.probe (n integer);"
        "CREATE FUNCTION veil.fake_write(t text) RETURNS text LANGUAGE sql VOLATILE"
        " AS 'INSERT INTO public.probe VALUES (1); SELECT t'"
    )
    before = catalog(db)
    rows_before = db.execute("SELECT * FROM public.users ORDER BY id").fetchall()
    answer = view_data(client, db, sens_dict_contents=rule_on("email", "veil.fake_write(email)"))
    assert answer.json() == {
        "error_code": "INVALID_DICT_FILE",
        "message": "the rules of public.users failed in the database:"
        " cannot execute INSERT in a read-only transaction (SQLSTATE 25006)",
    }
    assert db.scalar("SELECT count(*) FROM public.probe") == 0
    # A successful page changes nothing either.
    assert view_data(client, db, sens_dict_contents=dictionaries()).status_code == 200
    assert catalog(db) == before
    assert db.execute("SELECT * FROM public.users ORDER BY id").fetchall() == rows_before
    assert db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgveil api'") == 0


def test_view_data_reads_with_the_callers_rights(client: TestClient, db: Database) -> None:
    connection = reader(db)
    db.execute(sql.SQL("REVOKE SELECT ON public.users FROM {}").format(sql.Identifier(connection["user_login"])))
    answer = view_data(client, connection)
    assert answer.status_code == 500
    assert answer.json()["error_code"] == "DB_QUERY_FAILED"
    assert "permission denied for table users (SQLSTATE 42501)" in answer.json()["message"]


# -- preview ------------------------------------------------------------------------------------


def preview(client: TestClient, db: Database, **extra: Any) -> Any:
    return post(client, "/api/stateless/preview", {"db_connection_params": params(db.url), **extra})


def test_preview_lists_user_schemas(client: TestClient, db: Database) -> None:
    answer = preview(client, db)
    assert answer.json() == {"status_id": 2, "status": "success", "content": ["app", "pgx_a", "public", "tenant_1"]}
    # The filter is a literal, case-sensitive substring: '_' and '%' are no wildcards.
    assert preview(client, db, schema_filter="_").json()["content"] == ["pgx_a", "tenant_1"]
    assert preview(client, db, schema_filter="%").json()["content"] == []
    assert preview(client, db, schema_filter="PUB").json()["content"] == []
    assert preview(client, db, schema_filter="ub").json()["content"] == ["public"]


def preview_schema(client: TestClient, db: Database, schema: str = "public", **extra: Any) -> Any:
    body = {"db_connection_params": params(db.url), "sens_dict_contents": dictionaries(), **extra}
    return post(client, f"/api/stateless/preview/{schema}", body)


NOTES = {
    "table_name": "notes",
    "is_sensitive": True,
    "is_excluded": False,
    "fields": [
        {"field_name": "n", "type": "integer", "is_sensitive": False, "rule": None},
        {
            "field_name": "body",
            "type": "text",
            "is_sensitive": True,
            "rule": "anon_funcs.digest(\"%s\", 'salt', 'md5')",
        },
        {"field_name": "meta", "type": "jsonb", "is_sensitive": False, "rule": None},
        {"field_name": "flag", "type": "boolean", "is_sensitive": False, "rule": None},
        {"field_name": "age", "type": "integer", "is_sensitive": False, "rule": None},
    ],
}
USERS = {
    "table_name": "users",
    "is_sensitive": True,
    "is_excluded": False,
    "fields": [
        {"field_name": "id", "type": "integer", "is_sensitive": False, "rule": None},
        {"field_name": "email", "type": "text", "is_sensitive": True, "rule": 'md5("email")'},
        {"field_name": "name", "type": "text", "is_sensitive": True, "rule": "SQL:'hidden'"},
        {"field_name": "created", "type": "timestamp with time zone", "is_sensitive": False, "rule": None},
    ],
}


def test_preview_schema_tables(client: TestClient, db: Database) -> None:
    db.execute("CREATE TABLE public.plain (tags text[], d public.users)")
    plain = {
        "table_name": "plain",
        "is_sensitive": False,
        "is_excluded": False,
        "fields": [
            {"field_name": "tags", "type": "ARRAY", "is_sensitive": False, "rule": None},
            {"field_name": "d", "type": "USER-DEFINED", "is_sensitive": False, "rule": None},
        ],
    }
    answer = preview_schema(client, db)
    assert answer.json() == {"status_id": 2, "status": "success", "content": [NOTES, plain, USERS]}
    assert preview_schema(client, db, limit=1, offset=1).json()["content"] == [plain]
    assert preview_schema(client, db, table_filter="s").json()["content"] == [NOTES, USERS]
    # Sensitive tables are kept before paging: a page is never short for it.
    assert preview_schema(client, db, view_only_sensitive_tables=True, limit=1, offset=1).json()["content"] == [USERS]
    excluded = preview_schema(client, db, "tenant_1").json()["content"]
    assert [(t["table_name"], t["is_sensitive"], t["is_excluded"]) for t in excluded] == [("secrets", False, True)]
    assert preview_schema(client, db, "app").json()["content"][0]["fields"] == [
        {"field_name": "login", "type": "character varying", "is_sensitive": False, "rule": None},
        {"field_name": "balance", "type": "numeric", "is_sensitive": True, "rule": "0"},
        {"field_name": "code", "type": "integer", "is_sensitive": False, "rule": None},
    ]
    assert preview_schema(client, db, "no_such_schema").json()["content"] == []
    assert preview_schema(client, db, "veil").json()["content"] == []


def test_preview_schema_refusals(client: TestClient, db: Database) -> None:
    assert preview_schema(client, db, limit=-1).json() == {
        "error_code": "INVALID_LIMIT",
        "message": "limit is 0 or more (got -1)",
    }
    assert preview_schema(client, db, offset=-2).json() == {
        "error_code": "INVALID_OFFSET",
        "message": "offset is 0 or more (got -2)",
    }
    answer = post(
        client,
        "/api/stateless/preview/public",
        {"db_connection_params": params(db.url), "sens_dict_contents": [{"name": "x", "content": "{"}]},
    )
    assert (answer.status_code, answer.json()["error_code"]) == (400, "INVALID_DICT_FILE")
