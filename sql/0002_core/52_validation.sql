-- Rule validation, inside the database, so psql users get the same protection.
--
-- PostgreSQL itself parses the expression: it is placed in a temporary view
-- over the rule's table (views are never executed when created), and the
-- view's stored parse tree says exactly which functions, operators and
-- relations it uses. The view is dropped again by rolling back a
-- subtransaction.

-- Functions of veil that rules may call: the masking library, never the
-- administrative API.
CREATE FUNCTION veil_private.is_masking_function(fn oid)
RETURNS boolean
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.pronamespace = 'veil'::regnamespace
       AND p.proname ~ '^(noise|dnoise|partial|partial_email|random_[a-z_]+|hex_to_int|digest|fake_[a-z_]+|pseudo_[a-z_]+|generalize_[a-z0-9_]+|token)$'
    FROM pg_catalog.pg_proc p WHERE p.oid = fn
$$;

-- Keyed functions compute HMACs under the toolkit's key: oracles in views.
CREATE FUNCTION veil_private.is_keyed_function(fn oid)
RETURNS boolean
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.pronamespace = 'veil'::regnamespace AND p.proname ~ '^(token|pseudo_[a-z_]+)$'
    FROM pg_catalog.pg_proc p WHERE p.oid = fn
$$;

-- Pure pg_catalog functions a rule may use besides casts.
CREATE FUNCTION veil_private.is_allowed_catalog_function(fn oid)
RETURNS boolean
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.pronamespace = 'pg_catalog'::regnamespace
       AND (p.proname = ANY (ARRAY[
                'md5', 'sha224', 'sha256', 'sha384', 'sha512', 'encode',
                'left', 'right', 'lower', 'upper', 'initcap', 'concat', 'concat_ws',
                'substr', 'substring', 'length', 'char_length', 'btrim', 'ltrim', 'rtrim',
                'lpad', 'rpad', 'replace', 'regexp_replace', 'split_part', 'translate',
                'repeat', 'reverse', 'date_trunc', 'date_part', 'round', 'trunc', 'floor',
                'ceil', 'ceiling', 'abs', 'mod', 'to_char', 'format']::name[])
            OR EXISTS (SELECT FROM pg_catalog.pg_cast c WHERE c.castfunc = p.oid))
    FROM pg_catalog.pg_proc p WHERE p.oid = fn
$$;

