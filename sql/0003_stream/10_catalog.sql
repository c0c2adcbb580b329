-- The live sanitized copy: schema sanitized, and what pgveil knows of each
-- stream.
--
-- A stream copies one source table into sanitized.<table> (tables of other
-- schemas than public: sanitized.<schema>__<table>) under a policy delivered
-- as a copy. Statement-level triggers keep the copy equal to the policy's
-- transform of the source in the writer's own transaction.

CREATE SCHEMA sanitized;
COMMENT ON SCHEMA sanitized IS 'pgveil';
REVOKE ALL ON SCHEMA sanitized FROM PUBLIC;

CREATE TABLE veil_private.streams (
    source     oid  PRIMARY KEY,
    policy     text NOT NULL REFERENCES veil_private.policies,
    target     oid  NOT NULL,
    -- The trigger function generated for this stream.
    trigger_fn oid  NOT NULL,
    -- Copy columns of a rule added after the backfill are empty until the
    -- next backfill.
    needs_backfill boolean NOT NULL DEFAULT true
);

-- Which source column each copy column comes from, so renames follow.
CREATE TABLE veil_private.stream_columns (
    source oid      NOT NULL REFERENCES veil_private.streams ON DELETE CASCADE,
    attnum smallint NOT NULL,
    target_attnum smallint NOT NULL,
    PRIMARY KEY (source, attnum)
);

-- Resumable backfill: the last source key copied (text of each key column).
CREATE TABLE veil_private.backfill_progress (
    source      oid PRIMARY KEY REFERENCES veil_private.streams ON DELETE CASCADE,
    last_key    text[],
    rows_copied bigint NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at timestamptz
);
REVOKE ALL ON veil_private.streams, veil_private.stream_columns, veil_private.backfill_progress FROM PUBLIC;

CREATE VIEW veil.streams AS
    SELECT s.source::regclass AS source, s.target::regclass AS target, s.policy, s.needs_backfill,
           b.rows_copied AS backfilled_rows, b.finished_at AS backfill_finished_at
    FROM veil_private.streams s LEFT JOIN veil_private.backfill_progress b USING (source);
REVOKE ALL ON veil.streams FROM PUBLIC;
