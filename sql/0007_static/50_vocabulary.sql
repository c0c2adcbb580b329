-- The peers' masking vocabulary: what Confiture's strategies do with their
-- options, as functions in the manner of the rest of the library, so that
-- their users can port a configuration rule by rule (docs/vocabulary.md maps
-- every peer name to a pgveil rule, these and the existing ones).
--
-- Every function here returns a value for any non-NULL input, however odd (an
-- email without '@', a phone with fewer digits than asked, an address without
-- a city, an empty string): a rule that fails on a streamed table would make
-- the application's write fail. NULL in is NULL out (STRICT).
--
-- Deterministic forms take a salt, as Confiture's "seed" does: an unkeyed
-- hash, so anyone who knows the salt (it is in the rule, and so in a mask
-- view's definition) can test a guess. Identifiers that must resist guessing
-- use veil.token() or the keyed pseudo_*() instead (docs/vocabulary.md).
--
-- The pieces are written out in each function rather than shared through
-- helpers, which masked roles could not call from veil_private:
--   random hex digits   lpad(to_hex(floor(random() * 16^n)::int8), n, '0')
--   salted hex digits   left(md5(length(salt) || ':' || salt || value), n),
--                       length-prefixed so salt and value cannot trade
--                       characters
--   an email's domain   what follows its last '@'; 'invalid' (a name
--                       reserved never to resolve, RFC 2606) when nothing
--                       does

-- Confiture's email strategy with a fixed domain ("domain: anon.local"):
-- user_<8 hex digits>@domain, random per call ...
CREATE FUNCTION veil.email_with_domain(email text, domain text)
RETURNS text
LANGUAGE sql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'user_'
        || pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.floor(pg_catalog.random() * 4294967296)::pg_catalog.int8), 8, '0')
        || '@' || pg_catalog.ltrim(domain, '@')
$$;
COMMENT ON FUNCTION veil.email_with_domain(text, text) IS
    'A random address user_<8 hex digits>@domain in place of email.';

-- ... or the same address for the same email and salt (Confiture's "seed").
CREATE FUNCTION veil.email_with_domain(email text, domain text, salt text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'user_'
        || pg_catalog.left(pg_catalog.md5(pg_catalog.length(salt)::text || ':' || salt || email), 8)
        || '@' || pg_catalog.ltrim(domain, '@')
$$;
COMMENT ON FUNCTION veil.email_with_domain(text, text, text) IS
    'user_<8 hex digits of a salted md5 of email>@domain: the same for the same email and salt (unkeyed).';

-- Confiture's email strategy with "preserve_domain: true".
CREATE FUNCTION veil.email_keep_domain(email text)
RETURNS text
LANGUAGE sql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'user_'
        || pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.floor(pg_catalog.random() * 4294967296)::pg_catalog.int8), 8, '0')
        || '@' || CASE WHEN pg_catalog.strpos(email, '@') = 0 THEN 'invalid'
                       ELSE coalesce(NULLIF(pg_catalog.right(
                                email, pg_catalog.strpos(pg_catalog.reverse(email), '@') - 1), ''), 'invalid') END
$$;
COMMENT ON FUNCTION veil.email_keep_domain(text) IS
    'A random local part user_<8 hex digits> before the email''s own domain (invalid when it has none).';

