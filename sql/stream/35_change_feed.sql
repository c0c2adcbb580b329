-- The change feed: one NOTIFY on channel veil_changes per streamed statement,
-- sent only while some session follows the feed.
--
-- Why only then: PostgreSQL serializes the commits of notifying transactions
-- (PreCommit_Notify takes a cluster-wide lock and holds it through the commit
-- record's flush), so concurrent writers that notify lose their group commit.
-- A feed nobody reads should not cost that.
--
-- How writers know: a follower (veil.follow_changes) holds the feed's advisory
-- lock in share mode for the rest of its session; the server drops it when the
-- session ends, however it ends. The generated stream trigger (30_stream.sql)
-- tries the lock in exclusive mode and lets go of it within one expression:
-- if it got it, no other session follows. (A session's own lock never stands
-- in its way, so a follower that writes finds out from its flag,
-- pgveil.follows_changes.) Two writers trying at the same instant make one of
-- them notify needlessly, which costs a notification and never loses one.

-- The advisory lock key of the feed: 'pgve' in its high half, 1 in its low.
CREATE FUNCTION veil_private.change_feed_lock()
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT (x'70677665'::bigint << 32) | 1 $$;

-- Whether this session holds the feed's lock (follows the feed).
CREATE FUNCTION veil_private.follows_change_feed()
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT FROM pg_catalog.pg_locks l
        WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'advisory' AND l.mode = 'ShareLock'
          AND l.objsubid = 1
          AND (l.classid::bigint << 32 | l.objid::bigint) = veil_private.change_feed_lock())
$$;

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

-- Follow the feed: take the feed's lock for the session, LISTEN, and wait for
-- the writing transactions already running to end. Those may have found
-- nobody following and written without notifying; once they have ended, a
-- read made after this call's commit sees what they wrote, and every later
-- streamed statement notifies. Idempotent. SECURITY DEFINER only to reach the
-- lock's helpers in veil_private: the lock and LISTEN belong to the session.
CREATE FUNCTION veil.follow_changes(wait_for interval DEFAULT '30 seconds')
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deadline timestamptz := pg_catalog.clock_timestamp() + wait_for;
    took_lock boolean := false;
    mine pg_catalog.xid8;
    oldest pg_catalog.xid8;
BEGIN
    -- Each statement below must read a fresh snapshot.
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'pgveil: veil.follow_changes() needs READ COMMITTED, not %',
            pg_catalog.upper(pg_catalog.current_setting('transaction_isolation'))
            USING HINT = 'Call it in its own transaction (autocommit), then read.';
    END IF;
    IF pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'pgveil: veil.follow_changes() must run in a transaction that has not written'
            USING HINT = 'Call it in its own transaction (autocommit), then read.';
    END IF;
    BEGIN
        IF NOT veil_private.follows_change_feed() THEN
            -- Writers hold the lock exclusively for an instant only.
            WHILE NOT pg_catalog.pg_try_advisory_lock_shared(veil_private.change_feed_lock()) LOOP
                IF pg_catalog.clock_timestamp() > deadline THEN
                    RAISE EXCEPTION 'pgveil: the change feed''s lock stayed taken for %', wait_for
                        USING HINT = 'See pg_locks for advisory locks with classid 1885828709 and objid 1.';
                END IF;
                PERFORM pg_catalog.pg_sleep(0.001);
            END LOOP;
            took_lock := true;
        END IF;
        LISTEN veil_changes;
        PERFORM pg_catalog.set_config('pgveil.follows_changes', 'on', false);
        -- Every writer that looked before the lock was taken had its xid
        -- by then (its trigger runs after its row is written): all are
        -- older than the one this transaction takes now.
        mine := pg_catalog.pg_current_xact_id();
        LOOP
            oldest := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
            EXIT WHEN oldest >= mine;
            IF pg_catalog.clock_timestamp() > deadline THEN
                RAISE EXCEPTION 'pgveil: a writing transaction begun before veil.follow_changes() (xid %) still runs after %',
                    oldest, wait_for
                    USING HINT = 'It may write streamed tables without notifying. Wait for it to end'
                        ' (pg_stat_activity.backend_xid), or call again with a longer wait_for.';
            END IF;
            PERFORM pg_catalog.pg_sleep(0.01);
        END LOOP;
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        -- A session lock outlives the failed transaction: let it go.
        IF took_lock THEN
            PERFORM pg_catalog.pg_advisory_unlock_shared(veil_private.change_feed_lock());
        END IF;
        RAISE;
    END;
END
$$;
COMMENT ON FUNCTION veil.follow_changes(interval) IS
    'Follow the change feed (channel veil_changes) for the rest of the session; call in its own transaction, then read.';

CREATE FUNCTION veil.unfollow_changes()
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UNLISTEN veil_changes;
    PERFORM pg_catalog.set_config('pgveil.follows_changes', 'off', false);
    WHILE veil_private.follows_change_feed() LOOP
        PERFORM pg_catalog.pg_advisory_unlock_shared(veil_private.change_feed_lock());
    END LOOP;
END
$$;
COMMENT ON FUNCTION veil.unfollow_changes() IS 'Stop following the change feed.';

REVOKE ALL ON FUNCTION veil_private.change_feed_lock(),
    veil_private.follows_change_feed(), veil_private.notify_change(name, text, bigint, json) FROM PUBLIC;
