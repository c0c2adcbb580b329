-- Import rules from PostgreSQL Anonymizer's security labels (provider anon),
-- which pg_seclabels shows even where the anon extension is not loaded.
-- anon.<function> becomes veil.<function>; what cannot be converted is
-- reported, not imported.

CREATE FUNCTION veil.import_anon_labels(policy text DEFAULT 'mask')
RETURNS TABLE (object_type text, object_name text, anon_label text, imported boolean, detail text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l record;
    converted text;
BEGIN
    PERFORM veil.require_governor();
    FOR l IN
        SELECT s.objtype, s.objname, s.objoid, s.objsubid, s.label
        FROM pg_catalog.pg_seclabels s WHERE s.provider = 'anon'
        ORDER BY s.objtype, s.objname
    LOOP
        object_type := pg_catalog.upper(l.objtype);
        object_name := l.objname;
        anon_label := l.label;
        converted := pg_catalog.regexp_replace(l.label, '\manon\.', 'veil.', 'gi');
        BEGIN
            CASE l.objtype
            WHEN 'column' THEN
                PERFORM veil_private.set_column_rule(policy, l.objoid, l.objsubid::smallint, converted);
            WHEN 'role' THEN
                PERFORM veil_private.set_role_rule(policy, l.objoid, converted);
            WHEN 'schema' THEN
                PERFORM veil_private.set_schema_rule(policy, l.objoid, converted);
            ELSE
                RAISE EXCEPTION 'pgveil has no rules for objects of type %', l.objtype;
            END CASE;
            imported := true;
            detail := CASE WHEN converted = l.label THEN 'as is' ELSE converted END;
        EXCEPTION WHEN OTHERS THEN
            imported := false;
            detail := SQLERRM;
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION veil.import_anon_labels(text) IS
    'Convert PostgreSQL Anonymizer security labels into rules of a policy; reports each label.';
REVOKE ALL ON FUNCTION veil.import_anon_labels(text) FROM PUBLIC;
