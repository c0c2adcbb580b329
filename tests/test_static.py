"""Static anonymization: tables rewritten in place under a static policy, against a real server."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg
import pytest

from pgveil import migrate
from tests.conftest import Database
from tests.helpers import pgveil

SHOP = """
CREATE TABLE public.customer (
    id text PRIMARY KEY, email text UNIQUE, first_name text, last_name text,
    note text, created date NOT NULL DEFAULT DATE '2024-01-01', n integer,
    name_length integer GENERATED ALWAYS AS (length(last_name)) STORED);
ALTER TABLE public.customer ALTER COLUMN note SET STORAGE EXTERNAL;
CREATE INDEX customer_last_name ON public.customer (last_name);
COMMENT ON INDEX public.customer_last_name IS 'by name';
CREATE TABLE public.rental (
    rental_id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL REFERENCES public.customer ON UPDATE CASCADE,
    amount integer NOT NULL);
CREATE INDEX ON public.rental (customer_id);
CREATE TABLE public.review (
    review_id integer PRIMARY KEY,
    customer_id text CONSTRAINT review_customer REFERENCES public.customer DEFERRABLE INITIALLY DEFERRED);
INSERT INTO public.review SELECT g, 'C' || g FROM generate_series(1, 50) g;
COMMENT ON INDEX public.customer_email_key IS 'the unique index';
INSERT INTO public.customer (id, email, first_name, last_name, note, n)
SELECT 'C' || g, 'user' || g || '@example.com', 'First' || g, 'Last' || g,
       'note of customer ' || g || ' ' || repeat(md5(g::text), 100), g
