-- Static anonymization: a static policy applied to the data itself.
--
-- A table is rewritten in one pass, in one transaction:
--   1. its rows compiled under the policy (target 'rewrite') into a
--      temporary table: the one place the rules are evaluated, so a rule
--      that fails on some row fails here, before anything changed;
--   2. TRUNCATE: the table, its TOAST table and its indexes get new, empty
--      files; the files holding the raw rows are emptied when the
--      transaction commits (PostgreSQL truncates and unlinks them), so no
--      old row version survives in the table's files, as it would after an
--      UPDATE until a VACUUM FULL;
--   3. the anonymized rows inserted back, with the table's indexes, unique
--      and exclusion constraints dropped before and built once after (as
--      pg_restore does), foreign keys re-added (validated in one query each),
--      and user triggers disabled meanwhile: anonymizing is not an
--      application write, and an audit trigger must not copy anything;
--   4. ANALYZE, so that the planner's statistics describe anonymized rows.
-- The table keeps its oid, privileges, views, policies, sequences and
-- comments. Tables linked by a foreign key whose key a rule changes are
-- rewritten together (a "unit"): the key's rule must then be deterministic
-- and the same on both sides, so the key still matches.
--
-- Partitioned tables are rewritten as a whole through their root (rules of
-- the partitioned table apply to every partition); inheritance children are
-- tables of their own, with the rules of their parent for the columns they
-- inherit unless they have their own.
--
-- veil.anonymize_table does one table (and its unit) in the caller's
-- transaction; veil.anonymize_database is a procedure that commits after
-- each unit and, interrupted, resumes with the units not yet done.

CREATE TABLE veil_private.static_runs (
    run         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy      text NOT NULL REFERENCES veil_private.policies ON DELETE CASCADE,
    uncovered   text NOT NULL CHECK (uncovered IN ('refuse', 'keep', 'null')),
    -- The tables asked for (with the tables each unit adds), NULL for the whole database.
    tables      oid[],
    started_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at timestamptz
);
CREATE TABLE veil_private.static_done (
    run         bigint NOT NULL REFERENCES veil_private.static_runs ON DELETE CASCADE,
    relid       oid    NOT NULL,
    rows        bigint NOT NULL,
    -- false: no column of the table changes under the policy; left as it was.
    rewritten   boolean NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (run, relid)
);
REVOKE ALL ON veil_private.static_runs, veil_private.static_done FROM PUBLIC;

