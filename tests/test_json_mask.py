"""JSON masking: veil.jsonb_mask / json_mask and their keyed variants, in every delivery.

The spec format is docs/json_masking.md. Tests here: what each part of a spec
does, each peer's documented JSON configuration written as a pgveil spec, the
rule set through veil.security_label and read through a mask view, a
sanitized copy and the compiled rewrite/export statements, specs refused when
the rule is set, and documents that never make the expression fail.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.conftest import Database
from tests.helpers import label


def mask(db: Database, document: Any, spec: dict[str, Any], function: str = "jsonb_mask") -> Any:
    """document masked by spec through veil.<function> (jsonb in, parsed JSON out)."""
    cast = "json" if function.startswith("json_") else "jsonb"
    text = db.scalar(f"SELECT veil.{function}(%s::{cast}, %s::jsonb)::text", (json.dumps(document), json.dumps(spec)))
    return None if text is None else json.loads(text)


def dictionary(db: Database, name: str) -> set[str]:
    return {r[0] for r in db.execute("SELECT value FROM veil.dictionary WHERE name = %s", (name,)).fetchall()}


def rule(column: str, function: str, spec: dict[str, Any]) -> str:
    literal = json.dumps(spec).replace("'", "''")
    return f"MASKED WITH FUNCTION veil.{function}({column}, '{literal}'::jsonb)"


ORDER = {
    "id": 7,
    "customer": {
        "name": "Alice Martin",
        "email": "alice.martin@example.com",
        "phone": "+33 6 12 34 56 78",
        "address": {"street": "12 rue de la Paix", "city": "Paris", "zip": "75002"},
    },
    "items": [
        {"sku": "A1", "qty": 2, "gift_message": "Happy birthday Bob"},
        {"sku": "B2", "qty": 1},
        {"sku": "C3", "qty": 5, "gift_message": None},
    ],
    "payment": {"card": "4111111111111111", "holder": "Alice Martin"},
    "notes": "call before",
}


# --- what each part of a spec does ---------------------------------------------------------


def test_paths_wildcards_and_the_unkeyed_masks(toolkit):
    spec = {
        "paths": {
            "$.customer.email": "partial_email",
            "$.customer.name": {"partial": [1, "***", 0]},
            "$.payment.card": {"partial": [0, "************", 4]},
            "$.payment.holder": "null",
            "$.notes": "remove",
            "$.items[*].gift_message": {"value": "[REDACTED]"},
            "$.items[0].sku": {"fake": "city"},
            "$.customer.nowhere.deeper": "null",
        }
    }
    out = mask(toolkit, ORDER, spec)
    assert out["customer"]["email"] == toolkit.scalar("SELECT veil.partial_email('alice.martin@example.com')")
    assert out["customer"]["name"] == "A***"
    assert out["payment"] == {"card": "************1111", "holder": None}
    assert "notes" not in out
    # Each element of the list; an element without the key is left as it is.
    assert [i.get("gift_message", "absent") for i in out["items"]] == ["[REDACTED]", "absent", "[REDACTED]"]
    assert out["items"][0]["sku"] in dictionary(toolkit, "city")
    # Everything the spec does not name is unchanged; a path that is not there changes nothing.
    assert out["customer"]["phone"] == ORDER["customer"]["phone"]
    assert out["customer"]["address"] == ORDER["customer"]["address"]
    assert out["id"] == 7 and out["items"][1] == {"sku": "B2", "qty": 1}


def test_path_syntaxes_name_the_same_steps(toolkit):
    forms = {
        "$.a.b": ["a", "b"],
        '$."odd key".b': ["odd key", "b"],
        "root['agent']['phones']": ["agent", "phones"],
        "$.list[*].x": ["list", None, "x"],
        "$.list[3]": ["list", "3"],
        "$.object.*": ["object", None],
        "$": [],
    }
    for path, steps in forms.items():
        assert toolkit.scalar("SELECT veil.jsonb_mask_path(%s)", (path,)) == steps, path
    for bad in ("a.b", "$.a..b", "$.a[", "$[-1]", "$.a b"):
        assert toolkit.scalar("SELECT veil.jsonb_mask_path(%s)", (bad,)) is None, bad


def test_keys_at_any_depth_ignore_keys_and_keep_values(toolkit):
    document = {
        "phone": "111",
        "contacts": [{"phone": "222", "kind": "home"}, {"phone": "n/a"}, {"phones": ["333"]}],
        "audit": {"phone": "444"},
        "nested": {"deeper": {"phone": {"work": "555", "fax": ["666", None]}}},
    }
    spec = {"keys": {"phone": {"value": "X"}}, "ignore_keys": ["audit"], "keep_values": ["n/a"]}
    out = mask(toolkit, document, spec)
    assert out["phone"] == "X"
    assert out["contacts"] == [{"phone": "X", "kind": "home"}, {"phone": "n/a"}, {"phones": ["333"]}]
    assert out["audit"] == {"phone": "444"}  # ignored key: left alone
    assert out["nested"]["deeper"]["phone"] == "X"  # a constant replaces a container whole
    # A mask that computes from the value reaches each scalar of a container (list element by element).
    out = mask(toolkit, document, {"keys": {"phone": {"partial": [0, "#", 1]}}})
    assert out["nested"]["deeper"]["phone"] == {"work": "#5", "fax": ["#6", None]}
    assert out["contacts"][2] == {"phones": ["333"]}  # "phones" is another key


def test_lists_are_replaced_element_by_element(toolkit):
    document = {"agent": {"phones": ["555-0100", "555-0101", 42, None, {"x": "555-0102"}]}}
    out = mask(toolkit, document, {"paths": {"$.agent.phones[*]": {"fake": "phone"}}})
    phones = out["agent"]["phones"]
    fakes = dictionary(toolkit, "phone")
    assert len(phones) == 5 and all(p in fakes for p in phones[:3]) and phones[3] is None
    assert phones[4]["x"] in fakes
    out = mask(toolkit, document, {"paths": {"$.agent.phones[*]": "remove"}})
    assert out == {"agent": {"phones": []}}


def test_scalars_of_any_type_are_masked_as_text(toolkit):
    document = {"v": [12345, True, 1.5e10, "abcdef", None, ""]}
    out = mask(toolkit, document, {"paths": {"$.v[*]": {"partial": [1, "*", 1]}}})
    assert out["v"] == ["1*5", "t*e", "1*0", "a*f", None, "*"]
    assert mask(toolkit, document, {"paths": {"$.v[*]": "partial_email"}})["v"][0].startswith("12******@")


def test_fakes_are_random_per_call(toolkit):
    spec = {"keys": {"name": {"fake": "last_name"}}}
    seen = {mask(toolkit, {"name": "x"}, spec)["name"] for _ in range(20)}
    assert len(seen) > 1 and seen <= dictionary(toolkit, "last_name")


def test_keyed_masks_equal_the_column_functions(toolkit):
    spec = {"paths": {"$.email": {"token": "email"}, "$.first": {"pseudo": "first_name"}, "$.id": "token"}}
    out = mask(toolkit, {"email": "a@b.c", "first": "Alice", "id": 42}, spec, "jsonb_mask_keyed")
    assert out["email"] == toolkit.scalar("SELECT veil.token('a@b.c', 'email')")
    assert out["first"] == toolkit.scalar("SELECT veil.pseudo_first_name('Alice'::text)")
    assert out["id"] == toolkit.scalar("SELECT veil.token('42')")
    # The unkeyed function refuses them.
    with pytest.raises(psycopg.errors.RaiseException, match="jsonb_mask_keyed"):
        mask(toolkit, {"email": "a@b.c"}, spec)


def test_json_as_well_as_jsonb(toolkit):
    out = mask(toolkit, {"b": {"email": "bob@example.org"}, "a": 1}, {"keys": {"email": "partial_email"}}, "json_mask")
    assert out == {"a": 1, "b": {"email": "bo******@ex******.org"}}
    assert toolkit.scalar('SELECT pg_typeof(veil.json_mask(\'{}\'::json, \'{"keys": {"k": "null"}}\'))::text') == "json"
    # json text that jsonb cannot hold (\u0000) is masked all the same.
    text = toolkit.scalar(
        """SELECT veil.json_mask('{"k": "secret", "z": "a\\u0000b"}'::json, '{"keys": {"k": "null"}}')::text"""
    )
    assert json.loads(text)["k"] is None
    # A lone surrogate, which jsonb refuses too: the whole document is masked, and no error quotes it.
    text = toolkit.scalar(
        """SELECT veil.json_mask('{"k": "secret", "z": "\\ud800 lone"}'::json, '{"keys": {"k": "null"}}')::text"""
    )
    assert text == "null"


# --- each peer's documented JSON configuration, as a pgveil spec --------------------------


def test_rds_pg_anon_json_options(toolkit):
    """rds_pg_anon's json block: keys at root paths, lists, all_keys, ignore_keys, persist_values."""
    document = {
        "phoneNumber": "208-555-0199",
        "firstName": "John",
        "lastName": "Smith",
        "agent": {"phones": ["208-555-0100", "208-555-0101"], "email": "admin@foo.com"},
        "household": [{"first_name": "Jane", "city": "Boise", "zipcode": "83702", "ssn": "123-45-6789"}],
        "covertAreas": {"email": "hidden@foo.com"},
    }
    spec = {
        "paths": {
            "root['phoneNumber']": {"fake": "phone"},
            "root['firstName']": {"fake": "first_name"},
            "root['lastName']": {"fake": "last_name"},
            "root['agent']['phones'][*]": {"fake": "phone"},
        },
        "keys": {
            "phone_number": {"fake": "phone"},
            "first_name": {"fake": "first_name"},
            "last_name": {"fake": "last_name"},
            "email": {"fake": "email"},
            "street": {"fake": "address"},
            "zipcode": {"fake": "postcode"},
            "city": {"fake": "city"},
            "country": {"fake": "country"},
            "ssn": {"partial": [0, "***-**-", 4]},
        },
        "ignore_keys": ["covertAreas"],
        "keep_values": ["admin@foo.com", "John Smith", "Boise"],
    }
    assert toolkit.scalar("SELECT veil.jsonb_mask_spec_errors(%s)", (Jsonb(spec),)) == []
    out = mask(toolkit, document, spec)
    assert out["phoneNumber"] in dictionary(toolkit, "phone")
    assert out["firstName"] in dictionary(toolkit, "first_name")
    assert out["lastName"] in dictionary(toolkit, "last_name")
    assert len(out["agent"]["phones"]) == 2 and set(out["agent"]["phones"]) <= dictionary(toolkit, "phone")
    assert out["agent"]["email"] == "admin@foo.com"  # a persisted value
    member = out["household"][0]
    assert member["first_name"] in dictionary(toolkit, "first_name") and member["city"] == "Boise"
    assert member["zipcode"] in dictionary(toolkit, "postcode") and member["ssn"] == "***-**-6789"
    assert out["covertAreas"] == {"email": "hidden@foo.com"}  # an ignored key


