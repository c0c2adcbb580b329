-- Partial scrambling: keep a little of a value, hide the rest. Same results
-- as PostgreSQL Anonymizer's partial() and partial_email() on ordinary input.
-- These run once per row of every masked query, hence plpgsql (a LANGUAGE
-- sql function with a SET clause cannot be inlined and costs more per call)
-- and no regular expressions.

CREATE FUNCTION veil.partial(ov text, prefix integer, padding text, suffix integer)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- substr() rather than left()/right(): a negative count must be an error,
    -- not "all but n characters", which would reveal nearly everything.
    RETURN pg_catalog.substr(ov, 1, prefix)
        || padding
        || pg_catalog.substr(ov, pg_catalog.length(ov) - suffix + 1, suffix);
END
$$;
COMMENT ON FUNCTION veil.partial(text, integer, text, integer) IS
    'The first prefix characters, then padding, then the last suffix characters: partial(''abcdefgh'', 1, ''xxxx'', 3) = ''axxxxfgh''.';

CREATE FUNCTION veil.partial_email(ov text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- Positions of the last '@' and the last '.', counted from the end.
    -- Variables, not repeated reverse() calls: measured twice as fast.
    from_end text := pg_catalog.reverse(ov);
    at_from_end integer := pg_catalog.strpos(from_end, '@');
    dot_from_end integer := pg_catalog.strpos(from_end, '.');
BEGIN
    -- Kept: two characters before the first '@', two after the last '@', and
    -- the top-level domain (after the last '.' of the domain), as anon does.
    -- Unlike anon, a value without '@' or without a dot in its domain shows
    -- nothing more than those two-character prefixes (anon returned the
    -- whole of 'x@localhost' as its "top-level domain").
    RETURN pg_catalog.left(pg_catalog.split_part(ov, '@', 1), 2)
        || '******@'
        || CASE WHEN at_from_end > 0
                THEN pg_catalog.left(pg_catalog.right(ov, at_from_end - 1), 2)
                ELSE '' END
        || '******.'
        || CASE WHEN dot_from_end BETWEEN 1 AND at_from_end - 1
                THEN pg_catalog.right(ov, dot_from_end - 1)
                ELSE '' END;
END
$$;
COMMENT ON FUNCTION veil.partial_email(text) IS
    'An email address reduced to its first characters and top-level domain: ''daamien@gmail.com'' becomes ''da******@gm******.com''.';
