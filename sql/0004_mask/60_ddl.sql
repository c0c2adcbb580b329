-- DDL keeps mask views correct in the same transaction, where the
-- installing role may create event triggers:
--   * before ALTER TABLE, DROP TABLE and DROP SCHEMA, the mask views stop
--     depending on the tables (detach), so that dropping or retyping a
--     masked column or table needs no CASCADE;
--   * after DDL that creates, alters or drops tables or schemas, and after
--     GRANT, every views policy is refreshed: views rebuilt, and masked roles
--     checked again (a GRANT that would let a masked role reach raw data
--     through PUBLIC or a role it belongs to is refused; a direct grant is
--     withheld until the role is unmasked).
-- Elsewhere veil.masking_problems() (pgveil status) reports stale views and
-- veil.refresh_masking() (pgveil refresh) fixes them.

CREATE FUNCTION veil_private.detach_mask_views_before_ddl()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    was_building text;
BEGIN
    IF NOT veil_private.building_masks() THEN
        was_building := veil_private.start_building_masks();
        PERFORM veil_private.detach_mask_views();
        PERFORM veil_private.finish_building_masks(was_building);
    END IF;
END
$$;

CREATE FUNCTION veil_private.refresh_masking_after_ddl()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    policy text;
BEGIN
    IF veil_private.building_masks() THEN
        RETURN;
    END IF;
    -- A new table matters only in a masked schema (temporary tables never).
    IF TG_TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') AND NOT EXISTS (
        SELECT FROM pg_catalog.pg_event_trigger_ddl_commands() c
        JOIN pg_catalog.pg_class t ON t.oid = c.objid
        WHERE c.classid = 'pg_catalog.pg_class'::regclass
          AND t.relnamespace IN (SELECT ms.source_nspid FROM veil_private.mask_schemas ms)) THEN
        RETURN;
    END IF;
    PERFORM veil_private.forget_stale_rules();
    FOR policy IN SELECT p.name FROM veil_private.policies p WHERE p.delivery = 'views' LOOP
        PERFORM veil_private.refresh_views_policy(policy);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION veil_private.detach_mask_views_before_ddl(), veil_private.refresh_masking_after_ddl() FROM PUBLIC;

DO $$
BEGIN
    CREATE EVENT TRIGGER veil_detach_mask_views ON ddl_command_start
        WHEN TAG IN ('ALTER TABLE', 'DROP TABLE', 'DROP SCHEMA')
        EXECUTE FUNCTION veil_private.detach_mask_views_before_ddl();
    CREATE EVENT TRIGGER veil_refresh_masking ON ddl_command_end
        WHEN TAG IN ('ALTER TABLE', 'DROP TABLE', 'DROP SCHEMA', 'ALTER SCHEMA', 'CREATE TABLE',
                     'CREATE TABLE AS', 'SELECT INTO', 'GRANT')
        EXECUTE FUNCTION veil_private.refresh_masking_after_ddl();
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'pgveil: this role may not create event triggers; after DDL on masked tables, run SELECT veil.refresh_masking() (pgveil refresh)';
END
$$;