FROM generate_series(1, 500) g;
INSERT INTO public.rental (customer_id, amount) SELECT 'C' || (1 + g % 500), g FROM generate_series(1, 1500) g;
SELECT veil.create_policy('anon', 'static');
"""
RULES = {
    "public.customer.id": "MASKED WITH FUNCTION veil.token(id, 'customer')",
    "public.customer.email": "MASKED WITH FUNCTION veil.token(email, 'email')",
    "public.customer.first_name": "MASKED WITH FUNCTION veil.fake_first_name()",
    "public.customer.last_name": "MASKED WITH FUNCTION veil.fake_last_name()",
    "public.customer.note": "MASKED WITH VALUE NULL",
    "public.customer.created": "NOT MASKED",
    "public.customer.n": "NOT MASKED",
    "public.rental.rental_id": "NOT MASKED",
    "public.rental.customer_id": "MASKED WITH FUNCTION veil.token(customer_id, 'customer')",
    "public.rental.amount": "NOT MASKED",
    "public.review.review_id": "NOT MASKED",
    "public.review.customer_id": "MASKED WITH FUNCTION veil.token(customer_id, 'customer')",
}


def label(db: Database, name: str, value: str | None, policy: str = "anon") -> None:
    db.execute("SELECT veil.security_label(%s, 'COLUMN', %s, %s)", (policy, name, value))


@pytest.fixture
def shop(toolkit: Database) -> Database:
    toolkit.execute(SHOP)
    for name, value in RULES.items():
        label(toolkit, name, value)
    return toolkit


def rows(db: Database, table: str) -> list[tuple]:
    return db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


def test_anonymize_table_rewrites_the_table_and_the_tables_its_key_reaches(shop):
    before = {
        "customer": shop.execute(
            "SELECT veil.token(id, 'customer'), veil.token(email, 'email'), created, n FROM customer"
        ).fetchall(),
        "rental": shop.execute("SELECT rental_id, veil.token(customer_id, 'customer'), amount FROM rental").fetchall(),
    }
    oid = shop.scalar("SELECT 'customer'::regclass::oid")
    files = shop.execute(
        "SELECT pg_relation_filenode('customer'), pg_relation_filenode('customer_pkey'), pg_relation_filenode('rental')"
    ).fetchone()

    done = shop.execute("SELECT * FROM veil.anonymize_table('public.customer', 'anon')").fetchall()

    assert sorted(done) == [("public.customer", 500), ("public.rental", 1500), ("public.review", 50)]
    after = shop.execute("SELECT id, email, created, n FROM customer").fetchall()
    assert sorted(after) == sorted(before["customer"])
    assert sorted(shop.execute("SELECT * FROM rental").fetchall()) == sorted(before["rental"])
    assert shop.scalar("SELECT count(*) FROM customer WHERE note IS NOT NULL") == 0
    assert shop.scalar("SELECT count(*) FROM customer WHERE first_name LIKE 'First%' OR last_name LIKE 'Last%'") == 0
    # Generated columns follow the anonymized values.
    assert shop.scalar("SELECT count(*) FROM customer WHERE name_length <> length(last_name)") == 0
    # Same table, new files; every key still matches, every constraint is valid.
    assert shop.scalar("SELECT 'customer'::regclass::oid") == oid
    new_files = shop.execute(
        "SELECT pg_relation_filenode('customer'), pg_relation_filenode('customer_pkey'), pg_relation_filenode('rental')"
    ).fetchone()
    assert all(a != b for a, b in zip(files, new_files, strict=True))
    assert shop.scalar("SELECT count(*) FROM rental r JOIN customer c ON c.id = r.customer_id") == 1500
    assert shop.scalar("SELECT count(*) FROM review r JOIN customer c ON c.id = r.customer_id") == 50
    constraints = shop.execute(
        "SELECT conname, convalidated, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid IN ('customer'::regclass, 'rental'::regclass, 'review'::regclass) ORDER BY 1"
    ).fetchall()
    assert constraints == [
        ("customer_email_key", True, "UNIQUE (email)"),
        ("customer_pkey", True, "PRIMARY KEY (id)"),
        ("rental_customer_id_fkey", True, "FOREIGN KEY (customer_id) REFERENCES customer(id) ON UPDATE CASCADE"),
        ("rental_pkey", True, "PRIMARY KEY (rental_id)"),
        ("review_customer", True, "FOREIGN KEY (customer_id) REFERENCES customer(id) DEFERRABLE INITIALLY DEFERRED"),
        ("review_pkey", True, "PRIMARY KEY (review_id)"),
    ]
    assert shop.scalar("SELECT obj_description('customer_last_name'::regclass, 'pg_class')") == "by name"
    assert shop.scalar("SELECT obj_description('customer_email_key'::regclass, 'pg_class')") == "the unique index"
    assert shop.scalar("SELECT count(*) FROM pg_index WHERE indrelid = 'customer'::regclass AND indisvalid") == 3
    # The identity sequence is where it was.
    shop.execute("INSERT INTO rental (customer_id, amount) SELECT id, 1 FROM customer LIMIT 1")
    assert shop.scalar("SELECT max(rental_id) FROM rental") == 1501


RELATIONS_OF_TABLE = """
SELECT pg_relation_filepath(c.oid) FROM pg_class c
WHERE c.oid = %(t)s::regclass
   OR c.oid = (SELECT reltoastrelid FROM pg_class WHERE oid = %(t)s::regclass)
   OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = %(t)s::regclass
                   OR indrelid = (SELECT reltoastrelid FROM pg_class WHERE oid = %(t)s::regclass))
