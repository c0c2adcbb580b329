-- JSON masking: veil.jsonb_mask(document, spec) and veil.json_mask.
-- (Being written: spec validation hook called when a rule is set.)
CREATE FUNCTION veil_private.check_json_mask_specs(relid oid, attnum smallint, expression text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN; END $$;
REVOKE ALL ON FUNCTION veil_private.check_json_mask_specs(oid, smallint, text) FROM PUBLIC;
