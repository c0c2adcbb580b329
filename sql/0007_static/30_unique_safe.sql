-- Unique-safe rules. (Being written: the check called when a rule is set.)
CREATE FUNCTION veil_private.check_unique_safe(relid oid, attnum smallint, kind text, expression text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN; END $$;
REVOKE ALL ON FUNCTION veil_private.check_unique_safe(oid, smallint, text, text) FROM PUBLIC;
