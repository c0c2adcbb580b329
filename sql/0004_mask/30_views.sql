-- Mask views: generated from the rules of a policy delivered through views.

-- The SELECT of the mask view of one table: one column per rule (NOT MASKED
-- columns as themselves, masked ones as their rule cast to the column's
-- type). Columns without a rule are left out (privacy by default) unless
-- the policy passes unlabeled columns through.
CREATE FUNCTION veil_private.mask_view_query(policy text, source oid)
RETURNS text
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.format('SELECT %s FROM %s AS src%s',
        coalesce(pg_catalog.string_agg(m.expression || ' AS ' || pg_catalog.quote_ident(a.attname), ', '
                                       ORDER BY a.attnum), ''),
        source::regclass,
        coalesce(' ' || pg_catalog.string_agg(m.join_clause, ' ' ORDER BY a.attnum), ''))
    FROM veil_private.policies p
    JOIN pg_catalog.pg_attribute a ON a.attrelid = source AND a.attnum > 0 AND NOT a.attisdropped
    CROSS JOIN LATERAL veil_private.mask_column(p.name, source, a.attnum) AS m
    WHERE p.name = policy
      AND (p.pass_through_unlabeled OR EXISTS (
          SELECT FROM veil_private.column_rules r
          WHERE r.policy = p.name AND r.relid = source AND r.attnum = a.attnum))
$$;

-- Schemas whose tables a policy masks: those with a rule of the policy on
-- one of their tables (pgveil's own schemas never).
CREATE FUNCTION veil_private.masked_source_schemas(policy text)
RETURNS SETOF oid
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT c.relnamespace
    FROM veil_private.column_rules r JOIN pg_catalog.pg_class c ON c.oid = r.relid
    WHERE r.policy = masked_source_schemas.policy
      AND c.relnamespace NOT IN (SELECT n.oid FROM pg_catalog.pg_namespace n
                                 WHERE n.nspname IN ('veil', 'veil_private', 'sanitized'))
$$;

-- Replace every generated view of every views policy by an empty one with
-- the same columns, which depends on no table: DDL may then drop or retype
-- source columns and tables. The views are rebuilt at the end of the
-- command; objects that depend on them survive when the shape is unchanged.
CREATE FUNCTION veil_private.detach_mask_views()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v record;
    placeholder text;
BEGIN
    FOR v IN
        SELECT mv.policy, mv.source, mv.view_oid FROM veil_private.mask_views mv
        WHERE mv.definition <> '' AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = mv.view_oid)
    LOOP
        SELECT pg_catalog.string_agg(pg_catalog.format('NULL::%s AS %I',
                   pg_catalog.format_type(a.atttypid, a.atttypmod), a.attname), ', ' ORDER BY a.attnum)
        INTO placeholder
        FROM pg_catalog.pg_attribute a WHERE a.attrelid = v.view_oid AND a.attnum > 0;
        EXECUTE pg_catalog.format('CREATE OR REPLACE VIEW %s AS SELECT %s WHERE false',
                                  v.view_oid::regclass, coalesce(placeholder, ''));
        UPDATE veil_private.mask_views SET definition = '' WHERE policy = v.policy AND source = v.source;
    END LOOP;
END
$$;

-- Make the mask schemas and views of a policy match its rules and tables.
-- Returns the number of views created or replaced.
CREATE FUNCTION veil_private.build_mask_views(policy text)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner name := veil_private.toolkit_owner();
    barrier boolean := (SELECT p.security_barrier FROM veil_private.policies p WHERE p.name = policy);
    s record;
    t record;
    mask_nspid oid;
    wanted_name text;
    query text;
    view_oid oid;
    built integer := 0;
