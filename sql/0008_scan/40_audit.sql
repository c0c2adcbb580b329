-- The coverage checks of `pgveil audit` and of the Alembic gate
-- (pgveil/alembic_gate.py): columns of covered tables that have no rule, and
-- stored rules that no longer pass the checks a rule passes when it is set.
-- The rest of the audit (stale views, raw access, search_path, consumers) is
-- veil.masking_problems(), and streams needing a backfill are veil.streams;
-- pgveil/services/audit.py combines the three.

-- Every problem of coverage, for the named policies (NULL: every policy).
--
-- uncovered column: a table is in a policy's scope when at least one of its
-- columns has a rule in that policy; every live column of it then needs a
-- rule (NOT MASKED counts: it is a decision). A partition or inheritance
-- child is covered by its ancestors' rules, by column name, as static
-- anonymization applies them (veil_private.static_rule), and a gap is
-- reported once, at the topmost table of the tree that has the column.
--
-- stale rule: a stored rule re-validated against the column's current type
-- and the functions that exist and are trusted now
-- (veil_private.validate_expression, then the JSON spec and unique-safe
-- checks, as veil_private.set_column_rule runs them). The detail is the
-- validation's own message: it names the rule and the column, never a
-- value of the column.
CREATE FUNCTION veil.coverage_problems(policies text[] DEFAULT NULL)
RETURNS TABLE (policy text, problem text, object text, detail text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    unknown text;
    rule_row record;
    checked text;
    err_text text;
BEGIN
    PERFORM veil.require_governor();
    IF coverage_problems.policies IS NOT NULL THEN
        SELECT pg_catalog.string_agg(coalesce(pg_catalog.quote_literal(n.name), 'NULL'), ', ' ORDER BY n.name)
        INTO unknown
        FROM pg_catalog.unnest(coverage_problems.policies) AS n(name)
        WHERE n.name IS NULL
           OR NOT EXISTS (SELECT FROM veil_private.policies p WHERE p.name = n.name);
        IF unknown IS NOT NULL THEN
            RAISE EXCEPTION 'pgveil: there is no policy %', unknown
                USING HINT = 'Policies: ' || coalesce((SELECT pg_catalog.string_agg(p.name, ', ' ORDER BY p.name)
                                                      FROM veil_private.policies p), 'none');
        END IF;
    END IF;

    RETURN QUERY
    WITH chosen AS (
        SELECT p.name FROM veil_private.policies p
        WHERE coverage_problems.policies IS NULL OR p.name = ANY (coverage_problems.policies)
    ),
    -- Tables with a rule of the policy. Partitions are not added: their
    -- columns are their root's, so the root reports their gaps.
    scope(policy, relid) AS (
        SELECT DISTINCT cr.policy, cr.relid
        FROM veil_private.column_rules cr
        JOIN chosen ON chosen.name = cr.policy
        JOIN pg_catalog.pg_class c ON c.oid = cr.relid AND c.relkind IN ('r', 'p')
    ),
    gaps AS (
        SELECT s.policy, s.relid, a.attnum, a.attname
        FROM scope s
        JOIN pg_catalog.pg_attribute a ON a.attrelid = s.relid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE NOT EXISTS (SELECT FROM veil_private.static_rule(s.policy, s.relid, a.attnum) AS sr
                          WHERE sr.policy IS NOT NULL)
    )
    SELECT g.policy, 'uncovered column'::text, x.object,
           pg_catalog.format('no rule in policy %s; decide with %s, or mask it with %s',
               g.policy,
               pg_catalog.format('SELECT veil.security_label(%L, %L, %L, %L)',
                                 g.policy, 'COLUMN', x.object, 'NOT MASKED'),
               pg_catalog.format('SELECT veil.security_label(%L, %L, %L, %L)',
                                 g.policy, 'COLUMN', x.object,
                                 'MASKED WITH FUNCTION veil.<function>(' || pg_catalog.quote_ident(g.attname) || ')'))
    FROM gaps g
    JOIN pg_catalog.pg_class c ON c.oid = g.relid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    CROSS JOIN LATERAL (SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)
                               || '.' || pg_catalog.quote_ident(g.attname) AS object) x
    -- Reported at the topmost table of the tree that has the column (an
    -- ancestor in scope with a column of that name has the same gap).
    WHERE NOT EXISTS (
        WITH RECURSIVE up(relid) AS (
            SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = g.relid
            UNION
            SELECT i.inhparent FROM up JOIN pg_catalog.pg_inherits i ON i.inhrelid = up.relid
        )
        SELECT FROM up
        JOIN scope s2 ON s2.policy = g.policy AND s2.relid = up.relid
        JOIN pg_catalog.pg_attribute pa ON pa.attrelid = up.relid AND pa.attname = g.attname
                                       AND pa.attnum > 0 AND NOT pa.attisdropped)
    ORDER BY 1, 3;

    FOR rule_row IN
        SELECT cr.policy, cr.relid, cr.attnum, cr.kind, cr.expression, cr.label,
               pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)
               || '.' || pg_catalog.quote_ident(a.attname) AS object,
               pg_catalog.format_type(a.atttypid, a.atttypmod) AS column_type
        FROM veil_private.column_rules cr
        JOIN pg_catalog.pg_class c ON c.oid = cr.relid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_catalog.pg_attribute a ON a.attrelid = cr.relid AND a.attnum = cr.attnum AND NOT a.attisdropped
        WHERE cr.kind IN ('function', 'value')
          AND (coverage_problems.policies IS NULL OR cr.policy = ANY (coverage_problems.policies))
        ORDER BY cr.policy, 7
    LOOP
        BEGIN
            SELECT v.deparsed INTO checked
            FROM veil_private.validate_expression(rule_row.policy, rule_row.relid, rule_row.attnum, rule_row.kind,
                     veil_private.render_expression(rule_row.expression, rule_row.relid)) AS v;
            -- A constant is no column value: casting it now shows a VALUE
            -- that no longer fits a changed column type (a cast of a
            -- constant runs when a query is planned, not when a view is made).
            IF rule_row.kind = 'value' THEN
                EXECUTE pg_catalog.format('SELECT ((%s))::%s', checked, rule_row.column_type);
            END IF;
            PERFORM veil_private.check_json_mask_specs(rule_row.relid, rule_row.attnum, checked);
            PERFORM veil_private.check_unique_safe(rule_row.policy, rule_row.relid, rule_row.attnum, rule_row.kind, checked);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_text = MESSAGE_TEXT;
            policy := rule_row.policy;
            problem := 'stale rule';
            object := rule_row.object;
            IF err_text NOT LIKE 'pgveil: %' THEN
                err_text := pg_catalog.format('pgveil: rule rejected for %s: %s', rule_row.object, err_text);
            END IF;
            detail := err_text || pg_catalog.format('; set a rule that holds now with SELECT veil.security_label(%L, %L, %L, %L), or remove it (label NULL)',
                                                   rule_row.policy, 'COLUMN', rule_row.object, 'MASKED WITH FUNCTION veil.<function>(...)');
            RETURN NEXT;
        END;
    END LOOP;
END
$$;
COMMENT ON FUNCTION veil.coverage_problems(text[]) IS
    'Columns of covered tables without a rule, and rules that no longer validate, in the named policies (NULL: all); governors only.';
REVOKE ALL ON FUNCTION veil.coverage_problems(text[]) FROM PUBLIC;
