-- Anonymized export (pgveil dump, later sync): the rows of each table as a
-- policy's rules make them, computed in the database by the rule compiler
-- and streamed out with COPY (SELECT ...) TO STDOUT.
--
-- Any policy can be exported: a views policy gives what its masked roles
-- see, a static policy the anonymized copy. Columns are compiled as a static
-- rewrite compiles them (veil_private.static_columns, target 'rewrite', which
-- the export target shares): a column without a rule follows the policy's
-- option 'uncovered' or the caller's override; a partition or an inheritance
-- child takes the rules of its ancestors for the columns it inherits.
-- Generated columns are left out, as pg_dump leaves them out: the restore
-- computes them again.

-- The policy's option 'uncovered', or the caller's override; refuses a
-- policy that does not exist. Unlike static_uncovered, any delivery.
CREATE FUNCTION veil_private.export_uncovered(policy text, uncovered text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    resolved text;
BEGIN
    SELECT p.uncovered INTO resolved FROM veil_private.policies p WHERE p.name = policy;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgveil: there is no policy %', coalesce(pg_catalog.quote_literal(policy), 'NULL')
            USING HINT = 'The policies are listed in veil.policies.';
    END IF;
    IF uncovered IS NOT NULL AND uncovered NOT IN ('refuse', 'keep', 'null') THEN
        RAISE EXCEPTION 'pgveil: uncovered is ''refuse'', ''keep'' or ''null'' (got %)', pg_catalog.quote_literal(uncovered);
    END IF;
    RETURN coalesce(uncovered, resolved);
END
$$;

-- Everything that stops tables from being exported, one line each.
CREATE FUNCTION veil_private.export_problems(policy text, relations oid[], uncovered text)
RETURNS SETOF text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m oid;
    col record;
    k pg_catalog.pg_constraint;
    problem text;
    bypasses_rls boolean := (SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r
                             WHERE r.rolname = CURRENT_USER);
BEGIN
    FOREACH m IN ARRAY relations LOOP
        IF NOT pg_catalog.has_table_privilege(m, 'SELECT') THEN
            RETURN NEXT pg_catalog.format('%s: %I may not read it', m::regclass, CURRENT_USER);
            CONTINUE;
        END IF;
        -- Rows its policies hide would be missing from the export without a word.
        IF EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = m AND c.relrowsecurity
                   AND (c.relforcerowsecurity OR NOT pg_catalog.pg_has_role(CURRENT_USER, c.relowner, 'USAGE')))
           AND NOT bypasses_rls THEN
            RETURN NEXT pg_catalog.format(
                '%s has row level security: its policies could hide rows from the export; run as a role with BYPASSRLS',
                m::regclass);
        END IF;
        FOR col IN SELECT * FROM veil_private.static_columns(policy, m, uncovered) LOOP
            IF col.kind = 'uncovered' AND uncovered = 'refuse' THEN
                RETURN NEXT pg_catalog.format('%s.%I has no rule in policy %s', m::regclass, col.attname, policy);
            ELSIF col.kind = 'uncovered' AND uncovered = 'null' AND col.not_null THEN
                RETURN NEXT pg_catalog.format('%s.%I has no rule and is NOT NULL: it cannot be nulled', m::regclass, col.attname);
            END IF;
            problem := veil_private.unique_safe_problem(policy, m, col.attnum, (col.rule).kind,
                                                        (col.rule).expression, uncovered);
            IF problem IS NOT NULL THEN
                RETURN NEXT pg_catalog.regexp_replace(problem, '^pgveil: ', '');
            END IF;
        END LOOP;
    END LOOP;
    -- A foreign key between two exported tables must still match once restored.
    FOR k IN SELECT * FROM veil_private.foreign_keys_touching(relations) AS f
             WHERE f.conrelid = ANY (relations) AND f.confrelid = ANY (relations) LOOP
        FOR col IN
            SELECT a.attname AS referencing, b.attname AS referenced,
                   veil_private.static_rule(policy, k.conrelid, c.conattnum) AS referencing_rule,
                   veil_private.static_rule(policy, k.confrelid, c.confattnum) AS referenced_rule,
                   veil_private.static_changes(policy, k.conrelid, c.conattnum, uncovered) AS referencing_changes,
                   veil_private.static_changes(policy, k.confrelid, c.confattnum, uncovered) AS referenced_changes
            FROM ROWS FROM (pg_catalog.unnest(k.conkey), pg_catalog.unnest(k.confkey)) AS c(conattnum, confattnum)
            JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = c.conattnum
            JOIN pg_catalog.pg_attribute b ON b.attrelid = k.confrelid AND b.attnum = c.confattnum
        LOOP
            CONTINUE WHEN NOT (col.referencing_changes OR col.referenced_changes)
                OR ((col.referencing_rule).kind = 'value' AND (col.referencing_rule).expression ~* '^NULL\M'
                    AND NOT col.referenced_changes);
            IF veil_private.rule_of_own_column(col.referencing_rule) IS DISTINCT FROM veil_private.rule_of_own_column(col.referenced_rule)
               OR veil_private.rule_of_own_column(col.referenced_rule) ~ '"veil@col@[0-9]'
               OR veil_private.calls_volatile(veil_private.rule_of_own_column(col.referenced_rule)) THEN
                RETURN NEXT pg_catalog.format(
                    'foreign key %I of %s: %I and %s.%I must have the same deterministic rule of their own value (e.g. veil.token(<column>, ''%s'')) so that the keys still match',
                    k.conname, k.conrelid::regclass, col.referencing, k.confrelid::regclass, col.referenced,
                    (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = k.confrelid));
            END IF;
        END LOOP;
    END LOOP;
