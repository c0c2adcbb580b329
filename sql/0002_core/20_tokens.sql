-- Keyed tokens: HMAC-SHA256 under the current key. Deterministic (same value,
-- purpose and key give the same token, so joins work across tables) and keyed
-- (without the key nobody can test a guess). Any function that uses the key
-- is an oracle for whoever may execute it: none of them is executable by
-- PUBLIC.
--
-- Format: 'v<key version>:' followed by the MAC in base64 without its one
-- padding character (43 characters of A-Z a-z 0-9 + /), e.g. v1:3q2+7wE…, so
-- a consumer can tell which key made it. (Plain base64 with its '=' split
-- off: the url-safe alphabet's translate() doubled the cost of a token, and
-- substr() walks the characters one by one.)
--
-- The MAC is HMAC-SHA256 over the UTF-8 bytes of
-- length(purpose) || ':' || purpose || value, keyed by the 64 hexadecimal
-- characters of the stored 32-byte key (one SHA-256 block, 256 bits of
-- entropy). A text key lets the generated statements of a UTF8 database hand
-- pgcrypto's hmac() the value and the key as they are, with no conversion per
-- token (see veil_private.compiled_column).

-- The token under a given key: the definition every token path must equal.
-- purpose is length-prefixed so (purpose, value) pairs cannot run together.
CREATE FUNCTION veil_private.hmac_token(value text, purpose text, key_version integer, key bytea)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN 'v' || key_version || ':' || pg_catalog.split_part(pg_catalog.encode(
        @pgcrypto@.hmac(pg_catalog.convert_to(pg_catalog.length(purpose) || ':' || purpose || value, 'UTF8'),
                        pg_catalog.convert_to(pg_catalog.encode(key, 'hex'), 'UTF8'), 'sha256'),
        'base64'), '=', 1);
END
$$;
REVOKE ALL ON FUNCTION veil_private.hmac_token(text, text, integer, bytea) FROM PUBLIC;

CREATE FUNCTION veil.token(value text, purpose text DEFAULT '')
RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k record;
BEGIN
    SELECT version, key INTO k FROM veil_private.keys WHERE is_current;
    RETURN veil_private.hmac_token(value, purpose, k.version, k.key);
END
$$;
COMMENT ON FUNCTION veil.token(text, text) IS
    'Keyed HMAC-SHA256 token of value for purpose under the current key (key holders only).';
REVOKE ALL ON FUNCTION veil.token(text, text) FROM PUBLIC;

CREATE FUNCTION veil.token_key_version(token text)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF token !~ '^v[0-9]+:[A-Za-z0-9+/]{43}$' THEN
        RETURN NULL;
    END IF;
    RETURN pg_catalog.substr(token, 2, pg_catalog.strpos(token, ':') - 2)::integer;
END
$$;
COMMENT ON FUNCTION veil.token_key_version(text) IS
    'The key version a token was made with (NULL if the text is not a token). Needs no key.';