"""


def relation_files(db: Database, table: str) -> list[Path]:
    """The files of a table, its TOAST table and their indexes: every segment and fork."""
    data = Path(db.scalar("SHOW data_directory"))
    paths = [data / r[0] for r in db.execute(RELATIONS_OF_TABLE, {"t": table}).fetchall()]
    assert len(paths) == 6  # heap, TOAST, TOAST index, primary key, email key, last_name index
    return [f for p in paths for f in [p, *p.parent.glob(p.name + ".*"), *p.parent.glob(p.name + "_*")]]


def holding(db: Database, files: list[Path], needles: list[bytes]) -> set[bytes]:
    db.execute("CHECKPOINT")
    found = set()
    for path in files:
        content = path.read_bytes() if path.exists() else b""
        found |= {n for n in needles if n in content}
    return found


def test_no_replaced_value_remains_in_the_table_toast_or_index_files(shop):
    # Values planted in the heap (first_name), indexes (email, last_name) and TOAST (note, stored uncompressed).
    planted = [b"Zebediah-Planted", b"planted.person@example.org", b"Quixotic-Lastname", b"TOAST-PLANTED-SECRET"]
    shop.execute(
        "INSERT INTO customer (id, email, first_name, last_name, note)"
        " VALUES ('C-planted', 'planted.person@example.org', 'Zebediah-Planted', 'Quixotic-Lastname',"
        " 'TOAST-PLANTED-SECRET' || repeat(md5('x'), 200))"
    )
    # Old row versions of an UPDATE are what a row-by-row tool leaves behind.
    shop.execute("UPDATE customer SET first_name = first_name WHERE id = 'C-planted'")
    old_files = relation_files(shop, "customer")
    assert holding(shop, old_files, planted) == set(planted), "the planted values must be on disk before"

    shop.execute("SELECT * FROM veil.anonymize_table('customer', 'anon')")

    new_files = relation_files(shop, "customer")
    assert not set(new_files) & set(old_files)
    assert holding(shop, old_files + new_files, planted) == set()


def test_columns_without_a_rule_are_refused_listed_and_nothing_changes(shop):
    shop.execute("ALTER TABLE customer ADD COLUMN phone text, ADD COLUMN ssn text NOT NULL DEFAULT '000-00-0000'")
    before = rows(shop, "customer")
    with pytest.raises(psycopg.errors.RaiseException) as refused:
        shop.execute("SELECT * FROM veil.anonymize_table('customer', 'anon')")
    message = str(refused.value)
    assert "public.customer.phone has no rule in policy anon" in message
    assert "public.customer.ssn has no rule in policy anon" in message
    assert "nothing was changed" in message
    assert rows(shop, "customer") == before
    # null: a NOT NULL column cannot be nulled, and that is said before anything changes.
    with pytest.raises(psycopg.errors.RaiseException, match=r"customer\.ssn has no rule and is NOT NULL"):
        shop.execute("SELECT * FROM veil.anonymize_table('customer', 'anon', uncovered => 'null')")
    assert rows(shop, "customer") == before
    # keep, for one run; then the policy's option.
    shop.execute("ALTER TABLE customer ALTER COLUMN ssn DROP NOT NULL")
    shop.execute("UPDATE customer SET phone = '+1 555 0100'")
    shop.execute("SELECT * FROM veil.anonymize_table('customer', 'anon', uncovered => 'keep')")
    assert shop.scalar("SELECT count(DISTINCT (phone, ssn)) FROM customer") == 1
    shop.execute("SELECT veil.alter_policy('anon', uncovered => 'null')")
    shop.execute("SELECT * FROM veil.anonymize_table('customer', 'anon')")
    assert shop.scalar("SELECT count(*) FROM customer WHERE phone IS NOT NULL OR ssn IS NOT NULL") == 0


def test_a_key_rule_the_referencing_column_does_not_share_is_refused(shop):
    label(shop, "public.rental.customer_id", "NOT MASKED")
    before = rows(shop, "rental")
    with pytest.raises(psycopg.errors.RaiseException, match=r"foreign key rental_customer_id_fkey of public\.rental"):
        shop.execute("SELECT * FROM veil.anonymize_table('customer', 'anon')")
    label(shop, "public.rental.customer_id", "MASKED WITH FUNCTION veil.token(customer_id, 'other purpose')")
    with pytest.raises(psycopg.errors.RaiseException, match=r"must have the same deterministic rule"):
        shop.execute("SELECT * FROM veil.anonymize_table('rental', 'anon')")
    assert rows(shop, "rental") == before


def test_a_rule_that_fails_on_one_row_names_the_row_and_changes_nothing(shop):
    shop.execute("UPDATE customer SET n = -2147483648 WHERE id = 'C321'")
    label(shop, "public.customer.n", "MASKED WITH FUNCTION pg_catalog.abs(n)")
    label(shop, "public.customer.id", "NOT MASKED")
    label(shop, "public.rental.customer_id", "NOT MASKED")
    label(shop, "public.review.customer_id", "NOT MASKED")
    before = rows(shop, "customer")
    with pytest.raises(psycopg.errors.DataException) as failed:
        shop.execute("SELECT * FROM veil.anonymize_table('customer', 'anon')")
    assert "the rule of public.customer.n fails on the row with (id)=(C321)" in str(failed.value)
    assert "22003" in str(failed.value)
    assert rows(shop, "customer") == before
    # The database's own message would quote the value: pgveil's does not, anywhere.
    label(shop, "public.customer.n", "NOT MASKED")
    shop.execute("UPDATE customer SET note = CASE WHEN id = 'C77' THEN 'SECRET-77' ELSE '2024-05-01' END")
    label(shop, "public.customer.created", "MASKED WITH FUNCTION pg_catalog.date_trunc('year', (note)::date)")
    with pytest.raises(psycopg.errors.DataException) as failed:
        shop.execute("SELECT * FROM veil.anonymize_table('customer', 'anon')")
    diag = failed.value.diag
    assert "the rule of public.customer.created fails on the row with (id)=(C77)" in str(diag.message_primary)
    shown = " ".join(str(x) for x in (diag.message_primary, diag.message_detail, diag.message_hint, diag.context))
    assert "SECRET" not in shown
    # A key that is itself masked is not shown: the row is named by its place.
    label(shop, "public.customer.id", RULES["public.customer.id"])
    label(shop, "public.rental.customer_id", RULES["public.rental.customer_id"])
    label(shop, "public.review.customer_id", RULES["public.review.customer_id"])
    with pytest.raises(psycopg.errors.DataException, match=r"fails on the row at ctid \(\d+,\d+\) of public\.customer"):
        shop.execute("SELECT * FROM veil.anonymize_table('customer', 'anon')")


def test_a_locked_table_times_out_with_a_clear_error_and_nothing_changes(shop):
    before = rows(shop, "customer")
    with psycopg.connect(shop.url) as holder:
        holder.execute("SELECT count(*) FROM customer")  # holds ACCESS SHARE until rollback
        shop.execute("SET lock_timeout = '200ms'")
        with pytest.raises(
            psycopg.errors.LockNotAvailable, match=r"could not lock public\.customer.*nothing was changed"
        ):
            shop.execute("SELECT * FROM veil.anonymize_table('customer', 'anon')")
        holder.rollback()
    assert rows(shop, "customer") == before


def test_callers_that_may_not_are_refused(shop):
    stranger = shop.role("stranger")
    with psycopg.connect(stranger.url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM veil.anonymize_table('customer', 'anon')")
    # A governor who does not own the table.
    governor = shop.role("governor")
    owner = shop.role("owner")
    shop.execute(f"GRANT {shop.server.user} TO {governor.name}")
    shop.execute(f"ALTER TABLE rental OWNER TO {owner.name}")
    with psycopg.connect(governor.url) as conn, pytest.raises(psycopg.errors.RaiseException) as refused:
        conn.execute("SET ROLE NONE")
        conn.execute("SELECT * FROM veil.anonymize_table('customer', 'anon')")
    assert f"public.rental: only its owner ({owner.name}) may anonymize it" in str(refused.value)


def test_a_table_forcing_row_security_on_its_owner_is_refused(shop):
    owner = shop.role("owner")
    shop.execute(f"GRANT {shop.server.user} TO {owner.name}")  # a governor, not a superuser itself
    for table in ("customer", "rental", "review"):
        shop.execute(f"ALTER TABLE {table} OWNER TO {owner.name}")
    shop.execute("ALTER TABLE customer ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY")
    shop.execute("CREATE POLICY some_rows ON customer USING (id < 'C2')")
    before = rows(shop, "customer")
    with psycopg.connect(owner.url) as conn, pytest.raises(psycopg.errors.RaiseException) as refused:
        conn.execute("SELECT * FROM veil.anonymize_table('customer', 'anon')")
    assert "public.customer forces row level security" in str(refused.value)
    assert rows(shop, "customer") == before


def test_bad_policies_and_tables_are_refused(shop):
    with pytest.raises(psycopg.errors.RaiseException, match="there is no policy 'nope'"):
        shop.execute("SELECT * FROM veil.anonymize_table('customer', 'nope')")
    with pytest.raises(psycopg.errors.RaiseException, match="policy mask is delivered as views, not static"):
        shop.execute("SELECT * FROM veil.anonymize_table('customer', 'mask')")
    with pytest.raises(psycopg.errors.UndefinedTable):
        shop.execute("SELECT * FROM veil.anonymize_table('no_such_table', 'anon')")
    with pytest.raises(psycopg.errors.RaiseException, match="uncovered is 'refuse', 'keep' or 'null'"):
        shop.execute("SELECT * FROM veil.anonymize_table('customer', 'anon', 'drop')")


def test_a_streamed_table_is_refused_naming_unstream(shop):
    shop.execute(
        "SELECT veil.security_label('sanitized', 'COLUMN', 'public.customer.id', %s)", (RULES["public.customer.id"],)
    )
    shop.execute("SELECT veil.stream('public.customer')")
    with pytest.raises(
        psycopg.errors.RaiseException, match=r"streamed into sanitized\.customer.*veil\.unstream\('public\.customer'\)"
    ):
        shop.execute("SELECT * FROM veil.anonymize_table('customer', 'anon')")


def test_partitioned_tables_and_inheritance_children_are_covered(toolkit):
    toolkit.execute("""
        SELECT veil.create_policy('anon', 'static');
        CREATE TABLE event (id integer, at date NOT NULL, email text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
        CREATE TABLE event_2024 PARTITION OF event FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
        CREATE TABLE event_2025 PARTITION OF event FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE INDEX ON event (email);
        CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
        CREATE TRIGGER event_noop AFTER INSERT ON event FOR EACH ROW EXECUTE FUNCTION noop();
        ALTER TABLE event_2025 DISABLE TRIGGER event_noop;
        INSERT INTO event SELECT g, DATE '2024-06-01' + g, 'e' || g || '@example.com' FROM generate_series(1, 400) g;
        CREATE TABLE person (id integer PRIMARY KEY, email text);
        CREATE TABLE employee (badge text) INHERITS (person);
        INSERT INTO person VALUES (1, 'p@example.com');
        INSERT INTO employee VALUES (2, 'e@example.com', 'B-7');
    """)
    for name, value in {
        "public.event.id": "NOT MASKED",
        "public.event.at": "NOT MASKED",
        "public.event.email": "MASKED WITH FUNCTION veil.token(email, 'email')",
        "public.person.id": "NOT MASKED",
        "public.person.email": "MASKED WITH VALUE 'hidden'",
        "public.employee.badge": "MASKED WITH VALUE NULL",
    }.items():
        label(toolkit, name, value)
    with pytest.raises(psycopg.errors.RaiseException, match=r"event_2024 is a partition of public\.event"):
        toolkit.execute("SELECT * FROM veil.anonymize_table('event_2024', 'anon')")
    expected = toolkit.execute(
        "SELECT tableoid::regclass::text, id, veil.token(email, 'email') FROM event ORDER BY 2"
    ).fetchall()
    done = toolkit.execute("SELECT * FROM veil.anonymize_table('event', 'anon')").fetchall()
    assert done == [("public.event", 400)]
    assert toolkit.execute("SELECT tableoid::regclass::text, id, email FROM event ORDER BY 2").fetchall() == expected
    assert {r[0] for r in expected} == {"event_2024", "event_2025"}
    # The partition's trigger disabled on purpose stays disabled.
    assert toolkit.execute(
        "SELECT tgrelid::regclass::text, tgenabled FROM pg_trigger WHERE tgname = 'event_noop' ORDER BY 1"
    ).fetchall() == [("event", "O"), ("event_2024", "O"), ("event_2025", "D")]

    done = toolkit.execute("SELECT * FROM veil.anonymize_table('person', 'anon') ORDER BY 1").fetchall()
    assert done == [("public.employee", 1), ("public.person", 1)]
    # The child has the parent's rule for the column it inherits, and its own for the rest.
    assert toolkit.execute("SELECT * FROM ONLY employee").fetchall() == [(2, "hidden", None)]
    assert toolkit.execute("SELECT * FROM ONLY person").fetchall() == [(1, "hidden")]


def test_user_triggers_do_not_fire_and_keep_their_state(shop):
    shop.execute("""
        CREATE TABLE audit (seen text);
        CREATE FUNCTION copy_row() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO audit VALUES (NEW::text); RETURN NEW; END $$;
        CREATE TRIGGER customer_audit AFTER INSERT OR UPDATE ON customer FOR EACH ROW EXECUTE FUNCTION copy_row();
        CREATE TRIGGER customer_replica AFTER INSERT ON customer FOR EACH ROW EXECUTE FUNCTION copy_row();
        ALTER TABLE customer ENABLE REPLICA TRIGGER customer_replica;
    """)
    shop.execute("SELECT * FROM veil.anonymize_table('customer', 'anon')")
    assert shop.scalar("SELECT count(*) FROM audit") == 0
    assert shop.execute(
        "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'customer'::regclass AND NOT tgisinternal ORDER BY 1"
    ).fetchall() == [("customer_audit", "O"), ("customer_replica", "R")]


def test_cli_dry_run_changes_nothing_then_anonymizes(shop):
    shop.execute("ANALYZE")
    before = rows(shop, "customer")
    plan = pgveil("anonymize", "--table", "public.customer", "--dry-run", "--json", "--database-url", shop.url)
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)
    assert {p["table"]: p["estimated_rows"] for p in planned} == {
        "public.customer": 500,
        "public.rental": 1500,
        "public.review": 50,
    }
    assert all(p["statement"].startswith("SELECT ") and "FROM ONLY public." in p["statement"] for p in planned)
    assert rows(shop, "customer") == before

    done = pgveil("anonymize", "--json", "--database-url", shop.url)  # the only static policy, every table
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["policy"] == "anon"
    assert {(t["table"], t["rows"]) for t in result["tables"]} == {
        ("public.customer", 500),
        ("public.rental", 1500),
        ("public.review", 50),
    }
    assert rows(shop, "customer") != before


def test_cli_refusal_is_one_line_and_exit_1(shop):
    shop.execute("ALTER TABLE customer ADD COLUMN phone text")
    done = pgveil("anonymize", "--policy", "anon", "--database-url", shop.url)
    assert done.returncode == 1
    assert "public.customer.phone has no rule in policy anon" in done.stderr
    assert "Traceback" not in done.stderr
    done = pgveil("anonymize", "--policy", "anon", "--uncovered", "drop", "--database-url", shop.url)
    assert done.returncode == 1 and "--uncovered is one of refuse, keep, null" in done.stderr


def test_anonymize_database_resumes_after_being_killed(toolkit):
    toolkit.execute("SELECT veil.create_policy('anon', 'static')")
    for table in ("a_first", "b_second", "c_third"):
        toolkit.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, email text)")
        toolkit.execute(f"INSERT INTO {table} SELECT g, 'u' || g || '@example.com' FROM generate_series(1, 200) g")
        label(toolkit, f"public.{table}.id", "NOT MASKED")
        label(toolkit, f"public.{table}.email", "MASKED WITH FUNCTION veil.token(email, 'email')")
    expected = {
        t: toolkit.execute(f"SELECT id, veil.token(email, 'email') FROM {t} ORDER BY id").fetchall()
        for t in ("a_first", "b_second", "c_third")
    }
    with psycopg.connect(toolkit.url) as holder, psycopg.connect(toolkit.url, autocommit=True) as runner:
        holder.execute("SELECT count(*) FROM c_third")  # the run stops at the third table
        pid = runner.info.backend_pid
        failure: list[BaseException] = []

        def run() -> None:
            try:
                runner.execute("CALL veil.anonymize_database('anon')")
            except psycopg.Error as exc:
                failure.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 30
        while toolkit.scalar("SELECT count(*) FROM veil_private.static_done") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        toolkit.execute("SELECT pg_terminate_backend(%s)", (pid,))
        worker.join(30)
        holder.rollback()
    assert failure, "the run was killed"
    assert toolkit.execute("SELECT id, email FROM a_first ORDER BY id").fetchall() == expected["a_first"]
    assert toolkit.execute("SELECT id, email FROM b_second ORDER BY id").fetchall() == expected["b_second"]
    assert toolkit.scalar("SELECT count(*) FROM c_third WHERE email LIKE 'u%@example.com'") == 200

    toolkit.execute("CALL veil.anonymize_database('anon')")

    # Each table anonymized exactly once: the first two were not tokenized again.
    for table, values in expected.items():
        assert toolkit.execute(f"SELECT id, email FROM {table} ORDER BY id").fetchall() == values
    assert toolkit.scalar("SELECT count(*) FROM veil_private.static_runs WHERE finished_at IS NOT NULL") == 1


def test_downgrading_below_static_is_refused_while_a_static_policy_exists(shop):
    with pytest.raises(RuntimeError, match=r"cannot downgrade below 0007_static while static policies exist \(anon\)"):
        migrate.downgrade(shop.url, target="0006_rules")
    assert shop.scalar("SELECT count(*) FROM veil.anonymize_table('customer', 'anon')") == 3
    shop.execute("DELETE FROM veil_private.policies WHERE name = 'anon'")
    migrate.downgrade(shop.url, target="0006_rules")
    assert shop.scalar("SELECT to_regprocedure('veil.anonymize_table(regclass, text, text)')") is None
    assert "uncovered" not in {
        r[0]
        for r in shop.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'veil_private.policies'::regclass")
    }


def test_anonymize_database_takes_children_before_parents_and_refreshes_materialized_views(toolkit):
    toolkit.execute("""
        SELECT veil.create_policy('anon', 'static');
        CREATE TABLE person (id integer PRIMARY KEY, email text);
        CREATE TABLE employee (badge text) INHERITS (person);  -- sorts before its parent
        INSERT INTO person SELECT g, 'p' || g || '@example.com' FROM generate_series(1, 20) g;
        INSERT INTO employee SELECT g, 'e' || g || '@example.com', 'B' || g FROM generate_series(21, 30) g;
        CREATE MATERIALIZED VIEW person_emails AS SELECT email FROM person;
    """)
    label(toolkit, "public.person.id", "NOT MASKED")
    label(toolkit, "public.person.email", "MASKED WITH FUNCTION veil.token(email, 'email')")
    label(toolkit, "public.employee.badge", "MASKED WITH VALUE NULL")
    expected = toolkit.execute("SELECT id, veil.token(email, 'email') FROM person ORDER BY id").fetchall()

    toolkit.execute("CALL veil.anonymize_database('anon')")

    # Every row tokenized exactly once, the child's too.
    assert toolkit.execute("SELECT id, email FROM person ORDER BY id").fetchall() == expected
    assert toolkit.scalar("SELECT count(*) FROM employee WHERE badge IS NOT NULL") == 0
    # The materialized view held the raw emails: it holds the tokens now.
    assert sorted(r[0] for r in toolkit.execute("SELECT email FROM person_emails")) == sorted(e for _, e in expected)
    assert toolkit.execute(
        "SELECT relid::regclass::text, rows FROM veil_private.static_done ORDER BY 1"
    ).fetchall() == [("employee", 10), ("person", 20), ("person_emails", 30)]
