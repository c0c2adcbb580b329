-- Streams and the change log; streams where pgveil's event triggers are
-- missing (policy option on_ddl = 'break').
--
-- Without event triggers, nothing rebuilds a stream in the transaction of a
-- DDL statement on its source, so the generated trigger may no longer fit
-- the table (a renamed or dropped column). Under on_ddl = 'break' such a
-- trigger never fails the application's write: the stream is marked broken
-- (and says so in the change log), applies nothing more, and `pgveil
-- refresh` (veil_private.rebuild_broken_stream, then a backfill) rebuilds it.
-- Dropping a streamed table leaves its copy until that refresh.

-- Called from a broken-mode trigger's exception handler, in the writer's
-- transaction. Records the SQLSTATE only: the message may quote a raw value.
CREATE FUNCTION veil_private.mark_stream_broken(source oid, sqlstate text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    copy name;
BEGIN
    UPDATE veil_private.streams s SET broken_at = pg_catalog.now(), broken_sqlstate = mark_stream_broken.sqlstate
    WHERE s.source = mark_stream_broken.source AND s.broken_at IS NULL
    RETURNING (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = s.target) INTO copy;
    IF copy IS NULL THEN
        RETURN;  -- another statement of this transaction marked it
    END IF;
    PERFORM veil_private.log_change(source, 'broken', 0, NULL);
    RAISE WARNING 'pgveil: the stream into sanitized.% stopped (SQLSTATE %) after a change to its source table; the write went through', copy, sqlstate
        USING HINT = 'pgveil refresh rebuilds and backfills it.';
END
$$;

-- Whether a stream's trigger and copy columns are what its source and rules
-- make now. False after DDL that no event trigger followed; also when the
-- stream could not be built as things are (the error is not kept).
CREATE FUNCTION veil_private.stream_is_current(source oid)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s veil_private.streams;
BEGIN
    SELECT * INTO s FROM veil_private.streams WHERE streams.source = stream_is_current.source;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = s.source) THEN
        RETURN false;
    END IF;
    IF (SELECT p.prosrc FROM pg_catalog.pg_proc p WHERE p.oid = s.trigger_fn)
       IS DISTINCT FROM veil_private.stream_trigger_body(s.source) THEN
        RETURN false;
    END IF;
    RETURN NOT EXISTS (
        SELECT FROM veil_private.copy_columns(s.source, s.policy) c
        FULL JOIN (SELECT sc.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type
                   FROM veil_private.stream_columns sc
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = s.target AND a.attnum = sc.target_attnum
                   WHERE sc.source = s.source) t ON t.attnum = c.attnum
        WHERE t.attname IS DISTINCT FROM c.name OR t.type IS DISTINCT FROM c.type);
EXCEPTION WHEN OTHERS THEN
    IF SQLSTATE = '57014' THEN
        RAISE;
    END IF;
    RETURN false;
END
$$;

CREATE OR REPLACE VIEW veil.streams AS
    SELECT s.source::regclass AS source, s.target::regclass AS target, s.policy, s.needs_backfill,
           b.rows_copied AS backfilled_rows, b.finished_at AS backfill_finished_at,
           p.on_ddl, p.change_log, s.broken_at, s.broken_sqlstate,
           EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = s.source) AS source_exists,
           NOT veil_private.stream_is_current(s.source) AS stale
    FROM veil_private.streams s
    JOIN veil_private.policies p ON p.name = s.policy
    LEFT JOIN veil_private.backfill_progress b USING (source);

-- Rebuild a broken or stale stream: regenerate its trigger and copy
-- columns, empty the copy (logged as a truncate, so consumers re-read it)
-- and mark it for a backfill, which the caller runs. A stream whose source
-- was dropped goes, copy and all. Returns 'rebuilt' or 'dropped'.
CREATE FUNCTION veil_private.rebuild_broken_stream(source oid)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s veil_private.streams;
BEGIN
    PERFORM veil.require_governor();
    SELECT * INTO s FROM veil_private.streams WHERE streams.source = rebuild_broken_stream.source FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgveil: % is not a stream''s source', source USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = s.source) THEN
        PERFORM veil_private.log_change(s.source, 'truncate', 0, NULL);
        DELETE FROM veil_private.streams WHERE streams.source = s.source;
        -- Emptied first: subscribers of a publication receive the TRUNCATE, not the DROP.
        EXECUTE pg_catalog.format('TRUNCATE %s', s.target::regclass);
        EXECUTE pg_catalog.format('DROP TABLE %s', s.target::regclass);
        EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS %s', s.trigger_fn::regprocedure);
        RETURN 'dropped';
    END IF;
    PERFORM veil_private.build_stream(s.source);
    EXECUTE pg_catalog.format('TRUNCATE %s', s.target::regclass);
    PERFORM veil_private.log_change(s.source, 'truncate', 0, NULL);
    UPDATE veil_private.streams SET broken_at = NULL, broken_sqlstate = NULL, needs_backfill = true
    WHERE streams.source = s.source;
    DELETE FROM veil_private.backfill_progress b WHERE b.source = s.source;
    RETURN 'rebuilt';