def test_confiture_strategies_on_a_json_profile(toolkit):
    """Confiture's redact, phone (redact digits, keep format), address keeping city/state/zip and name keeping the initial."""
    document = {
        "ssn": "123-45-6789",
        "phone": "+1-555-123-4567",
        "name": "John",
        "billing_address": {"street": "1234 Main St", "city": "San Francisco", "state": "CA", "zip": "94102"},
    }
    spec = {
        "paths": {
            "$.ssn": {"value": "***-**-****"},
            "$.phone": {"partial": [7, "000-0000", 0]},
            "$.name": {"partial": [1, "-User", 0]},
            "$.billing_address.*": {"value": "[REDACTED]"},
        },
        "ignore_keys": ["city", "state", "zip"],
    }
    out = mask(toolkit, document, spec)
    assert out == {
        "ssn": "***-**-****",
        "phone": "+1-555-000-0000",
        "name": "J-User",
        "billing_address": {"street": "[REDACTED]", "city": "San Francisco", "state": "CA", "zip": "94102"},
    }


def test_pg_anon_json_field_with_a_salted_digest(toolkit):
    """pg_anon scans json fields (sens_pg_types) and replaces them with a per-type function
    (a salted digest): here every value of a json column, keyed, structure kept."""
    document = {"client": {"name": "Ivan", "emails": ["ivan@corp.example"]}, "count": 3}
    out = mask(toolkit, document, {"paths": {"$": {"token": "salt_word"}}}, "json_mask_keyed")
    assert out["client"]["name"] == toolkit.scalar("SELECT veil.token('Ivan', 'salt_word')")
    assert out["client"]["emails"] == [toolkit.scalar("SELECT veil.token('ivan@corp.example', 'salt_word')")]
    assert out["count"] == toolkit.scalar("SELECT veil.token('3', 'salt_word')")


