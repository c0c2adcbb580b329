-- The preview of a policy: a page of a table's rows, in primary-key order,
-- each column's original value beside what the policy delivers for it.
--
-- It shows raw values, so only governors (the toolkit owner, its members and
-- superusers) may run it: veil.require_governor() refuses everyone else, and
-- EXECUTE is not granted to PUBLIC either. It runs with the caller's rights
-- (SECURITY INVOKER): a governor who cannot read the table is told so by
-- PostgreSQL, and the preview reads nothing the caller could not read.
--
-- The masked value is the policy's compiled rule (veil_private.compile_rule,
-- target 'copy', the same SQL a generated statement runs), evaluated over the
-- page of rows as src; a token rule has the current key joined once
-- (veil_private.key_join()), as in veil_private.compiled_select. Static
-- policies take a column's rule as a rewrite does (veil_private.static_rule:
-- an inheritance child inherits its parent's rule for an inherited column).
--
-- A column without a rule shows what the policy delivers for it, said in
-- rule between parentheses:
--   views and copy policies: '(no rule: passed through)' with the original
--     value when the policy passes unlabeled columns through, otherwise
--     '(no rule: withheld)' with masked NULL (the column is not in the
--     mask view or the sanitized copy at all);
--   static policies (option uncovered): 'keep' '(no rule: kept)' with the
--     original, 'null' '(no rule: set to NULL)', 'refuse' '(no rule:
--     anonymize refuses the table)' with masked NULL;
--   a generated column under a static policy is not written by a rewrite but
--     recomputed from the rewritten row: '(generated: recomputed)', masked NULL.
--
-- A table without a primary key is refused: "primary-key order" is the
-- promise that makes --offset pages stable, and no other order is.
CREATE FUNCTION veil.preview(policy text, relation regclass, row_limit integer DEFAULT 10,
                             row_offset bigint DEFAULT 0)
