-- The rule compiler: a policy's rules for a table turned into the SQL that
-- each delivery runs. Masking, streaming, static anonymization and export all
-- compile here, so a rule means the same wherever it is delivered.
--
-- veil_private.compile_rule(policy, relid, attnum, target) gives one column:
--   view     a column of a mask view (built by sql/0004_mask/30_views.sql
--            from sql/0006_rules/20_mask_view.sql's query);
--   copy     a column of a sanitized copy, inside a generated stream trigger
--            or backfill statement (sql/0006_rules/30_stream_trigger.sql);
--   rewrite  a column of a table rewritten in place (static anonymization);
--   export   a column of an export's SELECT (dumps and sync).
-- veil_private.compiled_select(policy, source, target) gives a whole table.
--
-- Rules are written out rather than called per row where that matters:
--   * veil.token(v, p) in a generated statement (every target but view)
--     becomes the HMAC expression itself, with the current key and its token
--     prefix read once per statement (veil_private.key_join(), joined as
--     veil_key). In a view it stays a call: views policies use keyed
--     functions only by explicit opt-in, and a view has no statement to join
--     the key into.
--   * A query must not pay for masked columns it does not read. PostgreSQL
--     drops an unused output column of a view unless it is volatile, and
--     removes an unused LEFT JOIN to a relation of at most one row per outer
--     row. So, everywhere but in copies (whose source rows are transition
--     tables, without ctid):
--       - fake_*() picks from its dictionary as one jsonb array, read once per
--         query (an initplan), at a position drawn from a hash of the row's
--         ctid and the statement's timestamp: a STABLE pick, different per
--         row and per statement, costing an array access instead of a
--         function call and a query per row. (A join to the dictionary table
--         would be as fast, but a removed join still keeps its columns in the
--         scan, which rules out index-only scans.)
--       - partial() and partial_email() of a column are written out inline,
--         the same SQL as the functions without a call per row;
--     and in views, any other volatile rule (noise, random_*) is a LEFT JOIN
--     LATERAL to an aggregate (min) of one row, which the planner removes when
--     it is unused; a type without min() stays in the select list.
--   * Everything else is its expression as PostgreSQL deparsed it, cast to
--     the column's type except in copies (a copy column has the rule's type).
--
-- The helpers below were installed by earlier revisions; they are restated
-- here unchanged so that the whole compiler reads in one file.

-- The top-level arguments of "f(a, b, ...)" as deparsed by PostgreSQL.
CREATE OR REPLACE FUNCTION veil_private.split_arguments(call text)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    args text[] := '{}';
    depth integer := 0;
    quote text;
    start integer;
    ch text;
