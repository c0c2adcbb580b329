-- pgveil foundation: the toolkit's two schemas, pgcrypto, and the version marker.
--
--   veil          the API: masking functions, rule catalog, administration.
--   veil_private  secrets and state; only the toolkit owner (the installing
--                 role) can reach it.
--
-- Both schemas carry the comment 'pgveil': the installer's preflight refuses
-- to install over a schema of the same name that pgveil did not create.

CREATE SCHEMA veil;
COMMENT ON SCHEMA veil IS 'pgveil';
GRANT USAGE ON SCHEMA veil TO PUBLIC;

CREATE SCHEMA veil_private;
COMMENT ON SCHEMA veil_private IS 'pgveil';
REVOKE ALL ON SCHEMA veil_private FROM PUBLIC;

CREATE TABLE veil_private.installation (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    toolkit_version  text        NOT NULL,
    installed_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    installed_by     name        NOT NULL DEFAULT CURRENT_USER,
    -- pgcrypto is created only when missing, in its own schema, and dropped on
    -- uninstall only if pgveil created it.
    created_pgcrypto boolean     NOT NULL
);
REVOKE ALL ON veil_private.installation FROM PUBLIC;

DO $install$
DECLARE
    created boolean := NOT EXISTS (
        SELECT FROM pg_catalog.pg_extension WHERE extname = 'pgcrypto');
BEGIN
    IF created THEN
        CREATE SCHEMA veil_ext;
        COMMENT ON SCHEMA veil_ext IS 'pgveil';
        GRANT USAGE ON SCHEMA veil_ext TO PUBLIC;
        CREATE EXTENSION pgcrypto WITH SCHEMA veil_ext;
    END IF;
    INSERT INTO veil_private.installation (toolkit_version, created_pgcrypto)
    VALUES ('0.1.0', created);
END
$install$;

CREATE FUNCTION veil.version()
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT toolkit_version FROM veil_private.installation $$;
COMMENT ON FUNCTION veil.version() IS 'Version of the installed pgveil toolkit.';
