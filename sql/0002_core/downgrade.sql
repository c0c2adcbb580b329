-- Uninstall the core. Everything in veil and veil_private is pgveil's own
-- (the installer refuses schemas of those names that it did not create), so
-- this removes what is there, apart from the foundation's objects, without
-- CASCADE: anything unexpected that depends on them stops the downgrade.

DROP EVENT TRIGGER IF EXISTS veil_forget_dropped_objects;

DO $uninstall$
DECLARE
    obj record;
BEGIN
    FOR obj IN
        SELECT c.oid::regclass AS name FROM pg_catalog.pg_class c
        WHERE c.relnamespace IN ('veil'::regnamespace, 'veil_private'::regnamespace) AND c.relkind = 'v'
    LOOP
        EXECUTE pg_catalog.format('DROP VIEW %s', obj.name);
    END LOOP;
    FOR obj IN
        SELECT p.oid::regprocedure AS name FROM pg_catalog.pg_proc p
        WHERE p.pronamespace IN ('veil'::regnamespace, 'veil_private'::regnamespace)
          AND p.oid <> 'veil.version()'::regprocedure
    LOOP
        EXECUTE pg_catalog.format('DROP FUNCTION %s', obj.name);
    END LOOP;
    FOR obj IN
        SELECT c.oid::regclass AS name FROM pg_catalog.pg_class c
        WHERE c.relnamespace IN ('veil'::regnamespace, 'veil_private'::regnamespace) AND c.relkind = 'r'
          AND c.oid <> 'veil_private.installation'::regclass
        -- referencing tables first
        ORDER BY EXISTS (SELECT FROM pg_catalog.pg_constraint k WHERE k.confrelid = c.oid)
    LOOP
        EXECUTE pg_catalog.format('DROP TABLE %s', obj.name);
    END LOOP;
END
$uninstall$;
