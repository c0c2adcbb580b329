-- Undo alter_tables.sql, after the logged part of 0012_change_log is undone.

ALTER TABLE veil_private.consumers
    DROP COLUMN acked_xid, DROP COLUMN acked_seq, DROP COLUMN acked_at, DROP COLUMN registered_at;
ALTER TABLE veil_private.streams DROP COLUMN broken_at, DROP COLUMN broken_sqlstate;
ALTER TABLE veil_private.policies DROP COLUMN change_log, DROP COLUMN on_ddl;