def test_postgresql_anonymizer_custom_jsonb_function_as_a_spec(toolkit):
    """PostgreSQL Anonymizer has no JSON masking of its own: its users write a function over
    jsonb_set in a TRUSTED schema. The same mask as a spec, with no function to write."""
    document = {"email": "daamien@gmail.com", "plan": "pro"}
    by_hand = toolkit.scalar(
        "SELECT jsonb_set(d, '{email}', to_jsonb(veil.partial_email(d->>'email')))::text FROM (SELECT %s::jsonb AS d) s",
        (json.dumps(document),),
    )
    assert mask(toolkit, document, {"paths": {"$.email": "partial_email"}}) == json.loads(by_hand)


# --- every delivery ------------------------------------------------------------------------

SPEC = {
    "paths": {"$.customer.email": "partial_email", "$.items[*].gift_message": "remove"},
    "keys": {"phone": {"value": "hidden"}},
}


@pytest.fixture
def orders(toolkit):
    toolkit.execute("CREATE TABLE public.orders (id int PRIMARY KEY, payload jsonb, doc json)")
    toolkit.execute("INSERT INTO public.orders VALUES (1, %s, %s)", (Jsonb(ORDER), json.dumps(ORDER)))
    return toolkit


def assert_masked(payload: Any) -> None:
    assert payload["customer"]["email"] == "al******@ex******.com"
    assert payload["customer"]["phone"] == "hidden"
    assert all("gift_message" not in i for i in payload["items"])
    assert "alice.martin" not in json.dumps(payload)


