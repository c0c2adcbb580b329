-- Fake-value dictionaries, filled by the installer (pgveil/dictionaries.py)
-- with COPY. Fake values are not secret: every role may read them, so fake_*
-- functions run with the caller's own rights.

CREATE TABLE veil.dictionaries (
    name   text PRIMARY KEY,
    size   integer NOT NULL CHECK (size > 0),
    locale text    NOT NULL
);

-- Ids run 1..size within a dictionary, so a random or keyed pick is one
-- index lookup.
CREATE TABLE veil.dictionary (
    name  text    NOT NULL,
    id    integer NOT NULL,
    value text    NOT NULL,
    PRIMARY KEY (name, id)
);
GRANT SELECT ON veil.dictionaries, veil.dictionary TO PUBLIC;

CREATE FUNCTION veil.fake_value(dictionary text)
RETURNS text
LANGUAGE plpgsql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    picked text;
BEGIN
    -- The random id is computed once (an initplan), then looked up by index;
    -- a volatile expression compared in WHERE would scan the dictionary.
    SELECT d.value INTO picked
    FROM veil.dictionary d
    WHERE d.name = dictionary
      AND d.id = (SELECT 1 + pg_catalog.floor(pg_catalog.random() * s.size)::integer
                  FROM veil.dictionaries s WHERE s.name = dictionary);
    IF picked IS NULL THEN
        RAISE EXCEPTION 'pgveil: there is no dictionary %', dictionary;
    END IF;
    RETURN picked;
END
$$;
COMMENT ON FUNCTION veil.fake_value(text) IS 'A random value of the named dictionary.';
