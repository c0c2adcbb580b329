-- Backfill: copy a stream's existing source rows in keyset-paginated
-- batches, one transaction per batch, resumable from the last key recorded
-- in veil_private.backfill_progress.
--
-- Correct under concurrent writes: each batch takes FOR SHARE locks on the
-- rows it reads, so a concurrent UPDATE or DELETE of them waits for the batch
-- to commit and its trigger then writes over (or removes) what the batch
-- copied; rows that exist in the copy are rewritten (ON CONFLICT DO UPDATE),
-- which also fills columns whose rules were added after an earlier backfill.

-- Copy the next batch_size keys after last_key; returns the rows copied, the
-- new last key, and whether the table is done. The batch's upper key is fixed
-- first, without locks: a row whose key a concurrent update moves while the
-- batch locks it leaves the range (its trigger copies it), and cannot drag
-- the pagination past rows not yet copied.
CREATE FUNCTION veil_private.backfill_batch(source oid, batch_size integer, INOUT last_key text[],
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
        written AS (%4$s)
        SELECT count(*) FROM batch
        $q$,
        s.source::regclass,
        CASE WHEN last_key IS NULL THEN 'true' ELSE pg_catalog.format('(%s) > (%s)', key_list, key_typed) END,
        CASE WHEN done THEN 'true' ELSE pg_catalog.format('(%s) <= (%s)', key_list, upper_typed) END,
        veil_private.copy_write(s.source, 'batch', true))
    INTO copied
    USING last_key, upper_key;
    -- The next batch starts after this one's upper key (when done, it matters no more).
    last_key := coalesce(upper_key, last_key);
    UPDATE veil_private.backfill_progress p
    SET last_key = backfill_batch.last_key, rows_copied = p.rows_copied + copied
    WHERE p.source = backfill_batch.source;
END
$$;
REVOKE ALL ON FUNCTION veil_private.backfill_batch(oid, integer, text[]) FROM PUBLIC;

-- Begin (or resume) a backfill: checks, and the key to continue after.
CREATE FUNCTION veil_private.backfill_start(source regclass, batch_size integer)
RETURNS text[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM veil.require_governor();
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'pgveil: batch_size must be a positive number of rows';
    END IF;
    IF NOT EXISTS (SELECT FROM veil_private.streams s WHERE s.source = backfill_start.source) THEN
        RAISE EXCEPTION 'pgveil: % is not streamed; SELECT veil.stream(%L) first', source, source;
    END IF;
    -- Resume an unfinished backfill; start over after a finished one.
    INSERT INTO veil_private.backfill_progress AS p (source) VALUES (source)
    ON CONFLICT ON CONSTRAINT backfill_progress_pkey DO UPDATE SET last_key = NULL, rows_copied = 0,
        started_at = pg_catalog.now(), finished_at = NULL
    WHERE p.finished_at IS NOT NULL;
    RETURN (SELECT p.last_key FROM veil_private.backfill_progress p WHERE p.source = backfill_start.source);
END
$$;

CREATE FUNCTION veil_private.backfill_finish(source regclass)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE veil_private.backfill_progress p SET finished_at = pg_catalog.now() WHERE p.source = backfill_finish.source;
    UPDATE veil_private.streams s SET needs_backfill = false WHERE s.source = backfill_finish.source;
$$;
REVOKE ALL ON FUNCTION veil_private.backfill_start(regclass, integer),
    veil_private.backfill_finish(regclass) FROM PUBLIC;

-- A procedure that commits cannot carry a SET clause, so it fixes its
-- search_path with set_config after each commit instead; every reference in
-- it is schema-qualified regardless. (`pgveil backfill` runs the same steps
-- from Python, with a progress bar.)
CREATE PROCEDURE veil.backfill(source regclass, batch_size integer DEFAULT 10000)
LANGUAGE plpgsql
AS $$
DECLARE
    last_key text[];
    finished boolean;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    last_key := veil_private.backfill_start(source, batch_size);
    COMMIT;
    LOOP
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        SELECT b.last_key, b.done INTO last_key, finished
        FROM veil_private.backfill_batch(source, batch_size, last_key) AS b;
        COMMIT;
        EXIT WHEN finished;
    END LOOP;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM veil_private.backfill_finish(source);
    COMMIT;
END
$$;
COMMENT ON PROCEDURE veil.backfill(regclass, integer) IS
    'Copy the existing rows of a streamed table, one committed batch at a time; resumable.';
REVOKE ALL ON PROCEDURE veil.backfill(regclass, integer) FROM PUBLIC;