CREATE FUNCTION veil.email_keep_domain(email text, salt text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'user_'
        || pg_catalog.left(pg_catalog.md5(pg_catalog.length(salt)::text || ':' || salt || email), 8)
        || '@' || CASE WHEN pg_catalog.strpos(email, '@') = 0 THEN 'invalid'
                       ELSE coalesce(NULLIF(pg_catalog.right(
                                email, pg_catalog.strpos(pg_catalog.reverse(email), '@') - 1), ''), 'invalid') END
$$;
COMMENT ON FUNCTION veil.email_keep_domain(text, text) IS
    'user_<8 hex digits of a salted md5 of email> before the email''s own domain (unkeyed).';

-- Confiture's phone strategy ("redact_digits: N"): the last N digits become
-- 0 and every other character stays where it was, so the format is kept.
-- The non-digit runs around the digits are the pieces of a split on [0-9];
-- to keep the first k digits, the cut falls after the first k + 1 pieces and
-- k digits. A value with fewer digits than N has them all redacted; N <= 0
-- redacts none.
CREATE FUNCTION veil.redact_digits(value text, digits integer)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.left(value, c.cut)
        || pg_catalog.translate(pg_catalog.substr(value, c.cut + 1), '0123456789', '0000000000')
    FROM (SELECT pg_catalog.regexp_split_to_array(value, '[0-9]') AS pieces) AS p
    CROSS JOIN LATERAL (
        SELECT GREATEST(pg_catalog.cardinality(p.pieces) - 1, 0) AS total) AS n
    CROSS JOIN LATERAL (
        SELECT LEAST(GREATEST(n.total - GREATEST(digits, 0), 0), n.total) AS keep) AS k
    CROSS JOIN LATERAL (
        SELECT pg_catalog.char_length(pg_catalog.array_to_string(p.pieces[1:k.keep + 1], '')) + k.keep AS cut) AS c
$$;
COMMENT ON FUNCTION veil.redact_digits(text, integer) IS
    'value with its last digits digits (0-9) replaced by 0 and every other character kept: (''+1-555-123-4567'', 7) gives ''+1-555-000-0000''.';

-- Confiture's redact strategy. Without a replacement: every letter and digit
-- becomes '*', punctuation and spaces stay ('123-45-6789' gives
-- '***-**-****'). With one: the replacement (unlike MASKED WITH VALUE, NULL
-- stays NULL).
CREATE FUNCTION veil.redact(value text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.regexp_replace(value, '[[:alnum:]]', '*', 'g') $$;
COMMENT ON FUNCTION veil.redact(text) IS
    'value with every letter and digit replaced by *, its punctuation and spaces kept.';

CREATE FUNCTION veil.redact(value text, replacement text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT replacement $$;
COMMENT ON FUNCTION veil.redact(text, text) IS
    'replacement in place of value; NULL stays NULL.';

-- Confiture's address strategy with "preserve_fields: [city, state, zip]".
-- An address is parts separated by commas or line breaks, the street first
-- and "city", "state zip" last. Everything before the last two parts becomes
-- [REDACTED]; of two parts only the last is kept (a city, or "city state
-- zip"); an address of one part is all redacted ('[REDACTED ADDRESS]', what
-- Confiture's strategy gives without preserve_fields).
CREATE FUNCTION veil.redact_street(address text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN address ~ '[,\n][^,\n]*[,\n]'
            THEN pg_catalog.regexp_replace(address, '^.*([,\n][^,\n]*[,\n][^,\n]*)$', '[REDACTED]\1')
        WHEN address ~ '[,\n]'
            THEN pg_catalog.regexp_replace(address, '^.*([,\n][^,\n]*)$', '[REDACTED]\1')
        ELSE '[REDACTED ADDRESS]'
    END
$$;
COMMENT ON FUNCTION veil.redact_street(text) IS
    'An address with its street redacted and its last two parts kept: ''1234 Main St, San Francisco, CA 94102'' gives ''[REDACTED], San Francisco, CA 94102''.';

-- Confiture's name strategy with "preserve_initial: true": the initial, then
-- -User- and six hex digits (J-User-A3F5E9); a blank name has no initial and
-- gives User-<6 hex digits>. Random per call, or the same for the same name
-- and salt.
CREATE FUNCTION veil.name_keep_initial(name text)
RETURNS text
LANGUAGE sql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(NULLIF(pg_catalog.left(pg_catalog.btrim(name), 1), '') || '-', '')
        || 'User-'
        || pg_catalog.upper(pg_catalog.lpad(
               pg_catalog.to_hex(pg_catalog.floor(pg_catalog.random() * 16777216)::pg_catalog.int8), 6, '0'))
$$;
COMMENT ON FUNCTION veil.name_keep_initial(text) IS
    'The name''s initial, then -User- and six random hex digits: ''John'' gives e.g. ''J-User-A3F5E9''.';

CREATE FUNCTION veil.name_keep_initial(name text, salt text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(NULLIF(pg_catalog.left(pg_catalog.btrim(name), 1), '') || '-', '')
        || 'User-'
        || pg_catalog.upper(pg_catalog.left(pg_catalog.md5(pg_catalog.length(salt)::text || ':' || salt || name), 6))
$$;
COMMENT ON FUNCTION veil.name_keep_initial(text, text) IS
    'The name''s initial, then -User- and six hex digits of a salted md5 of the name (unkeyed).';
