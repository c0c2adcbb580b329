-- Generalization: a value replaced by the range of width `step` that holds it
-- (42 -> [40,50), 1984-06-02 -> [1980-01-01,1990-01-01)). Same names and
-- arguments as PostgreSQL Anonymizer's generalize_*(). Ranges start at a
-- multiple of step rounded down, so negative and fractional values land in
-- a range that contains them (anon truncates toward zero or rounds, and
-- generalize_int4range(-5) gave [0,10)).

CREATE FUNCTION veil.generalize_int4range(val integer, step integer DEFAULT 10)
RETURNS int4range
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF step <= 0 THEN
        RAISE EXCEPTION 'pgveil: generalize_int4range() step must be positive'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The lower bound is val rounded down to a multiple of step: val - val %
    -- step rounds toward zero, so one step less when the remainder is
    -- negative. Computed in bigint: near the ends of the integer range a
    -- bound that does not fit is left open (unbounded) rather than failing
    -- the row.
    RETURN pg_catalog.int4range(
        CASE WHEN (val - val % step)::pg_catalog.int8 - (val % step < 0)::pg_catalog.int4 * step >= -2147483648
             THEN ((val - val % step)::pg_catalog.int8 - (val % step < 0)::pg_catalog.int4 * step)::pg_catalog.int4 END,
        CASE WHEN (val - val % step)::pg_catalog.int8 + (val % step >= 0)::pg_catalog.int4 * step <= 2147483647
             THEN ((val - val % step)::pg_catalog.int8 + (val % step >= 0)::pg_catalog.int4 * step)::pg_catalog.int4 END);
END
$$;
COMMENT ON FUNCTION veil.generalize_int4range(integer, integer) IS
    'The range [n*step, (n+1)*step) that holds val: generalize_int4range(42) = [40,50).';

CREATE FUNCTION veil.generalize_int8range(val bigint, step bigint DEFAULT 10)
RETURNS int8range
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF step <= 0 THEN
        RAISE EXCEPTION 'pgveil: generalize_int8range() step must be positive'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- As generalize_int4range, with numeric as the wider type.
    RETURN pg_catalog.int8range(
        CASE WHEN (val - val % step)::pg_catalog.numeric - (val % step < 0)::pg_catalog.int4 * step >= -9223372036854775808
             THEN ((val - val % step)::pg_catalog.numeric - (val % step < 0)::pg_catalog.int4 * step)::pg_catalog.int8 END,
        CASE WHEN (val - val % step)::pg_catalog.numeric + (val % step >= 0)::pg_catalog.int4 * step <= 9223372036854775807
             THEN ((val - val % step)::pg_catalog.numeric + (val % step >= 0)::pg_catalog.int4 * step)::pg_catalog.int8 END);
END
$$;
COMMENT ON FUNCTION veil.generalize_int8range(bigint, bigint) IS
    'The range [n*step, (n+1)*step) that holds val: generalize_int8range(42) = [40,50).';

CREATE FUNCTION veil.generalize_numrange(val numeric, step integer DEFAULT 10)
RETURNS numrange
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF step <= 0 THEN
        RAISE EXCEPTION 'pgveil: generalize_numrange() step must be positive'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Not floor(val / step) * step: numeric division rounds its result to a
    -- limited number of digits: 999999999999999999999 / 10 comes out as 1e20,
    -- and the range would miss the value. mod() is exact. round() drops the
    -- decimals of val from bounds that are whole numbers: [0,10), not
    -- [0.00000,10.00000).
    RETURN pg_catalog.numrange(
        pg_catalog.round(val - pg_catalog.mod(val, step) - (pg_catalog.mod(val, step) < 0)::pg_catalog.int4 * step),
        pg_catalog.round(val - pg_catalog.mod(val, step) + (pg_catalog.mod(val, step) >= 0)::pg_catalog.int4 * step));
END
$$;
COMMENT ON FUNCTION veil.generalize_numrange(numeric, integer) IS
    'The range [n*step, (n+1)*step) that holds val: generalize_numrange(0.37, 1) = [0,1).';

-- The date and time versions take date_trunc()'s units: microseconds,
-- milliseconds, second, minute, hour, day, week, month, quarter, year,
-- decade, century, millennium. An unknown unit fails in date_trunc() with
-- its own message. The interval input has no 'quarter', hence the CASE.
-- Text-to-interval casts are STABLE because IntervalStyle changes how some
-- signed inputs read; '1 <unit>' reads the same under every style, so the
-- date and timestamp versions stay IMMUTABLE, as in anon.

CREATE FUNCTION veil.generalize_daterange(val date, step text DEFAULT 'decade')
RETURNS daterange
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Truncated as timestamp (without time zone): a date would otherwise go
    -- through timestamptz and depend on TimeZone. The upper bound is taken
    -- inclusive, one microsecond before the next unit, so that units shorter
    -- than a day give the day itself (anon gives an empty range).
    RETURN pg_catalog.daterange(
        pg_catalog.date_trunc(step, val::pg_catalog.timestamp)::pg_catalog.date,
        (pg_catalog.date_trunc(step, val::pg_catalog.timestamp)
            + CASE step WHEN 'quarter' THEN '3 months'::pg_catalog.interval
                        ELSE ('1 ' || step)::pg_catalog.interval END
            - '1 microsecond'::pg_catalog.interval)::pg_catalog.date,
        '[]');
END
$$;
COMMENT ON FUNCTION veil.generalize_daterange(date, text) IS
    'The range of dates of the step (decade, year, month, ...) that holds val: 1984-06-02 gives [1980-01-01,1990-01-01).';

CREATE FUNCTION veil.generalize_tsrange(val timestamp, step text DEFAULT 'decade')
RETURNS tsrange
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN pg_catalog.tsrange(
        pg_catalog.date_trunc(step, val),
        pg_catalog.date_trunc(step, val)
            + CASE step WHEN 'quarter' THEN '3 months'::pg_catalog.interval
                        ELSE ('1 ' || step)::pg_catalog.interval END);
END
$$;
COMMENT ON FUNCTION veil.generalize_tsrange(timestamp, text) IS
    'The range of the step (decade, year, month, day, hour, ...) that holds val.';

-- STABLE, not IMMUTABLE as in anon: truncating a timestamptz to a day or
-- more depends on the TimeZone setting.
CREATE FUNCTION veil.generalize_tstzrange(val timestamptz, step text DEFAULT 'decade')
RETURNS tstzrange
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN pg_catalog.tstzrange(
        pg_catalog.date_trunc(step, val),
        pg_catalog.date_trunc(step, val)
            + CASE step WHEN 'quarter' THEN '3 months'::pg_catalog.interval
                        ELSE ('1 ' || step)::pg_catalog.interval END);
END
$$;
COMMENT ON FUNCTION veil.generalize_tstzrange(timestamptz, text) IS
    'The range of the step (decade, year, month, day, hour, ...) that holds val, in the session time zone.';
