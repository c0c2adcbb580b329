-- veil.stream / veil.unstream, and the generated triggers behind them.

-- sanitized.<table> for public tables, sanitized.<schema>__<table> otherwise.
CREATE FUNCTION veil_private.copy_name(source oid)
RETURNS name
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN n.nspname = 'public' THEN c.relname
                ELSE (n.nspname || '__' || c.relname)::name END
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = source
$$;

-- The columns of a stream's copy: one per rule of its policy on the source.
-- Token columns collate "C" (see compiled_column), NOT MASKED ones as their
-- source column; column_collation is NULL for the others: their type's default.
CREATE FUNCTION veil_private.copy_columns(source oid, policy text)
RETURNS TABLE (attnum smallint, name name, type text, column_collation regcollation, expression text,
               is_key boolean, is_token boolean)
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.attnum, a.attname,
           CASE r.kind WHEN 'not_masked' THEN pg_catalog.format_type(a.atttypid, a.atttypmod)
                       ELSE r.expression_type END,
           CASE WHEN t.is_token THEN 'pg_catalog."C"'::pg_catalog.regcollation
                WHEN r.kind = 'not_masked' AND a.attcollation <> 0 THEN a.attcollation::pg_catalog.regcollation END,
           veil_private.compiled_column(r.policy, r.relid, r.attnum, 'src'),
           a.attnum = ANY (i.indkey),
           t.is_token
    FROM veil_private.column_rules r
    JOIN pg_catalog.pg_attribute a ON a.attrelid = r.relid AND a.attnum = r.attnum AND NOT a.attisdropped
    LEFT JOIN pg_catalog.pg_index i ON i.indrelid = r.relid AND i.indisprimary,
    LATERAL (SELECT r.kind = 'function' AND veil_private.is_token_rule(r.expression) AS is_token) t
    WHERE r.relid = source AND r.policy = copy_columns.policy
    ORDER BY a.attnum
$$;

-- A copy column's type as DDL writes it: with its collation, if it has one.
CREATE FUNCTION veil_private.column_type(type text, column_collation regcollation)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT type || coalesce(' COLLATE ' || column_collation::text, '') $$;

-- The current key, read once per generated statement, with its token prefix
-- ('v<version>:') made once rather than per token and as the HMAC key (its
-- hex text, see 20_tokens.sql). LIMIT 1 tells the planner it is one row: the
-- never-analyzed keys table is otherwise taken for hundreds, which inflates
-- costs past the JIT threshold.
CREATE FUNCTION veil_private.key_join()
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '(SELECT ''v'' || k.version || '':'' AS prefix, pg_catalog.encode(k.key, ''hex'') AS hmac_key'
             ' FROM veil_private.keys k WHERE k.is_current LIMIT 1) AS veil_key' $$;

-- The insert of the copy rows computed from rows_from (a relation read as
-- src), in the copy's key order so that its index fills page by page rather
-- than at random (tokens are random). With upsert, existing keys are updated:
-- the statement the UPDATE trigger and each backfill batch write with.
CREATE FUNCTION veil_private.copy_write(source oid, rows_from text, upsert boolean)
RETURNS text
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.format(
        'INSERT INTO %s AS t (%s) SELECT %s FROM %s AS src, %s ORDER BY %s%s',
        s.target::regclass,
        pg_catalog.string_agg(pg_catalog.quote_ident(c.name), ', ' ORDER BY c.attnum),
        pg_catalog.string_agg(c.expression, ', ' ORDER BY c.attnum),
        rows_from, veil_private.key_join(),
        pg_catalog.string_agg(c.position::text, ', ' ORDER BY c.attnum) FILTER (WHERE c.is_key),
        CASE WHEN upsert THEN pg_catalog.format(' ON CONFLICT (%s) DO %s',
            pg_catalog.string_agg(pg_catalog.quote_ident(c.name), ', ' ORDER BY c.attnum) FILTER (WHERE c.is_key),
            coalesce('UPDATE SET ' || pg_catalog.string_agg(pg_catalog.format('%1$I = EXCLUDED.%1$I', c.name), ', '
                                                            ORDER BY c.attnum) FILTER (WHERE NOT c.is_key),
                     'NOTHING'))
        ELSE '' END)
    FROM veil_private.streams s,
         LATERAL (SELECT cc.*, pg_catalog.row_number() OVER (ORDER BY cc.attnum) AS position
                  FROM veil_private.copy_columns(s.source, s.policy) cc) c
    WHERE s.source = copy_write.source
    GROUP BY s.target