BEGIN
    start := pg_catalog.strpos(call, '(') + 1;
    FOR i IN start .. pg_catalog.length(call) - 1 LOOP
        ch := pg_catalog.substr(call, i, 1);
        IF quote IS NOT NULL THEN
            IF ch = quote THEN quote := NULL; END IF;  -- a doubled quote reopens at once
        ELSIF ch IN ('''', '"') THEN
            quote := ch;
        ELSIF ch = '(' THEN
            depth := depth + 1;
        ELSIF ch = ')' THEN
            depth := depth - 1;
        ELSIF ch = ',' AND depth = 0 THEN
            args := args || pg_catalog.btrim(pg_catalog.substr(call, start, i - start));
            start := i + 1;
        END IF;
    END LOOP;
    RETURN args || pg_catalog.btrim(pg_catalog.substr(call, start, pg_catalog.length(call) - start));
END
$$;

-- A rule that is one veil.token(...) call: the only function rule a copy's
-- key may have, and the one compiled inline.
CREATE OR REPLACE FUNCTION veil_private.is_token_rule(expression text)
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT expression ~ '^veil\.token\(.*\)$' $$;

-- Whether an expression calls a volatile function. Any function of a name it
-- calls counts (overloads are not resolved): a wrong "yes" costs a little
-- speed, a wrong "no" only that PostgreSQL evaluates the column regardless.
CREATE OR REPLACE FUNCTION veil_private.calls_volatile(expression text)
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
CREATE OR REPLACE FUNCTION veil_private.inline_partial(a text, prefix text, padding text, suffix text)
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
CREATE OR REPLACE FUNCTION veil_private.inline_partial_email(a text)
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

-- The current key, read once per generated statement, with its token prefix
-- ('v<version>:') made once rather than per token and as the HMAC key (its
-- hex text, see 20_tokens.sql). LIMIT 1 tells the planner it is one row: the
-- never-analyzed keys table is otherwise taken for hundreds, which inflates
-- costs past the JIT threshold.
CREATE OR REPLACE FUNCTION veil_private.key_join()
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '(SELECT ''v'' || k.version || '':'' AS prefix, pg_catalog.encode(k.key, ''hex'') AS hmac_key'
             ' FROM veil_private.keys k WHERE k.is_current LIMIT 1) AS veil_key' $$;

-- veil.token(value, purpose) written out, from the call's arguments as
-- deparsed. Must equal veil_private.hmac_token(); tests hold them together.
-- In a UTF8 database the text is its UTF-8 bytes already, and hmac() takes it
-- and the hex key as they are; elsewhere both are converted. (Compiled for
-- this database's encoding: the one form correct in every encoding converts
-- each token, about 5% of a bulk insert.) Tokens collate "C", their byte
-- order: sorts and indexes then compare them by memcmp and abbreviated keys
-- rather than strcoll.
CREATE FUNCTION veil_private.inline_token(args text[])
RETURNS text
LANGUAGE plpgsql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    message text;
    mac text;
BEGIN
    IF pg_catalog.cardinality(args) = 1 THEN
        args := args || '''''::text'::text;
    END IF;
    message := pg_catalog.format('pg_catalog.length(%2$s) || '':'' || %2$s || %1$s', args[1], args[2]);
    IF pg_catalog.getdatabaseencoding() = 'UTF8' THEN
        mac := pg_catalog.format('@pgcrypto@.hmac(%s, veil_key.hmac_key, ''sha256'')', message);
    ELSE
        mac := pg_catalog.format('@pgcrypto@.hmac(pg_catalog.convert_to(%s, ''UTF8''),'
                                 ' pg_catalog.convert_to(veil_key.hmac_key, ''UTF8''), ''sha256'')', message);
    END IF;
    RETURN pg_catalog.format(
        '((veil_key.prefix || pg_catalog.split_part(pg_catalog.encode(%s, ''base64''), ''='', 1))'
        ' COLLATE pg_catalog."C")', mac);
END
$$;

-- One column of policy's output for target, reading the source row as
-- row_alias: the expression it is selected as, and the join (if any) that
-- the expression reads. A column without a rule compiles to itself: callers
-- decide whether it belongs in the output at all.
CREATE FUNCTION veil_private.compile_rule(policy text, relid oid, attnum smallint, target text,
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
        IF target = 'view' AND veil_private.calls_volatile(rendered)
           AND pg_catalog.to_regprocedure(pg_catalog.format('pg_catalog.min(%s)', r.expression_type)) IS NOT NULL THEN
            -- The inner select makes the aggregate belong to the lateral
            -- query; the ctid reference makes an argument-less call run per row.
            join_clause := pg_catalog.format(
                'LEFT JOIN LATERAL (SELECT pg_catalog.min(v.value) AS value FROM (SELECT %2$s AS value'
                ' WHERE %3$s.ctid IS NOT NULL) AS v) AS %1$I ON true',
                alias, rendered, src);
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

-- The SELECT of a table's output under policy for target, reading the source
-- as src: one column per rule (NOT MASKED columns as themselves, masked ones
-- compiled). Columns without a rule are left out (privacy by default) unless
-- the policy passes unlabeled columns through. Statements (every target but
-- view) join the current key once when a token is written out.
CREATE FUNCTION veil_private.compiled_select(policy text, source oid, target text)
RETURNS text
LANGUAGE plpgsql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    selected text;
BEGIN
    -- compile_rule checks the target too, but is not called for a table without rules.
    IF target NOT IN ('view', 'copy', 'rewrite', 'export') THEN
        RAISE EXCEPTION 'pgveil: rules compile for view, copy, rewrite or export (got %)', pg_catalog.quote_literal(target);
    END IF;
    IF NOT EXISTS (SELECT FROM veil_private.policies p WHERE p.name = compiled_select.policy) THEN
        RAISE EXCEPTION 'pgveil: there is no policy %', pg_catalog.quote_literal(policy);
    END IF;
    SELECT pg_catalog.format('SELECT %s FROM %s AS src%s%s',
        coalesce(pg_catalog.string_agg(m.expression || ' AS ' || pg_catalog.quote_ident(a.attname), ', '
                                       ORDER BY a.attnum), ''),
        source::regclass,
        CASE WHEN compiled_select.target <> 'view' AND pg_catalog.bool_or(t.is_token) THEN ', ' || veil_private.key_join() ELSE '' END,
        coalesce(' ' || pg_catalog.string_agg(m.join_clause, ' ' ORDER BY a.attnum), ''))
    INTO selected
    FROM veil_private.policies p
    JOIN pg_catalog.pg_attribute a ON a.attrelid = source AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN veil_private.column_rules r ON r.policy = p.name AND r.relid = source AND r.attnum = a.attnum
    CROSS JOIN LATERAL veil_private.compile_rule(p.name, source, a.attnum, compiled_select.target) AS m
    CROSS JOIN LATERAL (SELECT r.kind = 'function' AND veil_private.is_token_rule(r.expression) AS is_token) AS t
    WHERE p.name = compiled_select.policy AND (p.pass_through_unlabeled OR r.policy IS NOT NULL);
    RETURN selected;
END
$$;

-- The compilers this one replaces (mask_column for views, compiled_column
-- for copies); downgrading this revision puts them back.
DROP FUNCTION veil_private.mask_column(text, oid, smallint);
DROP FUNCTION veil_private.compiled_column(text, oid, smallint, text);

REVOKE ALL ON FUNCTION veil_private.inline_token(text[]),
    veil_private.compile_rule(text, oid, smallint, text, text),
    veil_private.compiled_select(text, oid, text) FROM PUBLIC;
