-- The rule compiler of sql/0006_rules/10_compile.sql, with one change: in a
-- view, a volatile rule whose type has no min() (json, jsonb: a
-- veil.jsonb_mask rule picks fakes at random) is also written as a lateral
-- join of one aggregated value, which PostgreSQL removes when a query does
-- not read the column, instead of staying in the select list, where it is
-- computed for every row read. Rules of other types compile as before.

-- One column of policy's output for target, reading the source row as
-- row_alias: the expression it is selected as, and the join (if any) that
-- the expression reads. A column without a rule compiles to itself: callers
-- decide whether it belongs in the output at all.
CREATE OR REPLACE FUNCTION veil_private.compile_rule(policy text, relid oid, attnum smallint, target text,
                                          row_alias text DEFAULT 'src',
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
    src text := pg_catalog.quote_ident(row_alias);
    alias text := 'veil_' || attnum;
    one_value text;
BEGIN
    IF target IS NULL OR target NOT IN ('view', 'copy', 'rewrite', 'export') THEN
        RAISE EXCEPTION 'pgveil: rules compile for view, copy, rewrite or export (got %)',
            coalesce(pg_catalog.quote_literal(target), 'NULL');
    END IF;
    SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) INTO column_name, column_type
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = relid AND a.attnum = compile_rule.attnum AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgveil: relation % has no column number %', relid, attnum;
    END IF;
    SELECT * INTO r FROM veil_private.column_rules c
    WHERE c.policy = compile_rule.policy AND c.relid = compile_rule.relid AND c.attnum = compile_rule.attnum;
    IF NOT FOUND OR r.kind = 'not_masked' THEN
        expression := src || '.' || pg_catalog.quote_ident(column_name);
        RETURN;
    END IF;
    rendered := veil_private.render_expression(r.expression, relid, row_alias);

    IF target <> 'view' AND veil_private.is_token_rule(r.expression) THEN
        rendered := veil_private.inline_token(veil_private.split_arguments(rendered));
    ELSIF r.kind = 'function' AND target <> 'copy' THEN
        SELECT d.* INTO dictionary FROM veil.dictionaries d
        WHERE rendered = pg_catalog.format('veil.fake_%s()', d.name);
        IF FOUND THEN
            -- "|| '[]'" makes the initplan's value an in-memory copy: rows
            -- then do not each detoast the array again.
            expression := pg_catalog.format(
                '(((SELECT i.items OPERATOR(pg_catalog.||) ''[]''::jsonb FROM veil_private.dictionary_items i WHERE i.name = %1$L))'
                ' OPERATOR(pg_catalog.->>) ((pg_catalog.hashtidextended(%5$s.ctid,'
                ' pg_catalog.timestamp_hash_extended(pg_catalog.statement_timestamp()::timestamp, %2$s))'
                ' & 2147483647) %% %3$s)::integer)::%4$s',
                dictionary.name, attnum, dictionary.size, column_type, src);
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
        IF target = 'view' AND veil_private.calls_volatile(rendered) THEN
            one_value := CASE
                WHEN pg_catalog.to_regprocedure(pg_catalog.format('pg_catalog.min(%s)', r.expression_type)) IS NOT NULL
                    THEN 'pg_catalog.min(v.value)'
                -- No min() (json, jsonb, bytea, ...): the first of the one
                -- value's array; arrays themselves all have min().
                WHEN (SELECT t.typcategory <> 'A' FROM pg_catalog.pg_type t
                      WHERE t.oid = pg_catalog.to_regtype(r.expression_type))
                    THEN '(pg_catalog.array_agg(v.value))[1]'
            END;
        END IF;
        IF one_value IS NOT NULL THEN
            -- The inner select makes the aggregate belong to the lateral
            -- query; the ctid reference makes an argument-less call run per row.
            join_clause := pg_catalog.format(
                'LEFT JOIN LATERAL (SELECT %4$s AS value FROM (SELECT %2$s AS value'
                ' WHERE %3$s.ctid IS NOT NULL) AS v) AS %1$I ON true',
                alias, rendered, src, one_value);
            expression := pg_catalog.format('(%I.value)::%s', alias, column_type);
            RETURN;
        END IF;
    END IF;
    IF target = 'copy' THEN
        expression := rendered;
    ELSE
        expression := pg_catalog.format('(%s)::%s', rendered, column_type);
    END IF;
END
$$;
