"""The one rule compiler: each delivery target, the stream trigger template, bad input."""

from __future__ import annotations

import psycopg
import pytest

from tests.helpers import assert_copies_equal_transform, label, seed


def compiled(db, policy: str, table: str, target: str) -> str:
    return db.scalar("SELECT veil_private.compiled_select(%s, %s::regclass, %s)", (policy, table, target))


@pytest.mark.parametrize("target", ["copy", "rewrite", "export"])
def test_statement_targets_compute_the_policy_exactly(demo, target):
    seed(demo)
    demo.execute("SELECT veil.create_policy('exported', 'copy')")
    for column, rule in (
        ("customer_id", "NOT MASKED"),
        ("email", "MASKED WITH FUNCTION veil.token(email, 'email')"),
        ("last_name", "MASKED WITH FUNCTION veil.partial(last_name, 1, '**', 1)"),
        ("store_id", "MASKED WITH VALUE 0"),
    ):
        label(demo, "COLUMN", f"public.customer.{column}", rule, policy="exported")
    query = compiled(demo, "exported", "public.customer", target)
    # Tokens are written out with the key joined once, not called per row.
    assert "veil.token(" not in query and "veil_key" in query
    expected = (
        "SELECT customer_id, 0 AS store_id, veil.partial(last_name, 1, '**', 1) AS last_name,"
        " veil.token(email, 'email') AS email FROM public.customer"
    )
    assert_copies_equal_transform(demo, ((expected, query),))


def test_statement_targets_write_fakes_and_partials_out_and_leave_unruled_columns_out(demo):
    seed(demo)
    query = compiled(demo, "mask", "public.customer", "export")
    assert "veil.fake_" not in query and "veil.partial_email(" not in query
    # Types are the source columns' (a rewrite writes them back in place).
    demo.execute(f"CREATE TEMP TABLE exported AS {query}")
    types = "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
    exported_types = dict(demo.execute(types, ("exported",)).fetchall())
    source_types = dict(demo.execute(types, ("public.customer",)).fetchall())
    assert exported_types == {name: source_types[name] for name in exported_types}
    rows = demo.execute(
        "SELECT c.email, e.email, c.first_name, e.first_name, c.customer_id = e.customer_id"
        " FROM customer c JOIN exported e USING (customer_id)"
    ).fetchall()
    assert len(rows) == 200
    first_names = {r[0] for r in demo.execute("SELECT value FROM veil.dictionary WHERE name = 'first_name'")}
    for raw_email, email, raw_first, first, same_key in rows:
        assert email == demo.scalar("SELECT veil.partial_email(%s)", (raw_email,))
        assert first in first_names and first != raw_first
        assert same_key
    # Only the columns with a rule are exported.
    assert set(exported_types) == {
        r[0]
        for r in demo.execute(
            "SELECT column_name FROM veil.rules WHERE policy = 'mask' AND table_name = 'customer'"
        ).fetchall()
    }
    label(demo, "COLUMN", "public.customer.active", None)
    assert "src.active AS active" not in compiled(demo, "mask", "public.customer", "export")


def test_an_unknown_policy_is_refused(demo):
    with pytest.raises(psycopg.errors.RaiseException, match="there is no policy 'nope'"):
        compiled(demo, "nope", "public.customer", "export")


@pytest.mark.parametrize("target", [None, "table", ""])
def test_an_unknown_target_is_refused(demo, target):
    with pytest.raises(psycopg.errors.RaiseException, match="compile for view, copy, rewrite or export"):
        demo.execute(
            "SELECT * FROM veil_private.compile_rule('mask', 'public.customer'::regclass, 1::smallint, %s)", (target,)
        )
    if target is not None:  # compiled_select is STRICT
        with pytest.raises(psycopg.errors.RaiseException, match="compile for view, copy, rewrite or export"):
            compiled(demo, "mask", "public.address", target)


def test_a_missing_column_is_refused(demo):
    with pytest.raises(psycopg.errors.RaiseException, match="has no column number 99"):
        demo.execute(
            "SELECT * FROM veil_private.compile_rule('mask', 'public.customer'::regclass, 99::smallint, 'view')"
        )


def fill(db, template: str, fields: str) -> str:
    return db.scalar("SELECT veil_private.fill_template(%s, %s::jsonb)", (template, fields))


def test_the_template_fills_each_placeholder_once(demo):
    assert fill(demo, "a {{x}} b {{y}} {{x}}", '{"x": "1", "y": "{{x}}"}') == "a 1 b {{x}} 1"
    with pytest.raises(psycopg.errors.RaiseException, match=r"placeholder \{\{y\}\} has no value"):
        fill(demo, "{{x}} {{y}}", '{"x": "1"}')
    with pytest.raises(psycopg.errors.RaiseException, match="no placeholder for z"):
        fill(demo, "{{x}}", '{"x": "1", "z": "2"}')


def test_a_rule_constant_that_looks_like_quoting_or_a_placeholder_streams_as_it_is(demo):
    tricky = "$body$ {{copy}} $$ 'quoted'"
    label(
        demo,
        "COLUMN",
        "public.customer.first_name",
        "MASKED WITH VALUE " + demo.scalar("SELECT quote_literal(%s)", (tricky,)),
        policy="sanitized",
    )
    demo.execute("INSERT INTO address (address) VALUES ('a')")
    demo.execute(
        "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
        " VALUES (1, 'Ann', 'Lee', 'ann@example.com', 1)"
    )
    assert demo.scalar("SELECT first_name FROM sanitized.customer") == tricky