$$;

-- Create or re-create a stream's copy columns, trigger function and triggers
-- to match the source and the rules as they are now.
CREATE FUNCTION veil_private.build_stream(source oid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s veil_private.streams;
    col record;
    target_name name;
    existing name;
    key_exprs text;
    key_match text;
    key_returning text;
    key_count bigint;
    raw_key_match text;
    fn_name name := 'stream_' || source;
BEGIN
    SELECT * INTO s FROM veil_private.streams WHERE streams.source = build_stream.source;

    -- Copy columns follow the rules: dropped, renamed, added, retyped.
    FOR col IN
        SELECT sc.attnum, a.attname AS target_col
        FROM veil_private.stream_columns sc
        JOIN pg_catalog.pg_attribute a ON a.attrelid = s.target AND a.attnum = sc.target_attnum
        WHERE sc.source = s.source
          AND sc.attnum NOT IN (SELECT c.attnum FROM veil_private.copy_columns(s.source, s.policy) c)
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s DROP COLUMN %I', s.target::regclass, col.target_col);
        DELETE FROM veil_private.stream_columns sc WHERE sc.source = s.source AND sc.attnum = col.attnum;
    END LOOP;
    FOR col IN SELECT * FROM veil_private.copy_columns(s.source, s.policy) LOOP
        SELECT a.attname INTO existing
        FROM veil_private.stream_columns sc
        JOIN pg_catalog.pg_attribute a ON a.attrelid = s.target AND a.attnum = sc.target_attnum
        WHERE sc.source = s.source AND sc.attnum = col.attnum;
        IF existing IS NULL THEN
            EXECUTE pg_catalog.format('ALTER TABLE %s ADD COLUMN %I %s', s.target::regclass, col.name,
                                      veil_private.column_type(col.type, col.column_collation));
            INSERT INTO veil_private.stream_columns (source, attnum, target_attnum)
            SELECT s.source, col.attnum, a.attnum FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = s.target AND a.attname = col.name;
            UPDATE veil_private.streams SET needs_backfill = true WHERE streams.source = s.source;
        ELSE
            IF existing <> col.name THEN
                EXECUTE pg_catalog.format('ALTER TABLE %s RENAME COLUMN %I TO %I', s.target::regclass, existing, col.name);
            END IF;
            IF (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) <> col.type
                       OR a.attcollation <> coalesce(col.column_collation::oid, ty.typcollation)
                FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
                WHERE a.attrelid = s.target AND a.attname = col.name) THEN
                EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN %I TYPE %s USING %I::%s',
                    s.target::regclass, col.name, veil_private.column_type(col.type, col.column_collation), col.name, col.type);
            END IF;
        END IF;
    END LOOP;

    SELECT pg_catalog.string_agg(c.expression || ' AS ' || pg_catalog.quote_ident(c.name), ', ' ORDER BY c.attnum),
           pg_catalog.string_agg(pg_catalog.format('t.%1$I = gone.%1$I', c.name), ' AND ' ORDER BY c.attnum),
           pg_catalog.string_agg('t.' || pg_catalog.quote_ident(c.name), ', ' ORDER BY c.attnum),
           count(*)
    INTO key_exprs, key_match, key_returning, key_count
    FROM veil_private.copy_columns(s.source, s.policy) c
    WHERE c.is_key;
    IF key_count <> (SELECT i.indnkeyatts FROM pg_catalog.pg_index i WHERE i.indrelid = s.source AND i.indisprimary) THEN
        RAISE EXCEPTION 'pgveil: the primary key of % must keep its rules in policy % while it is streamed', s.source::regclass, s.policy
            USING HINT = pg_catalog.format('SELECT veil.unstream(%L) first.', s.source::regclass);
    END IF;
    target_name := s.target::regclass::text;
    SELECT pg_catalog.string_agg(pg_catalog.format('n.%1$I IS NOT DISTINCT FROM src.%1$I', a.attname), ' AND ')
    INTO raw_key_match
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
    WHERE i.indrelid = s.source AND i.indisprimary;

    EXECUTE pg_catalog.format($fn$
CREATE OR REPLACE FUNCTION veil_private.%1$I()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $body$
-- Generated by pgveil for the stream of %2$s into %3$s; regenerated when
-- the source or its rules change. Do not edit.
DECLARE
    removed bigint := 0;
    written bigint := 0;
    keys json;
    -- Whether a session follows the change feed: take the barrier lock,
    -- then try the following lock (see 35_change_feed.sql). CASE fixes the
    -- order; the unlock runs only after a successful try.
    followed boolean := CASE
        WHEN NOT pg_catalog.pg_try_advisory_xact_lock_shared(x'7067766500000002'::bigint) THEN true
        WHEN NOT pg_catalog.pg_try_advisory_lock(x'7067766500000001'::bigint) THEN true
        WHEN pg_catalog.pg_advisory_unlock(x'7067766500000001'::bigint)
            THEN pg_catalog.current_setting('pgveil.follows_changes', true) IS NOT DISTINCT FROM 'on'
        END;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE %3$s;
        IF followed THEN
            PERFORM veil_private.notify_change(%4$L, 'truncate', 0, NULL);
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        WITH gone AS (SELECT %5$s FROM old_rows AS src, %6$s),
        removed AS (DELETE FROM %3$s AS t USING gone WHERE %7$s RETURNING %8$s)
        SELECT count(*), CASE WHEN followed THEN (SELECT json_agg(r) FROM (SELECT * FROM removed LIMIT 101) r) END
        INTO removed, keys FROM removed;
    ELSIF TG_OP = 'UPDATE' THEN
        -- An update that changes the key moves the row: its old key goes.
        WITH gone AS (
            SELECT %5$s FROM old_rows AS src, %6$s
            WHERE NOT EXISTS (SELECT FROM new_rows AS n WHERE %11$s)),
        removed AS (DELETE FROM %3$s AS t USING gone WHERE %7$s RETURNING %8$s)
        SELECT count(*), CASE WHEN followed THEN (SELECT json_agg(r) FROM (SELECT * FROM removed LIMIT 101) r) END
        INTO removed, keys FROM removed;
    END IF;
    IF removed > 0 AND followed THEN
        PERFORM veil_private.notify_change(%4$L, 'delete', removed, keys);
    END IF;
    IF TG_OP = 'INSERT' THEN
        -- New source keys are keys the copy has not seen: a plain insert
        -- (an upsert would probe the index once more per row). The copy holds
        -- such a key only if it fell out of step with the source (triggers
        -- disabled, session_replication_role = replica); the write then
        -- still succeeds, as an upsert.
        BEGIN
            %9$s;
            GET DIAGNOSTICS written = ROW_COUNT;
        EXCEPTION WHEN unique_violation THEN
            %10$s;
            GET DIAGNOSTICS written = ROW_COUNT;
        END;
    ELSIF TG_OP = 'UPDATE' THEN
        %10$s;
        GET DIAGNOSTICS written = ROW_COUNT;
    END IF;
    IF written > 0 AND followed THEN
        -- Keys travel only with small statements (see notify_change).
        keys := NULL;
        IF written <= 100 THEN
            SELECT json_agg(k) INTO keys FROM (SELECT %5$s FROM new_rows AS src, %6$s) k;
        END IF;
        PERFORM veil_private.notify_change(%4$L, 'upsert', written, keys);
    END IF;
    RETURN NULL;
END
$body$
$fn$,
        fn_name, s.source::regclass, target_name, veil_private.copy_name(s.source),
        key_exprs, veil_private.key_join(), key_match, key_returning,
        veil_private.copy_write(s.source, 'new_rows', false),
        veil_private.copy_write(s.source, 'new_rows', true), raw_key_match);
    EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION veil_private.%I() FROM PUBLIC', fn_name);
    UPDATE veil_private.streams SET trigger_fn = pg_catalog.format('veil_private.%I()', fn_name)::regprocedure
    WHERE streams.source = s.source;
