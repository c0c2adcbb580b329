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

CUSTOMERS_OF_WORKER = """
SELECT customer_id FROM public.customer WHERE customer_id %% %s = %s
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
