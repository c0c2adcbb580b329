-- The SELECT of the mask view of one table: the policy's rules compiled for
-- views (sql/0006_rules/10_compile.sql). veil_private.build_mask_views()
-- (sql/0004_mask/30_views.sql) creates the mask schemas and views from it.
CREATE OR REPLACE FUNCTION veil_private.mask_view_query(policy text, source oid)
RETURNS text
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$ SELECT veil_private.compiled_select(policy, source, 'view') $$;