END
$$;

CREATE FUNCTION veil.stream(source regclass, policy text DEFAULT 'sanitized')
RETURNS regclass
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    copy_name name := veil_private.copy_name(source);
    target oid;
    missing text;
    col record;
    column_list text := '';
BEGIN
    PERFORM veil.require_governor();
    IF NOT EXISTS (SELECT FROM veil_private.policies p WHERE p.name = policy AND p.delivery = 'copy') THEN
        RAISE EXCEPTION 'pgveil: % is not a policy delivered as a copy', pg_catalog.quote_literal(policy);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger WHERE evtname = 'veil_rebuild_streams') THEN
        RAISE EXCEPTION 'pgveil: streaming needs pgveil''s DDL event trigger, which the installing role could not create'
            USING HINT = 'Without it, DDL on a streamed table could break application writes. Install pgveil as a role that may create event triggers (a superuser, or a managed service''s admin role).';
    END IF;
    IF EXISTS (SELECT FROM veil_private.streams s WHERE s.source = stream.source) THEN
        RAISE EXCEPTION 'pgveil: % is streamed already', source;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = source AND i.indisprimary) THEN
        RAISE EXCEPTION 'pgveil: % has no primary key; a stream needs one to follow updates and deletes', source
            USING HINT = 'Add a primary key to the source table first.';
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ') INTO missing
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
    LEFT JOIN veil_private.column_rules r ON r.relid = i.indrelid AND r.attnum = a.attnum AND r.policy = stream.policy
    WHERE i.indrelid = source AND i.indisprimary
      AND (r.kind IS NULL OR NOT (r.kind = 'not_masked' OR veil_private.is_token_rule(r.expression)));
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'pgveil: primary key column(s) % of % need a rule in policy % that is NOT MASKED or a veil.token(...) call', missing, source, policy
            USING HINT = 'The copy''s key is derived from the source key, so it must be deterministic and unique.';
    END IF;
    IF pg_catalog.to_regclass(pg_catalog.format('sanitized.%I', copy_name)) IS NOT NULL THEN
        RAISE EXCEPTION 'pgveil: sanitized.% exists already (naming: public tables keep their name, others become schema__table)', pg_catalog.quote_ident(copy_name);
    END IF;

    FOR col IN SELECT * FROM veil_private.copy_columns(source, policy) LOOP
        column_list := column_list || pg_catalog.format('%I %s, ', col.name, veil_private.column_type(col.type, col.column_collation));
    END LOOP;
    EXECUTE pg_catalog.format('CREATE TABLE sanitized.%I (%s PRIMARY KEY (%s))', copy_name, column_list,
        (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(c.name), ', ')
         FROM veil_private.copy_columns(source, policy) c WHERE c.is_key));
    target := pg_catalog.format('sanitized.%I', copy_name)::regclass;
    INSERT INTO veil_private.streams (source, policy, target, trigger_fn)
    VALUES (source, policy, target, 'veil.version()'::regprocedure);
    INSERT INTO veil_private.stream_columns (source, attnum, target_attnum)
    SELECT source, c.attnum, a.attnum
    FROM veil_private.copy_columns(source, policy) c
    JOIN pg_catalog.pg_attribute a ON a.attrelid = target AND a.attname = c.name;
    PERFORM veil_private.build_stream(source);
    PERFORM veil_private.grant_copies(ro.rolname)
    FROM veil_private.consumers c JOIN pg_catalog.pg_roles ro ON ro.oid = c.roleid;

    EXECUTE pg_catalog.format('CREATE TRIGGER veil_stream_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows'
        ' FOR EACH STATEMENT EXECUTE FUNCTION veil_private.%I()', source, 'stream_' || source::oid);
    EXECUTE pg_catalog.format('CREATE TRIGGER veil_stream_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows'
        ' NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION veil_private.%I()', source, 'stream_' || source::oid);
    EXECUTE pg_catalog.format('CREATE TRIGGER veil_stream_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows'
        ' FOR EACH STATEMENT EXECUTE FUNCTION veil_private.%I()', source, 'stream_' || source::oid);
    EXECUTE pg_catalog.format('CREATE TRIGGER veil_stream_truncate AFTER TRUNCATE ON %s'
        ' FOR EACH STATEMENT EXECUTE FUNCTION veil_private.%I()', source, 'stream_' || source::oid);
    RETURN target;
