-- The change feed: one NOTIFY on channel veil_changes per streamed statement,
-- sent only while some session follows the feed.
--
-- Why only then: PostgreSQL serializes the commits of notifying transactions
-- (PreCommit_Notify takes a cluster-wide lock and holds it through the commit
-- record's flush), so concurrent writers that notify lose their group commit.
-- A feed nobody reads should not cost that.
--
-- How, with two advisory locks of this database ('pgve' in the high half of
-- the key):
-- * following, x'7067766500000001': each follower holds it in share mode for
--   the rest of its session (the server lets go when the session ends,
--   however it ends).
-- * barrier, x'7067766500000002': each streamed statement first takes it in
--   share mode until its transaction ends (a try: writers never wait), then
--   tries the following lock in exclusive mode and lets go of it within the
--   same expression. Got it: no other session follows, so no notification
--   (a session's own lock never stands in its way: a follower that writes
--   finds out from its flag, pgveil.follows_changes). The barrier try fails
--   only while a follower holds or awaits the barrier: notify.
-- veil.follow_changes takes the following lock, then the barrier in exclusive
-- mode, which waits for every transaction that may have written without
-- notifying. Two writers trying the following lock at the same instant make
-- one of them notify needlessly: a notification too many, never one lost.

-- One notification per streamed statement, carrying only the copy's name and,
-- for statements of at most 100 rows, their copy keys (tokens or NOT MASKED
-- key values): never a raw value. Consumers re-read the rows from sanitized.*,
-- by key, or by scanning when no keys came.
CREATE FUNCTION veil_private.notify_change(copy_table name, operation text, rows bigint, keys json)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    payload text := pg_catalog.json_build_object(
        'table', copy_table, 'op', operation, 'rows', rows, 'keys', CASE WHEN rows <= 100 THEN keys END)::text;
BEGIN
    -- NOTIFY payloads are limited to 8000 bytes: past that, send no keys.
    IF pg_catalog.octet_length(payload) > 7900 THEN
        payload := pg_catalog.json_build_object(
            'table', copy_table, 'op', operation, 'rows', rows, 'keys', NULL)::text;
    END IF;
    PERFORM pg_catalog.pg_notify('veil_changes', payload);
END
$$;

-- Whether this session holds the following lock.
CREATE FUNCTION veil.follows_changes()
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT FROM pg_catalog.pg_locks l
        WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'advisory' AND l.mode = 'ShareLock'
          AND l.classid = x'70677665'::bigint::oid AND l.objid = 1 AND l.objsubid = 1)
$$;
COMMENT ON FUNCTION veil.follows_changes() IS 'Whether this session follows the change feed.';

-- Follow the feed for the rest of the session: take the following lock,
-- LISTEN, and wait (up to wait_for) for the transactions that may have
-- written streamed tables without notifying. When it returns, those have
-- committed or rolled back, so a read begun after it sees their writes, and
-- every later streamed statement notifies. Idempotent. Invoker's rights: the
-- locks and LISTEN belong to the session, and any role may take them.
CREATE FUNCTION veil.follow_changes(wait_for interval DEFAULT '30 seconds')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    following_lock CONSTANT bigint := x'7067766500000001'::bigint;
    barrier_lock CONSTANT bigint := x'7067766500000002'::bigint;
    was_following boolean := veil.follows_changes();
    previous_timeout text := pg_catalog.current_setting('lock_timeout');
    waiting_for text := 'the following lock';
BEGIN
    IF wait_for IS NULL OR wait_for <= interval '0' THEN
        RAISE EXCEPTION 'pgveil: wait_for must be a positive interval, not %', coalesce(wait_for::text, 'NULL');
    END IF;
    PERFORM pg_catalog.set_config('lock_timeout',
        pg_catalog.ceil(pg_catalog.date_part('epoch', wait_for) * 1000)::bigint::text, true);
    BEGIN
        IF NOT was_following THEN
            -- Writers hold it exclusively for an instant only.
            PERFORM pg_catalog.pg_advisory_lock_shared(following_lock);
        END IF;
        LISTEN veil_changes;
        PERFORM pg_catalog.set_config('pgveil.follows_changes', 'on', false);
        waiting_for := 'transactions that wrote streamed tables unannounced';
        PERFORM pg_catalog.pg_advisory_xact_lock(barrier_lock);
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        -- The session lock would outlive the failed call: let it go.
        IF NOT was_following THEN
            PERFORM veil.unfollow_changes();
        END IF;
        IF SQLSTATE = '55P03' THEN
            RAISE EXCEPTION 'pgveil: veil.follow_changes() waited % for %', wait_for, waiting_for
                USING ERRCODE = 'lock_not_available',
                      HINT = 'pg_locks shows who holds advisory locks with classid 1885828709: objid 1, following;'
                             ' objid 2, writers not yet committed. Call again, or with a longer wait_for.';
        END IF;
        RAISE;
    END;
    PERFORM pg_catalog.set_config('lock_timeout', previous_timeout, true);
END
$$;
COMMENT ON FUNCTION veil.follow_changes(interval) IS
    'Follow the change feed (channel veil_changes) for the rest of the session; read after it returns.';

CREATE FUNCTION veil.unfollow_changes()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UNLISTEN veil_changes;
    PERFORM pg_catalog.set_config('pgveil.follows_changes', 'off', false);
    -- A transaction-level hold of the same key is not ours to release: stop there.
    WHILE veil.follows_changes() AND pg_catalog.pg_advisory_unlock_shared(x'7067766500000001'::bigint) LOOP
    END LOOP;
END
$$;
COMMENT ON FUNCTION veil.unfollow_changes() IS 'Stop following the change feed.';

REVOKE ALL ON FUNCTION veil_private.notify_change(name, text, bigint, json) FROM PUBLIC;
