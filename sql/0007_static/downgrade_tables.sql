-- Undo alter_tables.sql, after the logged part of 0007_static is undone.
-- Static policies cannot exist below 0007: the downgrade refuses while one
-- does (migrations/versions/0007_static.py), so no rule is lost silently.

ALTER TABLE veil_private.policies DROP COLUMN uncovered;
ALTER TABLE veil_private.policies DROP CONSTRAINT policies_delivery_check;
ALTER TABLE veil_private.policies ADD CONSTRAINT policies_delivery_check
    CHECK (delivery IN ('views', 'copy'));
