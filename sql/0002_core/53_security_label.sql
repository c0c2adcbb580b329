-- veil.security_label: set or remove one rule, in the grammar of
-- SECURITY LABEL FOR policy ON object_type object_name IS label.

-- Rules whose object is gone. Where pgveil has its drop event trigger they are
-- removed at the DROP; elsewhere this sweep runs before every policy change.
CREATE FUNCTION veil_private.forget_stale_rules()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- A rule is stale when its column, or a column its expression reads, is gone.
    DELETE FROM veil_private.column_rules r WHERE NOT EXISTS (
        SELECT FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = r.relid AND a.attnum = r.attnum AND NOT a.attisdropped)
    OR EXISTS (
        SELECT FROM pg_catalog.regexp_matches(r.expression, '"veil@col@(\d+)"', 'g') AS m
        WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = r.relid
                          AND a.attnum = m[1]::smallint AND NOT a.attisdropped));
    DELETE FROM veil_private.role_rules r
    WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles o WHERE o.oid = r.roleid);
    DELETE FROM veil_private.schema_rules r
    WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_namespace n WHERE n.oid = r.nspid);
END
$$;

CREATE FUNCTION veil_private.set_column_rule(policy text, relid oid, attnum smallint, label text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parsed text[];
    kind text;
    checked_expression text;
    checked_keyed boolean := false;
    checked_type text;
BEGIN
    IF label IS NULL THEN
        DELETE FROM veil_private.column_rules r
        WHERE r.policy = set_column_rule.policy AND r.relid = set_column_rule.relid
          AND r.attnum = set_column_rule.attnum;
        RETURN;
    END IF;
    parsed := pg_catalog.regexp_match(label, '^\s*MASKED\s+WITH\s+(FUNCTION|VALUE)\s+(.*\S)\s*$', 'i');
    IF parsed IS NOT NULL THEN
        kind := pg_catalog.lower(parsed[1]);
        SELECT v.deparsed, v.uses_keyed, v.expression_type INTO checked_expression, checked_keyed, checked_type
        FROM veil_private.validate_expression(policy, relid, attnum, kind, parsed[2]) AS v;
    ELSIF label ~* '^\s*NOT\s+MASKED\s*$' THEN
        kind := 'not_masked';
    ELSE
        RAISE EXCEPTION 'pgveil: unknown column label %', pg_catalog.quote_literal(label)
            USING HINT = 'Column labels are MASKED WITH FUNCTION <call>, MASKED WITH VALUE <constant>, or NOT MASKED.';
    END IF;
    INSERT INTO veil_private.column_rules AS r
        (policy, relid, attnum, label, kind, expression, expression_type, uses_keyed)
    VALUES (policy, relid, attnum, label, kind, checked_expression, checked_type, checked_keyed)
    ON CONFLICT ON CONSTRAINT column_rules_pkey DO UPDATE
    SET label = EXCLUDED.label, kind = EXCLUDED.kind, expression = EXCLUDED.expression,
        expression_type = EXCLUDED.expression_type, uses_keyed = EXCLUDED.uses_keyed;
END
$$;

CREATE FUNCTION veil_private.set_role_rule(policy text, roleid oid, label text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pg_catalog.pg_roles;
BEGIN
    IF label IS NULL THEN
        DELETE FROM veil_private.role_rules x
        WHERE x.policy = set_role_rule.policy AND x.roleid = set_role_rule.roleid;
        RETURN;
    END IF;
    IF label !~* '^\s*MASKED\s*$' THEN
        RAISE EXCEPTION 'pgveil: the only role label is MASKED (got %)', pg_catalog.quote_literal(label);
    END IF;
    SELECT * INTO r FROM pg_catalog.pg_roles WHERE oid = roleid;
    IF r.rolsuper THEN
        RAISE EXCEPTION 'pgveil: role % is a superuser; superusers bypass every privilege, so it cannot be masked', r.rolname;
    END IF;
    IF pg_catalog.pg_has_role(r.rolname, (SELECT nspowner FROM pg_catalog.pg_namespace WHERE nspname = 'veil_private'), 'MEMBER') THEN
        RAISE EXCEPTION 'pgveil: role % is (or is a member of) the toolkit owner, which holds the keys; it cannot be masked', r.rolname;
    END IF;
    INSERT INTO veil_private.role_rules (policy, roleid) VALUES (policy, roleid)
    ON CONFLICT DO NOTHING;
END
$$;

CREATE FUNCTION veil_private.set_schema_rule(policy text, nspid oid, label text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF label IS NULL THEN
        DELETE FROM veil_private.schema_rules s
        WHERE s.policy = set_schema_rule.policy AND s.nspid = set_schema_rule.nspid;
        RETURN;
    END IF;
    IF label !~* '^\s*TRUSTED\s*$' THEN
        RAISE EXCEPTION 'pgveil: the only schema label is TRUSTED (got %)', pg_catalog.quote_literal(label);
    END IF;
    INSERT INTO veil_private.schema_rules (policy, nspid) VALUES (policy, nspid)
    ON CONFLICT DO NOTHING;
END
$$;

CREATE FUNCTION veil.security_label(policy text, object_type text, object_name text, label text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts text[];
    target oid;
    column_number smallint;
BEGIN
    PERFORM veil.require_governor();
    PERFORM veil_private.forget_stale_rules();
    IF policy IS NULL OR NOT EXISTS (SELECT FROM veil_private.policies p WHERE p.name = policy) THEN
        RAISE EXCEPTION 'pgveil: there is no policy %', coalesce(pg_catalog.quote_literal(policy), 'NULL')
            USING HINT = 'Policies: ' || (SELECT pg_catalog.string_agg(name, ', ' ORDER BY name) FROM veil_private.policies);
    END IF;
    BEGIN
        parts := pg_catalog.parse_ident(object_name);
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'pgveil: % is not a valid object name', coalesce(pg_catalog.quote_literal(object_name), 'NULL');
    END;

    CASE pg_catalog.upper(object_type)
    WHEN 'COLUMN' THEN
        IF pg_catalog.cardinality(parts) <> 3 THEN
            RAISE EXCEPTION 'pgveil: name the column as schema.table.column (got %)', object_name;
        END IF;
        SELECT c.oid INTO target FROM pg_catalog.pg_class c
        WHERE c.relnamespace = (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = parts[1])
          AND c.relname = parts[2] AND c.relkind IN ('r', 'p');
        IF target IS NULL THEN
            RAISE EXCEPTION 'pgveil: there is no table %.%', pg_catalog.quote_ident(parts[1]), pg_catalog.quote_ident(parts[2]);
        END IF;
        SELECT a.attnum INTO column_number FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = target AND a.attname = parts[3] AND a.attnum > 0 AND NOT a.attisdropped;
        IF column_number IS NULL THEN
            RAISE EXCEPTION 'pgveil: table % has no column %', target::regclass, pg_catalog.quote_ident(parts[3]);
        END IF;
        PERFORM veil_private.set_column_rule(policy, target, column_number, label);
    WHEN 'ROLE' THEN
        SELECT r.oid INTO target FROM pg_catalog.pg_roles r
        WHERE pg_catalog.cardinality(parts) = 1 AND r.rolname = parts[1];
        IF target IS NULL THEN
            RAISE EXCEPTION 'pgveil: there is no role %', object_name;
        END IF;
        PERFORM veil_private.set_role_rule(policy, target, label);
    WHEN 'SCHEMA' THEN
        SELECT n.oid INTO target FROM pg_catalog.pg_namespace n
        WHERE pg_catalog.cardinality(parts) = 1 AND n.nspname = parts[1];
        IF target IS NULL THEN
            RAISE EXCEPTION 'pgveil: there is no schema %', object_name;
        END IF;
        PERFORM veil_private.set_schema_rule(policy, target, label);
    ELSE
        RAISE EXCEPTION 'pgveil: object type is COLUMN, ROLE or SCHEMA (got %)',
            coalesce(pg_catalog.quote_literal(object_type), 'NULL');
    END CASE;
END
$$;
COMMENT ON FUNCTION veil.security_label(text, text, text, text) IS
    'Set (or, with a NULL label, remove) a rule: SECURITY LABEL FOR policy ON object_type object_name IS label.';

-- The label a rule currently has (NULL: none), for reversible migrations.
CREATE FUNCTION veil.current_label(policy text, object_type text, object_name text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts text[] := pg_catalog.parse_ident(object_name);
BEGIN
    RETURN (SELECT r.label FROM veil.rules r
            WHERE r.policy = current_label.policy AND r.object_type = pg_catalog.upper(current_label.object_type)
              AND CASE r.object_type
                  WHEN 'COLUMN' THEN ARRAY[r.schema_name::text, r.table_name::text, r.column_name::text] = parts
                  WHEN 'ROLE' THEN ARRAY[r.role_name::text] = parts
                  ELSE ARRAY[r.schema_name::text] = parts END);
END
$$;
COMMENT ON FUNCTION veil.current_label(text, text, text) IS 'The label of one rule, NULL if there is none.';

REVOKE ALL ON FUNCTION veil_private.forget_stale_rules(),
    veil_private.set_column_rule(text, oid, smallint, text),
    veil_private.set_role_rule(text, oid, text),
    veil_private.set_schema_rule(text, oid, text),
    veil.security_label(text, text, text, text),
    veil.current_label(text, text, text) FROM PUBLIC;