-- The policy's option 'uncovered', or the caller's override; refuses a
-- policy that does not exist or is not static.
CREATE FUNCTION veil_private.static_uncovered(policy text, uncovered text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p veil_private.policies;
BEGIN
    SELECT * INTO p FROM veil_private.policies WHERE name = policy;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgveil: there is no policy %', coalesce(pg_catalog.quote_literal(policy), 'NULL')
            USING HINT = 'Create one with SELECT veil.create_policy(''name'', ''static'').';
    END IF;
    IF p.delivery <> 'static' THEN
        RAISE EXCEPTION 'pgveil: policy % is delivered as %, not static: static anonymization applies policies created with veil.create_policy(name, ''static'')',
            policy, p.delivery
            USING HINT = 'See docs/static.md for copying a policy''s rules into a static one.';
    END IF;
    IF uncovered IS NOT NULL AND uncovered NOT IN ('refuse', 'keep', 'null') THEN
        RAISE EXCEPTION 'pgveil: uncovered is ''refuse'', ''keep'' or ''null'' (got %)', pg_catalog.quote_literal(uncovered);
    END IF;
    RETURN coalesce(uncovered, p.uncovered);
END
$$;

-- The rule that applies to a column in a static rewrite: the table's own,
-- else that of the nearest inheritance ancestor's column of the same name.
CREATE FUNCTION veil_private.static_rule(policy text, relid oid, attnum smallint)
RETURNS veil_private.column_rules
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE ancestors(relid, depth) AS (
        SELECT static_rule.relid, 0
        UNION ALL
        SELECT i.inhparent, a.depth + 1
        FROM ancestors a JOIN pg_catalog.pg_inherits i ON i.inhrelid = a.relid
    )
    SELECT r.*
    FROM ancestors a
    JOIN pg_catalog.pg_attribute own ON own.attrelid = static_rule.relid AND own.attnum = static_rule.attnum
    JOIN pg_catalog.pg_attribute inherited ON inherited.attrelid = a.relid AND inherited.attname = own.attname
                                          AND NOT inherited.attisdropped
    JOIN veil_private.column_rules r ON r.policy = static_rule.policy AND r.relid = a.relid
                                   AND r.attnum = inherited.attnum
    ORDER BY a.depth
    LIMIT 1
$$;

-- The columns a static rewrite writes (every column but generated ones), each
-- with its rule (if any) and what it is selected as, reading the table as src.
-- Uncovered columns: kept, nulled, or (refuse) expression NULL.
CREATE FUNCTION veil_private.static_columns(policy text, relid oid, uncovered text)
RETURNS TABLE (attnum smallint, attname name, not_null boolean, kind text, rule veil_private.column_rules,
               expression text, changes boolean, is_token boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.attnum, a.attname, a.attnotnull, coalesce(r.kind, 'uncovered'), r,
           CASE
               WHEN r.kind IS NULL AND uncovered = 'refuse' THEN NULL
               WHEN r.kind IS NULL AND uncovered = 'null'
                   THEN pg_catalog.format('NULL::%s', pg_catalog.format_type(a.atttypid, a.atttypmod))
               WHEN r.kind IS NULL OR r.kind = 'not_masked' THEN 'src.' || pg_catalog.quote_ident(a.attname)
               ELSE (veil_private.compile_rule(static_columns.policy, r.relid, r.attnum, 'rewrite', 'src')).expression
           END,
           r.kind IN ('function', 'value') OR (r.kind IS NULL AND uncovered = 'null'),
           coalesce(r.kind = 'function' AND veil_private.is_token_rule(r.expression), false)
    FROM pg_catalog.pg_attribute a
    LEFT JOIN LATERAL veil_private.static_rule(static_columns.policy, a.attrelid, a.attnum) AS r ON r.policy IS NOT NULL
    WHERE a.attrelid = static_columns.relid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
    ORDER BY a.attnum
$$;

-- The SELECT that computes a table's anonymized rows, reading read_from
-- (the table itself, or one of its partitions) as src.
CREATE FUNCTION veil_private.static_select(policy text, relid oid, uncovered text, read_from oid DEFAULT NULL)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.format('SELECT %s FROM %s%s AS src%s',
        pg_catalog.string_agg(c.expression || ' AS ' || pg_catalog.quote_ident(c.attname), ', ' ORDER BY c.attnum),
        CASE WHEN t.relkind = 'p' AND read_from IS NULL THEN '' ELSE 'ONLY ' END,
        coalesce(read_from, static_select.relid)::regclass,
        CASE WHEN pg_catalog.bool_or(c.is_token) THEN ', ' || veil_private.key_join() ELSE '' END)
    FROM veil_private.static_columns(policy, relid, uncovered) AS c
    JOIN pg_catalog.pg_class t ON t.oid = static_select.relid
    GROUP BY t.relkind
$$;

-- The column list a rewrite inserts (every column but generated ones).
CREATE FUNCTION veil_private.static_insert_columns(relid oid)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = relid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
$$;

-- A rule with the column it belongs to written as "veil@col@self": two
-- columns' rules compute the same thing of their own values when equal.
CREATE FUNCTION veil_private.rule_of_own_column(rule veil_private.column_rules)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN rule.kind IS NULL OR rule.kind = 'not_masked' THEN NULL
                ELSE pg_catalog.replace(rule.expression, pg_catalog.format('"veil@col@%s"', rule.attnum), '"veil@col@self"') END
$$;

-- The relations and all their partitions.
CREATE FUNCTION veil_private.with_partitions(relations oid[])
RETURNS SETOF oid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r FROM pg_catalog.unnest(relations) AS r
    UNION
    SELECT t.relid FROM pg_catalog.unnest(relations) AS r, pg_catalog.pg_partition_tree(r) AS t
$$;

-- Foreign keys touching relations (either side, partitions included), as
-- declared (constraints cloned onto partitions belong to their parent's).
CREATE FUNCTION veil_private.foreign_keys_touching(relations oid[])
RETURNS SETOF pg_catalog.pg_constraint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.* FROM pg_catalog.pg_constraint k
    WHERE k.contype = 'f' AND k.conparentid = 0
      AND (k.conrelid IN (SELECT veil_private.with_partitions(relations))
           OR k.confrelid IN (SELECT veil_private.with_partitions(relations)))
$$;

-- Materialized views that read relations (or their partitions), directly
-- or through views and other materialized views, populated ones only: they
-- hold copies of the raw rows until refreshed. In refresh order.
CREATE FUNCTION veil_private.dependent_matviews(relations oid[])
RETURNS SETOF oid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE readers(relid, depth) AS (
        SELECT r, 0 FROM veil_private.with_partitions(relations) AS r
        UNION
        SELECT w.ev_class, readers.depth + 1
        FROM readers
        JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = readers.relid
                                   AND d.classid = 'pg_catalog.pg_rewrite'::regclass
        JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid AND w.ev_class <> readers.relid
        WHERE readers.depth < 32
    )
    SELECT x.relid FROM readers x JOIN pg_catalog.pg_class c ON c.oid = x.relid
    WHERE c.relkind = 'm' AND c.relispopulated
    GROUP BY x.relid ORDER BY pg_catalog.max(x.depth), x.relid
$$;

-- The relation a static rewrite handles for relid: a partition's root.
CREATE FUNCTION veil_private.static_root(relid oid)
RETURNS oid
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT t.relid FROM pg_catalog.pg_partition_ancestors(static_root.relid) AS t
                     JOIN pg_catalog.pg_class c ON c.oid = t.relid
                     WHERE NOT c.relispartition), static_root.relid)
$$;

-- Whether a rule changes a column's values (a rule other than NOT MASKED).
CREATE FUNCTION veil_private.static_changes(policy text, relid oid, attnum smallint, uncovered text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(r.kind IN ('function', 'value'), uncovered = 'null')
    FROM (SELECT) AS one
    LEFT JOIN LATERAL veil_private.static_rule(policy, relid, attnum) AS r ON r.policy IS NOT NULL
$$;

-- The tables rewritten together with sources: their inheritance children,
-- and, transitively, the tables at the other end of every foreign key whose
-- columns a rule changes on either side.
CREATE FUNCTION veil_private.static_unit(policy text, sources oid[], uncovered text)
RETURNS oid[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    members oid[];
    grown oid[];
BEGIN
    SELECT pg_catalog.array_agg(DISTINCT veil_private.static_root(s)) INTO members FROM pg_catalog.unnest(sources) AS s;
    LOOP
        WITH RECURSIVE children(relid) AS (
            SELECT m FROM pg_catalog.unnest(members) AS m
            UNION
            SELECT i.inhrelid FROM children c JOIN pg_catalog.pg_inherits i ON i.inhparent = c.relid
            JOIN pg_catalog.pg_class k ON k.oid = i.inhrelid AND NOT k.relispartition
        ), linked AS (
            SELECT veil_private.static_root(side) AS relid
            FROM veil_private.foreign_keys_touching(members) AS k
            CROSS JOIN LATERAL (VALUES (k.conrelid), (k.confrelid)) AS s(side)
            WHERE EXISTS (SELECT FROM pg_catalog.unnest(k.conkey) AS c(attnum)
                          WHERE veil_private.static_changes(policy, k.conrelid, c.attnum, uncovered))
               OR EXISTS (SELECT FROM pg_catalog.unnest(k.confkey) AS c(attnum)
                          WHERE veil_private.static_changes(policy, k.confrelid, c.attnum, uncovered))
        )
        SELECT pg_catalog.array_agg(DISTINCT x.relid ORDER BY x.relid) INTO grown
        FROM (SELECT relid FROM children UNION SELECT relid FROM linked) AS x;
        EXIT WHEN grown <@ members;
        members := grown;
    END LOOP;
    RETURN grown;
END
$$;

-- Everything that stops a unit from being anonymized, one line each: the
-- caller is told all of it at once, and nothing is changed.
CREATE FUNCTION veil_private.static_problems(policy text, members oid[], uncovered text)
RETURNS SETOF text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m oid;
    col record;
    k pg_catalog.pg_constraint;
    problem text;
    owner_name name;
BEGIN
    FOR m IN SELECT veil_private.with_partitions(members) LOOP
        SELECT c.relowner::regrole::name INTO owner_name FROM pg_catalog.pg_class c WHERE c.oid = m;
        IF NOT pg_catalog.pg_has_role(CURRENT_USER, owner_name, 'USAGE') THEN
            RETURN NEXT pg_catalog.format('%s: only its owner (%s) may anonymize it', m::regclass, owner_name);
        END IF;
        -- Rows its policies hide from the caller would not be rewritten, and
        -- TRUNCATE would remove them.
        IF EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = m AND c.relrowsecurity AND c.relforcerowsecurity)
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER
                           AND (r.rolsuper OR r.rolbypassrls)) THEN
            RETURN NEXT pg_catalog.format(
                '%s forces row level security: its policies could hide rows from the rewrite; run as a role with BYPASSRLS, or ALTER TABLE %s NO FORCE ROW LEVEL SECURITY for the run',
                m::regclass, m::regclass);
        END IF;
    END LOOP;
    FOR m IN SELECT veil_private.dependent_matviews(members) LOOP
        SELECT c.relowner::regrole::name INTO owner_name FROM pg_catalog.pg_class c WHERE c.oid = m;
        IF NOT pg_catalog.pg_has_role(CURRENT_USER, owner_name, 'USAGE') THEN
            RETURN NEXT pg_catalog.format('materialized view %s: only its owner (%s) may refresh it', m::regclass, owner_name);
        END IF;
    END LOOP;
    FOREACH m IN ARRAY members LOOP
        IF EXISTS (SELECT FROM veil_private.streams s WHERE s.source = m) THEN
            RETURN NEXT pg_catalog.format(
                '%s is streamed into %s: rewriting it would not reach the copy; run SELECT veil.unstream(%L) first',
                m::regclass, (SELECT s.target::regclass FROM veil_private.streams s WHERE s.source = m), m::regclass::text);
        END IF;
        FOR col IN SELECT * FROM veil_private.static_columns(policy, m, uncovered) LOOP
            IF col.kind = 'uncovered' AND uncovered = 'refuse' THEN
                RETURN NEXT pg_catalog.format('%s.%I has no rule in policy %s', m::regclass, col.attname, policy);
            ELSIF col.kind = 'uncovered' AND uncovered = 'null' AND col.not_null THEN
                RETURN NEXT pg_catalog.format('%s.%I has no rule and is NOT NULL: it cannot be nulled', m::regclass, col.attname);
            END IF;
            -- Constraints may have been added since the rule was set.
            problem := veil_private.unique_safe_problem(policy, m, col.attnum, (col.rule).kind,
                                                        (col.rule).expression, uncovered);
            IF problem IS NOT NULL THEN
                RETURN NEXT pg_catalog.regexp_replace(problem, '^pgveil: ', '');
            END IF;
        END LOOP;
    END LOOP;
    -- Foreign keys whose columns a rule changes: each pair of columns must
    -- have the same deterministic rule of its own value, or the keys would
    -- no longer match.
    FOR k IN SELECT * FROM veil_private.foreign_keys_touching(members) LOOP
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
            -- Nulling a reference leaves nothing to match.
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
        SELECT c.relowner::regrole::name INTO owner_name FROM pg_catalog.pg_class c WHERE c.oid = k.conrelid;
        IF NOT pg_catalog.pg_has_role(CURRENT_USER, owner_name, 'USAGE') THEN
            RETURN NEXT pg_catalog.format('%s: only its owner (%s) may drop and re-add its foreign key %I',
                                          k.conrelid::regclass, owner_name, k.conname);
        END IF;
    END LOOP;
END
$$;

CREATE FUNCTION veil_private.refuse_static_problems(policy text, members oid[], uncovered text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problems text;
BEGIN
    SELECT pg_catalog.string_agg('  - ' || p, E'\n') INTO problems
    FROM veil_private.static_problems(policy, members, uncovered) AS p;
    IF problems IS NOT NULL THEN
        RAISE EXCEPTION 'pgveil: cannot anonymize under policy %; nothing was changed:%', policy, E'\n' || problems
            USING HINT = CASE WHEN problems ~ ' has no rule in policy '
                THEN 'Give every column a rule (NOT MASKED where it holds no personal data), or choose what happens to columns without one with uncovered => ''keep'' or ''null''.'
                ELSE 'See docs/static.md.' END;
    END IF;
END
$$;

-- A table's key as text for an error, or its ctid when the key is itself
-- masked (an error must not show a raw value).
CREATE FUNCTION veil_private.static_row_name(policy text, relid oid, leaf oid, row_ctid tid, uncovered text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key_columns text;
    key_changes boolean;
    shown text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY k.n),
           pg_catalog.bool_or(veil_private.static_changes(policy, relid, a.attnum, uncovered)
                              OR veil_private.static_rule(policy, relid, a.attnum) IS NULL)
    INTO key_columns, key_changes
    FROM pg_catalog.pg_constraint c
    CROSS JOIN LATERAL pg_catalog.unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = relid AND a.attnum = k.attnum
    WHERE c.conrelid = relid AND c.contype = 'p';
    IF key_columns IS NULL OR key_changes THEN
        RETURN pg_catalog.format('at ctid %s of %s', row_ctid, leaf::regclass);
    END IF;
    EXECUTE pg_catalog.format('SELECT ROW(%s)::text FROM ONLY %s AS src WHERE src.ctid = $1', key_columns, leaf::regclass)
        INTO shown USING row_ctid;
    RETURN pg_catalog.format('with (%s)=%s', key_columns, shown);
END
$$;

-- After the rewrite's SELECT failed: find the row and the column whose rule
-- fails, and say so (with the SQLSTATE, not the message: it may quote the
-- value). Blocks are tried a range at a time, rows only in a failing range.
CREATE FUNCTION veil_private.raise_static_failure(policy text, relid oid, uncovered text, failed_state text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    range_blocks constant integer := 256;
    leaf oid;
    select_sql text;
    blocks bigint;
    first_block bigint;
    row_ctid tid;
    col record;
    failing_column name;
    state text := failed_state;
BEGIN
    FOR leaf IN
        SELECT relid WHERE (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = raise_static_failure.relid) <> 'p'
        UNION ALL
        SELECT t.relid FROM pg_catalog.pg_partition_tree(raise_static_failure.relid) AS t WHERE t.isleaf
    LOOP
        select_sql := veil_private.static_select(policy, relid, uncovered, leaf);
        blocks := pg_catalog.pg_relation_size(leaf) / pg_catalog.current_setting('block_size')::integer;
        FOR first_block IN 0 .. blocks BY range_blocks LOOP
            BEGIN
                EXECUTE pg_catalog.format(
                    'SELECT pg_catalog.count(x) FROM (%s WHERE src.ctid >= ''(%s,0)'' AND src.ctid < ''(%s,0)'') AS x',
                    select_sql, first_block, first_block + range_blocks);
            EXCEPTION WHEN OTHERS THEN
                FOR row_ctid IN EXECUTE pg_catalog.format(
                    'SELECT src.ctid FROM ONLY %s AS src WHERE src.ctid >= ''(%s,0)'' AND src.ctid < ''(%s,0)''',
                    leaf::regclass, first_block, first_block + range_blocks)
                LOOP
                    FOR col IN SELECT * FROM veil_private.static_columns(policy, relid, uncovered) AS c WHERE c.changes LOOP
                        BEGIN
                            EXECUTE pg_catalog.format('SELECT %s FROM ONLY %s AS src%s WHERE src.ctid = $1',
                                col.expression, leaf::regclass,
                                CASE WHEN col.is_token THEN ', ' || veil_private.key_join() ELSE '' END)
                                USING row_ctid;
                        EXCEPTION WHEN OTHERS THEN
                            failing_column := col.attname;
                            state := SQLSTATE;
                        END;
                        IF failing_column IS NOT NULL THEN
                            RAISE EXCEPTION 'pgveil: the rule of %.% fails on the row % (SQLSTATE %); nothing was changed',
                                relid::regclass, pg_catalog.quote_ident(failing_column),
                                veil_private.static_row_name(policy, relid, leaf, row_ctid, uncovered), state
                                USING ERRCODE = 'data_exception',
                                      HINT = 'Change the rule, or fix the row; the rule''s expression for the row can be tried with veil_private.static_select().';
                        END IF;
                    END LOOP;
                END LOOP;
            END;
        END LOOP;
    END LOOP;
    RAISE EXCEPTION 'pgveil: anonymizing % failed (SQLSTATE %); nothing was changed', relid::regclass, state
        USING ERRCODE = 'data_exception';
END
$$;

-- Rewrite one unit (see the top of this file); the caller has checked it.
CREATE FUNCTION veil_private.rewrite_unit(policy text, members oid[], uncovered text)
RETURNS TABLE (relid oid, rows bigint, rewritten boolean)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET default_tablespace = ''
-- Never filtered by row security: an error, rather than rows lost.
SET row_security = off
AS $$
DECLARE
    m oid;
    previous_timeout text := pg_catalog.current_setting('lock_timeout');
    scratch text;
    inserted bigint;
    fk record;
    ix record;
    tg record;
    -- The members a rule changes: the others are left as they are.
    changing oid[];
    dropped_fks jsonb := '[]';
    dropped_indexes jsonb := '[]';
    disabled_triggers jsonb := '[]';
    failed_state text;
BEGIN
    -- Lock everything first, both ends of every foreign key re-added too.
    IF previous_timeout = '0' THEN
        PERFORM pg_catalog.set_config('lock_timeout', '10s', true);
    END IF;
    BEGIN
        EXECUTE (SELECT 'LOCK TABLE ' || pg_catalog.string_agg(DISTINCT r::regclass::text, ', ') || ' IN ACCESS EXCLUSIVE MODE'
                 FROM (SELECT pg_catalog.unnest(members) AS r
                       UNION
                       SELECT s.side FROM veil_private.foreign_keys_touching(members) AS k
                       CROSS JOIN LATERAL (VALUES (k.conrelid), (k.confrelid)) AS s(side)) AS t);
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'pgveil: could not lock % within lock_timeout (%): another transaction is using them; nothing was changed',
            (SELECT pg_catalog.string_agg(r::regclass::text, ', ') FROM pg_catalog.unnest(members) AS r),
            pg_catalog.current_setting('lock_timeout')
            USING ERRCODE = 'lock_not_available';
    END;
    PERFORM pg_catalog.set_config('lock_timeout', previous_timeout, true);

    -- 1. The anonymized rows, computed before anything changes.
    SELECT coalesce(pg_catalog.array_agg(u), '{}') INTO changing FROM pg_catalog.unnest(members) AS u
    WHERE EXISTS (SELECT FROM veil_private.static_columns(policy, u, uncovered) AS c WHERE c.changes);
    FOREACH m IN ARRAY changing LOOP
        scratch := 'veil_static_' || m;
        BEGIN
            EXECUTE pg_catalog.format('CREATE TEMPORARY TABLE %I AS %s', scratch,
                                      veil_private.static_select(policy, m, uncovered));
        EXCEPTION WHEN OTHERS THEN
            failed_state := SQLSTATE;
        END;
        IF failed_state IS NOT NULL THEN
            PERFORM veil_private.raise_static_failure(policy, m, uncovered, failed_state);
        END IF;
    END LOOP;

    -- 2. Foreign keys, then indexes and index-backed constraints of plain
    --    tables, out of the way; user triggers off.
    FOR fk IN
        SELECT k.conrelid::regclass::text AS rel, k.conname, pg_catalog.pg_get_constraintdef(k.oid) AS def,
               pg_catalog.obj_description(k.oid, 'pg_constraint') AS comment
        FROM veil_private.foreign_keys_touching(members) AS k
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', fk.rel, fk.conname);
        dropped_fks := dropped_fks || pg_catalog.to_jsonb(fk);
    END LOOP;
    FOR ix IN
        SELECT i.indexrelid, c.relname AS index_name, i.indrelid::regclass::text AS rel, k.conname,
               CASE WHEN k.oid IS NULL THEN pg_catalog.pg_get_indexdef(i.indexrelid)
                    ELSE pg_catalog.pg_get_constraintdef(k.oid) END AS def,
               coalesce((SELECT s.spcname FROM pg_catalog.pg_tablespace s WHERE s.oid = c.reltablespace), '') AS tablespace,
               pg_catalog.obj_description(k.oid, 'pg_constraint') AS comment,
               pg_catalog.obj_description(i.indexrelid, 'pg_class') AS index_comment,
               i.indisclustered, i.indisreplident
        FROM pg_catalog.pg_index i
        JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
        JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
        LEFT JOIN pg_catalog.pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                                            AND k.contype IN ('p', 'u', 'x')
        WHERE i.indrelid = ANY (changing) AND t.relkind = 'r' AND NOT c.relispartition
        ORDER BY i.indexrelid
    LOOP
        -- An index something else depends on (a view grouping by a primary
        -- key) stays, and is filled row by row instead.
        BEGIN
            IF ix.conname IS NULL THEN
                EXECUTE pg_catalog.format('DROP INDEX %s', ix.indexrelid::regclass);
            ELSE
                EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', ix.rel, ix.conname);
            END IF;
            dropped_indexes := dropped_indexes || pg_catalog.to_jsonb(ix);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            NULL;
        END;
    END LOOP;
    -- Every trigger's state is recorded, disabled ones too: a partitioned
    -- table's trigger enabled again reaches its partitions' clones, which
    -- are then set back one by one, after their parents.
    FOR tg IN
        SELECT g.tgrelid::regclass::text AS rel, g.tgname, g.tgenabled::text AS enabled
        FROM pg_catalog.pg_trigger g
        WHERE NOT g.tgisinternal AND g.tgrelid IN (SELECT veil_private.with_partitions(members))
        ORDER BY g.tgparentid <> 0, g.oid
    LOOP
        IF tg.enabled <> 'D' THEN
            EXECUTE pg_catalog.format('ALTER TABLE %s DISABLE TRIGGER %I', tg.rel, tg.tgname);
        END IF;
        disabled_triggers := disabled_triggers || pg_catalog.to_jsonb(tg);
    END LOOP;

    -- 3. New files, and the anonymized rows in them.
    FOREACH m IN ARRAY members LOOP
        scratch := 'veil_static_' || m;
        IF m <> ALL (changing) THEN
            relid := m;
            rows := NULL;
            rewritten := false;
            RETURN NEXT;
            CONTINUE;
        END IF;
        EXECUTE pg_catalog.format('TRUNCATE %s%s', CASE WHEN (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = m) = 'p'
                                                        THEN '' ELSE 'ONLY ' END, m::regclass);
        BEGIN
            EXECUTE pg_catalog.format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %2$s FROM pg_temp.%I',
                                      m::regclass, veil_private.static_insert_columns(m), scratch);
        EXCEPTION WHEN integrity_constraint_violation OR check_violation OR not_null_violation THEN
            RAISE EXCEPTION 'pgveil: the anonymized rows of % break its constraints (%); nothing was changed', m::regclass, SQLERRM
                USING ERRCODE = SQLSTATE;
        END;
        GET DIAGNOSTICS inserted = ROW_COUNT;
        EXECUTE pg_catalog.format('DROP TABLE pg_temp.%I', scratch);
        relid := m;
        rows := inserted;
        rewritten := true;
        RETURN NEXT;
    END LOOP;

    -- 4. Indexes built once, keys re-added (validated), triggers as they were.
    FOR ix IN SELECT * FROM pg_catalog.jsonb_to_recordset(dropped_indexes) AS x(
                  index_name name, rel text, conname name, def text, tablespace text, comment text,
                  index_comment text, indisclustered boolean, indisreplident boolean)
    LOOP
        PERFORM pg_catalog.set_config('default_tablespace', ix.tablespace, true);
        BEGIN
            IF ix.conname IS NULL THEN
                EXECUTE ix.def;
            ELSE
                EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s', ix.rel, ix.conname, ix.def);
                EXECUTE pg_catalog.format('COMMENT ON CONSTRAINT %I ON %s IS %L', ix.conname, ix.rel, ix.comment);
            END IF;
            EXECUTE pg_catalog.format('COMMENT ON INDEX %I.%I IS %L',
                (SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.oid = ix.rel::regclass), ix.index_name, ix.index_comment);
        EXCEPTION WHEN unique_violation OR exclusion_violation THEN
            RAISE EXCEPTION 'pgveil: the anonymized rows of % break % (a rule on its columns is not unique-safe); nothing was changed',
                ix.rel, coalesce(ix.conname, ix.index_name)
                USING ERRCODE = SQLSTATE, HINT = 'See docs/unique_safe.md.';
        END;
        IF ix.indisclustered THEN
            EXECUTE pg_catalog.format('ALTER TABLE %s CLUSTER ON %I', ix.rel, ix.index_name);
        END IF;
        IF ix.indisreplident THEN
            EXECUTE pg_catalog.format('ALTER TABLE %s REPLICA IDENTITY USING INDEX %I', ix.rel, ix.index_name);
        END IF;
    END LOOP;
    FOR fk IN SELECT * FROM pg_catalog.jsonb_to_recordset(dropped_fks) AS x(rel text, conname name, def text, comment text) LOOP
        BEGIN
            EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s', fk.rel, fk.conname, fk.def);
        EXCEPTION WHEN foreign_key_violation THEN
            RAISE EXCEPTION 'pgveil: after anonymizing, foreign key % of % no longer holds; nothing was changed', fk.conname, fk.rel
                USING ERRCODE = SQLSTATE;
        END;
        EXECUTE pg_catalog.format('COMMENT ON CONSTRAINT %I ON %s IS %L', fk.conname, fk.rel, fk.comment);
    END LOOP;
    FOR tg IN SELECT * FROM pg_catalog.jsonb_to_recordset(disabled_triggers) AS x(rel text, tgname name, enabled text) LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s %s TRIGGER %I', tg.rel,
            CASE tg.enabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA' WHEN 'A' THEN 'ENABLE ALWAYS'
                            ELSE 'ENABLE' END, tg.tgname);
    END LOOP;
    -- The planner's statistics (most common values, histograms) described
    -- the raw rows: describe the anonymized ones instead.
    FOREACH m IN ARRAY changing LOOP
        EXECUTE pg_catalog.format('ANALYZE %s', m::regclass);
    END LOOP;
    -- Materialized views held copies of the raw rows: computed again (into
    -- new files) from the anonymized ones.
    FOR m IN SELECT veil_private.dependent_matviews(members) LOOP
        EXECUTE pg_catalog.format('REFRESH MATERIALIZED VIEW %s', m::regclass);
        EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s', m::regclass) INTO inserted;
        relid := m;
        rows := inserted;
        rewritten := true;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Anonymize a table in place under a static policy, with the tables that
-- must change with it; returns what was rewritten. All or nothing.
CREATE FUNCTION veil.anonymize_table(source regclass, policy text, uncovered text DEFAULT NULL)
RETURNS TABLE (table_name text, rows bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    resolved text;
    members oid[];
BEGIN
    PERFORM veil.require_governor();
    resolved := veil_private.static_uncovered(policy, uncovered);
    IF source IS NULL THEN
        RAISE EXCEPTION 'pgveil: name the table to anonymize';
    END IF;
    IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = source) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'pgveil: % is not a table', source;
    END IF;
    IF veil_private.static_root(source) <> source THEN
        RAISE EXCEPTION 'pgveil: % is a partition of %: anonymize %', source,
            veil_private.static_root(source)::regclass, veil_private.static_root(source)::regclass;
    END IF;
    members := veil_private.static_unit(policy, ARRAY[source::oid], resolved);
    PERFORM veil_private.refuse_static_problems(policy, members, resolved);
    RETURN QUERY
        SELECT r.relid::regclass::text, r.rows FROM veil_private.rewrite_unit(policy, members, resolved) AS r
        WHERE r.rewritten;
END
$$;
COMMENT ON FUNCTION veil.anonymize_table(regclass, text, text) IS
    'Rewrite a table (and the tables that must change with it) under a static policy, irreversibly, in one pass.';

-- The tables a whole-database run covers: every table outside the system's
-- and pgveil's own schemas (sanitized copies and mask views included), but
-- partitions (their root covers them), members of extensions, and the
-- table where Alembic keeps pgveil's revision (pgveil_version).
CREATE FUNCTION veil_private.static_candidates()
RETURNS SETOF oid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.oid
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence <> 't'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
      AND n.nspname NOT IN ('veil', 'veil_private', 'veil_ext', 'sanitized')
      AND n.oid NOT IN (SELECT s.mask_nspid FROM veil_private.mask_schemas s)
      AND c.relname <> 'pgveil_version'
      AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                      WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY n.nspname, c.relname
$$;

-- The tables of a run (the ones asked for and their units), in order.
CREATE FUNCTION veil_private.static_run_tables(run bigint)
RETURNS SETOF oid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c FROM veil_private.static_runs r, veil_private.static_candidates() AS c
    WHERE r.run = static_run_tables.run
      AND (r.tables IS NULL OR c = ANY (veil_private.static_unit(r.policy, r.tables, r.uncovered)))
$$;

-- Start (or resume: an unfinished run of the same policy and tables) a run
-- over tables, NULL for the whole database, after checking all of it.
CREATE FUNCTION veil_private.anonymize_start(policy text, uncovered text DEFAULT NULL, tables regclass[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    resolved text;
    asked oid[];
    started bigint;
BEGIN
    PERFORM veil.require_governor();
    resolved := veil_private.static_uncovered(policy, uncovered);
    IF tables IS NOT NULL THEN
        SELECT pg_catalog.array_agg(DISTINCT veil_private.static_root(t) ORDER BY veil_private.static_root(t))
        INTO asked FROM pg_catalog.unnest(tables) AS t;
    END IF;
    SELECT r.run INTO started FROM veil_private.static_runs r
    WHERE r.policy = anonymize_start.policy AND r.tables IS NOT DISTINCT FROM asked AND r.finished_at IS NULL
    ORDER BY r.run DESC LIMIT 1 FOR UPDATE;
    IF started IS NULL THEN
        INSERT INTO veil_private.static_runs (policy, uncovered, tables) VALUES (policy, resolved, asked)
        RETURNING run INTO started;
    ELSE
        UPDATE veil_private.static_runs SET uncovered = resolved WHERE run = started;
    END IF;
    PERFORM veil_private.refuse_static_problems(policy,
        (SELECT pg_catalog.array_agg(t) FROM veil_private.static_run_tables(started) AS t
         WHERE NOT EXISTS (SELECT FROM veil_private.static_done d WHERE d.run = started AND d.relid = t)),
        resolved);
    RETURN started;
END
$$;

-- Anonymize the next unit of a run not yet done; nothing returned once the
-- run is finished (and then marked so).
CREATE FUNCTION veil_private.anonymize_next(run bigint)
RETURNS TABLE (table_name text, rows bigint, rewritten boolean)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r veil_private.static_runs;
    w record;
    next_table oid;
    members oid[];
BEGIN
    PERFORM veil.require_governor();
    SELECT * INTO r FROM veil_private.static_runs s WHERE s.run = anonymize_next.run FOR UPDATE;
    IF NOT FOUND OR r.finished_at IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT t INTO next_table FROM veil_private.static_run_tables(r.run) AS t
    WHERE NOT EXISTS (SELECT FROM veil_private.static_done d WHERE d.run = r.run AND d.relid = t)
    LIMIT 1;
    IF next_table IS NULL THEN
        UPDATE veil_private.static_runs s SET finished_at = pg_catalog.now() WHERE s.run = r.run;
        RETURN;
    END IF;
    -- An inheritance child may have been done before its parent, as a unit
    -- of its own: the parent's unit leaves it out.
    SELECT pg_catalog.array_agg(m) INTO members
    FROM pg_catalog.unnest(veil_private.static_unit(r.policy, ARRAY[next_table], r.uncovered)) AS m
    WHERE NOT EXISTS (SELECT FROM veil_private.static_done d WHERE d.run = r.run AND d.relid = m);
    PERFORM veil_private.refuse_static_problems(r.policy, members, r.uncovered);
    FOR w IN SELECT * FROM veil_private.rewrite_unit(r.policy, members, r.uncovered) LOOP
        -- A materialized view over tables of several units is refreshed by each.
        INSERT INTO veil_private.static_done AS d (run, relid, rows, rewritten)
        VALUES (r.run, w.relid, coalesce(w.rows, 0), w.rewritten)
        ON CONFLICT ON CONSTRAINT static_done_pkey DO UPDATE SET rows = EXCLUDED.rows, finished_at = pg_catalog.now();
        table_name := w.relid::regclass::text;
        rows := coalesce(w.rows, 0);
        rewritten := w.rewritten;
        RETURN NEXT;
    END LOOP;
END
$$;

-- What a run would do, changing nothing: per unit, each table with its row
-- estimate and the SELECT its rows would be rewritten from (NULL: nothing
-- of it changes).
CREATE FUNCTION veil_private.anonymize_plan(policy text, uncovered text DEFAULT NULL, tables regclass[] DEFAULT NULL)
RETURNS TABLE (unit integer, table_name text, estimated_rows bigint, statement text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    resolved text;
    remaining oid[];
    members oid[];
    unit_number integer := 0;
BEGIN
    PERFORM veil.require_governor();
    resolved := veil_private.static_uncovered(policy, uncovered);
    IF tables IS NULL THEN
        SELECT pg_catalog.array_agg(c) INTO remaining FROM veil_private.static_candidates() AS c;
    ELSE
        remaining := veil_private.static_unit(policy, tables::oid[], resolved);
    END IF;
    PERFORM veil_private.refuse_static_problems(policy, remaining, resolved);
    WHILE pg_catalog.cardinality(remaining) > 0 LOOP
        unit_number := unit_number + 1;
        members := veil_private.static_unit(policy, remaining[1:1], resolved);
        RETURN QUERY
            SELECT unit_number, m::regclass::text,
                   (SELECT pg_catalog.sum(greatest(c.reltuples, 0))::bigint FROM pg_catalog.pg_class c
                    WHERE c.oid = m OR c.oid IN (SELECT t.relid FROM pg_catalog.pg_partition_tree(m) AS t WHERE t.isleaf)),
                   CASE WHEN EXISTS (SELECT FROM veil_private.static_columns(policy, m, resolved) AS s WHERE s.changes)
                        THEN veil_private.static_select(policy, m, resolved) END
            FROM pg_catalog.unnest(members) AS m;
        SELECT pg_catalog.array_agg(x ORDER BY o) INTO remaining
        FROM pg_catalog.unnest(remaining) WITH ORDINALITY AS u(x, o) WHERE x <> ALL (members);
    END LOOP;
END
$$;

-- The whole database (every table outside pgveil's and the system's
-- schemas), a unit per transaction. A procedure, to commit between units:
-- CALL it outside a transaction block. Called again after an interruption,
-- it goes on with the units not yet done. (A procedure that commits cannot
-- carry a SET clause: it fixes its search_path in each transaction.)
CREATE PROCEDURE veil.anonymize_database(policy text, uncovered text DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    run bigint;
    unit_done boolean;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    run := veil_private.anonymize_start(policy, uncovered);
    COMMIT;
    LOOP
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        unit_done := EXISTS (SELECT FROM veil_private.anonymize_next(run));
        COMMIT;
        EXIT WHEN NOT unit_done;
    END LOOP;
END
$$;
COMMENT ON PROCEDURE veil.anonymize_database(text, text) IS
    'Anonymize every table under a static policy, one unit per transaction; resumes after an interruption.';

REVOKE ALL ON FUNCTION veil_private.static_uncovered(text, text), veil_private.static_rule(text, oid, smallint),
    veil_private.static_columns(text, oid, text), veil_private.static_select(text, oid, text, oid),
    veil_private.static_insert_columns(oid), veil_private.rule_of_own_column(veil_private.column_rules),
    veil_private.with_partitions(oid[]), veil_private.foreign_keys_touching(oid[]), veil_private.dependent_matviews(oid[]), veil_private.static_root(oid),
    veil_private.static_changes(text, oid, smallint, text), veil_private.static_unit(text, oid[], text),
    veil_private.static_problems(text, oid[], text), veil_private.refuse_static_problems(text, oid[], text),
    veil_private.static_row_name(text, oid, oid, tid, text), veil_private.raise_static_failure(text, oid, text, text),
    veil_private.rewrite_unit(text, oid[], text), veil.anonymize_table(regclass, text, text),
    veil_private.static_candidates(), veil_private.static_run_tables(bigint),
    veil_private.anonymize_start(text, text, regclass[]), veil_private.anonymize_next(bigint),
    veil_private.anonymize_plan(text, text, regclass[]) FROM PUBLIC;
REVOKE ALL ON PROCEDURE veil.anonymize_database(text, text) FROM PUBLIC;