END
$$;
COMMENT ON FUNCTION veil.stream(regclass, text) IS
    'Keep sanitized.<table> equal to the policy''s transform of source, by triggers; backfill with CALL veil.backfill(source).';

CREATE FUNCTION veil.unstream(source regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s veil_private.streams;
BEGIN
    PERFORM veil.require_governor();
    SELECT * INTO s FROM veil_private.streams WHERE streams.source = unstream.source;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgveil: % is not streamed', source;
    END IF;
    EXECUTE pg_catalog.format('DROP TRIGGER veil_stream_insert ON %1$s; DROP TRIGGER veil_stream_update ON %1$s;'
        ' DROP TRIGGER veil_stream_delete ON %1$s; DROP TRIGGER veil_stream_truncate ON %1$s', source);
    EXECUTE pg_catalog.format('DROP FUNCTION %s', s.trigger_fn::regprocedure);
    EXECUTE pg_catalog.format('DROP TABLE %s', s.target::regclass);
    DELETE FROM veil_private.streams WHERE streams.source = unstream.source;
END
$$;
COMMENT ON FUNCTION veil.unstream(regclass) IS 'Remove a stream: its triggers and its sanitized copy.';

-- Rule changes on a streamed table rebuild its stream in the same transaction.
CREATE FUNCTION veil_private.rebuild_streams_after_rule_change()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    streamed oid;
BEGIN
    FOR streamed IN
        SELECT s.source FROM veil_private.streams s
        WHERE s.source IN (SELECT relid FROM changed_rules)
    LOOP
        PERFORM veil_private.build_stream(streamed);
    END LOOP;
    RETURN NULL;
END
$$;
CREATE TRIGGER rebuild_streams_on_insert AFTER INSERT ON veil_private.column_rules
    REFERENCING NEW TABLE AS changed_rules FOR EACH STATEMENT
    EXECUTE FUNCTION veil_private.rebuild_streams_after_rule_change();
CREATE TRIGGER rebuild_streams_on_update AFTER UPDATE ON veil_private.column_rules
    REFERENCING NEW TABLE AS changed_rules FOR EACH STATEMENT
    EXECUTE FUNCTION veil_private.rebuild_streams_after_rule_change();
CREATE TRIGGER rebuild_streams_on_delete AFTER DELETE ON veil_private.column_rules
    REFERENCING OLD TABLE AS changed_rules FOR EACH STATEMENT
    EXECUTE FUNCTION veil_private.rebuild_streams_after_rule_change();

REVOKE ALL ON FUNCTION veil_private.copy_name(oid), veil_private.copy_columns(oid, text),
    veil_private.column_type(text, regcollation),
    veil_private.copy_write(oid, text, boolean),
    veil_private.key_join(), veil_private.build_stream(oid),
    veil.stream(regclass, text), veil.unstream(regclass),
    veil_private.rebuild_streams_after_rule_change() FROM PUBLIC;
