-- Noise: a value moved by a random amount proportional to it (numbers) or
-- within a fixed interval (dates and times), returned in its own type so a
-- rule can replace a column in place. Same names and arguments as PostgreSQL
-- Anonymizer's noise()/dnoise().

CREATE FUNCTION veil.noise(original_value anyelement, ratio double precision)
RETURNS anyelement
LANGUAGE plpgsql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Checked up front: otherwise a text column fails with "operator does not
    -- exist", far from the rule that caused it.
    IF pg_catalog.pg_typeof(original_value) NOT IN (
        'pg_catalog.int2'::pg_catalog.regtype, 'pg_catalog.int4'::pg_catalog.regtype,
        'pg_catalog.int8'::pg_catalog.regtype, 'pg_catalog.numeric'::pg_catalog.regtype,
        'pg_catalog.float4'::pg_catalog.regtype, 'pg_catalog.float8'::pg_catalog.regtype)
    THEN
        RAISE EXCEPTION 'pgveil: noise() takes smallint, integer, bigint, numeric, real or double precision, not %',
            pg_catalog.pg_typeof(original_value)
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'For dates and times use veil.dnoise(value, interval).';
    END IF;
    -- The factor is numeric so that bigint and numeric keep all their digits
    -- (a double precision product would round big values); integers round
    -- back to their type on return.
    RETURN original_value
        * (1 - (2 * pg_catalog.random() - 1) * ratio)::pg_catalog.numeric;
END
$$;
COMMENT ON FUNCTION veil.noise(anyelement, double precision) IS
    'The number multiplied by a random factor in [1 - ratio, 1 + ratio], in its own type.';

CREATE FUNCTION veil.dnoise(original_value anyelement, noise_range interval)
RETURNS anyelement
LANGUAGE plpgsql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.pg_typeof(original_value) = 'pg_catalog.date'::pg_catalog.regtype THEN
        -- A date moves by a whole number of days drawn uniformly from
        -- [-k, k], k = the range in whole days: casting a shifted timestamp
        -- back to date would always round down and drift dates into the past.
        RETURN original_value + (pg_catalog.floor(pg_catalog.random()
            * (2 * pg_catalog.floor(pg_catalog.abs(pg_catalog.date_part('epoch', noise_range)) / 86400) + 1))
            - pg_catalog.floor(pg_catalog.abs(pg_catalog.date_part('epoch', noise_range)) / 86400))::pg_catalog.int4;
    ELSIF pg_catalog.pg_typeof(original_value) IN (
        'pg_catalog.timestamp'::pg_catalog.regtype, 'pg_catalog.timestamptz'::pg_catalog.regtype)
    THEN
        RETURN original_value + (2 * pg_catalog.random() - 1) * noise_range;
    END IF;
    RAISE EXCEPTION 'pgveil: dnoise() takes date, timestamp or timestamp with time zone, not %',
        pg_catalog.pg_typeof(original_value)
        USING ERRCODE = 'datatype_mismatch',
              HINT = 'For numbers use veil.noise(value, ratio).';
END
$$;
COMMENT ON FUNCTION veil.dnoise(anyelement, interval) IS
    'The date or timestamp shifted by a random interval in [-noise_range, +noise_range], in its own type.';
