-- Demo application: a small retail schema modeled on Pagila. This is the
-- application's data, not part of the toolkit; pip users of pgveil never get it.

CREATE FUNCTION public.last_updated()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.last_update := pg_catalog.now();
    RETURN NEW;
END
$$;

CREATE TABLE public.address (
    address_id  serial PRIMARY KEY,
    address     text NOT NULL,
    address2    text,
    district    text NOT NULL DEFAULT '',
    city        text NOT NULL DEFAULT '',
    postal_code text,
    phone       text NOT NULL DEFAULT '',
    last_update timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TABLE public.customer (
    customer_id serial PRIMARY KEY,
    store_id    smallint NOT NULL,
    first_name  text NOT NULL,
    last_name   text NOT NULL,
    email       text,
    address_id  integer NOT NULL REFERENCES public.address ON UPDATE CASCADE ON DELETE RESTRICT,
    activebool  boolean NOT NULL DEFAULT true,
    create_date date NOT NULL DEFAULT CURRENT_DATE,
    last_update timestamptz DEFAULT pg_catalog.now(),
    active      integer
);
CREATE INDEX customer_address_id_idx ON public.customer (address_id);
CREATE INDEX customer_last_name_idx ON public.customer (last_name);
CREATE INDEX customer_store_id_idx ON public.customer (store_id);

-- Erasure requests delete a customer; their payments go with them.
CREATE TABLE public.payment (
    payment_id   serial PRIMARY KEY,
    customer_id  integer NOT NULL REFERENCES public.customer ON UPDATE CASCADE ON DELETE CASCADE,
    amount       numeric(5,2) NOT NULL,
    payment_date timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX payment_customer_id_idx ON public.payment (customer_id);

CREATE TRIGGER last_updated BEFORE UPDATE ON public.address
    FOR EACH ROW EXECUTE FUNCTION public.last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON public.customer
    FOR EACH ROW EXECUTE FUNCTION public.last_updated();
