"""Upgrades: released revisions are fixed, every revision upgrades to head and back,
and a database installed by the 0.1.0 release upgrades with its data and policy working."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory

from pgveil import migrate, revision_log
from tests.conftest import Database
from tests.helpers import assert_copies_equal_transform, definitions, demo_analyst, seed

REPO = Path(__file__).resolve().parent.parent
RELEASED = REPO / "migrations" / "released.sha256"
# The heads of release 0.1.0, the toolkit's and the demo application's.
RELEASE_0_1_0 = ("0004_mask", "d0005_app_traffic")


def toolkit_revisions() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config("postgresql://unused@localhost/x"))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def sql_digest(revision: str) -> str:
    """The SHA-256 of a revision's SQL directory: each file's name and bytes, in order."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "sql" / revision).iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def test_released_revisions_sql_never_changes():
    released = dict(line.split()[::-1] for line in RELEASED.read_text().splitlines() if line.strip())
    assert released, "migrations/released.sha256 lists no revision"
    assert set(released) <= set(toolkit_revisions())
    for revision, digest in released.items():
        assert sql_digest(revision) == digest, (
            f"sql/{revision}/ changed after its release: ship the change as a new revision instead"
        )


def test_every_toolkit_revision_owns_a_directory_of_sql():
    for revision in toolkit_revisions():
        assert sorted((REPO / "sql" / revision).glob("[0-9]*.sql")), revision


@pytest.mark.slow
@pytest.mark.parametrize("revision", toolkit_revisions()[:-1])
def test_upgrading_from_each_revision_ends_equal_to_a_fresh_install(revision, bare, toolkit):
    migrate.upgrade(bare.url, target=revision)
    migrate.upgrade(bare.url)
    assert definitions(bare) == definitions(toolkit)


@pytest.mark.slow
@pytest.mark.parametrize("revision", toolkit_revisions()[:-1])
def test_downgrading_to_each_revision_ends_equal_to_installing_it(revision, bare, toolkit):
    migrate.downgrade(toolkit.url, target=revision)
    migrate.upgrade(bare.url, target=revision)
    assert definitions(toolkit) == definitions(bare)
    # And back up again: the revision log is written anew.
    migrate.upgrade(toolkit.url)
    migrate.upgrade(bare.url)
    assert definitions(toolkit) == definitions(bare)


def downgrade_to_release_0_1_0(db: Database) -> None:
    """Back to the release's two heads: the demo's merges first, then the toolkit's later revisions."""
    toolkit_head, demo_head = RELEASE_0_1_0
    migrate.downgrade(db.url, with_demo=True, target=demo_head)
    revisions = toolkit_revisions()
    later = len(revisions) - 1 - revisions.index(toolkit_head)
    migrate.downgrade(db.url, with_demo=True, target=f"{revisions[-1]}@-{later}")
    assert {r[0] for r in db.execute("SELECT version_num FROM pgveil_version").fetchall()} == {demo_head}


def generated_code(db: Database) -> dict[str, str]:
    """Stream trigger bodies and mask view definitions: what the rule compiler produced."""
    rows = db.execute(
        "SELECT s.source::regclass::text, p.prosrc FROM veil_private.streams s JOIN pg_proc p ON p.oid = s.trigger_fn"
        " UNION ALL SELECT v.view_oid::regclass::text, pg_get_viewdef(v.view_oid) FROM veil_private.mask_views v"
    ).fetchall()
    return dict(rows)


