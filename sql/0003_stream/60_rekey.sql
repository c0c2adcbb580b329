-- Key rotation with re-tokenization of every stream.
--
-- 1. A new key becomes current (committed at once): from then on every
--    trigger writes new-version tokens.
-- 2. Each stream is re-copied in committed batches with the new key (the
--    backfill's batches: rows that exist are rewritten under FOR SHARE locks).
-- 3. Rows still keyed by an old-version token are deleted, in batches.
-- 4. Once no old-version token is left in any copy, the old key is destroyed.
-- While it runs, a row whose key is tokenized can be seen under both its old
-- and its new token; veil.token_key_version() tells them apart.

-- Delete up to batch_size rows of a copy whose key token is not of the
-- current version; returns how many were deleted.
CREATE FUNCTION veil_private.delete_stale_tokens(source oid, batch_size integer)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s veil_private.streams;
    stale text;
    deleted bigint;
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
        ' doomed AS (SELECT t.ctid FROM %1$s AS t, current_key WHERE %2$s LIMIT %3$s FOR UPDATE SKIP LOCKED)'
        ' DELETE FROM %1$s AS t USING doomed WHERE t.ctid = doomed.ctid',
        s.target::regclass, stale, batch_size);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;
REVOKE ALL ON FUNCTION veil_private.delete_stale_tokens(oid, integer) FROM PUBLIC;

-- Every token column of every copy holds only current-version tokens.
CREATE FUNCTION veil_private.old_tokens_remain()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col record;
    found boolean;
BEGIN
    FOR col IN
        SELECT s.target::regclass AS target, c.name
        FROM veil_private.streams s, veil_private.copy_columns(s.source, s.policy) c
        WHERE c.is_token
    LOOP
        EXECUTE pg_catalog.format(
            'SELECT EXISTS (SELECT FROM %s WHERE veil.token_key_version(%I)'
            ' <> (SELECT version FROM veil_private.keys WHERE is_current))', col.target, col.name)
        INTO found;
        IF found THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$;
REVOKE ALL ON FUNCTION veil_private.old_tokens_remain() FROM PUBLIC;

CREATE PROCEDURE veil.rekey(batch_size integer DEFAULT 10000)
LANGUAGE plpgsql
AS $$
DECLARE
    new_version integer;
    stream_source oid;
    last_key text[];
    done bigint;
    finished boolean;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM veil.require_governor();
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'pgveil: batch_size must be a positive number of rows';
    END IF;
    new_version := veil.rotate_key();
    COMMIT;
    FOR stream_source IN SELECT s.source FROM veil_private.streams s ORDER BY s.source LOOP
        last_key := NULL;
        LOOP
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            SELECT b.last_key, b.done INTO last_key, finished
            FROM veil_private.backfill_batch(stream_source, batch_size, last_key) AS b;
            COMMIT;
            EXIT WHEN finished;
        END LOOP;
        LOOP
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            done := veil_private.delete_stale_tokens(stream_source, batch_size);
            COMMIT;
            EXIT WHEN done = 0;
        END LOOP;
    END LOOP;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF veil_private.old_tokens_remain() THEN
        RAISE EXCEPTION 'pgveil: tokens of an old key version remain; the old keys are kept'
            USING HINT = 'Run CALL veil.rekey() again.';
    END IF;
    PERFORM veil.retire_key(k.version) FROM veil_private.keys k WHERE k.version <> new_version;
    COMMIT;
END
$$;
COMMENT ON PROCEDURE veil.rekey(integer) IS
    'Rotate the token key, re-tokenize every sanitized copy in batches, then destroy the old keys.';
REVOKE ALL ON PROCEDURE veil.rekey(integer) FROM PUBLIC;
