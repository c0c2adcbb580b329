-- Catalog tables changed by revision 0007_static, run by hand before its
-- logged SQL (pgveil.revision_log cannot undo a table change; downgrade_tables.sql
-- does).
--
-- A policy may now be delivered 'static' (applied to the data itself), and
-- says what a delivery that includes every column does with a column that
-- has no rule: refuse (the default: name it and change nothing), keep it,
-- or null it.

ALTER TABLE veil_private.policies DROP CONSTRAINT policies_delivery_check;
ALTER TABLE veil_private.policies ADD CONSTRAINT policies_delivery_check
    CHECK (delivery IN ('views', 'copy', 'static'));
ALTER TABLE veil_private.policies ADD COLUMN uncovered text NOT NULL DEFAULT 'refuse'
    CONSTRAINT policies_uncovered_check CHECK (uncovered IN ('refuse', 'keep', 'null'));
