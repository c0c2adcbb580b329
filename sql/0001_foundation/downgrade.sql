-- Uninstall the foundation. pgcrypto goes only if pgveil created it and
-- nothing outside pgveil has come to depend on it since.

DO $uninstall$
BEGIN
    IF (SELECT created_pgcrypto FROM veil_private.installation) THEN
        BEGIN
            DROP EXTENSION pgcrypto;
            DROP SCHEMA veil_ext;
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'pgveil: keeping extension pgcrypto, which other objects now use';
        END;
    END IF;
END
$uninstall$;

DROP FUNCTION veil.version();
DROP TABLE veil_private.installation;
DROP SCHEMA veil_private;
DROP SCHEMA veil;