END
$$;

-- The export of each table (plain tables and leaf partitions: a partitioned
-- table holds no rows of its own): the query that computes its rows, the
-- COPY statement that loads them (pg_dump's, generated columns left out),
-- and what each column becomes (rules, never values), for a manifest.
-- Refuses, listing every problem, when any table cannot be exported.
CREATE FUNCTION veil.export_tables(policy text, tables regclass[], uncovered text DEFAULT NULL)
RETURNS TABLE (relid oid, schema_name name, table_name name, estimated_rows bigint, relation_bytes bigint, query text,
               copy_statement text, columns jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    resolved text;
    relations oid[];
    problems text;
BEGIN
    PERFORM veil.require_governor();
    resolved := veil_private.export_uncovered(policy, uncovered);
    SELECT coalesce(pg_catalog.array_agg(DISTINCT t::oid), '{}') INTO relations FROM pg_catalog.unnest(tables) AS t;
    SELECT pg_catalog.string_agg(pg_catalog.format('%s is not a table', r::regclass), E'\n  - ')
    INTO problems
    FROM pg_catalog.unnest(relations) AS r
    LEFT JOIN pg_catalog.pg_class c ON c.oid = r
    WHERE c.relkind IS DISTINCT FROM 'r';
    IF problems IS NULL THEN
        SELECT pg_catalog.string_agg(p, E'\n  - ') INTO problems
        FROM veil_private.export_problems(policy, relations, resolved) AS p;
    END IF;
    IF problems IS NOT NULL THEN
        RAISE EXCEPTION 'pgveil: cannot export under policy %; nothing was written:%', policy, E'\n  - ' || problems
            USING HINT = CASE WHEN problems ~ ' has no rule in policy '
                THEN 'Give every column a rule (NOT MASKED where it holds no personal data), or choose what happens to columns without one with uncovered => ''keep'' or ''null''.'
                ELSE 'See docs/dump.md.' END;
    END IF;
    RETURN QUERY
        SELECT c.oid, n.nspname, c.relname, GREATEST(c.reltuples, 0)::bigint, pg_catalog.pg_relation_size(c.oid),
               veil_private.static_select(policy, c.oid, resolved),
               pg_catalog.format(E'COPY %I.%I (%s) FROM stdin;\n', n.nspname, c.relname,
                                 veil_private.static_insert_columns(c.oid)),
               (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                           'column', s.attname,
                           'rule', CASE WHEN s.kind = 'uncovered' THEN 'uncovered: ' || resolved
                                        ELSE (s.rule).label END,
                           'changes', s.changes)
                       ORDER BY s.attnum)
                FROM veil_private.static_columns(policy, c.oid, resolved) AS s)
        FROM pg_catalog.unnest(relations) AS r
        JOIN pg_catalog.pg_class c ON c.oid = r
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        ORDER BY n.nspname, c.relname;
END
$$;
COMMENT ON FUNCTION veil.export_tables(text, regclass[], text) IS
    'The queries that export tables under a policy (pgveil dump); refuses, listing every problem, when any cannot be.';

-- After an export's query failed on a table: the row and the column whose
-- rule fails, named without their values (veil_private.raise_static_failure
-- does the search: the export's columns are the rewrite's).
CREATE FUNCTION veil.raise_export_failure(policy text, source regclass, failed_state text, uncovered text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM veil.require_governor();
    PERFORM veil_private.raise_static_failure(policy, source, veil_private.export_uncovered(policy, uncovered),
                                              failed_state);
END
$$;

REVOKE ALL ON FUNCTION veil_private.export_uncovered(text, text),
    veil_private.export_problems(text, oid[], text),
    veil.export_tables(text, regclass[], text),
    veil.raise_export_failure(text, regclass, text, text) FROM PUBLIC;
