-- Random values that owe nothing to the original: same names and arguments as
-- PostgreSQL Anonymizer's random_*() functions. All draw from random(), so
-- they are VOLATILE and PARALLEL RESTRICTED (random() is: its state lives in
-- the backend that calls it). Draws are uniform over the stated range, both
-- ends included, where anon's rounding gave the ends half the weight.

CREATE FUNCTION veil.random_string(l integer)
RETURNS text
LANGUAGE plpgsql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result text := '';
BEGIN
    -- A loop, not string_agg over generate_series: a query per call was
    -- measured five times slower.
    FOR i IN 1 .. l LOOP
        result := result || pg_catalog.substr('ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789',
                                              1 + pg_catalog.floor(pg_catalog.random() * 36)::pg_catalog.int4, 1);
    END LOOP;
    RETURN result;
END
$$;
COMMENT ON FUNCTION veil.random_string(integer) IS
    'A random string of l characters from A-Z and 0-9 (empty when l <= 0).';

CREATE FUNCTION veil.random_int_between(int_start integer, int_stop integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- In bigint so that the span of the full integer range does not overflow;
    -- either argument order works.
    RETURN (LEAST(int_start, int_stop)::pg_catalog.int8
            + pg_catalog.floor(pg_catalog.random()
                * (pg_catalog.abs(int_stop::pg_catalog.int8 - int_start) + 1))::pg_catalog.int8
           )::pg_catalog.int4;
END
$$;
COMMENT ON FUNCTION veil.random_int_between(integer, integer) IS
    'A random integer between int_start and int_stop, both included.';

CREATE FUNCTION veil.random_bigint_between(int_start bigint, int_stop bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- In numeric: the span of a bigint range need not fit in a bigint. The
    -- cap guards against random() rounding up to 1 in the conversion.
    RETURN LEAST(
        GREATEST(int_start, int_stop)::pg_catalog.numeric,
        LEAST(int_start, int_stop)::pg_catalog.numeric
            + pg_catalog.floor(pg_catalog.random()::pg_catalog.numeric
                * (pg_catalog.abs(int_stop::pg_catalog.numeric - int_start) + 1))
    )::pg_catalog.int8;
END
$$;
COMMENT ON FUNCTION veil.random_bigint_between(bigint, bigint) IS
    'A random bigint between int_start and int_stop, both included.';

CREATE FUNCTION veil.random_date_between(date_start timestamptz, date_end timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Added as seconds: date_end - date_start counts whole days, and adding
    -- days to a timestamptz across a daylight-saving change moves it by 23 or
    -- 25 hours, possibly past date_end.
    RETURN date_start
        + pg_catalog.random() * pg_catalog.date_part('epoch', date_end - date_start)
          * '1 second'::pg_catalog.interval;
END
$$;
COMMENT ON FUNCTION veil.random_date_between(timestamptz, timestamptz) IS
    'A random timestamp between date_start and date_end.';

CREATE FUNCTION veil.random_date()
RETURNS timestamptz
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN veil.random_date_between('1900-01-01 00:00:00+00', pg_catalog.now());
END
$$;
COMMENT ON FUNCTION veil.random_date() IS
    'A random timestamp between 1900-01-01 and now.';

CREATE FUNCTION veil.random_zip()
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN pg_catalog.lpad((pg_catalog.floor(pg_catalog.random() * 100000))::pg_catalog.int4::pg_catalog.text, 5, '0');
END
$$;
COMMENT ON FUNCTION veil.random_zip() IS
    'A random 5-digit zip code, 00000 to 99999.';

CREATE FUNCTION veil.random_phone(phone_prefix text DEFAULT '0')
RETURNS text
LANGUAGE plpgsql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN phone_prefix
        || pg_catalog.lpad((pg_catalog.floor(pg_catalog.random() * 1000000000))::pg_catalog.int8::pg_catalog.text, 9, '0');
END
$$;
COMMENT ON FUNCTION veil.random_phone(text) IS
    'A random phone number: phone_prefix followed by 9 random digits.';

CREATE FUNCTION veil.random_in(a anyarray)
RETURNS anyelement
LANGUAGE plpgsql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- From the array's own lower bound: '[0:2]={a,b,c}' is an array too.
    -- An empty array gives NULL.
    RETURN a[pg_catalog.array_lower(a, 1)
             + pg_catalog.floor(pg_catalog.random() * pg_catalog.array_length(a, 1))::pg_catalog.int4];
END
$$;
COMMENT ON FUNCTION veil.random_in(anyarray) IS
    'A random element of the array (NULL for an empty array).';

CREATE FUNCTION veil.random_hash(seed text, algorithm text)
RETURNS text
LANGUAGE plpgsql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- anon's construction: the seed hashed with a random 6-character salt.
    RETURN veil.digest(seed, veil.random_string(6), algorithm);
END
$$;
COMMENT ON FUNCTION veil.random_hash(text, text) IS
    'The seed hashed with a random salt: a random hex string of the algorithm''s length.';

CREATE FUNCTION veil.hex_to_int(hexval text)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- anon casts x'<hexval>' to integer: the bits as a 32-bit two's
    -- complement, so 'ffffffff' is -1. Leading zeros do not count toward the
    -- 32 bits. The value itself stays out of the message.
    IF pg_catalog.length(pg_catalog.ltrim(hexval, '0')) > 8 THEN
        RAISE EXCEPTION 'pgveil: hex_to_int() takes at most 8 significant hex digits (32 bits)'
            USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
    RETURN ('x' || pg_catalog.lpad(pg_catalog.ltrim(hexval, '0'), 8, '0'))::pg_catalog.bit(32)::pg_catalog.int4;
END
$$;
COMMENT ON FUNCTION veil.hex_to_int(text) IS
    'The integer whose 32 bits the hex string spells (''ff'' = 255, ''ffffffff'' = -1).';
