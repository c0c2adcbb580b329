-- Re-identification risk (pgveil report k-anonymity): how many rows share
-- each combination of quasi-identifier values, and how varied a sensitive
-- column is within each combination. Counts only, never a value.
--
-- An equivalence class is the set of rows with the same values in the
-- quasi-identifier columns (NULLs alike, as GROUP BY takes them). k is the
-- size of the smallest class: any row is indistinguishable from at least
-- k - 1 others by those columns. l-diversity is the smallest number of
-- distinct values of the sensitive column within a class (NULL counting as
-- one value): with l = 1, knowing someone's class tells their sensitive value.
--
-- It runs with the caller's rights (SECURITY INVOKER): it reads whole
-- tables, so it reads only what its caller may read, and PostgreSQL's own
-- checks (table and column privileges, row level security) apply. A table,
-- a view (a mask view is the masked output as its readers see it) or a
-- sanitized copy is measured as it is. With a policy, the table's output
-- under that policy (veil_private.compiled_select, target 'export': what a
-- dump or a sync writes) is measured instead, so generalizing and masking
-- rules count. That reads veil_private (the key joined for tokens,
-- dictionaries), so it is for governors only. A SECURITY DEFINER variant
-- would let anyone measure tables they may not read: class sizes over a
-- chosen set of columns are an oracle for who is in a table.
--
-- One set-based pass: the rows are grouped by the quasi-identifiers (and
-- the sensitive column, then again without it, which hashes where a
-- count(DISTINCT) would sort each class), the classes are grouped by
-- (size, diversity) into a histogram of at most a few thousand rows, and
-- every figure is read from that histogram.
CREATE FUNCTION veil.k_anonymity(source regclass, quasi_identifiers text[], threshold integer DEFAULT 5,
                                 sensitive text DEFAULT NULL, policy text DEFAULT NULL,
                                 OUT k bigint, OUT total_rows bigint, OUT classes bigint,
                                 OUT classes_below_threshold bigint, OUT rows_below_threshold bigint,
                                 OUT share_below_threshold numeric, OUT smallest_classes bigint[],
                                 OUT l_diversity bigint, OUT classes_not_diverse bigint)
RETURNS record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
-- The histogram's estimates are wild (the classes are unknown until counted):
-- the cost passes the JIT threshold, and compiling took 0.9 s of a 1 s query.
SET jit = off
-- Hash the classes of a few million rows in memory rather than spill to disk.
SET work_mem = '64MB'
AS $$
DECLARE
    kind "char";
    relation text;
    named text[];
    missing text;
    column_name text;
    grouped text;
    aliases text;
    classes_query text;