def state(db: Database) -> dict[str, object]:
    """Policy and delivered data, as a DBA would check them after an upgrade."""
    return {
        "rules": db.execute("SELECT * FROM veil.rules ORDER BY 1, 2, 3, 4, 5, 6").fetchall(),
        # The columns of 0.1.0's view (later revisions add options).
        "policies": db.execute(
            "SELECT policy, delivery, pass_through_unlabeled, allow_keyed_functions, security_barrier"
            " FROM veil.policies ORDER BY 1"
        ).fetchall(),
        "masked_roles": db.execute("SELECT role_name, policy FROM veil.masked_roles ORDER BY 1").fetchall(),
        "consumers": db.execute("SELECT roleid::regrole::text FROM veil_private.consumers ORDER BY 1").fetchall(),
        "keys": db.execute("SELECT version, is_current FROM veil.key_versions ORDER BY 1").fetchall(),
        "customer copy": db.execute("SELECT * FROM sanitized.customer ORDER BY customer_id").fetchall(),
        "payment copy": db.execute("SELECT * FROM sanitized.payment ORDER BY payment_id").fetchall(),
        "dictionaries": db.execute("SELECT name, size, locale FROM veil.dictionaries ORDER BY 1").fetchall(),
    }


def assert_policy_works(db: Database) -> None:
    """Streams follow writes of every kind, and the masked role reads masked values only."""
    db.execute("UPDATE customer SET email = 'moved' || customer_id || '@example.org' WHERE customer_id % 3 = 0")
    db.execute("UPDATE customer SET customer_id = customer_id + 100000 WHERE customer_id % 7 = 0")
    db.execute("DELETE FROM customer WHERE customer_id % 5 = 0")
    db.execute(
        "INSERT INTO customer (store_id, first_name, last_name, email, address_id)"
        " VALUES (1, 'Zoë', 'Upgrade', 'zoe@example.com', 1)"
    )
    assert_copies_equal_transform(db)
    with psycopg.connect(demo_analyst(db).url) as analyst:
        emails = [r[0] for r in analyst.execute("SELECT email FROM customer").fetchall()]
        names = {r[0] for r in analyst.execute("SELECT last_name FROM customer").fetchall()}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            analyst.execute("SELECT email FROM public.customer")
    assert emails and all("******" in e for e in emails if e is not None)
    assert "Upgrade" not in names and not any(n.startswith("last") for n in names)


@pytest.mark.slow
def test_a_database_of_release_0_1_0_upgrades_to_head_and_back_with_policy_and_data_intact(bare):
    for head in RELEASE_0_1_0:
        migrate.upgrade(bare.url, with_demo=True, target=head)
    bare.execute("SELECT veil.refresh_masking()")
    seed(bare)
    before, code = state(bare), generated_code(bare)
    assert code and len(before["customer copy"]) == 200

    # Up to the change log, the new compiler generates exactly what the old one did.
    migrate.upgrade(bare.url, with_demo=True, target="d0011_merge_verify")
    assert generated_code(bare) == code
    migrate.upgrade(bare.url, with_demo=True, target="heads")
    logged = [r[0] for r in bare.execute("SELECT identity FROM veil_private.revision_log").fetchall()]
    assert "veil_private.build_stream(oid)" in logged
    # The stream functions it regenerated are generated objects, not the revision's.
    assert not [identity for identity in logged if re.match(r"veil_private\.stream_[0-9]", identity)]
    assert state(bare) == before
    # From 0012 on stream triggers also write the change log; mask views are unchanged.
    streams = {r[0] for r in bare.execute("SELECT source::regclass::text FROM veil_private.streams").fetchall()}
    now = generated_code(bare)
    assert streams and all("INSERT INTO veil_private.change_log" in now[s] for s in streams)
    assert {k: v for k, v in now.items() if k not in streams} == {k: v for k, v in code.items() if k not in streams}
    assert_policy_works(bare)
    # The consumer registered before the upgrade reads the changes made since.
    ops = {
        r[0] for r in bare.execute("SELECT op FROM veil.changes(1000, 'consumer') WHERE copy = 'customer'").fetchall()
    }
    assert ops == {"upsert", "delete"}

    after = state(bare)
    downgrade_to_release_0_1_0(bare)
    assert bare.scalar("SELECT to_regclass('veil_private.revision_log')") is None
    assert bare.scalar("SELECT to_regprocedure('veil_private.mask_column(text, oid, smallint)')") is not None
    assert state(bare) == after
    assert generated_code(bare) == code
    assert_policy_works(bare)