def test_a_masked_role_reads_masked_json_through_its_view(orders):
    for column, value in (
        ("id", "NOT MASKED"),
        ("payload", rule("payload", "jsonb_mask", SPEC)),
        ("doc", rule("doc", "json_mask", SPEC)),
    ):
        label(orders, "COLUMN", f"public.orders.{column}", value)
    analyst = orders.role("analyst")
    label(orders, "ROLE", analyst.name, "MASKED")
    with analyst.connect() as conn:
        payload, doc = conn.execute("SELECT payload, doc FROM orders").fetchone()
        assert_masked(payload)
        assert_masked(doc)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute('SELECT veil.jsonb_mask_keyed(\'{}\', \'{"keys": {"a": "token"}}\')')
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute('SELECT veil.json_mask_keyed(\'{}\', \'{"keys": {"a": "token"}}\')')


def test_a_view_query_that_does_not_read_the_json_column_does_not_mask_it(orders):
    fake = {"keys": {"name": {"fake": "first_name"}}}  # volatile: a random fake per call
    for column, value in (
        ("id", "NOT MASKED"),
        ("payload", rule("payload", "jsonb_mask", fake)),
        ("doc", rule("doc", "json_mask", fake)),
    ):
        label(orders, "COLUMN", f"public.orders.{column}", value)
    unread = "\n".join(r[0] for r in orders.execute("EXPLAIN (VERBOSE) SELECT id FROM mask_public.orders"))
    read = "\n".join(r[0] for r in orders.execute("EXPLAIN (VERBOSE) SELECT payload, doc FROM mask_public.orders"))
    assert "json_mask" not in unread and "jsonb_mask" not in unread
    assert "json_mask" in read and "jsonb_mask" in read


def test_keyed_json_rules_need_the_views_opt_in(orders):
    keyed = rule("payload", "jsonb_mask_keyed", {"keys": {"email": "token"}})
    with pytest.raises(psycopg.errors.RaiseException, match="does not allow keyed functions"):
        label(orders, "COLUMN", "public.orders.payload", keyed)
    assert orders.scalar("SELECT veil.jsonb_mask_spec_errors(%s)", (Jsonb({"keys": {"email": "token"}}),)) != []
    assert orders.scalar("SELECT veil_private.is_keyed_function('veil.jsonb_mask_keyed'::regproc)") is True
    assert orders.scalar("SELECT veil_private.is_keyed_function('veil.json_mask_keyed'::regproc)") is True
    assert orders.scalar("SELECT veil_private.is_keyed_function('veil.jsonb_mask'::regproc)") is False
    acl = orders.scalar(
        "SELECT array_agg(has_function_privilege('public', p.oid, 'EXECUTE')) FROM pg_proc p"
        " WHERE p.oid IN ('veil.jsonb_mask_keyed'::regproc, 'veil.json_mask_keyed'::regproc)"
    )
    assert acl == [False, False]


