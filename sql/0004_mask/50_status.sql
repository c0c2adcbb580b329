-- What needs a DBA's attention: stale mask views (DDL where pgveil has no
-- event triggers), masked roles or consumers that can reach raw data again
-- (a later GRANT of a role membership is invisible to event triggers), and
-- masked roles whose search_path no longer puts the mask schemas first.
CREATE FUNCTION veil.masking_problems()
RETURNS TABLE (policy text, problem text, object text, detail text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM veil.require_governor();
    RETURN QUERY
    SELECT p.name, 'stale view', s.source::text, s.reason || '; SELECT veil.refresh_masking(' || pg_catalog.quote_literal(p.name) || ') fixes it'
    FROM veil_private.policies p, veil_private.stale_mask_views(p.name) s
    WHERE p.delivery = 'views';

    RETURN QUERY
    SELECT m.policy, 'raw access', ro.rolname::text,
           pg_catalog.format('%s on %s through %s', a.privilege,
               CASE WHEN a.relid = 0 THEN 'every table' ELSE a.relid::regclass::text END,
               CASE WHEN a.via = 0 THEN 'PUBLIC' WHEN a.via = m.roleid THEN 'a direct grant'
                    ELSE 'role ' || a.via::regrole::text END)
    FROM veil_private.masked_roles m
    JOIN pg_catalog.pg_roles ro ON ro.oid = m.roleid
    CROSS JOIN LATERAL veil_private.raw_access(m.policy, m.roleid) a;

    RETURN QUERY
    SELECT m.policy, 'search_path', ro.rolname::text,
           'the role''s search_path in this database is ' || coalesce(pg_catalog.quote_literal(
               veil_private.role_setting(m.roleid, veil_private.this_database(), 'search_path')), 'unset')
           || '; SELECT veil.refresh_masking(' || pg_catalog.quote_literal(m.policy) || ') sets it again'
    FROM veil_private.masked_roles m
    JOIN pg_catalog.pg_roles ro ON ro.oid = m.roleid
    WHERE (SELECT pg_catalog.array_agg(mn.nspname::text ORDER BY mn.nspname)
           FROM veil_private.mask_schemas ms JOIN pg_catalog.pg_namespace mn ON mn.oid = ms.mask_nspid
           WHERE ms.policy = m.policy)
          IS DISTINCT FROM
          (SELECT pg_catalog.array_agg(e ORDER BY e) FROM pg_catalog.unnest(
               (veil_private.search_path_entries(veil_private.role_setting(m.roleid, veil_private.this_database(), 'search_path')))
               [1:(SELECT pg_catalog.count(*) FROM veil_private.mask_schemas ms WHERE ms.policy = m.policy)]) AS e);

    RETURN QUERY
    SELECT mv.policy, 'owner cannot read', mv.source::regclass::text,
           pg_catalog.format('the toolkit owner %I has no SELECT on it, so its mask view fails; GRANT SELECT ON %s TO %I',
                             veil_private.toolkit_owner(), mv.source::regclass, veil_private.toolkit_owner())
    FROM veil_private.mask_views mv
    WHERE EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = mv.source)
      AND NOT pg_catalog.has_table_privilege(veil_private.toolkit_owner(), mv.source, 'SELECT');

    RETURN QUERY
    SELECT NULL::text, 'consumer reads a source', ro.rolname::text, 'can read ' || s.source::text
    FROM veil_private.consumers c
    JOIN pg_catalog.pg_roles ro ON ro.oid = c.roleid
    CROSS JOIN LATERAL veil_private.readable_sources(ro.rolname) s;
END
$$;
COMMENT ON FUNCTION veil.masking_problems() IS
    'Stale mask views, masked roles or consumers that can reach raw data, and masked roles with a changed search_path.';
REVOKE ALL ON FUNCTION veil.masking_problems() FROM PUBLIC;