def test_the_rule_compiler_revision_logged_what_it_created_replaced_and_removed(toolkit):
    logged = {
        (r[0], r[1])
        for r in toolkit.execute(
            "SELECT change, identity FROM veil_private.revision_log WHERE revision = '0006_rules'"
        ).fetchall()
    }
    assert {
        ("created", "veil_private.compile_rule(text,oid,smallint,text,text)"),
        ("created", "veil_private.stream_trigger_template()"),
        ("replaced", "veil_private.build_stream(oid)"),
        ("replaced", "veil_private.mask_view_query(text,oid)"),
        ("removed", "veil_private.mask_column(text,oid,smallint)"),
        ("removed", "veil_private.compiled_column(text,oid,smallint,text)"),
    } <= logged
    # Restated unchanged: nothing to undo.
    assert not {identity for _, identity in logged if identity.startswith("veil_private.split_arguments(")}


def test_a_revision_that_alters_a_table_is_refused():
    table = revision_log.CatalogObject(1, "table", "veil_private.streams", "source oid true", None, None, None)
    altered = revision_log.CatalogObject(1, "table", "veil_private.streams", "source oid false", None, None, None)
    with pytest.raises(RuntimeError, match=r"table veil_private\.streams \(replaced\)"):
        revision_log.changes({("table", table.identity): table}, {("table", table.identity): altered})
    with pytest.raises(RuntimeError, match=r"table veil_private\.streams \(removed\)"):
        revision_log.changes({("table", table.identity): table}, {})
    # A function may change: the log keeps the old definition to restore.
    old = revision_log.CatalogObject(2, "routine", "veil.f()", "CREATE ... 1", None, None, None)
    new = revision_log.CatalogObject(3, "routine", "veil.f()", "CREATE ... 2", None, None, None)
    assert revision_log.changes({("routine", "veil.f()"): old}, {("routine", "veil.f()"): new}) == [
        revision_log.Change("replaced", old)
    ]


BEFORE_SYNTHETIC_REVISION = """
CREATE FUNCTION veil_private.t_f(a integer) RETURNS integer LANGUAGE sql
    SET search_path = pg_catalog, pg_temp AS 'SELECT a';
COMMENT ON FUNCTION veil_private.t_f(integer) IS 'kept';
REVOKE ALL ON FUNCTION veil_private.t_f(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION veil_private.t_f(integer) TO {reader} WITH GRANT OPTION;
CREATE FUNCTION veil_private.t_g() RETURNS integer LANGUAGE sql SET search_path = pg_catalog, pg_temp AS 'SELECT 1';
CREATE FUNCTION veil_private.t_gone(x text) RETURNS text LANGUAGE sql
    SET search_path = pg_catalog, pg_temp AS 'SELECT x';
COMMENT ON FUNCTION veil_private.t_gone(text) IS 'removed, then restored';
REVOKE ALL ON FUNCTION veil_private.t_gone(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION veil_private.t_gone(text) TO {reader};
CREATE VIEW veil_private.t_v AS SELECT 1 AS a;
CREATE TABLE veil_private.t_tab (id integer);
CREATE FUNCTION veil_private.t_trigger() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp AS 'BEGIN RETURN NULL; END';
CREATE TRIGGER t_trg AFTER INSERT ON veil_private.t_tab FOR EACH STATEMENT EXECUTE FUNCTION veil_private.t_trigger();
ALTER TABLE veil_private.t_tab DISABLE TRIGGER t_trg;
"""