BEGIN
    IF source IS NULL THEN
        RAISE EXCEPTION 'pgveil: k_anonymity needs a table (got NULL)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF quasi_identifiers IS NULL OR pg_catalog.cardinality(quasi_identifiers) = 0
       OR pg_catalog.array_position(quasi_identifiers, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'pgveil: name at least one quasi-identifier column (and no NULL among them)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF threshold IS NULL OR threshold < 1 THEN
        RAISE EXCEPTION 'pgveil: the threshold is a class size of at least 1 (got %)', coalesce(threshold::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF sensitive = ANY (quasi_identifiers) THEN
        RAISE EXCEPTION 'pgveil: the sensitive column % is also a quasi-identifier: every class would have l = 1',
            pg_catalog.quote_ident(sensitive) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.relkind INTO kind FROM pg_catalog.pg_class c WHERE c.oid = source;
    IF kind IS NULL OR kind NOT IN ('r', 'p', 'v', 'm', 'f') THEN
        RAISE EXCEPTION 'pgveil: % is not a table or a view', source USING ERRCODE = 'wrong_object_type';
    END IF;
    named := quasi_identifiers || CASE WHEN sensitive IS NULL THEN '{}'::text[] ELSE ARRAY[sensitive] END;
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(n.name), ', ' ORDER BY n.position) INTO missing
    FROM pg_catalog.unnest(named) WITH ORDINALITY AS n(name, position)
    WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid = source AND a.attname = n.name AND a.attnum > 0 AND NOT a.attisdropped);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'pgveil: % has no column %', source, missing USING ERRCODE = 'undefined_column';
    END IF;

    IF policy IS NULL THEN
        relation := source::text;
    ELSE
        BEGIN
            PERFORM veil.require_governor();
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'pgveil: only the toolkit owner or a superuser may measure a policy''s output'
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Measure a table or view you can read instead, e.g. the mask view or the sanitized copy.';
        END;
        IF NOT EXISTS (SELECT FROM veil_private.policies p WHERE p.name = policy) THEN
            RAISE EXCEPTION 'pgveil: there is no policy %', pg_catalog.quote_literal(policy)
                USING ERRCODE = 'undefined_object', HINT = 'The policies are listed in veil.policies.';
        END IF;
        IF kind NOT IN ('r', 'p') THEN
            RAISE EXCEPTION 'pgveil: a policy''s rules apply to tables: % is not one', source
                USING ERRCODE = 'wrong_object_type';
        END IF;
        relation := '(' || veil_private.compiled_select(policy, source, 'export') || ') AS masked';
        -- Which columns the output has is the compiler's to say (rules, pass-through):
        -- each named column is looked up in the compiled query itself, with LIMIT 0
        -- (no row is read).
        FOREACH column_name IN ARRAY named LOOP
            BEGIN
                EXECUTE pg_catalog.format('SELECT %I FROM %s LIMIT 0', column_name, relation);
            EXCEPTION WHEN undefined_column THEN
                RAISE EXCEPTION 'pgveil: policy % leaves column % of % out of its output (it has no rule there)',
                    policy, pg_catalog.quote_ident(column_name), source
                    USING ERRCODE = 'undefined_column';
            END;
        END LOOP;
    END IF;

    SELECT pg_catalog.string_agg(pg_catalog.format('%I', q), ', ' ORDER BY i),
           pg_catalog.string_agg(pg_catalog.format('q%s', i), ', ' ORDER BY i)
    INTO grouped, aliases
    FROM pg_catalog.unnest(quasi_identifiers) WITH ORDINALITY AS u(q, i);
    IF sensitive IS NULL THEN
        classes_query := pg_catalog.format(
            'SELECT pg_catalog.count(*), NULL::bigint FROM %s GROUP BY %s', relation, grouped);
    ELSE
        -- Aliases q1, q2, ...: a quasi-identifier named like the count cannot clash.
        classes_query := pg_catalog.format(
            'SELECT pg_catalog.sum(v.n)::bigint, pg_catalog.count(*) FROM'
            ' (SELECT %1$s, pg_catalog.count(*) FROM %2$s GROUP BY %1$s, %3$I) AS v(%4$s, n)'
            ' GROUP BY %4$s',
            grouped, relation, sensitive, aliases);
    END IF;
    -- A rule or a cast failing on a row may quote the row's value in its message:
    -- data errors are reported by SQLSTATE alone.
    BEGIN
        EXECUTE pg_catalog.format(
            'WITH histogram AS ('
            '  SELECT c.size, c.diversity, pg_catalog.count(*) AS classes'
            '  FROM (%s) AS c(size, diversity) GROUP BY c.size, c.diversity)'
            ' SELECT pg_catalog.min(h.size),'
            '        coalesce(pg_catalog.sum(h.size * h.classes), 0)::bigint,'
            '        coalesce(pg_catalog.sum(h.classes), 0)::bigint,'
            '        coalesce(pg_catalog.sum(h.classes) FILTER (WHERE h.size < $1), 0)::bigint,'
            '        coalesce(pg_catalog.sum(h.size * h.classes) FILTER (WHERE h.size < $1), 0)::bigint,'
            '        pg_catalog.trim_scale(coalesce(pg_catalog.sum(h.size * h.classes) FILTER (WHERE h.size < $1)'
            '                 / NULLIF(pg_catalog.sum(h.size * h.classes), 0), 0)),'
            '        ARRAY(SELECT s.size FROM histogram AS s'
            '              CROSS JOIN pg_catalog.generate_series(1, LEAST(s.classes, 10))'
            '              ORDER BY s.size LIMIT 10),'
            '        pg_catalog.min(h.diversity),'
            '        coalesce(pg_catalog.sum(h.classes) FILTER (WHERE h.diversity < 2), 0)::bigint'
            ' FROM histogram AS h',
            classes_query)
        INTO k, total_rows, classes, classes_below_threshold, rows_below_threshold, share_below_threshold,
             smallest_classes, l_diversity, classes_not_diverse
        USING threshold;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'pgveil: measuring % failed on a row (SQLSTATE %); the message is withheld: it may quote a value',
            source, SQLSTATE
            USING ERRCODE = SQLSTATE;
    END;
    IF sensitive IS NULL THEN
        classes_not_diverse := NULL;
    END IF;
END
$$;
COMMENT ON FUNCTION veil.k_anonymity(regclass, text[], integer, text, text) IS
    'k-anonymity over quasi-identifier columns (and l-diversity of a sensitive column) of a table, view or policy output; counts only, never values.';

-- Anyone may measure what they may read (SECURITY INVOKER); the policy
-- variant checks for a governor itself.
GRANT EXECUTE ON FUNCTION veil.k_anonymity(regclass, text[], integer, text, text) TO PUBLIC;