-- Validate one column expression and return it deparsed by PostgreSQL, with
-- column references as "veil@col@<attnum>". Raises one clear error otherwise.
--
-- What the expression uses is read from the parse tree PostgreSQL stores
-- for the view (pg_depend cannot be used: it records no dependencies on
-- built-in objects).
CREATE FUNCTION veil_private.validate_expression(
    policy text, relid oid, attnum smallint, kind text, expression text,
    OUT deparsed text, OUT uses_keyed boolean, OUT expression_type text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col_type text;
    view_oid oid;
    definition text;
    tree text;
    used oid;
    col record;
    allow_keyed boolean;
    hint text;
BEGIN
    -- A statement can only be one statement if there is no ';' at all; comments
    -- could hide the rest of the generated statement.
    IF expression ~ '(;|--|/\*)' THEN
        RAISE EXCEPTION 'pgveil: a rule expression may not contain '';'', ''--'' or ''/*'': %', expression;
    END IF;
    SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) INTO col_type
    FROM pg_catalog.pg_attribute a WHERE a.attrelid = relid AND a.attnum = validate_expression.attnum;
    SELECT p.allow_keyed_functions INTO allow_keyed FROM veil_private.policies p WHERE p.name = policy;
    uses_keyed := false;

    BEGIN
        -- The second range-table entry makes the deparser qualify every column
        -- reference as veil_src.<column>, which is then replaced by position.
        EXECUTE pg_catalog.format(
            'CREATE TEMPORARY VIEW veil_rule_check AS SELECT (%s) AS veil_rule_expression, '
            '((%s))::%s AS veil_rule_cast FROM %s AS veil_src, (SELECT) AS veil_rule_dummy',
            expression, expression, col_type, relid::regclass);
        view_oid := 'pg_temp.veil_rule_check'::regclass;
        definition := pg_catalog.pg_get_viewdef(view_oid, false);
        SELECT r.ev_action::text INTO tree FROM pg_catalog.pg_rewrite r WHERE r.ev_class = view_oid;

        IF (SELECT count(*) FROM pg_catalog.pg_attribute a WHERE a.attrelid = view_oid AND a.attnum > 0) <> 2
           OR tree ~ '\{(SUBLINK|AGGREF|WINDOWFUNC|GROUPINGFUNC|ROWCOMPAREEXPR) ' THEN
            RAISE EXCEPTION USING MESSAGE = 'a rule is one expression: no subqueries, aggregates or window functions';
        END IF;
        IF kind = 'value' AND tree !~ ':targetList \(\{TARGETENTRY :expr \{CONST ' THEN
            RAISE EXCEPTION USING MESSAGE = 'MASKED WITH VALUE takes a constant';
        END IF;
        IF kind = 'function' AND tree !~ ':targetList \(\{TARGETENTRY :expr \{FUNCEXPR ' THEN
            RAISE EXCEPTION USING MESSAGE = 'MASKED WITH FUNCTION takes one function call';
        END IF;

        FOR used IN SELECT m[1]::oid FROM pg_catalog.regexp_matches(tree, ':relid (\d+)', 'g') AS m LOOP
            -- PostgreSQL 15 also lists the view itself (OLD and NEW).
            IF used NOT IN (relid, view_oid) THEN
                RAISE EXCEPTION USING MESSAGE = pg_catalog.format(
                    'a rule may not refer to other relations (%s)', used::regclass);
            END IF;
        END LOOP;
        FOR used IN SELECT DISTINCT m[1]::oid FROM pg_catalog.regexp_matches(tree, ':funcid (\d+)', 'g') AS m LOOP
            IF NOT (veil_private.is_masking_function(used)
                    OR veil_private.is_allowed_catalog_function(used)
                    OR EXISTS (SELECT FROM veil_private.schema_rules s, pg_catalog.pg_proc p
                               WHERE s.policy = validate_expression.policy AND p.oid = used
                                 AND s.nspid = p.pronamespace)) THEN
                RAISE EXCEPTION USING MESSAGE = pg_catalog.format(
                    'function %s is not trusted: rules may call veil''s masking functions, a few pure '
                    'pg_catalog functions, and functions of schemas labeled TRUSTED', used::regprocedure);
            END IF;
            uses_keyed := uses_keyed OR veil_private.is_keyed_function(used);
        END LOOP;
        FOR used IN SELECT DISTINCT m[1]::oid FROM pg_catalog.regexp_matches(tree, ':opno (\d+)', 'g') AS m LOOP
            IF NOT EXISTS (SELECT FROM pg_catalog.pg_operator o WHERE o.oid = used
                           AND (o.oprnamespace = 'pg_catalog'::regnamespace
                                OR o.oprnamespace IN (SELECT s.nspid FROM veil_private.schema_rules s
                                                      WHERE s.policy = validate_expression.policy))) THEN
                RAISE EXCEPTION USING MESSAGE = pg_catalog.format('operator %s is not trusted', used::regoperator);
            END IF;
        END LOOP;
        IF uses_keyed AND NOT allow_keyed THEN
            RAISE EXCEPTION USING
                MESSAGE = pg_catalog.format('policy %s does not allow keyed functions (token, pseudo_*): its masked roles could compute the token or pseudonym of any value they guess', policy),
                HINT = pg_catalog.format('SELECT veil.alter_policy(%L, allow_keyed_functions => true, masked_roles_may_compute_pseudonyms => true) if that is acceptable', policy);
        END IF;

        -- "SELECT (<expr>) AS veil_rule_expression, ..." as PostgreSQL deparses it.
        deparsed := pg_catalog.substr(definition, pg_catalog.strpos(definition, 'SELECT ') + 7);
        deparsed := pg_catalog.substr(deparsed, 1, pg_catalog.strpos(deparsed, ' AS veil_rule_expression,') - 1);
        -- Longest names first, so that veil_src.name2 is not taken for veil_src.name.
        FOR col IN
            SELECT a.attnum, 'veil_src.' || pg_catalog.quote_ident(a.attname) AS reference
            FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = relid AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY pg_catalog.length(a.attname) DESC
        LOOP
            deparsed := pg_catalog.replace(deparsed, col.reference, pg_catalog.format('"veil@col@%s"', col.attnum));
        END LOOP;
        SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) INTO expression_type
        FROM pg_catalog.pg_attribute a WHERE a.attrelid = view_oid AND a.attnum = 1;
        -- Undo the view; the error carries the result out of the subtransaction.
        RAISE EXCEPTION USING ERRCODE = 'PVOK0', MESSAGE = deparsed, DETAIL = expression_type;
    EXCEPTION
        WHEN SQLSTATE 'PVOK0' THEN
            GET STACKED DIAGNOSTICS deparsed = MESSAGE_TEXT, expression_type = PG_EXCEPTION_DETAIL;
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
            RAISE EXCEPTION 'pgveil: rule rejected for %.%: %',
                relid::regclass,
                pg_catalog.quote_ident((SELECT a.attname FROM pg_catalog.pg_attribute a
                                        WHERE a.attrelid = relid AND a.attnum = validate_expression.attnum)),
                SQLERRM
                USING HINT = coalesce(NULLIF(hint, ''),
                    'A rule is a constant or one call of a trusted function of columns of the same row.');
    END;
END
$$;

REVOKE ALL ON FUNCTION veil_private.is_masking_function(oid), veil_private.is_keyed_function(oid),
    veil_private.is_allowed_catalog_function(oid),
    veil_private.validate_expression(text, oid, smallint, text, text) FROM PUBLIC;
