-- What each revision from this one on changed in the toolkit's schemas, so
-- that its downgrade is read from here rather than written by hand (see
-- pgveil/revision_log.py, which fills and reads it). A replaced or removed
-- object keeps the statement that recreates it as it was.

CREATE TABLE veil_private.revision_log (
    revision   text    NOT NULL,
    position   integer NOT NULL,
    change     text    NOT NULL CHECK (change IN ('created', 'replaced', 'removed')),
    -- Creation order of a created object: dependents are dropped first.
    object_oid oid     NOT NULL,
    kind       text    NOT NULL,
    identity   text    NOT NULL,
    definition text,
    owner      text,
    acl        text,
    comment    text,
    PRIMARY KEY (revision, position)
);
REVOKE ALL ON veil_private.revision_log FROM PUBLIC;