BEGIN
    -- Mask schemas of source schemas that lost their last rule, or are gone.
    FOR s IN
        DELETE FROM veil_private.mask_schemas ms
        WHERE ms.policy = build_mask_views.policy
          AND ms.source_nspid NOT IN (SELECT veil_private.masked_source_schemas(build_mask_views.policy))
        RETURNING ms.mask_nspid
    LOOP
        DELETE FROM veil_private.mask_views mv
        WHERE mv.view_oid IN (SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relnamespace = s.mask_nspid);
        IF EXISTS (SELECT FROM pg_catalog.pg_namespace n WHERE n.oid = s.mask_nspid) THEN
            EXECUTE pg_catalog.format('DROP SCHEMA %I CASCADE', s.mask_nspid::regnamespace::name);
        END IF;
    END LOOP;

    FOR s IN SELECT src AS source_nspid FROM veil_private.masked_source_schemas(policy) AS src LOOP
        wanted_name := veil_private.mask_schema_name(policy, s.source_nspid);
        SELECT ms.mask_nspid INTO mask_nspid FROM veil_private.mask_schemas ms
        WHERE ms.policy = build_mask_views.policy AND ms.source_nspid = s.source_nspid;
        -- A source schema that was renamed gets the new mask schema name.
        IF mask_nspid IS NOT NULL AND mask_nspid::regnamespace::name <> wanted_name THEN
            EXECUTE pg_catalog.format('ALTER SCHEMA %I RENAME TO %I', mask_nspid::regnamespace::name, wanted_name);
        END IF;
        IF mask_nspid IS NULL THEN
            IF pg_catalog.to_regnamespace(pg_catalog.quote_ident(wanted_name)) IS NOT NULL THEN
                RAISE EXCEPTION 'pgveil: schema % exists already; it would be the % mask schema of %',
                    pg_catalog.quote_ident(wanted_name), policy, s.source_nspid::regnamespace
                    USING HINT = 'Mask schemas are named <policy>_<source schema>: rename or drop the existing schema.';
            END IF;
            EXECUTE pg_catalog.format('CREATE SCHEMA %I AUTHORIZATION %I', wanted_name, owner);
            mask_nspid := pg_catalog.to_regnamespace(pg_catalog.quote_ident(wanted_name));
            EXECUTE pg_catalog.format('COMMENT ON SCHEMA %I IS %L', wanted_name,
                pg_catalog.format('pgveil: %s policy views of schema %s', policy, s.source_nspid::regnamespace));
            INSERT INTO veil_private.mask_schemas VALUES (policy, s.source_nspid, mask_nspid);
        END IF;

        -- Every table of the source schema is represented.
        FOR t IN
            SELECT c.oid, c.relname, mv.view_oid, mv.definition,
                   (SELECT v.relname FROM pg_catalog.pg_class v WHERE v.oid = mv.view_oid) AS view_name
            FROM pg_catalog.pg_class c
            LEFT JOIN veil_private.mask_views mv ON mv.policy = build_mask_views.policy AND mv.source = c.oid
            WHERE c.relnamespace = s.source_nspid AND c.relkind IN ('r', 'p')
        LOOP
            query := veil_private.mask_view_query(policy, t.oid);
            CONTINUE WHEN t.view_name = t.relname AND t.definition = query
                AND (SELECT coalesce(v.reloptions, '{}') FROM pg_catalog.pg_class v WHERE v.oid = t.view_oid)
                    @> ARRAY['security_barrier=' || barrier::text];
            IF t.view_name IS NOT NULL AND t.view_name <> t.relname THEN
                -- The table was renamed: its view follows.
                EXECUTE pg_catalog.format('DROP VIEW %s CASCADE', t.view_oid::regclass);
            END IF;
            BEGIN
                EXECUTE pg_catalog.format('CREATE OR REPLACE VIEW %I.%I WITH (security_barrier = %s) AS %s',
                                          mask_nspid::regnamespace::name, t.relname, barrier::text, query);
            EXCEPTION WHEN invalid_table_definition OR feature_not_supported OR datatype_mismatch THEN
                -- Columns were removed, reordered or retyped: only a new view will do.
                EXECUTE pg_catalog.format('DROP VIEW %I.%I CASCADE', mask_nspid::regnamespace::name, t.relname);
                EXECUTE pg_catalog.format('CREATE VIEW %I.%I WITH (security_barrier = %s) AS %s',
                                          mask_nspid::regnamespace::name, t.relname, barrier::text, query);
            END;
            view_oid := pg_catalog.format('%I.%I', mask_nspid::regnamespace::name, t.relname)::regclass;
            IF (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = view_oid) <> owner::regrole THEN
                EXECUTE pg_catalog.format('ALTER VIEW %s OWNER TO %I', view_oid::regclass, owner);
            END IF;
            INSERT INTO veil_private.mask_views AS mv VALUES (policy, t.oid, view_oid, query)
            ON CONFLICT ON CONSTRAINT mask_views_pkey DO UPDATE SET view_oid = EXCLUDED.view_oid, definition = EXCLUDED.definition;
            built := built + 1;
        END LOOP;
    END LOOP;

    -- Views of tables that are gone or moved to another schema.
    FOR t IN
        DELETE FROM veil_private.mask_views mv
        WHERE mv.policy = build_mask_views.policy
          AND NOT EXISTS (SELECT FROM pg_catalog.pg_class c JOIN veil_private.mask_schemas ms
                                  ON ms.policy = mv.policy AND ms.source_nspid = c.relnamespace
                          WHERE c.oid = mv.source AND c.relkind IN ('r', 'p'))
        RETURNING mv.view_oid
    LOOP
        IF EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = t.view_oid) THEN
            EXECUTE pg_catalog.format('DROP VIEW %s CASCADE', t.view_oid::regclass);
        END IF;
    END LOOP;
    RETURN built;
END
$$;

