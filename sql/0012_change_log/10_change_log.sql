-- The change log: what each streamed statement changed in a sanitized copy,
-- written by the stream's trigger in the writer's transaction, read by
-- consumers by position.
--
-- One entry per statement and operation: the copy, 'upsert' (rows written),
-- 'delete' (rows removed, including the old key of a moved row), 'truncate',
-- or 'broken' (the stream stopped, see 40_streams.sql), and the copy keys
-- affected (tokens or NOT MASKED key values: never a raw value).
--
-- Position and order: (xid, seq), the writer's top-level transaction ID and
-- a sequence number. An entry is readable only once every transaction with a
-- lower ID has ended (xid < the xmin of the reader's snapshot, the horizon),
-- so nothing can later appear before a position a consumer has passed,
-- however transactions commit. The price: a long-running writing
-- transaction holds back the horizon, and so every consumer, until it ends.
-- The order is by transaction ID, not commit: two transactions that wrote
-- the same key can appear in either order, so an entry says which keys
-- changed, and the consumer reads their current state from the copy.

CREATE TABLE veil_private.change_log (
    xid       xid8        NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    seq       bigint      GENERATED ALWAYS AS IDENTITY,
    logged_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    copy      text        NOT NULL,
    op        text        NOT NULL CHECK (op IN ('upsert', 'delete', 'truncate', 'broken')),
    rows      bigint      NOT NULL,
    -- A JSON array of key objects ({"customer_id": "v1:..."}); NULL for
    -- truncate and broken.
    keys      json,
    PRIMARY KEY (xid, seq)
);
-- Stored as they are: a big statement's keys are tokens, which do not
-- compress, and pglz would spend most of the statement's log time finding
-- that out.
ALTER TABLE veil_private.change_log ALTER COLUMN keys SET STORAGE EXTERNAL;
REVOKE ALL ON veil_private.change_log FROM PUBLIC;

-- Retention: the maximum age of an entry (NULL: none), and the position up
-- to which entries have been trimmed. A consumer whose acknowledged position
-- lies before it has lost entries.
CREATE TABLE veil_private.change_log_state (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    max_age     interval CHECK (max_age > interval '0'),
    trimmed_xid xid8   NOT NULL DEFAULT '0',
    trimmed_seq bigint NOT NULL DEFAULT 0
);
INSERT INTO veil_private.change_log_state DEFAULT VALUES;
REVOKE ALL ON veil_private.change_log_state FROM PUBLIC;

-- Every transaction below it had ended when the calling statement's snapshot
-- was taken. STABLE, so that it reads that snapshot: a VOLATILE function
-- would take a newer one, and an entry committed between the two would lie
-- below the horizon yet be invisible to the statement, and be skipped.
CREATE FUNCTION veil_private.change_log_horizon()
RETURNS xid8
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()) $$;

CREATE FUNCTION veil_private.position_text(xid xid8, seq bigint)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT xid::text || ':' || seq::text $$;

