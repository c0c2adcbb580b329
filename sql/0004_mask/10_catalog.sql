-- Dynamic masking: what pgveil knows of the views it generates and of the
-- roles it masks.
--
-- A policy delivered through views (mask, and any created with delivery
-- 'views') gets one mask schema per source schema that has rules in it:
-- <policy>_<schema>, e.g. mask_public. Every table of that source schema has
-- a view of the same name there, owned by the toolkit owner.
-- Masked roles find the mask schemas first in their search_path and have no
-- privilege on the raw tables.

CREATE TABLE veil_private.mask_schemas (
    policy       text NOT NULL REFERENCES veil_private.policies ON DELETE CASCADE,
    source_nspid oid  NOT NULL,
    mask_nspid   oid  NOT NULL UNIQUE,
    PRIMARY KEY (policy, source_nspid)
);

CREATE TABLE veil_private.mask_views (
    policy     text NOT NULL REFERENCES veil_private.policies ON DELETE CASCADE,
    source     oid  NOT NULL,
    view_oid   oid  NOT NULL UNIQUE,
    -- The SELECT the view was generated with: a view is stale when the rules
    -- or the table now give a different one.
    definition text NOT NULL,
    PRIMARY KEY (policy, source)
);

-- What masking a role changed, so that unmasking restores it exactly.
CREATE TABLE veil_private.masked_roles (
    roleid oid  PRIMARY KEY,
    policy text NOT NULL REFERENCES veil_private.policies ON DELETE CASCADE,
    -- The role's own search_path setting in this database before masking
    -- (pg_db_role_setting), NULL when it had none.
    previous_search_path text
);

-- Direct privileges on raw tables that masking withheld from a role.
CREATE TABLE veil_private.withheld_privileges (
    roleid    oid      NOT NULL REFERENCES veil_private.masked_roles ON DELETE CASCADE,
    relid     oid      NOT NULL,
    -- 0: a table privilege; otherwise the column's number.
    attnum    smallint NOT NULL,
    privilege text     NOT NULL,
    grantable boolean  NOT NULL,
    PRIMARY KEY (roleid, relid, attnum, privilege)
);
-- Each fake-value dictionary as one jsonb array (position = id - 1): mask
-- views read a whole dictionary once per query and index into it per row.
CREATE TABLE veil_private.dictionary_items (
    name  text  PRIMARY KEY REFERENCES veil.dictionaries ON DELETE CASCADE,
    items jsonb NOT NULL
);
INSERT INTO veil_private.dictionary_items
SELECT d.name, pg_catalog.jsonb_agg(d.value ORDER BY d.id) FROM veil.dictionary d GROUP BY d.name;
REVOKE ALL ON veil_private.mask_schemas, veil_private.mask_views, veil_private.masked_roles,
    veil_private.withheld_privileges, veil_private.dictionary_items FROM PUBLIC;

-- <policy>_<schema>: the mask schema of one source schema.
CREATE FUNCTION veil_private.mask_schema_name(policy text, source_nspid oid)
RETURNS text
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT policy || '_' || n.nspname FROM pg_catalog.pg_namespace n WHERE n.oid = source_nspid
$$;

-- The role that owns the toolkit (and so the generated views).
CREATE FUNCTION veil_private.toolkit_owner()
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT n.nspowner::regrole::name FROM pg_catalog.pg_namespace n WHERE n.nspname = 'veil_private'
$$;

-- While pgveil builds mask views or (un)masks roles, its own DDL, GRANTs and
-- ALTER ROLEs must not re-enter through its event triggers: the work runs
-- with the transaction-local flag pgveil.building_masks on. Starting returns
-- the flag as it was, for finishing to put back (the work may be nested).
CREATE FUNCTION veil_private.start_building_masks()
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    previous text := coalesce(pg_catalog.current_setting('pgveil.building_masks', true), '');
BEGIN
    PERFORM pg_catalog.set_config('pgveil.building_masks', 'on', true);
    RETURN previous;
END
$$;

CREATE FUNCTION veil_private.finish_building_masks(previous text)
RETURNS void
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.set_config('pgveil.building_masks', previous, true) $$;

CREATE FUNCTION veil_private.building_masks()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(pg_catalog.current_setting('pgveil.building_masks', true), '') = 'on' $$;

CREATE VIEW veil.masked_roles AS
    SELECT ro.rolname AS role_name, m.policy, m.previous_search_path,
           (SELECT pg_catalog.count(*) FROM veil_private.withheld_privileges w
            WHERE w.roleid = m.roleid) AS withheld_privileges
    FROM veil_private.masked_roles m JOIN pg_catalog.pg_roles ro ON ro.oid = m.roleid;

CREATE VIEW veil.mask_views AS
    SELECT v.policy, v.source::regclass AS source, v.view_oid::regclass AS view,
           (SELECT pg_catalog.count(*) FROM veil_private.column_rules r
            WHERE r.policy = v.policy AND r.relid = v.source) AS rules
    FROM veil_private.mask_views v;
REVOKE ALL ON veil.masked_roles, veil.mask_views FROM PUBLIC;
REVOKE ALL ON FUNCTION veil_private.mask_schema_name(text, oid), veil_private.toolkit_owner(),
    veil_private.start_building_masks(), veil_private.finish_building_masks(text), veil_private.building_masks() FROM PUBLIC;