END
$$;

CREATE OR REPLACE FUNCTION veil.stream(source regclass, policy text DEFAULT 'sanitized')
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
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger WHERE evtname = 'veil_rebuild_streams')
       AND (SELECT p.on_ddl FROM veil_private.policies p WHERE p.name = policy) = 'rebuild' THEN
        RAISE EXCEPTION 'pgveil: streaming under policy % needs pgveil''s DDL event trigger, which the installing role could not create', policy
            USING HINT = pg_catalog.format('Without it, DDL on a streamed table could break application writes. Either install pgveil as a role that may create event triggers (a superuser, or a managed service''s admin role), or let DDL stop the stream instead: SELECT veil.alter_policy(%L, on_ddl => ''break''); pgveil refresh then rebuilds it.', policy);
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
    PERFORM veil_private.sync_publications();

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

-- Backfill batches and re-tokenization write the change log like the
-- triggers: the keys a batch wrote, the old-version keys it removed. A
-- backfill batch gathers its keys only when they will be logged.
CREATE FUNCTION veil_private.logs_changes(source oid)
RETURNS boolean
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.change_log FROM veil_private.streams s JOIN veil_private.policies p ON p.name = s.policy
    WHERE s.source = logs_changes.source
$$;

CREATE OR REPLACE FUNCTION veil_private.backfill_batch(source oid, batch_size integer, INOUT last_key text[],
                                                       OUT copied bigint, OUT done boolean)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s veil_private.streams;
    key_list text;
    key_typed text;
    key_text text;
    upper_typed text;
    upper_key text[];
    logged boolean := veil_private.logs_changes(source);
    written bigint;
    keys json;
