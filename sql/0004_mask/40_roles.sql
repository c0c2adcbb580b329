-- Masked roles: veil.security_label(policy, 'ROLE', name, 'MASKED') for a
-- policy delivered through views. The role gets the policy's mask schemas
-- first in its search_path and SELECT on the views, and keeps no privilege
-- on the raw tables: direct grants are withheld (recorded, revoked, restored
-- when the role is unmasked); a privilege it inherits (PUBLIC, membership,
-- ownership, predefined roles) is refused with an error naming its source.

-- The relations whose rows a masked role must not read: every table, view,
-- materialized view and foreign table of the masked source schemas, and
-- every view elsewhere built on them (pgveil's own mask views excepted).
CREATE FUNCTION veil_private.masked_relations(policy text)
RETURNS SETOF oid
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE relations(oid) AS (
        SELECT c.oid FROM pg_catalog.pg_class c
        WHERE c.relnamespace IN (SELECT veil_private.masked_source_schemas(policy))
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      UNION
        SELECT rw.ev_class
        FROM relations r
        JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = r.oid
                                   AND d.classid = 'pg_catalog.pg_rewrite'::regclass
        JOIN pg_catalog.pg_rewrite rw ON rw.oid = d.objid
        WHERE rw.ev_class <> r.oid
          AND rw.ev_class NOT IN (SELECT mv.view_oid FROM veil_private.mask_views mv)
    )
    SELECT r.oid FROM relations r
    WHERE r.oid NOT IN (SELECT mv.view_oid FROM veil_private.mask_views mv)
$$;

-- Every privilege through which a role reaches a masked relation, and whose
-- it is (via): the role itself, 0 for PUBLIC, a role it is a member of, the
-- owner (privilege OWNERSHIP), or, with relid 0, a superuser or predefined
-- role that reads or writes every table.
CREATE FUNCTION veil_private.raw_access(policy text, roleid oid)
RETURNS TABLE (relid oid, attnum smallint, privilege text, grantable boolean, via oid)
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    WITH relations AS (
        SELECT c.oid, c.relowner, coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner)) AS acl
        FROM pg_catalog.pg_class c WHERE c.oid IN (SELECT veil_private.masked_relations(policy))
    ), grants AS (
        SELECT r.oid AS relid, 0::smallint AS attnum, a.privilege_type, a.is_grantable, a.grantee
        FROM relations r, pg_catalog.aclexplode(r.acl) a
      UNION ALL
        SELECT r.oid, at.attnum, a.privilege_type, a.is_grantable, a.grantee
        FROM relations r
        JOIN pg_catalog.pg_attribute at ON at.attrelid = r.oid AND at.attnum > 0 AND at.attacl IS NOT NULL
        CROSS JOIN LATERAL pg_catalog.aclexplode(at.attacl) a
    )
    SELECT g.relid, g.attnum, g.privilege_type, g.is_grantable, g.grantee
    FROM grants g
    WHERE CASE WHEN g.grantee = 0 THEN true ELSE pg_catalog.pg_has_role(roleid, g.grantee, 'MEMBER') END
  UNION ALL
    SELECT r.oid, 0::smallint, 'OWNERSHIP', false, r.relowner
    FROM relations r WHERE pg_catalog.pg_has_role(roleid, r.relowner, 'MEMBER')
  UNION ALL
    SELECT 0, 0::smallint, 'ALL', false, ro.oid
    FROM pg_catalog.pg_roles ro
    WHERE ro.oid <> roleid AND pg_catalog.pg_has_role(roleid, ro.oid, 'MEMBER')
      AND (ro.rolsuper OR ro.rolname IN ('pg_read_all_data', 'pg_write_all_data', 'pg_read_server_files',
                                         'pg_write_server_files', 'pg_execute_server_program'))
$$;

