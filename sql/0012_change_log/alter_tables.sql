-- Catalog tables changed by revision 0012_change_log, run by hand before its
-- logged SQL (pgveil.revision_log cannot undo a table change;
-- downgrade_tables.sql does).
--
-- Policies delivered as a copy say whether their streams write the change
-- log, and what DDL on a streamed table does where pgveil's event triggers
-- could not be created. Streams record when they broke. Consumers hold the
-- change-log position they acknowledged.

ALTER TABLE veil_private.policies ADD COLUMN change_log boolean NOT NULL DEFAULT true;
ALTER TABLE veil_private.policies ADD COLUMN on_ddl text NOT NULL DEFAULT 'rebuild'
    CONSTRAINT policies_on_ddl_check CHECK (on_ddl IN ('rebuild', 'break'));

ALTER TABLE veil_private.streams ADD COLUMN broken_at timestamptz;
-- The error's SQLSTATE only: its message may quote a raw value.
ALTER TABLE veil_private.streams ADD COLUMN broken_sqlstate text;

-- Consumers registered before this revision start at the current horizon:
-- nothing older than the log exists for them.
ALTER TABLE veil_private.consumers
    ADD COLUMN acked_xid xid8,
    ADD COLUMN acked_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN acked_at timestamptz,
    ADD COLUMN registered_at timestamptz NOT NULL DEFAULT pg_catalog.now();
UPDATE veil_private.consumers SET acked_xid = pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
ALTER TABLE veil_private.consumers ALTER COLUMN acked_xid SET NOT NULL;