RETURNS TABLE (row_number bigint, column_name name, rule text, original text, masked text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- Records, not veil_private's row types: a function whose declarations
    -- name them does not even compile for a role without USAGE on
    -- veil_private, which would then never be told why it is refused.
    p record;
    rel pg_catalog.pg_class;
    key_columns text;
    inner_key_columns text;
    names name[] := '{}';
    labels text[] := '{}';
    originals text[] := '{}';
    maskeds text[] := '{}';
    joins text := '';
    needs_key boolean := false;
    col record;
    r record;
    has_rule boolean;
    compiled record;
    query text;
BEGIN
    PERFORM veil.require_governor();
    IF policy IS NULL OR relation IS NULL THEN
        RAISE EXCEPTION 'pgveil: preview needs a policy and a table';
    END IF;
    SELECT * INTO p FROM veil_private.policies WHERE name = preview.policy;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgveil: there is no policy %', pg_catalog.quote_literal(policy)
            USING HINT = 'SELECT policy FROM veil.policies lists them.';
    END IF;
    SELECT * INTO rel FROM pg_catalog.pg_class WHERE oid = relation;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgveil: relation % does not exist', relation::oid;
    END IF;
    IF rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'pgveil: % is %, not a table: preview shows the rows of a table', relation,
            CASE rel.relkind WHEN 'v' THEN 'a view' WHEN 'm' THEN 'a materialized view' WHEN 'f' THEN 'a foreign table'
                             WHEN 'S' THEN 'a sequence' WHEN 'i' THEN 'an index' WHEN 'I' THEN 'an index'
                             WHEN 'c' THEN 'a composite type' WHEN 't' THEN 'a TOAST table' ELSE 'another kind of relation' END;
    END IF;
    IF row_limit IS NULL OR row_limit < 1 OR row_limit > 1000 THEN
        RAISE EXCEPTION 'pgveil: row_limit is 1 to 1000 rows (got %)', coalesce(row_limit::text, 'NULL');
    END IF;
    IF row_offset IS NULL OR row_offset < 0 THEN
        RAISE EXCEPTION 'pgveil: row_offset is 0 or more (got %)', coalesce(row_offset::text, 'NULL');
    END IF;

    SELECT pg_catalog.string_agg(pg_catalog.format('src.%I', a.attname), ', ' ORDER BY k.position),
           pg_catalog.string_agg(pg_catalog.format('t.%I', a.attname), ', ' ORDER BY k.position)
    INTO key_columns, inner_key_columns
    FROM pg_catalog.pg_index i
    CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::smallint[]) WITH ORDINALITY AS k(attnum, position)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = relation AND i.indisprimary;
    IF key_columns IS NULL THEN
        RAISE EXCEPTION 'pgveil: % has no primary key: preview shows rows in primary-key order', relation
            USING HINT = 'Add a primary key, or query the table and veil.rules by hand.';
    END IF;

    FOR col IN
        SELECT a.attnum, a.attname, a.attgenerated
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = relation AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
    LOOP
        IF p.delivery = 'static' THEN
            SELECT * INTO r FROM veil_private.static_rule(p.name, relation, col.attnum) AS s
            WHERE s.policy IS NOT NULL;
        ELSE
            SELECT * INTO r FROM veil_private.column_rules c
            WHERE c.policy = p.name AND c.relid = relation AND c.attnum = col.attnum;
        END IF;
        has_rule := FOUND;
        names := names || col.attname;
        originals := originals || pg_catalog.format('src.%I::text', col.attname);
        IF p.delivery = 'static' AND col.attgenerated <> '' THEN
            labels := labels || '(generated: recomputed)'::text;
            maskeds := maskeds || 'NULL::text'::text;
        ELSIF NOT has_rule THEN
            IF (p.delivery <> 'static' AND p.pass_through_unlabeled) OR (p.delivery = 'static' AND p.uncovered = 'keep') THEN
                labels := labels || CASE WHEN p.delivery = 'static' THEN '(no rule: kept)' ELSE '(no rule: passed through)' END;
                maskeds := maskeds || pg_catalog.format('src.%I::text', col.attname);
            ELSE
                labels := labels || CASE WHEN p.delivery <> 'static' THEN '(no rule: withheld)'
                                         WHEN p.uncovered = 'null' THEN '(no rule: set to NULL)'
                                         ELSE '(no rule: anonymize refuses the table)' END;
                maskeds := maskeds || 'NULL::text'::text;
            END IF;
        ELSE
            -- An inherited rule is compiled as its parent's column: the same
            -- names, read from this table's rows.
            compiled := veil_private.compile_rule(p.name, r.relid, r.attnum, 'copy', 'src');
            labels := labels || r.label;
            maskeds := maskeds || pg_catalog.format('(%s)::text', compiled.expression);
            IF compiled.join_clause IS NOT NULL THEN
                joins := joins || ' ' || compiled.join_clause;
            END IF;
            needs_key := needs_key OR (r.kind = 'function' AND veil_private.is_token_rule(r.expression));
        END IF;
    END LOOP;

    -- $1 limit, $2 offset, $3 names, $4 labels: bound, never written into the text.
    query := pg_catalog.format(
        'SELECT q.veil_row, c.name, c.label, q.veil_original[c.i], q.veil_masked[c.i]'
        ' FROM (SELECT $2 + pg_catalog.row_number() OVER (ORDER BY %1$s) AS veil_row,'
        ' ARRAY[%2$s] AS veil_original, ARRAY[%3$s] AS veil_masked'
        ' FROM (SELECT * FROM %4$s%5$s AS t ORDER BY %6$s LIMIT $1 OFFSET $2) AS src%7$s%8$s) AS q'
        ' CROSS JOIN ROWS FROM (pg_catalog.unnest($3::name[]), pg_catalog.unnest($4::text[])) WITH ORDINALITY AS c(name, label, i)'
        ' ORDER BY q.veil_row, c.i',
        key_columns,
        pg_catalog.array_to_string(originals, ', '),
        pg_catalog.array_to_string(maskeds, ', '),
        CASE WHEN rel.relkind = 'p' THEN '' ELSE 'ONLY ' END,
        relation,
        inner_key_columns,
        CASE WHEN needs_key THEN ', ' || veil_private.key_join() ELSE '' END,
        joins);
    BEGIN
        RETURN QUERY EXECUTE query USING row_limit, row_offset, names, labels;
    EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
        -- PostgreSQL's message may quote the value a rule failed on.
        RAISE EXCEPTION 'pgveil: a rule of policy % failed on a row of % (SQLSTATE %); its message is withheld because it may quote a raw value',
            policy, relation, SQLSTATE
            USING ERRCODE = SQLSTATE, HINT = 'Narrow it down with --limit and --offset, and check the rules with SELECT * FROM veil.rules.';
    END;
END
$$;
COMMENT ON FUNCTION veil.preview(text, regclass, integer, bigint) IS
    'A page of a table''s rows in primary-key order, each column''s original value beside what the policy delivers (governors only: it shows raw values).';
REVOKE ALL ON FUNCTION veil.preview(text, regclass, integer, bigint) FROM PUBLIC;
