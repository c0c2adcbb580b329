-- pseudo_*: a dictionary value chosen by a keyed HMAC of the seed, so the same
-- seed gives the same pseudonym under the same key, spread uniformly over the
-- dictionary. A dictionary of N values maps m distinct seeds to about
-- N * (1 - (1 - 1/N)^m) distinct values: pseudonyms of single dictionaries
-- collide by design; pseudo_email combines three picks to stay distinct.
-- Keyed, hence key holders only, like token.

-- The keyed MAC a pseudonym is picked from; purpose separates the dictionaries.
CREATE FUNCTION veil_private.pseudo_hash(seed text, purpose text)
RETURNS bytea
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN @pgcrypto@.hmac(pg_catalog.convert_to('pseudo:' || purpose || ':' || seed, 'UTF8'),
                           (SELECT key FROM veil_private.keys WHERE is_current), 'sha256');
END
$$;

CREATE FUNCTION veil_private.pseudo_pick(mac bytea, slice integer, dictionary text)
RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    picked text;
BEGIN
    -- 63 bits of the MAC modulo the size: the bias is below 2^-40.
    SELECT d.value INTO picked
    FROM veil.dictionary d
    WHERE d.name = dictionary
      AND d.id = (SELECT 1 + ((('x' || pg_catalog.encode(pg_catalog.substr(mac, 1 + 8 * slice, 8), 'hex'))::bit(64)::bigint
                               & 9223372036854775807) % s.size)::integer
                  FROM veil.dictionaries s WHERE s.name = dictionary);
    IF picked IS NULL THEN
        RAISE EXCEPTION 'pgveil: there is no dictionary %', dictionary;
    END IF;
    RETURN picked;
END
$$;
REVOKE ALL ON FUNCTION veil_private.pseudo_hash(text, text), veil_private.pseudo_pick(bytea, integer, text) FROM PUBLIC;

CREATE FUNCTION veil.pseudo_first_name(seed anyelement)
RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil_private.pseudo_pick(veil_private.pseudo_hash(seed::text, 'first_name'), 0, 'first_name'); END $$;
COMMENT ON FUNCTION veil.pseudo_first_name(anyelement) IS 'A keyed pseudonymous first name for seed (key holders only).';
REVOKE ALL ON FUNCTION veil.pseudo_first_name(anyelement) FROM PUBLIC;

CREATE FUNCTION veil.pseudo_last_name(seed anyelement)
RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil_private.pseudo_pick(veil_private.pseudo_hash(seed::text, 'last_name'), 0, 'last_name'); END $$;
COMMENT ON FUNCTION veil.pseudo_last_name(anyelement) IS 'A keyed pseudonymous last name for seed (key holders only).';
REVOKE ALL ON FUNCTION veil.pseudo_last_name(anyelement) FROM PUBLIC;

CREATE FUNCTION veil.pseudo_city(seed anyelement)
RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil_private.pseudo_pick(veil_private.pseudo_hash(seed::text, 'city'), 0, 'city'); END $$;
COMMENT ON FUNCTION veil.pseudo_city(anyelement) IS 'A keyed pseudonymous city for seed (key holders only).';
REVOKE ALL ON FUNCTION veil.pseudo_city(anyelement) FROM PUBLIC;

CREATE FUNCTION veil.pseudo_country(seed anyelement)
RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil_private.pseudo_pick(veil_private.pseudo_hash(seed::text, 'country'), 0, 'country'); END $$;
COMMENT ON FUNCTION veil.pseudo_country(anyelement) IS 'A keyed pseudonymous country for seed (key holders only).';
REVOKE ALL ON FUNCTION veil.pseudo_country(anyelement) FROM PUBLIC;

CREATE FUNCTION veil.pseudo_company(seed anyelement)
RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil_private.pseudo_pick(veil_private.pseudo_hash(seed::text, 'company'), 0, 'company'); END $$;
COMMENT ON FUNCTION veil.pseudo_company(anyelement) IS 'A keyed pseudonymous company name for seed (key holders only).';
REVOKE ALL ON FUNCTION veil.pseudo_company(anyelement) FROM PUBLIC;

CREATE FUNCTION veil.pseudo_iban(seed anyelement)
RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil_private.pseudo_pick(veil_private.pseudo_hash(seed::text, 'iban'), 0, 'iban'); END $$;
COMMENT ON FUNCTION veil.pseudo_iban(anyelement) IS 'A keyed pseudonymous IBAN for seed (key holders only).';
REVOKE ALL ON FUNCTION veil.pseudo_iban(anyelement) FROM PUBLIC;

CREATE FUNCTION veil.pseudo_address(seed anyelement)
RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil_private.pseudo_pick(veil_private.pseudo_hash(seed::text, 'address'), 0, 'address'); END $$;
COMMENT ON FUNCTION veil.pseudo_address(anyelement) IS 'A keyed pseudonymous postal address for seed (key holders only).';
REVOKE ALL ON FUNCTION veil.pseudo_address(anyelement) FROM PUBLIC;

CREATE FUNCTION veil.pseudo_phone(seed anyelement)
RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil_private.pseudo_pick(veil_private.pseudo_hash(seed::text, 'phone'), 0, 'phone'); END $$;
COMMENT ON FUNCTION veil.pseudo_phone(anyelement) IS 'A keyed pseudonymous phone number for seed (key holders only).';
REVOKE ALL ON FUNCTION veil.pseudo_phone(anyelement) FROM PUBLIC;

CREATE FUNCTION veil.pseudo_email(seed anyelement)
RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    mac bytea := veil_private.pseudo_hash(seed::text, 'email');
BEGIN
    -- first.last<NN>@domain from independent slices of one MAC.
    RETURN pg_catalog.lower(pg_catalog.regexp_replace(
               veil_private.pseudo_pick(mac, 0, 'first_name') || '.'
               || veil_private.pseudo_pick(mac, 1, 'last_name'), '[^A-Za-z.]', '', 'g'))
        || ((pg_catalog.get_byte(mac, 24) * 256 + pg_catalog.get_byte(mac, 25)) % 100)::text
        || '@' || veil_private.pseudo_pick(mac, 2, 'domain');
END
$$;
COMMENT ON FUNCTION veil.pseudo_email(anyelement) IS 'A keyed pseudonymous email address for seed (key holders only).';
REVOKE ALL ON FUNCTION veil.pseudo_email(anyelement) FROM PUBLIC;
