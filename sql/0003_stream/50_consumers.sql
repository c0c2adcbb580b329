-- Consumer roles read sanitized.* and nothing else of the database's data.

CREATE TABLE veil_private.consumers (roleid oid PRIMARY KEY);
REVOKE ALL ON veil_private.consumers FROM PUBLIC;

-- Source tables a consumer must not be able to read: every streamed table
-- and every table that has rules.
CREATE FUNCTION veil_private.readable_sources(role_name name)
RETURNS TABLE (source regclass)
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT t.relid::regclass
    FROM (SELECT s.source FROM veil_private.streams s
          UNION SELECT r.relid FROM veil_private.column_rules r) AS t(relid)
    WHERE pg_catalog.has_any_column_privilege(role_name, t.relid, 'SELECT')
$$;

CREATE FUNCTION veil_private.grant_copies(role_name name)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    copy regclass;
BEGIN
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA sanitized TO %I', role_name);
    FOR copy IN SELECT s.target::regclass FROM veil_private.streams s LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON %s TO %I', copy, role_name);
    END LOOP;
END
$$;

CREATE FUNCTION veil.grant_consumer(role_name name)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pg_catalog.pg_roles;
    leaks text;
BEGIN
    PERFORM veil.require_governor();
    SELECT * INTO r FROM pg_catalog.pg_roles WHERE rolname = role_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgveil: there is no role %', role_name;
    END IF;
    IF r.rolsuper THEN
        RAISE EXCEPTION 'pgveil: % is a superuser and reads everything; a consumer must not', role_name;
    END IF;
    IF pg_catalog.pg_has_role(role_name, (SELECT nspowner FROM pg_catalog.pg_namespace WHERE nspname = 'veil_private'), 'USAGE') THEN
        RAISE EXCEPTION 'pgveil: % is (or inherits) the toolkit owner, which holds the keys; a consumer must not', role_name;
    END IF;
    SELECT pg_catalog.string_agg(x.source::text, ', ') INTO leaks FROM veil_private.readable_sources(role_name) x;
    IF leaks IS NOT NULL THEN
        RAISE EXCEPTION 'pgveil: % can read source table(s) %, directly or through a role it belongs to', role_name, leaks
            USING HINT = 'Revoke those privileges (or the membership) first: a consumer reads sanitized.* only.';
    END IF;
    INSERT INTO veil_private.consumers VALUES (r.oid) ON CONFLICT DO NOTHING;
    PERFORM veil_private.grant_copies(role_name);
END
$$;
COMMENT ON FUNCTION veil.grant_consumer(name) IS
    'Let a role read the sanitized copies (current and future) and nothing else pgveil guards.';

CREATE FUNCTION veil.revoke_consumer(role_name name)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    copy regclass;
BEGIN
    PERFORM veil.require_governor();
    FOR copy IN SELECT s.target::regclass FROM veil_private.streams s LOOP
        EXECUTE pg_catalog.format('REVOKE SELECT ON %s FROM %I', copy, role_name);
    END LOOP;
    EXECUTE pg_catalog.format('REVOKE USAGE ON SCHEMA sanitized FROM %I', role_name);
    DELETE FROM veil_private.consumers c WHERE c.roleid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = role_name);
END
$$;
COMMENT ON FUNCTION veil.revoke_consumer(name) IS 'Take back what veil.grant_consumer gave.';

REVOKE ALL ON FUNCTION veil_private.readable_sources(name), veil_private.grant_copies(name),
    veil.grant_consumer(name), veil.revoke_consumer(name) FROM PUBLIC;