ODD_DOCUMENTS = [
    "null",
    "42",
    '"a string"',
    "[]",
    "{}",
    '{"customer": null}',
    '{"customer": "not an object"}',
    '{"customer": {"email": 12345, "phone": [1, {"phone": null}]}}',
    '{"items": {"gift_message": "not a list"}}',
    '{"items": [null, 1, "x", [], {"gift_message": {"deep": true}}]}',
    '{"phone": {"phone": {"phone": "x"}}}',
]


def test_the_sanitized_copy_masks_json_and_odd_documents_never_fail_a_write(orders):
    for column, value in (
        ("id", "NOT MASKED"),
        ("payload", rule("payload", "jsonb_mask_keyed", {**SPEC, "paths": {**SPEC["paths"], "$.id": "token"}})),
        ("doc", rule("doc", "json_mask", SPEC)),
    ):
        label(orders, "COLUMN", f"public.orders.{column}", value, policy="sanitized")
    orders.execute("SELECT veil.stream('public.orders')")
    orders.execute("CALL veil.backfill('public.orders')")
    payload, doc = orders.execute("SELECT payload, doc FROM sanitized.orders WHERE id = 1").fetchone()
    assert_masked(payload)
    assert_masked(doc)
    assert payload["id"] == orders.scalar("SELECT veil.token('7')")
    # Documents of every shape: the application's writes all succeed.
    deep = "[" * 2000 + '{"phone": "555"}' + "]" * 2000
    huge = json.dumps({"rows": [{"phone": f"555-{i:04}", "note": "x" * 40} for i in range(15000)]})
    for n, document in enumerate([*ODD_DOCUMENTS, deep, huge], start=2):
        orders.execute("INSERT INTO public.orders VALUES (%s, %s::jsonb, %s::json)", (n, document, document))
    orders.execute("UPDATE public.orders SET payload = payload WHERE id > 1")
    assert orders.scalar("SELECT count(*) FROM sanitized.orders") == len(ODD_DOCUMENTS) + 3
    assert "555-0001" not in orders.scalar("SELECT payload::text FROM sanitized.orders WHERE id = %s", (n,))
    assert "555" not in orders.scalar("SELECT payload::text FROM sanitized.orders WHERE id = %s", (n - 1,))


@pytest.mark.parametrize("target", ["rewrite", "export"])
def test_compiled_rewrite_and_export_statements_mask_json(orders, target):
    orders.execute("SELECT veil.create_policy('static_json', 'static')")
    for column, value in (
        ("id", "NOT MASKED"),
        ("payload", rule("payload", "jsonb_mask_keyed", {"keys": {"email": {"token": "email"}}})),
        ("doc", rule("doc", "json_mask", SPEC)),
    ):
        label(orders, "COLUMN", f"public.orders.{column}", value, policy="static_json")
    query = orders.scalar(
        "SELECT veil_private.compiled_select('static_json', 'public.orders'::regclass, %s)", (target,)
    )
    payload, doc = orders.execute(f"SELECT payload, doc FROM ({query}) AS q").fetchone()
    assert payload["customer"]["email"] == orders.scalar("SELECT veil.token('alice.martin@example.com', 'email')")
    assert_masked(doc)


# --- refused when the rule is set ----------------------------------------------------------