CREATE FUNCTION veil_private.parse_position(change_position text, OUT xid xid8, OUT seq bigint)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF change_position IS NULL OR change_position !~ '^[0-9]{1,19}:[0-9]{1,18}$' THEN
        RAISE EXCEPTION 'pgveil: % is not a change-log position (<transaction>:<sequence>)',
            coalesce(pg_catalog.quote_literal(pg_catalog.left(change_position, 40)), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    xid := pg_catalog.split_part(change_position, ':', 1)::xid8;
    seq := pg_catalog.split_part(change_position, ':', 2)::bigint;
END
$$;

-- A log entry for the stream of source, written by a backfill batch, a
-- re-tokenization step, a repair or a broken stream, if the stream's policy
-- keeps a change log (the stream triggers insert theirs directly: a call
-- costs them more than the insert).
CREATE FUNCTION veil_private.log_change(source regclass, op text, rows bigint, keys json)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO veil_private.change_log (copy, op, rows, keys)
    SELECT c.relname, log_change.op, log_change.rows, log_change.keys
    FROM veil_private.streams s
    JOIN veil_private.policies p ON p.name = s.policy
    JOIN pg_catalog.pg_class c ON c.oid = s.target
    WHERE s.source = log_change.source AND p.change_log
$$;

CREATE FUNCTION veil.set_change_log_retention(max_age interval)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM veil.require_governor();
    IF max_age <= interval '0' THEN
        RAISE EXCEPTION 'pgveil: max_age must be a positive interval or NULL (no age limit), not %', max_age
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE veil_private.change_log_state SET max_age = set_change_log_retention.max_age;
END
$$;
COMMENT ON FUNCTION veil.set_change_log_retention(interval) IS
    'Trim change-log entries older than max_age even if a consumer has not acknowledged them (NULL: never).';

-- Trim one batch: the oldest entries (by position) while each is at or
-- before every consumer's acknowledged position, or older than the maximum
-- age, and below the horizon; returns how many went. Registrations,
-- acknowledgements and resyncs wait for the batch (SHARE lock on the
-- consumers): a consumer registering meanwhile starts at a horizon past
-- everything this batch may remove. Writers never wait: they only insert.
CREATE FUNCTION veil_private.trim_change_log_batch(batch_size integer)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    state veil_private.change_log_state;
    keep_xid xid8;
    keep_seq bigint;
    has_consumers boolean;
    cutoff timestamptz;
    trimmed bigint;
    last_xid xid8;
    last_seq bigint;
BEGIN
    LOCK TABLE veil_private.consumers IN SHARE MODE;
    -- A dropped role's registration goes, and with it its retention.
    DELETE FROM veil_private.consumers c WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid = c.roleid);
    SELECT * INTO state FROM veil_private.change_log_state FOR UPDATE;
    SELECT c.acked_xid, c.acked_seq INTO keep_xid, keep_seq
    FROM veil_private.consumers c ORDER BY c.acked_xid, c.acked_seq LIMIT 1;
    has_consumers := FOUND;
    cutoff := pg_catalog.now() - state.max_age;
    -- Starting after what was trimmed skips the index entries of rows deleted
    -- by earlier batches that vacuum has not removed yet.
    WITH candidate AS (
        SELECT l.xid, l.seq,
               pg_catalog.bool_and(NOT has_consumers OR (l.xid, l.seq) <= (keep_xid, keep_seq)
                                   OR (l.logged_at < cutoff) IS TRUE)
                   OVER (ORDER BY l.xid, l.seq) AS trimmable
        FROM (SELECT * FROM veil_private.change_log c
              WHERE (c.xid, c.seq) > (state.trimmed_xid, state.trimmed_seq)
                AND c.xid < veil_private.change_log_horizon()
              ORDER BY c.xid, c.seq LIMIT batch_size) AS l),
    gone AS (
        DELETE FROM veil_private.change_log l USING candidate c
        WHERE c.trimmable AND l.xid = c.xid AND l.seq = c.seq
        RETURNING l.xid, l.seq)
    SELECT (SELECT count(*) FROM gone), g.xid, g.seq INTO trimmed, last_xid, last_seq
    FROM (SELECT 1) AS one LEFT JOIN LATERAL (
        SELECT gone.xid, gone.seq FROM gone ORDER BY gone.xid DESC, gone.seq DESC LIMIT 1) AS g ON true;
    IF trimmed > 0 THEN
        UPDATE veil_private.change_log_state SET trimmed_xid = last_xid, trimmed_seq = last_seq;
    END IF;
    RETURN trimmed;
END
$$;

CREATE PROCEDURE veil.trim_change_log(batch_size integer DEFAULT 10000, INOUT trimmed bigint DEFAULT 0)
LANGUAGE plpgsql
AS $$
DECLARE
    batch bigint;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM veil.require_governor();
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'pgveil: batch_size must be a positive number of entries'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    trimmed := 0;
    LOOP
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        batch := veil_private.trim_change_log_batch(batch_size);
        trimmed := trimmed + batch;
        COMMIT;
        EXIT WHEN batch < batch_size;
    END LOOP;
END
$$;
COMMENT ON PROCEDURE veil.trim_change_log(integer, bigint) IS
    'Delete change-log entries every consumer has acknowledged (or older than the maximum age), one committed batch at a time.';

CREATE FUNCTION veil.change_log_status(OUT entries bigint, OUT oldest timestamptz, OUT horizon text,
                                       OUT trimmed_through text, OUT max_age interval)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (SELECT count(*) FROM veil_private.change_log),
           (SELECT min(l.logged_at) FROM veil_private.change_log l),
           veil_private.position_text(veil_private.change_log_horizon(), 0),
           veil_private.position_text(s.trimmed_xid, s.trimmed_seq),
           s.max_age
    FROM veil_private.change_log_state s
$$;
COMMENT ON FUNCTION veil.change_log_status() IS 'Size and retention of the change log.';

REVOKE ALL ON FUNCTION veil_private.change_log_horizon(), veil_private.position_text(xid8, bigint),
    veil_private.parse_position(text), veil_private.log_change(regclass, text, bigint, json),
    veil.set_change_log_retention(interval), veil_private.trim_change_log_batch(integer),
    veil.change_log_status() FROM PUBLIC;
REVOKE ALL ON PROCEDURE veil.trim_change_log(integer, bigint) FROM PUBLIC;
