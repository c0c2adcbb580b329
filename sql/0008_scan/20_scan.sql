-- The scan's one pass over a table (pgveil/services/scan.py decides which
-- tables and columns, and what the counts mean).
--
-- It runs with the caller's rights (SECURITY INVOKER): a scan reads what its
-- role may read and nothing more, and a table it may not read fails alone.
-- It returns counts, never values.

-- The scalar leaves of a JSON document with their paths, in the path syntax
-- of veil.jsonb_mask ($.a.b, $."odd key", $.list[*]): array elements share
-- one path, so a path names a field of every element.
CREATE FUNCTION veil.json_leaves(document jsonb)
RETURNS TABLE (path text, value text)
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL keeps this query's plan for the session; an SQL function
    -- that cannot be inlined (it has a SET clause) would plan it per call.
    RETURN QUERY
    WITH RECURSIVE walk(step_path, node) AS (
        SELECT '$'::text, document
        UNION ALL
        SELECT w.step_path || e.step, e.node
        FROM walk w
        CROSS JOIN LATERAL (
            SELECT CASE WHEN o.key ~ '^[A-Za-z_][A-Za-z0-9_]*$' THEN '.' || o.key
                        ELSE '.' || pg_catalog.to_json(o.key)::text END AS step,
                   o.value AS node
            FROM pg_catalog.jsonb_each(CASE WHEN pg_catalog.jsonb_typeof(w.node) = 'object' THEN w.node END) AS o
            UNION ALL
            SELECT '[*]', a.value
            FROM pg_catalog.jsonb_array_elements(CASE WHEN pg_catalog.jsonb_typeof(w.node) = 'array' THEN w.node END) AS a
        ) AS e
    )
    SELECT w.step_path, w.node OPERATOR(pg_catalog.#>>) '{}'
    FROM walk w
    WHERE pg_catalog.jsonb_typeof(w.node) IN ('string', 'number');
END
$$;
COMMENT ON FUNCTION veil.json_leaves(jsonb) IS
    'The string and number leaves of a JSON document, each with its jsonb_mask path (array elements as [*]).';

-- One pass over relation: for each column (and each JSON path of a json or
-- jsonb column), how many values showed each combination of kinds (kinds
-- '{}' for none; the values looked at are the sum). columns is a JSON array of
--   {"name": column,
--    "regexes": [...], "constants": [...], "partial_constants": [...],
--    "functions": ["schema.function", ...]}
-- the last four optional: the user's own detectors (pg_anon's data_regex,
-- data_const and data_func, pgveil scan --check), reported as kinds
-- 'regex:<n>', 'constant', 'partial_constant' and 'function:<n>' (n counts
-- from 1 in the list given). A function is called as f(value text, schema
-- text, table text, column text) and must return boolean.
--
-- Each column is judged by its type: text by the classifier
-- (veil.pii_kinds_sql) and the installed name lists; bigint and numeric as
-- text from nine digits up (phone and card numbers kept as numbers); dates
-- and timestamps by their age alone; inet and cidr are IP addresses; json
-- and jsonb by their leaves (veil.json_leaves).
--
-- sample_rows NULL reads every row and counts every value; a number reads a
-- sample of about that many rows (TABLESAMPLE SYSTEM, so whole pages: cheap
-- on a big table) and counts each column's distinct values in it. condition
-- (pg_anon's data_sql_condition) is SQL the caller wrote, ANDed in as a
-- WHERE clause and run with the caller's rights.
CREATE FUNCTION veil.scan_table(relation regclass, columns jsonb, sample_rows integer DEFAULT 10000,
                                condition text DEFAULT NULL)
RETURNS TABLE (column_name text, path text, kinds text[], matches bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
-- Dates and timestamps become text in one format whatever the session's.
SET datestyle = 'ISO, YMD'
-- A sample's DISTINCT stays in memory rather than in a temporary file.
SET work_mem = '64MB'
-- The generated expression is large: compiling it costs a second and more,
-- which a scan of a small table would pay in full.
SET jit = off
AS $$
DECLARE
    c jsonb;
    n integer := 0;
    i integer;
    col_name text;
    col_type text;
    value_sql text;
    kinds_sql text;
    branches text[] := '{}';
    grouped text[] := '{}';
    grouped_columns integer[] := '{}';
    parts text[] := '{}';
    extra text[];
    item text;
    fn regprocedure;
    rel_kind "char";
    estimate real;
    source text;
    names text[] := '{}';
    nsp text;
    relname text;
    sampled boolean := sample_rows IS NOT NULL;
    -- One to four capitalized words, the first a first name or the last a
    -- last name of the installed dictionaries (hashed once per query).
    person_name text := $sql$(CASE WHEN (pg_catalog.ascii(@v@) BETWEEN 65 AND 90 OR pg_catalog.ascii(@v@) > 191)
            AND pg_catalog.length(@v@) <= 60
            AND @v@ ~ '^[[:upper:]][[:alpha:]''.-]+(?: [[:upper:]][[:alpha:]''.-]+){0,3}$'
            AND (pg_catalog.lower(pg_catalog.split_part(@v@, ' ', 1)) IN (
                     SELECT pg_catalog.lower(d.value) FROM veil.dictionary d WHERE d.name = 'first_name')
                 OR pg_catalog.lower(pg_catalog.regexp_replace(@v@, '^.* ', '')) IN (
                     SELECT pg_catalog.lower(d.value) FROM veil.dictionary d WHERE d.name = 'last_name'))
        THEN '{person_name}'::text[] ELSE '{}'::text[] END)$sql$;
BEGIN
    SELECT cl.relkind, cl.reltuples, ns.nspname, cl.relname INTO rel_kind, estimate, nsp, relname
    FROM pg_catalog.pg_class cl JOIN pg_catalog.pg_namespace ns ON ns.oid = cl.relnamespace
    WHERE cl.oid = relation;
    IF rel_kind IS NULL OR rel_kind NOT IN ('r', 'p', 'm', 'f') THEN
        RAISE EXCEPTION 'pgveil: % is not a table', relation;
    END IF;
    IF sample_rows IS NOT NULL AND sample_rows < 1 THEN
        RAISE EXCEPTION 'pgveil: the sample is at least one row (got %)', sample_rows;
    END IF;
    IF columns IS NULL OR pg_catalog.jsonb_typeof(columns) <> 'array' OR pg_catalog.jsonb_array_length(columns) = 0 THEN
        RAISE EXCEPTION 'pgveil: name the columns to scan as a non-empty JSON array';
    END IF;

    FOR c IN SELECT e FROM pg_catalog.jsonb_array_elements(columns) AS e LOOP
        n := n + 1;
        col_name := c OPERATOR(pg_catalog.->>) 'name';
        SELECT pg_catalog.format_type(a.atttypid, NULL) INTO col_type
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = relation AND a.attname = col_name AND a.attnum > 0 AND NOT a.attisdropped;
        IF col_name IS NULL OR col_type IS NULL THEN
            RAISE EXCEPTION 'pgveil: % has no column %', relation, coalesce(pg_catalog.quote_ident(col_name), 'NULL');
        END IF;
        names := names || col_name;
        value_sql := pg_catalog.format('(src.%I)::text', col_name);

        -- The user's own detectors, on the value as text.
        extra := '{}';
        i := 0;
        FOR item IN SELECT r FROM pg_catalog.jsonb_array_elements_text(coalesce(c OPERATOR(pg_catalog.->) 'regexes', '[]')) AS r LOOP
            i := i + 1;
            extra := extra || pg_catalog.format('CASE WHEN @v@ ~ %L THEN %L END', item, 'regex:' || i);
        END LOOP;
        IF pg_catalog.jsonb_array_length(coalesce(c OPERATOR(pg_catalog.->) 'constants', '[]')) > 0 THEN
            extra := extra || pg_catalog.format('CASE WHEN @v@ = ANY (%L::text[]) THEN ''constant'' END',
                ARRAY(SELECT pg_catalog.jsonb_array_elements_text(c OPERATOR(pg_catalog.->) 'constants')));
        END IF;
        IF pg_catalog.jsonb_array_length(coalesce(c OPERATOR(pg_catalog.->) 'partial_constants', '[]')) > 0 THEN
            extra := extra || pg_catalog.format(
                'CASE WHEN EXISTS (SELECT FROM pg_catalog.unnest(%L::text[]) AS p(part) WHERE pg_catalog.strpos(@v@, p.part) > 0)'
                ' THEN ''partial_constant'' END',
                ARRAY(SELECT pg_catalog.jsonb_array_elements_text(c OPERATOR(pg_catalog.->) 'partial_constants')));
        END IF;
        i := 0;
        FOR item IN SELECT f FROM pg_catalog.jsonb_array_elements_text(coalesce(c OPERATOR(pg_catalog.->) 'functions', '[]')) AS f LOOP
            i := i + 1;
            fn := pg_catalog.to_regprocedure(item || '(text, text, text, text)');
            IF fn IS NULL OR (SELECT p.prorettype FROM pg_catalog.pg_proc p WHERE p.oid = fn) <> 'pg_catalog.bool'::regtype THEN
                RAISE EXCEPTION 'pgveil: there is no function %(value text, schema text, table text, column text) returning boolean',
                    item;
            END IF;
            extra := extra || pg_catalog.format('CASE WHEN %s(@v@, %L, %L, %L) THEN %L END',
                                                fn::regproc, nsp, relname, col_name, 'function:' || i);
        END LOOP;

        IF col_type IN ('json', 'jsonb') THEN
            value_sql := 'l.value';
            kinds_sql := veil.pii_kinds_sql(value_sql);
        ELSIF col_type IN ('date', 'timestamp without time zone', 'timestamp with time zone') THEN
            kinds_sql := pg_catalog.format(
                'CASE WHEN (src.%I)::date BETWEEN CURRENT_DATE - 36525 AND CURRENT_DATE - 5844'
                ' THEN ''{birth_date?}''::text[] ELSE ''{}''::text[] END', col_name);
        ELSIF col_type IN ('inet', 'cidr') THEN
            kinds_sql := '''{ip_address}''::text[]';
        ELSIF col_type IN ('bigint', 'numeric') THEN
            kinds_sql := pg_catalog.format('CASE WHEN src.%I >= 100000000 THEN %s ELSE ''{}''::text[] END',
                                           col_name, veil.pii_kinds_sql(value_sql));
        ELSE
            kinds_sql := veil.pii_kinds_sql(value_sql) || ' || ' || pg_catalog.replace(person_name, '@v@', value_sql);
        END IF;
        IF pg_catalog.cardinality(extra) > 0 THEN
            kinds_sql := kinds_sql || pg_catalog.format(' || pg_catalog.array_remove(ARRAY[%s], NULL)',
                pg_catalog.replace(pg_catalog.array_to_string(extra, ', '), '@v@', value_sql));
        END IF;
        IF col_type IN ('json', 'jsonb') THEN
            branches := branches || pg_catalog.format(
                'SELECT %s, l.path, %s, %s FROM veil.json_leaves((src.%I)::jsonb) AS l',
                n, CASE WHEN sampled THEN 'l.value' ELSE 'NULL::text' END, kinds_sql, col_name);
        ELSIF NOT sampled AND pg_catalog.cardinality(grouped) < 90 THEN
            grouped := grouped || pg_catalog.format('CASE WHEN src.%I IS NOT NULL THEN %s END', col_name, kinds_sql);
            grouped_columns := grouped_columns || n;
        ELSE
            branches := branches || pg_catalog.format('SELECT %s, NULL::text, %s, %s WHERE src.%I IS NOT NULL',
                n, CASE WHEN sampled THEN value_sql ELSE 'NULL::text' END, kinds_sql, col_name);
        END IF;
    END LOOP;

    source := pg_catalog.format('SELECT %s FROM %s%s',
        (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(x), ', ') FROM pg_catalog.unnest(names) AS x),
        CASE WHEN rel_kind = 'r' THEN 'ONLY ' ELSE '' END, relation);
    IF sampled AND estimate > 2.0 * sample_rows AND rel_kind IN ('r', 'p', 'm') THEN
        source := source || pg_catalog.format(' TABLESAMPLE SYSTEM (%s)',
            GREATEST(0.001, LEAST(100, 100.0 * 2 * sample_rows / estimate))::numeric(10, 3));
    END IF;
    IF condition IS NOT NULL AND pg_catalog.btrim(condition) <> '' THEN
        source := source || ' WHERE (' || pg_catalog.regexp_replace(condition, '^\s*where\s', '', 'i') || E'\n)';
    END IF;
    IF sampled THEN
        source := source || pg_catalog.format(' LIMIT %s', sample_rows);
    END IF;

    -- A sample counts each column's distinct values; a full scan every value.
    -- A full scan groups each row by its columns' kinds at once, one hash
    -- lookup per row (the combinations are few), then counts per column; JSON
    -- leaves, and columns past the 90th, go through one row per value.
    IF pg_catalog.cardinality(grouped) > 0 THEN
        parts := parts || pg_catalog.format(
            'SELECT ($1::text[])[($2::integer[])[x.i]], NULL::text,'
            '       ARRAY(SELECT pg_catalog.jsonb_array_elements_text(x.k)), pg_catalog.sum(g.veil_count)::bigint'
            ' FROM (SELECT %1$s, pg_catalog.count(*) AS veil_count FROM (SELECT %2$s FROM (%3$s) AS src) AS s GROUP BY %1$s) AS g'
            ' CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(pg_catalog.jsonb_build_array(%1$s)) WITH ORDINALITY AS x(k, i)'
            ' WHERE x.k OPERATOR(pg_catalog.<>) ''null''::jsonb'
            ' GROUP BY x.i, x.k',
            (SELECT pg_catalog.string_agg('k' || g.nr, ', ' ORDER BY g.nr)
             FROM pg_catalog.generate_series(1, pg_catalog.cardinality(grouped)) AS g(nr)),
            (SELECT pg_catalog.string_agg(t.e || ' AS k' || t.nr, ', ' ORDER BY t.nr)
             FROM pg_catalog.unnest(grouped) WITH ORDINALITY AS t(e, nr)),
            source);
    END IF;
    IF pg_catalog.cardinality(branches) > 0 THEN
        parts := parts || pg_catalog.format(
            'SELECT ($1::text[])[u.col], u.path, u.kinds, pg_catalog.count(*)'
            ' FROM (SELECT %s u.col, u.path, u.v, u.kinds FROM (%s) AS src'
            '       CROSS JOIN LATERAL (%s) AS u(col, path, v, kinds)) AS u'
            ' GROUP BY 1, 2, 3',
            CASE WHEN sampled THEN 'DISTINCT' ELSE '' END,
            source,
            pg_catalog.array_to_string(branches, ' UNION ALL '));
    END IF;
    RETURN QUERY EXECUTE pg_catalog.array_to_string(parts, ' UNION ALL ') USING names, grouped_columns;
END
$$;
COMMENT ON FUNCTION veil.scan_table(regclass, jsonb, integer, text) IS
    'Counts, per column and JSON path, the values showing each combination of PII kinds; never returns a value.';

GRANT EXECUTE ON FUNCTION veil.json_leaves(jsonb), veil.scan_table(regclass, jsonb, integer, text) TO PUBLIC;
