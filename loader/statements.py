"""One set-based statement per kind of event and batch, as an application
would batch its writes: streaming triggers are statement-level, so a batch of
fifty updates costs one trigger run, not fifty."""

from __future__ import annotations

# Each address is numbered before either insert, so that one statement can
# insert both and pair them up; the CTE is read twice, hence evaluated once.
INSERT_CUSTOMERS = """
WITH new AS MATERIALIZED (
    SELECT pg_catalog.nextval('public.address_address_id_seq'::regclass) AS address_id, n.*
    FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                %s::smallint[], %s::text[], %s::text[], %s::text[])
         AS n(address, district, city, postal_code, phone, store_id, first_name, last_name, email)
), addresses AS (
    INSERT INTO public.address (address_id, address, district, city, postal_code, phone)
    SELECT address_id, address, district, city, postal_code, phone FROM new
)
INSERT INTO public.customer (store_id, first_name, last_name, email, address_id)
SELECT store_id, first_name, last_name, email, address_id FROM new
RETURNING customer_id
"""

INSERT_PAYMENTS = """
INSERT INTO public.payment (customer_id, amount)
SELECT * FROM unnest(%s::int[], %s::numeric[])
"""

UPDATE_EMAILS = """
UPDATE public.customer AS c SET email = v.email
FROM unnest(%s::int[], %s::text[]) AS v(customer_id, email)
WHERE c.customer_id = v.customer_id
"""

UPDATE_NAMES = """
UPDATE public.customer AS c SET first_name = v.first_name, last_name = v.last_name
FROM unnest(%s::int[], %s::text[], %s::text[]) AS v(customer_id, first_name, last_name)
WHERE c.customer_id = v.customer_id
"""

TOGGLE_ACTIVE = """
UPDATE public.customer AS c SET activebool = NOT c.activebool,
                                active = CASE WHEN c.activebool THEN 0 ELSE 1 END
WHERE c.customer_id = ANY (%s::int[])
"""

CHANGE_KEYS = """
UPDATE public.customer AS c
SET customer_id = pg_catalog.nextval('public.customer_customer_id_seq'::regclass)
FROM unnest(%s::int[]) AS v(customer_id)
WHERE c.customer_id = v.customer_id
RETURNING v.customer_id AS old_id, c.customer_id AS new_id
"""

# An erasure request removes the customer and their address; payments go by
# ON DELETE CASCADE. Counts: customers deleted, addresses deleted.
DELETE_CUSTOMERS = """
WITH gone AS (
    DELETE FROM public.customer AS c WHERE c.customer_id = ANY (%s::int[])
    RETURNING c.address_id
), addresses AS (
    DELETE FROM public.address AS a USING gone WHERE a.address_id = gone.address_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM addresses)
"""

# Read once, before any worker starts, and shared out by customer_id modulo the
# number of workers: a worker that read its share after another worker had
# started would also claim the customers that one inserted.
CUSTOMERS = """
SELECT customer_id FROM public.customer
"""

# Each kind's statement, in the order a batch runs them: inserts first, erasures last.
BY_KIND = {
    "insert_customer": INSERT_CUSTOMERS,
    "insert_payment": INSERT_PAYMENTS,
    "update_email": UPDATE_EMAILS,
    "update_name": UPDATE_NAMES,
    "update_active": TOGGLE_ACTIVE,
    "change_key": CHANGE_KEYS,
    "delete_customer": DELETE_CUSTOMERS,
}

# After a lost connection, what became of a batch's transaction is asked of the
# server by its xid. pg_xact_status answers for the xid, though, and a crash
# makes the server hand out again the xids that had not reached its WAL: an xid
# it reports committed may be another transaction's. One event of the batch then
# tells whether it was the batch's (a batch commits whole or not at all), by what
# the event left in rows that only the batch's worker writes. The evidence per
# kind (%(xid)s: the batch's xid8); the kinds looked up by key come first.
XACT_STATUS = "SELECT pg_catalog.pg_xact_status(%s::pg_catalog.xid8)"

_WRITTEN_BY = "xmin = pg_catalog.xid(%(xid)s::pg_catalog.xid8)"

# The customer's row is the version the transaction wrote.
CUSTOMER_WRITTEN = f"""
SELECT EXISTS (SELECT FROM public.customer WHERE customer_id = %(customer)s AND {_WRITTEN_BY})
"""

# The customer is gone: erased, or moved to a new customer_id.
CUSTOMER_GONE = """
SELECT NOT EXISTS (SELECT FROM public.customer WHERE customer_id = %(customer)s)
"""

PAYMENT_WRITTEN = f"""
SELECT EXISTS (SELECT FROM public.payment WHERE customer_id = %(customer)s AND {_WRITTEN_BY})
"""

# The new customer (its id is unknown): its name, email and address, written by the transaction.
NEW_CUSTOMER_WRITTEN = f"""
SELECT EXISTS (
    SELECT FROM public.customer AS c JOIN public.address AS a USING (address_id)
    WHERE c.{_WRITTEN_BY} AND a.{_WRITTEN_BY}
      AND c.first_name = %(first_name)s AND c.last_name = %(last_name)s AND c.email = %(email)s
      AND a.address = %(address)s AND a.phone = %(phone)s
)
"""

# The columns of an insert_customer event's arguments, in INSERT_CUSTOMERS' order.
NEW_CUSTOMER_COLUMNS = (
    "address",
    "district",
    "city",
    "postal_code",
    "phone",
    "store_id",
    "first_name",
    "last_name",
    "email",
)

EVIDENCE = {
    "update_email": CUSTOMER_WRITTEN,
    "update_name": CUSTOMER_WRITTEN,
    "update_active": CUSTOMER_WRITTEN,
    "change_key": CUSTOMER_GONE,
    "delete_customer": CUSTOMER_GONE,
    "insert_payment": PAYMENT_WRITTEN,
    "insert_customer": NEW_CUSTOMER_WRITTEN,
}