BEGIN
    SELECT * INTO s FROM veil_private.streams WHERE streams.source = backfill_batch.source;
    SELECT pg_catalog.string_agg(pg_catalog.format('src.%I', a.attname), ', ' ORDER BY k.ord),
           pg_catalog.string_agg(pg_catalog.format('($1[%s])::%s', k.ord, pg_catalog.format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY k.ord),
           pg_catalog.string_agg(pg_catalog.format('(src.%I)::text', a.attname), ', ' ORDER BY k.ord),
           pg_catalog.string_agg(pg_catalog.format('($2[%s])::%s', k.ord, pg_catalog.format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY k.ord)
    INTO key_list, key_typed, key_text, upper_typed
    FROM pg_catalog.pg_index i,
         LATERAL pg_catalog.unnest(i.indkey::smallint[]) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_catalog.pg_attribute a ON a.attnum = k.attnum
    WHERE i.indrelid = s.source AND i.indisprimary AND a.attrelid = s.source;

    EXECUTE pg_catalog.format(
        'SELECT ARRAY[%s] FROM %s AS src WHERE %s ORDER BY %s OFFSET %s LIMIT 1',
        key_text, s.source::regclass,
        CASE WHEN last_key IS NULL THEN 'true' ELSE pg_catalog.format('(%s) > (%s)', key_list, key_typed) END,
        key_list, batch_size - 1)
    INTO upper_key
    USING last_key;
    done := upper_key IS NULL;

    EXECUTE pg_catalog.format($q$
        WITH batch AS (
            SELECT * FROM %1$s AS src
            WHERE %2$s AND %3$s
            FOR SHARE),
        written AS (%4$s RETURNING %5$s)
        SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM written),
               CASE WHEN $3 THEN (SELECT json_agg(w) FROM written w) END
        $q$,
        s.source::regclass,
        CASE WHEN last_key IS NULL THEN 'true' ELSE pg_catalog.format('(%s) > (%s)', key_list, key_typed) END,
        CASE WHEN done THEN 'true' ELSE pg_catalog.format('(%s) <= (%s)', key_list, upper_typed) END,
        veil_private.copy_write(s.source, 'batch', true),
        veil_private.copy_key_columns(s.source))
    INTO copied, written, keys
    USING last_key, upper_key, logged;
    IF logged AND written > 0 THEN
        PERFORM veil_private.log_change(s.source, 'upsert', written, keys);
    END IF;
    -- The next batch starts after this one's upper key (when done, it matters no more).
    last_key := coalesce(upper_key, last_key);
    UPDATE veil_private.backfill_progress p
    SET last_key = backfill_batch.last_key, rows_copied = p.rows_copied + copied
    WHERE p.source = backfill_batch.source;
END
$$;

CREATE OR REPLACE FUNCTION veil_private.delete_stale_tokens(source oid, batch_size integer)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s veil_private.streams;
    stale text;
    deleted bigint;
    keys json;
BEGIN
    SELECT * INTO s FROM veil_private.streams WHERE streams.source = delete_stale_tokens.source;
    SELECT pg_catalog.string_agg(pg_catalog.format('veil.token_key_version(%I) <> current_key.version', c.name), ' OR ')
    INTO stale
    FROM veil_private.copy_columns(s.source, s.policy) c
    WHERE c.is_key AND c.is_token;
    IF stale IS NULL THEN
        RETURN 0;  -- the key is not tokenized: step 2 rewrote every row in place
    END IF;
    EXECUTE pg_catalog.format(
        'WITH current_key AS (SELECT version FROM veil_private.keys WHERE is_current),'
        ' doomed AS (SELECT t.ctid FROM %1$s AS t, current_key WHERE %2$s LIMIT %3$s FOR UPDATE SKIP LOCKED),'
        ' gone AS (DELETE FROM %1$s AS t USING doomed WHERE t.ctid = doomed.ctid RETURNING %4$s)'
        ' SELECT count(*), json_agg(gone) FROM gone',
        s.target::regclass, stale, batch_size,
        veil_private.copy_key_columns(s.source))
    INTO deleted, keys;
    IF deleted > 0 THEN
        PERFORM veil_private.log_change(s.source, 'delete', deleted, keys);
    END IF;
    RETURN deleted;
END
$$;

REVOKE ALL ON FUNCTION veil_private.mark_stream_broken(oid, text), veil_private.stream_is_current(oid),
    veil_private.rebuild_broken_stream(oid), veil_private.logs_changes(oid) FROM PUBLIC;

-- Rule changes on a streamed table rebuild its stream in the same
-- transaction. Without event triggers, a rule change can come after DDL
-- that no trigger followed (veil.security_label first forgets the rules of
-- dropped tables and columns): a stream whose table is gone is left to
-- pgveil refresh, and under on_ddl = 'break' a stream that cannot be built
-- as things are stays stale for refresh to report, rather than failing
-- every rule change of the database.
CREATE OR REPLACE FUNCTION veil_private.rebuild_streams_after_rule_change()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    streamed record;
BEGIN
    FOR streamed IN
        SELECT s.source, p.on_ddl FROM veil_private.streams s JOIN veil_private.policies p ON p.name = s.policy
        WHERE s.source IN (SELECT relid FROM changed_rules)
          AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = s.source)
    LOOP
        IF streamed.on_ddl = 'rebuild' THEN
            PERFORM veil_private.build_stream(streamed.source);
        ELSE
            BEGIN
                PERFORM veil_private.build_stream(streamed.source);
            EXCEPTION WHEN OTHERS THEN
                IF veil_private.fails_the_transaction(SQLSTATE) THEN
                    RAISE;
                END IF;
            END;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- A copy is emptied before it is dropped, so that the erasure reaches its
-- logical-replication subscribers: a publication carries the TRUNCATE, not
-- the DROP TABLE.
CREATE OR REPLACE FUNCTION veil.unstream(source regclass)
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
    EXECUTE pg_catalog.format('TRUNCATE %s', s.target::regclass);
    EXECUTE pg_catalog.format('DROP TABLE %s', s.target::regclass);
    DELETE FROM veil_private.streams WHERE streams.source = unstream.source;
END
$$;

CREATE OR REPLACE FUNCTION veil_private.drop_streams_of_dropped_tables()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    gone record;
BEGIN
    FOR gone IN
        DELETE FROM veil_private.streams s
        USING pg_catalog.pg_event_trigger_dropped_objects() d
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0 AND d.objid = s.source
        RETURNING s.target, s.trigger_fn
    LOOP
        IF EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = gone.target) THEN
            EXECUTE pg_catalog.format('TRUNCATE %s', gone.target::regclass);
        END IF;
        EXECUTE pg_catalog.format('DROP TABLE IF EXISTS %s', gone.target::regclass);
        EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS %s', gone.trigger_fn::regprocedure);
    END LOOP;
END
$$;