SYNTHETIC_REVISION = """
CREATE FUNCTION veil_private.t_new() RETURNS integer LANGUAGE sql SET search_path = pg_catalog, pg_temp AS 'SELECT 2';
CREATE TABLE veil_private.t_new_tab (id integer DEFAULT veil_private.t_new());
DROP FUNCTION veil_private.t_f(integer);
CREATE FUNCTION veil_private.t_f(b integer) RETURNS bigint LANGUAGE sql
    SET search_path = pg_catalog, pg_temp AS 'SELECT b::bigint';
GRANT EXECUTE ON FUNCTION veil_private.t_f(integer) TO {other};
REVOKE ALL ON FUNCTION veil_private.t_g() FROM PUBLIC;
DROP FUNCTION veil_private.t_gone(text);
CREATE OR REPLACE VIEW veil_private.t_v WITH (security_barrier) AS SELECT 1 AS a, 2 AS b;
CREATE FUNCTION veil_private.t_trigger_new() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp AS 'BEGIN PERFORM veil_private.t_new(); RETURN NULL; END';
DROP TRIGGER t_trg ON veil_private.t_tab;
CREATE TRIGGER t_trg AFTER INSERT ON veil_private.t_tab FOR EACH STATEMENT EXECUTE FUNCTION veil_private.t_trigger_new();
CREATE EVENT TRIGGER t_evt ON sql_drop EXECUTE FUNCTION veil_private.forget_dropped_objects();
"""


def test_the_revision_log_undoes_a_revision_exactly(toolkit):
    reader, other = toolkit.role("reader"), toolkit.role("other")
    toolkit.execute(BEFORE_SYNTHETIC_REVISION.format(reader=reader.name, other=other.name))
    before = definitions(toolkit)
    conn = toolkit.admin
    with conn.transaction():
        revision_log.record(
            conn, "t_synthetic", lambda: conn.execute(SYNTHETIC_REVISION.format(reader=reader.name, other=other.name))
        )
    logged = {(c.change, c.object.kind, c.object.identity) for c in revision_log.logged_changes(conn, "t_synthetic")}
    assert {
        ("created", "table", "veil_private.t_new_tab"),
        ("created", "event trigger", "t_evt"),
        ("replaced", "routine", "veil_private.t_f(integer)"),
        ("replaced", "routine", "veil_private.t_g()"),
        ("replaced", "view", "veil_private.t_v"),
        ("replaced", "trigger", "t_trg ON veil_private.t_tab"),
        ("removed", "routine", "veil_private.t_gone(text)"),
    } <= logged
    assert definitions(toolkit) != before
    with conn.transaction():
        revision_log.undo(conn, "t_synthetic")
    after = definitions(toolkit)
    for key in before:
        assert set(after[key]) ^ set(before[key]) == set(), key
    assert not revision_log.logged_changes(conn, "t_synthetic")


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE veil_private.keys ADD CONSTRAINT t_positive CHECK (version > 0)",
        "ALTER TABLE veil_private.keys ALTER COLUMN is_current SET DEFAULT true",
        "COMMENT ON SCHEMA veil IS 'changed'",
        "ALTER TABLE veil_private.consumers RENAME TO consumers_renamed",
    ],
)
def test_a_revision_that_changes_what_the_log_cannot_restore_is_refused(toolkit, statement):
    before = definitions(toolkit)
    conn = toolkit.admin
    with pytest.raises(RuntimeError, match="cannot restore"), conn.transaction():
        revision_log.record(conn, "t_refused", lambda: conn.execute(statement))
    assert definitions(toolkit) == before


def test_the_compiler_revision_refuses_to_downgrade_under_rules_the_old_generator_cannot_quote(demo):
    demo.execute(
        "SELECT veil.security_label('sanitized', 'COLUMN', 'public.customer.first_name',"
        " 'MASKED WITH VALUE ''$body$''')"
    )
    migrate.downgrade(demo.url, with_demo=True, target=RELEASE_0_1_0[1])
    migrate.downgrade(demo.url, with_demo=True, target="0006_rules")
    with pytest.raises(RuntimeError, match=r"streamed rules contain '\$body\$' \(public\.customer\.first_name\)"):
        migrate.downgrade(demo.url, with_demo=True, target="0006_rules@-1")
    assert {r[0] for r in demo.execute("SELECT version_num FROM pgveil_version")} == {"0006_rules", RELEASE_0_1_0[1]}
    assert demo.scalar("SELECT to_regprocedure('veil_private.compile_rule(text, oid, smallint, text, text)')")