BAD_SPECS = [
    ([], "a spec is a JSON object"),
    ({}, "masks nothing"),
    ({"path": {"$.a": "null"}}, 'unknown member "path"'),
    ({"paths": {"a.b": "null"}}, "is not a path"),
    ({"paths": {"$.a": "blank"}}, "unknown mask"),
    ({"paths": {"$.a": {"fake": "no_such_dictionary"}}}, "there is no dictionary"),
    ({"paths": {"$.a": {"partial": [-1, "*", 2]}}}, "takes two counts"),
    ({"paths": {"$.a": {"value": 1, "fake": "city"}}}, "one member"),
    ({"paths": {"$": "remove"}}, "cannot be removed"),
    ({"keys": {"a": {"token": "p"}}}, "use veil.jsonb_mask_keyed"),
    ({"keys": {"a": {"pseudo": "ssn"}}}, "use veil.jsonb_mask_keyed"),
    ({"keys": {"a": "null"}, "ignore_keys": ["a"]}, "both masked and in ignore_keys"),
    ({"paths": {"$.a.b": "null"}, "ignore_keys": ["a"]}, "goes through a key of ignore_keys"),
    ({"keys": {"a": "null"}, "keep_values": [{"x": 1}]}, "keep_values is an array of scalars"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS, ids=[m for _, m in BAD_SPECS])
def test_a_bad_spec_is_refused_when_the_rule_is_set_and_nothing_changes(orders, spec, message):
    label(orders, "COLUMN", "public.orders.payload", rule("payload", "jsonb_mask", SPEC))
    before = orders.execute("SELECT * FROM veil_private.column_rules ORDER BY policy, relid, attnum").fetchall()
    with pytest.raises(psycopg.errors.RaiseException) as refused:
        label(orders, "COLUMN", "public.orders.payload", rule("payload", "jsonb_mask", spec))
    assert str(refused.value).startswith("pgveil: rule rejected for public.orders.payload: invalid JSON mask spec")
    assert message in str(refused.value)
    assert orders.execute("SELECT * FROM veil_private.column_rules ORDER BY policy, relid, attnum").fetchall() == before


def test_a_spec_must_be_a_constant_and_every_call_is_checked(orders):
    orders.execute("ALTER TABLE public.orders ADD COLUMN spec jsonb")
    with pytest.raises(psycopg.errors.RaiseException, match="must be a constant"):
        label(orders, "COLUMN", "public.orders.payload", "MASKED WITH FUNCTION veil.jsonb_mask(payload, spec)")
    nested = (
        'MASKED WITH FUNCTION veil.jsonb_mask(veil.jsonb_mask(payload, \'{"keys": {"a": "null"}}\'::jsonb),'
        ' \'{"keys": {"b": "nope"}}\'::jsonb)'
    )
    with pytest.raises(psycopg.errors.RaiseException, match='key "b": unknown mask'):
        label(orders, "COLUMN", "public.orders.payload", nested)
    # A spec whose text mentions the function names is read as data, not as calls.
    tricky = {"keys": {"veil.jsonb_mask(": {"value": "')"}}}
    label(orders, "COLUMN", "public.orders.payload", rule("payload", "jsonb_mask", tricky))
    assert orders.scalar("SELECT count(*) FROM veil_private.column_rules WHERE relid = 'public.orders'::regclass") == 1


# --- documents never make the expression fail -----------------------------------------------


@pytest.mark.parametrize("document", ODD_DOCUMENTS)
def test_odd_documents_are_masked_without_error(toolkit, document):
    spec = {**SPEC, "paths": {**SPEC["paths"], "$.customer.email": {"partial": [2, "*", 2]}, "$.items[0]": "null"}}
    for function in ("jsonb_mask", "json_mask"):
        toolkit.scalar(f"SELECT veil.{function}(%s::{function.split('_')[0]}, %s::jsonb)", (document, Jsonb(spec)))
    assert toolkit.scalar("SELECT veil.jsonb_mask(NULL::jsonb, %s::jsonb)", (Jsonb(spec),)) is None


def test_deep_nesting_is_masked_to_null_below_the_depth_limit(toolkit):
    limit = toolkit.scalar("SELECT veil.jsonb_mask_max_depth()")
    deep = "[" * 5000 + '{"phone": "555", "other": 1}' + "]" * 5000
    text = toolkit.scalar(
        "SELECT veil.jsonb_mask(%s::jsonb, %s::jsonb)::text", (deep, Jsonb({"keys": {"phone": {"fake": "phone"}}}))
    )
    assert "555" not in text and text.startswith("[" * limit) and "null" in text
    assert mask(toolkit, [[[{"phone": "555"}]]], {"keys": {"phone": {"value": "x"}}}) == [[[{"phone": "x"}]]]


def test_a_one_megabyte_document_is_masked_in_well_under_a_second(toolkit):
    document = {"rows": [{"email": f"u{i}@example.com", "n": i, "note": "x" * 40} for i in range(15000)]}
    toolkit.execute("SET statement_timeout = '10s'")
    out = mask(
        toolkit,
        document,
        {"keys": {"email": "partial_email"}, "paths": {"$.rows[*].note": "remove", "$.rows[*].n": {"fake": "city"}}},
    )
    assert len(out["rows"]) == 15000 and out["rows"][9]["email"] == "u9******@ex******.com"
    assert "note" not in out["rows"][0] and out["rows"][0]["n"] in dictionary(toolkit, "city")