-- Views that do not match the rules and tables as they are now (after DDL
-- where pgveil has no event triggers): what veil.refresh_masking() would do.
CREATE FUNCTION veil_private.stale_mask_views(policy text)
RETURNS TABLE (source regclass, reason text)
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.oid::regclass,
           CASE WHEN mv.view_oid IS NULL OR v.oid IS NULL THEN 'no view'
                WHEN v.relname <> c.relname OR v.relnamespace <> ms.mask_nspid THEN 'view has an old name'
                ELSE 'view does not match the table and rules' END
    FROM pg_catalog.pg_class c
    JOIN veil_private.masked_source_schemas(policy) AS src ON src = c.relnamespace
    LEFT JOIN veil_private.mask_schemas ms ON ms.policy = stale_mask_views.policy AND ms.source_nspid = c.relnamespace
    LEFT JOIN veil_private.mask_views mv ON mv.policy = stale_mask_views.policy AND mv.source = c.oid
    LEFT JOIN pg_catalog.pg_class v ON v.oid = mv.view_oid
    WHERE c.relkind IN ('r', 'p')
      AND (v.oid IS NULL OR v.relname <> c.relname OR v.relnamespace IS DISTINCT FROM ms.mask_nspid
           OR mv.definition <> veil_private.mask_view_query(stale_mask_views.policy, c.oid))
    UNION ALL
    SELECT mv.source::regclass, 'table is gone or no longer masked'
    FROM veil_private.mask_views mv
    WHERE mv.policy = stale_mask_views.policy
      AND NOT EXISTS (SELECT FROM pg_catalog.pg_class c
                      WHERE c.oid = mv.source AND c.relkind IN ('r', 'p')
                        AND c.relnamespace IN (SELECT veil_private.masked_source_schemas(stale_mask_views.policy)))
$$;

-- The views, and every masked role's search_path and privileges, of a
-- policy (or of every policy delivered through views), in one transaction.
CREATE FUNCTION veil_private.refresh_views_policy(policy text)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    built integer;
    was_building text := veil_private.start_building_masks();
BEGIN
    built := veil_private.build_mask_views(policy);
    PERFORM veil_private.apply_masked_role(m.roleid)
    FROM veil_private.masked_roles m WHERE m.policy = refresh_views_policy.policy;
    PERFORM veil_private.finish_building_masks(was_building);
    RETURN built;
END
$$;

CREATE FUNCTION veil.refresh_masking(policy text DEFAULT 'mask')
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM veil.require_governor();
    PERFORM veil_private.forget_stale_rules();
    IF NOT EXISTS (SELECT FROM veil_private.policies p WHERE p.name = policy AND p.delivery = 'views') THEN
        RAISE EXCEPTION 'pgveil: % is not a policy delivered through views', coalesce(pg_catalog.quote_literal(policy), 'NULL');
    END IF;
    RETURN veil_private.refresh_views_policy(policy);
END
$$;
COMMENT ON FUNCTION veil.refresh_masking(text) IS
    'Rebuild a policy''s mask views and re-apply its masked roles, in one transaction; returns the number of views rebuilt.';

-- Rule and policy changes refresh the views in the same transaction.
CREATE FUNCTION veil_private.refresh_masking_after_rule_change()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    changed text;
BEGIN
    FOR changed IN
        SELECT DISTINCT p.name FROM veil_private.policies p
        WHERE p.delivery = 'views' AND p.name IN (SELECT c.policy FROM changed_rules c)
    LOOP
        PERFORM veil_private.refresh_views_policy(changed);
    END LOOP;
    RETURN NULL;
END
$$;
CREATE TRIGGER refresh_masking_on_insert AFTER INSERT ON veil_private.column_rules
    REFERENCING NEW TABLE AS changed_rules FOR EACH STATEMENT
    EXECUTE FUNCTION veil_private.refresh_masking_after_rule_change();
CREATE TRIGGER refresh_masking_on_update AFTER UPDATE ON veil_private.column_rules
    REFERENCING NEW TABLE AS changed_rules FOR EACH STATEMENT
    EXECUTE FUNCTION veil_private.refresh_masking_after_rule_change();
CREATE TRIGGER refresh_masking_on_delete AFTER DELETE ON veil_private.column_rules
    REFERENCING OLD TABLE AS changed_rules FOR EACH STATEMENT
    EXECUTE FUNCTION veil_private.refresh_masking_after_rule_change();

CREATE FUNCTION veil_private.refresh_masking_after_policy_change()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.delivery = 'views'
       AND (OLD.pass_through_unlabeled, OLD.allow_keyed_functions, OLD.security_barrier)
           IS DISTINCT FROM (NEW.pass_through_unlabeled, NEW.allow_keyed_functions, NEW.security_barrier) THEN
        PERFORM veil_private.refresh_views_policy(NEW.name);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER refresh_masking_on_policy_change AFTER UPDATE ON veil_private.policies
    FOR EACH ROW EXECUTE FUNCTION veil_private.refresh_masking_after_policy_change();

REVOKE ALL ON FUNCTION veil_private.mask_view_query(text, oid), veil_private.masked_source_schemas(text),
    veil_private.detach_mask_views(), veil_private.build_mask_views(text),
    veil_private.stale_mask_views(text), veil_private.refresh_views_policy(text),
    veil.refresh_masking(text), veil_private.refresh_masking_after_rule_change(),
    veil_private.refresh_masking_after_policy_change() FROM PUBLIC;
