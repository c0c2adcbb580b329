-- DDL on a streamed source rebuilds its stream in the same transaction, so
-- no generated trigger is ever left that would make application writes fail
-- (invariant 6). Dropping a streamed table drops its copy too (erasure).
-- veil.stream() refuses to start where pgveil could not install them.

CREATE FUNCTION veil_private.rebuild_streams_after_ddl()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    altered oid;
BEGIN
    FOR altered IN
        SELECT DISTINCT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c
        WHERE c.classid = 'pg_catalog.pg_class'::regclass
          AND c.objid IN (SELECT s.source FROM veil_private.streams s)
    LOOP
        PERFORM veil_private.build_stream(altered);
    END LOOP;
END
$$;

CREATE FUNCTION veil_private.drop_streams_of_dropped_tables()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    gone record;
BEGIN
    FOR gone IN
        DELETE FROM veil_private.streams s
        USING pg_catalog.pg_event_trigger_dropped_objects() d
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0 AND d.objid = s.source
        RETURNING s.target, s.trigger_fn
    LOOP
        EXECUTE pg_catalog.format('DROP TABLE IF EXISTS %s', gone.target::regclass);
        EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS %s', gone.trigger_fn::regprocedure);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION veil_private.rebuild_streams_after_ddl(),
    veil_private.drop_streams_of_dropped_tables() FROM PUBLIC;

-- Managed services let their admin role create event triggers without
-- being a superuser: try, and go without where it is refused.
DO $$
BEGIN
    CREATE EVENT TRIGGER veil_rebuild_streams ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
        EXECUTE FUNCTION veil_private.rebuild_streams_after_ddl();
    CREATE EVENT TRIGGER veil_drop_streams ON sql_drop
        EXECUTE FUNCTION veil_private.drop_streams_of_dropped_tables();
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'pgveil: this role may not create event triggers; streaming will be unavailable';
END
$$;
