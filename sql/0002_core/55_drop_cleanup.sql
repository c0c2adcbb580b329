-- Dropping a table, column or schema removes its rules in the same
-- transaction, so no stale rule can ever apply to an object that later
-- reuses the oid. Where the installing role may not create event triggers, veil_private.forget_stale_rules() sweeps before every change.

CREATE FUNCTION veil_private.forget_dropped_objects()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    gone record;
BEGIN
    -- A rule goes with its column, and with any column its expression reads
    -- (the column it masked is then hidden again: privacy by default).
    FOR gone IN
        DELETE FROM veil_private.column_rules r
        USING pg_catalog.pg_event_trigger_dropped_objects() d
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = r.relid
          AND (d.objsubid = 0 OR d.objsubid = r.attnum
               OR pg_catalog.strpos(r.expression, pg_catalog.format('"veil@col@%s"', d.objsubid)) > 0)
        RETURNING r.policy, r.attnum, d.objsubid, d.object_identity
    LOOP
        IF gone.objsubid NOT IN (0, gone.attnum) THEN
            RAISE WARNING 'pgveil: the % rule of a column that used % was removed; that column is hidden until it has a rule again',
                gone.policy, gone.object_identity;
        END IF;
    END LOOP;
    DELETE FROM veil_private.schema_rules r
    USING pg_catalog.pg_event_trigger_dropped_objects() d
    WHERE d.classid = 'pg_catalog.pg_namespace'::regclass AND d.objid = r.nspid;
END
$$;
REVOKE ALL ON FUNCTION veil_private.forget_dropped_objects() FROM PUBLIC;

DO $$
BEGIN
    CREATE EVENT TRIGGER veil_forget_dropped_objects ON sql_drop
        EXECUTE FUNCTION veil_private.forget_dropped_objects();
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'pgveil: this role may not create event triggers; stale rules are swept before each change';
END
$$;
