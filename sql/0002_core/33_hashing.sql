-- Unkeyed hashing, as PostgreSQL Anonymizer's digest(). Anyone can compute
-- the same hash from a guess, so this is for values that are not secret
-- given the salt; identifiers that must resist guessing use veil.token().

CREATE FUNCTION veil.digest(seed text, salt text, algorithm text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- pgcrypto would also take sha1 and whatever else OpenSSL offers; the
    -- list is anon's, so rules port both ways. The algorithm is not echoed:
    -- it may come from a column.
    IF algorithm NOT IN ('md5', 'sha224', 'sha256', 'sha384', 'sha512') THEN
        RAISE EXCEPTION 'pgveil: digest() algorithm must be one of md5, sha224, sha256, sha384, sha512'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- pgcrypto's digest(text, text) hashes the text's bytes as stored; a
    -- ::bytea cast (anon 2.x) would parse backslashes as escapes and fail.
    -- || rather than concat(): the same for non-NULL text (the function is
    -- STRICT), and concat() is only STABLE.
    RETURN pg_catalog.encode(@pgcrypto@.digest(seed || salt, algorithm), 'hex');
END
$$;
COMMENT ON FUNCTION veil.digest(text, text, text) IS
    'Hex hash of seed || salt with md5, sha224, sha256, sha384 or sha512 (unkeyed: not for guessable secrets).';
