"""Import of PostgreSQL Anonymizer security labels, as pg_seclabel stores them."""

from __future__ import annotations


def test_anon_labels_become_mask_rules_and_the_rest_is_reported(demo):
    analyst = demo.role("analyst")
    # The demo's own mask rules on customer go first: the import is what remains.
    demo.execute(
        "SELECT veil.security_label('mask', 'COLUMN', format('public.customer.%I', column_name), NULL)"
        " FROM veil.rules WHERE policy = 'mask' AND table_name = 'customer'"
    )
    # What SECURITY LABEL FOR anon ... writes, without the anon extension loaded.
    demo.execute(
        """
        INSERT INTO pg_seclabel (objoid, classoid, objsubid, provider, label)
        SELECT 'public.customer'::regclass, 'pg_class'::regclass, attnum, 'anon', label
        FROM (VALUES ('first_name', 'MASKED WITH FUNCTION anon.fake_first_name()'),
                     ('email', 'MASKED WITH FUNCTION anon.partial_email(email)'),
                     ('last_name', 'MASKED WITH FUNCTION anon.lorem_ipsum(5)'),
                     ('store_id', 'MASKED WITH VALUE 0')) AS l(col, label)
        JOIN pg_attribute a ON a.attrelid = 'public.customer'::regclass AND a.attname = l.col
        """
    )
    demo.execute(
        "INSERT INTO pg_shseclabel (objoid, classoid, provider, label)"
        " SELECT oid, 'pg_authid'::regclass, 'anon', 'MASKED' FROM pg_roles WHERE rolname = %s",
        (analyst.name,),
    )
    report = {
        (r[0], r[1].split(".")[-1], r[3]): r[4]
        for r in demo.execute("SELECT * FROM veil.import_anon_labels()").fetchall()
    }
    assert report[("COLUMN", "first_name", True)] == "MASKED WITH FUNCTION veil.fake_first_name()"
    assert report[("COLUMN", "email", True)] == "MASKED WITH FUNCTION veil.partial_email(email)"
    assert report[("COLUMN", "store_id", True)] == "as is"
    assert "veil.lorem_ipsum(integer) does not exist" in report[("COLUMN", "last_name", False)]
    assert ("ROLE", analyst.name, True) in report
    imported = demo.execute(
        "SELECT coalesce(column_name, role_name), kind FROM veil.rules WHERE policy = 'mask'"
        " AND (table_name = 'customer' OR role_name = %s) ORDER BY 1",
        (analyst.name,),
    ).fetchall()
    assert imported == sorted(
        [("email", "function"), ("first_name", "function"), ("store_id", "value"), (analyst.name, None)]
    )
