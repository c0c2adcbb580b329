-- Rules compiled into the SQL of a mask view.
--
-- A query through a mask view must not pay for masked columns it does not
-- read. PostgreSQL drops an unused output column of a view (even a
-- security_barrier one) unless it is volatile, and removes an unused LEFT
-- JOIN to a relation that returns at most one row per outer row. So:
--   * fake_*() picks from its dictionary as one jsonb array, read once per
--     query (an initplan), at a position drawn from a hash of the row's ctid
--     and the statement's timestamp: a STABLE pick, different per row and per
--     statement, costing an array access instead of a function call and a
--     query per row. (A join to the dictionary table would be as fast, but a
--     removed join still keeps its columns in the scan, which rules out
--     index-only scans.)
--   * partial() and partial_email() of a column are written out inline, the
--     same SQL as the functions without a call per row;
--   * any other volatile rule (noise, random_*) is a LEFT JOIN LATERAL to an
--     aggregate (min) of one row, which the planner removes when it is
--     unused; a type without min() stays in the select list;
--   * everything else stays in the view's select list.

-- Whether an expression calls a volatile function. Any function of a name it
-- calls counts (overloads are not resolved): a wrong "yes" costs a little
-- speed, a wrong "no" only that PostgreSQL evaluates the column regardless.
CREATE FUNCTION veil_private.calls_volatile(expression text)
RETURNS boolean
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT FROM pg_catalog.regexp_matches(expression,
                   '(?:([a-z_][a-z0-9_$]*|"(?:[^"]|"")+")\.)?([a-z_][a-z0-9_$]*|"(?:[^"]|"")+")\(', 'g') AS m
        JOIN pg_catalog.pg_proc p
          ON p.proname = CASE WHEN m[2] LIKE '"%' THEN pg_catalog.replace(pg_catalog.btrim(m[2], '"'), '""', '"')
                              ELSE m[2] END
         AND p.pronamespace = coalesce(pg_catalog.to_regnamespace(m[1]), 'pg_catalog'::regnamespace)
        WHERE p.provolatile = 'v')
$$;

-- partial(a, prefix, padding, suffix) written out; must equal veil.partial().
CREATE FUNCTION veil_private.inline_partial(a text, prefix text, padding text, suffix text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.format(
        '(pg_catalog.substr(%1$s, 1, %2$s) || %3$s || pg_catalog.substr(%1$s, pg_catalog.length(%1$s) - %4$s + 1, %4$s))',
        a, prefix, padding, suffix)
$$;

-- partial_email(a) written out; must equal veil.partial_email(). The part
-- after the last '@' is split_part(a, '@', -1).
CREATE FUNCTION veil_private.inline_partial_email(a text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.format(
        '(pg_catalog.left(pg_catalog.split_part(%1$s, ''@'', 1), 2) || ''******@'' || CASE'
        ' WHEN pg_catalog.strpos(%1$s, ''@'') = 0 THEN ''******.'''
        ' WHEN pg_catalog.strpos(pg_catalog.split_part(%1$s, ''@'', -1), ''.'') = 0'
        ' THEN pg_catalog.left(pg_catalog.split_part(%1$s, ''@'', -1), 2) || ''******.'''
        ' ELSE pg_catalog.left(pg_catalog.split_part(%1$s, ''@'', -1), 2) || ''******.'''
        ' || pg_catalog.split_part(pg_catalog.split_part(%1$s, ''@'', -1), ''.'', -1) END)',
        a)
$$;

-- One column of a mask view: the expression it is selected as, and the join
-- (if any) that the expression reads. Columns are read from the source as src.
CREATE FUNCTION veil_private.mask_column(policy text, relid oid, attnum smallint,
                                         OUT expression text, OUT join_clause text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r veil_private.column_rules;
    column_name name;
    column_type text;
    rendered text;
    args text[];
    dictionary veil.dictionaries;
    alias text := 'veil_' || attnum;
BEGIN
    SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) INTO column_name, column_type
    FROM pg_catalog.pg_attribute a WHERE a.attrelid = relid AND a.attnum = mask_column.attnum;
    SELECT * INTO r FROM veil_private.column_rules c
    WHERE c.policy = mask_column.policy AND c.relid = mask_column.relid AND c.attnum = mask_column.attnum;
    IF NOT FOUND OR r.kind = 'not_masked' THEN
        -- A plain column reference: unlabeled columns get here only when the
        -- policy passes them through.
        expression := 'src.' || pg_catalog.quote_ident(column_name);
        RETURN;
    END IF;
    rendered := veil_private.render_expression(r.expression, relid, 'src');

    IF r.kind = 'function' THEN
        SELECT d.* INTO dictionary FROM veil.dictionaries d
        WHERE rendered = pg_catalog.format('veil.fake_%s()', d.name);
        IF FOUND THEN
            -- "|| '[]'" makes the initplan's value an in-memory copy: rows
            -- then do not each detoast the array again.
            expression := pg_catalog.format(
                '(((SELECT i.items OPERATOR(pg_catalog.||) ''[]''::jsonb FROM veil_private.dictionary_items i WHERE i.name = %1$L))'
                ' OPERATOR(pg_catalog.->>) ((pg_catalog.hashtidextended(src.ctid,'
                ' pg_catalog.timestamp_hash_extended(pg_catalog.statement_timestamp()::timestamp, %2$s))'
                ' & 2147483647) %% %3$s)::integer)::%4$s',
                dictionary.name, attnum, dictionary.size, column_type);
            RETURN;
        END IF;
        -- Inline forms need plain arguments: each is evaluated more than once.
        args := veil_private.split_arguments(rendered);
        IF rendered ~ '^veil\.partial_email\(' AND pg_catalog.cardinality(args) = 1
           AND args[1] !~ '\(' THEN
            expression := pg_catalog.format('(%s)::%s', veil_private.inline_partial_email(args[1]), column_type);
            RETURN;
        END IF;
        IF rendered ~ '^veil\.partial\(' AND pg_catalog.cardinality(args) = 4
           AND pg_catalog.array_to_string(args, ',') !~ '\(' THEN
            expression := pg_catalog.format('(%s)::%s',
                veil_private.inline_partial(args[1], args[2], args[3], args[4]), column_type);
            RETURN;
        END IF;
        IF veil_private.calls_volatile(rendered)
           AND pg_catalog.to_regprocedure(pg_catalog.format('pg_catalog.min(%s)', r.expression_type)) IS NOT NULL THEN
            -- The inner select makes the aggregate belong to the lateral
            -- query; the ctid reference makes an argument-less call run per row.
            join_clause := pg_catalog.format(
                'LEFT JOIN LATERAL (SELECT pg_catalog.min(v.value) AS value FROM (SELECT %2$s AS value'
                ' WHERE src.ctid IS NOT NULL) AS v) AS %1$I ON true',
                alias, rendered);
            expression := pg_catalog.format('(%I.value)::%s', alias, column_type);
            RETURN;
        END IF;
    END IF;
    expression := pg_catalog.format('(%s)::%s', rendered, column_type);
END
$$;

REVOKE ALL ON FUNCTION veil_private.calls_volatile(text),
    veil_private.inline_partial(text, text, text, text), veil_private.inline_partial_email(text),
    veil_private.mask_column(text, oid, smallint) FROM PUBLIC;