-- Refuse (one clear error) if the role reaches raw data in a way masking
-- cannot take away; otherwise withhold its direct privileges.
CREATE FUNCTION veil_private.withhold_raw_access(roleid oid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    policy text := (SELECT m.policy FROM veil_private.masked_roles m WHERE m.roleid = withhold_raw_access.roleid);
    role_name name := (SELECT ro.rolname FROM pg_catalog.pg_roles ro WHERE ro.oid = roleid);
    x record;
BEGIN
    -- One pass: what masking cannot take away comes first and is refused
    -- before anything is revoked.
    FOR x IN
        SELECT a.*, a.via <> roleid OR a.privilege = 'OWNERSHIP' AS inherited,
               CASE WHEN a.via = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(a.via::regrole::name) END AS via_name,
               CASE WHEN a.relid = 0 THEN NULL
                    WHEN a.attnum = 0 THEN a.relid::regclass::text
                    ELSE pg_catalog.format('%s.%I', a.relid::regclass,
                         (SELECT at.attname FROM pg_catalog.pg_attribute at
                          WHERE at.attrelid = a.relid AND at.attnum = a.attnum)) END AS source_name,
               (SELECT at.attname FROM pg_catalog.pg_attribute at
                WHERE at.attrelid = a.relid AND at.attnum = a.attnum AND a.attnum > 0) AS column_name
        FROM veil_private.raw_access(policy, roleid) a
        ORDER BY a.via <> roleid OR a.privilege = 'OWNERSHIP' DESC, a.privilege = 'ALL' DESC,
                 a.privilege = 'OWNERSHIP' DESC, a.relid, a.attnum
    LOOP
        IF x.inherited AND x.privilege = 'ALL' THEN
            RAISE EXCEPTION 'pgveil: role % is a member of %, which bypasses table privileges; it cannot be masked',
                role_name, x.via_name
                USING HINT = pg_catalog.format('REVOKE %s FROM %I first.', x.via_name, role_name);
        ELSIF x.inherited AND x.privilege = 'OWNERSHIP' THEN
            RAISE EXCEPTION 'pgveil: role % owns % (directly or as a member of %); the owner of a masked table cannot be masked',
                role_name, x.source_name, x.via_name
                USING HINT = 'Mask a role that does not own the application''s tables.';
        ELSIF x.inherited AND x.via = 0 THEN
            RAISE EXCEPTION 'pgveil: role % can % % because it is granted to PUBLIC; masking cannot revoke that',
                role_name, x.privilege, x.source_name
                USING HINT = pg_catalog.format('REVOKE %s ON %s FROM PUBLIC (and grant it to the roles that need it), then try again.',
                                               x.privilege, x.relid::regclass);
        ELSIF x.inherited THEN
            RAISE EXCEPTION 'pgveil: role % can % % through its membership in role %; masking cannot revoke that',
                role_name, x.privilege, x.source_name, x.via_name
                USING HINT = pg_catalog.format('REVOKE %s FROM %I, or REVOKE %s ON %s FROM %s, then try again.',
                                               x.via_name, role_name, x.privilege, x.relid::regclass, x.via_name);
        END IF;
        INSERT INTO veil_private.withheld_privileges (roleid, relid, attnum, privilege, grantable)
        VALUES (roleid, x.relid, x.attnum, x.privilege, x.grantable)
        ON CONFLICT DO NOTHING;
        EXECUTE pg_catalog.format('REVOKE %s%s ON TABLE %s FROM %I', x.privilege,
            CASE WHEN x.attnum > 0 THEN pg_catalog.format(' (%I)', x.column_name) ELSE '' END,
            x.relid::regclass, role_name);
    END LOOP;

    -- REVOKE only takes back what the current role (or the owner, for a
    -- superuser) granted: anything left was granted by someone else.
    SELECT r AS relid INTO x FROM veil_private.masked_relations(policy) r
    WHERE pg_catalog.has_table_privilege(roleid, r, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
       OR pg_catalog.has_any_column_privilege(roleid, r, 'SELECT, INSERT, UPDATE, REFERENCES')
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'pgveil: role % keeps privileges on % that % could not revoke (they were granted by another role)',
            role_name, x.relid::regclass, CURRENT_USER
            USING HINT = 'Mask the role as a superuser or as the owner of the tables.';
    END IF;
END
$$;

-- The oid of the current database (per-database role settings are keyed by it).
CREATE FUNCTION veil_private.this_database()
RETURNS oid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database() $$;

-- A role's own setting of one parameter in one database (0: all databases).
CREATE FUNCTION veil_private.role_setting(roleid oid, database oid, parameter text)
RETURNS text
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.substr(c, pg_catalog.length(parameter) + 2)
    FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) c
    WHERE s.setrole = roleid AND s.setdatabase = database AND c LIKE parameter || '=%'
$$;

-- The schema names of a search_path value, unquoted: '"$user", public'
-- gives {$user,public}.
CREATE FUNCTION veil_private.search_path_entries(path text)
RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(pg_catalog.array_agg(
               CASE WHEN m[1] LIKE '"%' THEN pg_catalog.replace(pg_catalog.substr(m[1], 2, pg_catalog.length(m[1]) - 2), '""', '"')
                    ELSE m[1] END ORDER BY o), '{}')
    FROM pg_catalog.regexp_matches(path, '\s*("(?:[^"]|"")*"|[^,\s]+)\s*,?', 'g') WITH ORDINALITY AS e(m, o)
$$;

-- Set a role's search_path in this database to the given schemas (NULL: reset).
CREATE FUNCTION veil_private.set_role_search_path(roleid oid, entries text[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF entries IS NULL THEN
        EXECUTE pg_catalog.format('ALTER ROLE %I IN DATABASE %I RESET search_path',
                                  roleid::regrole::name, pg_catalog.current_database());
    ELSE
        EXECUTE pg_catalog.format('ALTER ROLE %I IN DATABASE %I SET search_path TO %s',
            roleid::regrole::name, pg_catalog.current_database(),
            coalesce((SELECT pg_catalog.string_agg(pg_catalog.quote_ident(e), ', ' ORDER BY o)
                      FROM pg_catalog.unnest(entries) WITH ORDINALITY AS u(e, o)), ''''''));
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE EXCEPTION 'pgveil: % may not change the search_path of role %', CURRENT_USER, roleid::regrole
        USING HINT = 'Masking a role sets its search_path: it needs a superuser or a role with CREATEROLE.';
END
$$;

-- Grant (or take back) what a masked role reads: its policy's mask schemas
-- and views, and the keyed functions, which a views policy may use only
-- after an explicit acknowledgement (veil.alter_policy).
CREATE FUNCTION veil_private.set_mask_access(role_name name, policy text, granted boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    mask_schema name;
    keyed regprocedure;
    keyed_granted boolean := granted AND (SELECT p.allow_keyed_functions FROM veil_private.policies p
                                          WHERE p.name = policy);
BEGIN
    FOR mask_schema IN
        SELECT ms.mask_nspid::regnamespace::name FROM veil_private.mask_schemas ms WHERE ms.policy = set_mask_access.policy
    LOOP
        EXECUTE pg_catalog.format(CASE WHEN granted
            THEN 'GRANT USAGE ON SCHEMA %1$I TO %2$I; GRANT SELECT ON ALL TABLES IN SCHEMA %1$I TO %2$I'
            ELSE 'REVOKE SELECT ON ALL TABLES IN SCHEMA %1$I FROM %2$I; REVOKE USAGE ON SCHEMA %1$I FROM %2$I' END,
            mask_schema, role_name);
    END LOOP;
    FOR keyed IN SELECT pr.oid::regprocedure FROM pg_catalog.pg_proc pr WHERE veil_private.is_keyed_function(pr.oid) LOOP
        EXECUTE pg_catalog.format(CASE WHEN keyed_granted THEN 'GRANT EXECUTE ON FUNCTION %s TO %I'
                                       ELSE 'REVOKE EXECUTE ON FUNCTION %s FROM %I' END, keyed, role_name);
    END LOOP;
END
$$;

-- Bring one masked role in line with its policy as it is now: privileges
-- withheld, SELECT on the views, the mask schemas first in its search_path.
CREATE FUNCTION veil_private.apply_masked_role(roleid oid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m veil_private.masked_roles;
    p veil_private.policies;
    role_name name := (SELECT ro.rolname FROM pg_catalog.pg_roles ro WHERE ro.oid = roleid);
    previous text[];
    wanted text[];
BEGIN
    SELECT * INTO m FROM veil_private.masked_roles x WHERE x.roleid = apply_masked_role.roleid;
    SELECT * INTO p FROM veil_private.policies x WHERE x.name = m.policy;
    PERFORM veil_private.withhold_raw_access(roleid);

    PERFORM veil_private.set_mask_access(role_name, p.name, true);

    -- Mask schemas first, in the order of their source schemas in the path
    -- the role had, then that path.
    previous := veil_private.search_path_entries(coalesce(
        m.previous_search_path,
        veil_private.role_setting(roleid, 0, 'search_path'),
        veil_private.role_setting(0, veil_private.this_database(), 'search_path'),
        (SELECT s.boot_val FROM pg_catalog.pg_settings s WHERE s.name = 'search_path')));
    SELECT coalesce(pg_catalog.array_agg(mn.nspname::text
                                         ORDER BY pg_catalog.array_position(previous, n.nspname::text), n.nspname), '{}')
           || previous
    INTO wanted
    FROM veil_private.mask_schemas ms
    JOIN pg_catalog.pg_namespace n ON n.oid = ms.source_nspid
    JOIN pg_catalog.pg_namespace mn ON mn.oid = ms.mask_nspid
    WHERE ms.policy = p.name;
    IF veil_private.search_path_entries(veil_private.role_setting(roleid, veil_private.this_database(), 'search_path'))
       IS DISTINCT FROM wanted THEN
        PERFORM veil_private.set_role_search_path(roleid, wanted);
    END IF;
END
$$;

CREATE FUNCTION veil_private.mask_role(policy text, roleid oid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    other text := (SELECT m.policy FROM veil_private.masked_roles m WHERE m.roleid = mask_role.roleid);
    was_building text;
BEGIN
    IF other IS NOT NULL THEN
        RAISE EXCEPTION 'pgveil: role % is masked by policy % already; a role reads one policy''s views', roleid::regrole, other;
    END IF;
    INSERT INTO veil_private.masked_roles (roleid, policy, previous_search_path)
    VALUES (roleid, policy, veil_private.role_setting(roleid, veil_private.this_database(), 'search_path'));
    was_building := veil_private.start_building_masks();
    PERFORM veil_private.apply_masked_role(roleid);
    PERFORM veil_private.finish_building_masks(was_building);
END
$$;

-- Undo masking: views and keyed functions out of reach, withheld privileges
-- granted again, the previous search_path setting back.
CREATE FUNCTION veil_private.unmask_role(roleid oid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m veil_private.masked_roles;
    role_name name := (SELECT ro.rolname FROM pg_catalog.pg_roles ro WHERE ro.oid = roleid);
    w record;
    was_building text;
BEGIN
    SELECT * INTO m FROM veil_private.masked_roles x WHERE x.roleid = unmask_role.roleid;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF role_name IS NOT NULL THEN
        was_building := veil_private.start_building_masks();
        PERFORM veil_private.set_mask_access(role_name, m.policy, false);
        FOR w IN
            SELECT x.*, a.attname FROM veil_private.withheld_privileges x
            JOIN pg_catalog.pg_class c ON c.oid = x.relid
            LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = x.relid AND a.attnum = x.attnum AND NOT a.attisdropped
            WHERE x.roleid = unmask_role.roleid AND (x.attnum = 0 OR a.attname IS NOT NULL)
        LOOP
            EXECUTE pg_catalog.format('GRANT %s%s ON TABLE %s TO %I%s', w.privilege,
                CASE WHEN w.attnum > 0 THEN pg_catalog.format(' (%I)', w.attname) ELSE '' END,
                w.relid::regclass, role_name, CASE WHEN w.grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
        PERFORM veil_private.set_role_search_path(roleid, veil_private.search_path_entries(m.previous_search_path));
        PERFORM veil_private.finish_building_masks(was_building);
    END IF;
    DELETE FROM veil_private.masked_roles x WHERE x.roleid = unmask_role.roleid;
END
$$;

-- ROLE rules of a views policy mask and unmask in the same transaction.
CREATE FUNCTION veil_private.mask_roles_after_rule_change()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM veil_private.policies p
                   WHERE p.name = coalesce(NEW.policy, OLD.policy) AND p.delivery = 'views') THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM veil_private.mask_role(NEW.policy, NEW.roleid);
    ELSE
        PERFORM veil_private.unmask_role(OLD.roleid);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER mask_role_on_insert AFTER INSERT ON veil_private.role_rules
    FOR EACH ROW EXECUTE FUNCTION veil_private.mask_roles_after_rule_change();
CREATE TRIGGER unmask_role_on_delete AFTER DELETE ON veil_private.role_rules
    FOR EACH ROW EXECUTE FUNCTION veil_private.mask_roles_after_rule_change();

REVOKE ALL ON FUNCTION veil_private.masked_relations(text), veil_private.raw_access(text, oid),
    veil_private.withhold_raw_access(oid), veil_private.this_database(), veil_private.role_setting(oid, oid, text),
    veil_private.set_mask_access(name, text, boolean),
    veil_private.search_path_entries(text), veil_private.set_role_search_path(oid, text[]),
    veil_private.apply_masked_role(oid), veil_private.mask_role(text, oid), veil_private.unmask_role(oid),
    veil_private.mask_roles_after_rule_change() FROM PUBLIC;
