-- Logical replication of the sanitized copies: a PostgreSQL publication that
-- holds every copy of sanitized.* and nothing else, for subscribers on other
-- servers and for CDC tools that read publications (Debezium's pgoutput).
--
-- veil.publish_sanitized(name) creates one (an explicit table list: FOR
-- TABLES IN SCHEMA needs a superuser, and pgveil installs as a database
-- owner that is not one); veil_private.sync_publications() keeps every
-- pgveil publication equal to the set of copies (veil.stream() calls it;
-- a copy dropped by veil.unstream() leaves its publications by itself). The change log is not published: its positions are the source's
-- transaction ids, meaningless on a subscriber.
--
-- Never a raw table: where pgveil's event triggers exist, ALTER PUBLICATION
-- that would make a pgveil publication hold anything but sanitized copies,
-- or stop publishing a kind of change (deletes and truncates are erasure),
-- is refused; everywhere, veil_private.publication_problems() lists such
-- problems for the audit.

-- The publications pgveil created, by oid (a rename keeps it pgveil's).
CREATE TABLE veil_private.publications (
    pubid      oid PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
REVOKE ALL ON veil_private.publications FROM PUBLIC;

-- What a pgveil publication must publish: every kind of change, so that
-- deletes, key moves and truncates (erasure) reach subscribers.
CREATE FUNCTION veil_private.publication_missing_actions(pubid oid)
RETURNS text
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.concat_ws(', ',
               CASE WHEN NOT p.pubinsert THEN 'insert' END, CASE WHEN NOT p.pubupdate THEN 'update' END,
               CASE WHEN NOT p.pubdelete THEN 'delete' END, CASE WHEN NOT p.pubtruncate THEN 'truncate' END)
    FROM pg_catalog.pg_publication p WHERE p.oid = pubid
$$;

-- Every way a pgveil publication strays from "every change of every
-- sanitized copy, nothing else": a table that is not a sanitized copy (table
-- names it; a whole schema or every table of the database says so), a copy
-- it does not hold (its subscribers would miss that copy's deletes), and
-- kinds of change it does not publish (table is NULL). Names only, never a
-- value.
CREATE FUNCTION veil_private.publication_problems()
RETURNS TABLE (publication name, "table" text, problem text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH pub AS (
        SELECT p.oid, p.pubname, p.puballtables
        FROM veil_private.publications vp JOIN pg_catalog.pg_publication p ON p.oid = vp.pubid
    )
    SELECT pub.pubname, r.prrelid::pg_catalog.regclass::text, 'not a sanitized copy'
    FROM pub JOIN pg_catalog.pg_publication_rel r ON r.prpubid = pub.oid
    WHERE NOT EXISTS (SELECT FROM veil_private.streams s WHERE s.target = r.prrelid)
    UNION ALL
    SELECT pub.pubname, 'TABLES IN SCHEMA ' || pg_catalog.quote_ident(n.nspname), 'not a sanitized copy'
    FROM pub JOIN pg_catalog.pg_publication_namespace pn ON pn.pnpubid = pub.oid
    JOIN pg_catalog.pg_namespace n ON n.oid = pn.pnnspid
    UNION ALL
    SELECT pub.pubname, 'ALL TABLES', 'not a sanitized copy' FROM pub WHERE pub.puballtables
    UNION ALL
    SELECT pub.pubname, s.target::pg_catalog.regclass::text, 'sanitized copy not published'
    FROM pub CROSS JOIN veil_private.streams s
    WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_publication_rel r WHERE r.prpubid = pub.oid AND r.prrelid = s.target)
    UNION ALL
    SELECT pub.pubname, NULL, 'does not publish ' || veil_private.publication_missing_actions(pub.oid)
    FROM pub WHERE veil_private.publication_missing_actions(pub.oid) <> ''
    ORDER BY 1, 2, 3
$$;

-- A pgveil publication dropped by hand (DROP PUBLICATION) is forgotten.
CREATE FUNCTION veil_private.forget_dropped_publications()
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM veil_private.publications vp
    WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_publication p WHERE p.oid = vp.pubid)
$$;

-- Make every pgveil publication hold exactly the sanitized copies, each with
-- ONLY (never a table inheriting from one), publishing every kind of change.
-- Cheap when nothing changed (one catalog query) and a no-op where no pgveil
-- publication exists. A table that is not a copy (any more) leaves with a
-- warning; a publication of every table cannot be repaired and is refused.
CREATE FUNCTION veil_private.sync_publications()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pub record;
    extra record;
    missing text;
BEGIN
    IF NOT EXISTS (SELECT FROM veil_private.publications) THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT FROM veil_private.publication_problems())
       AND NOT EXISTS (SELECT FROM veil_private.publications vp
                       WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_publication p WHERE p.oid = vp.pubid)) THEN
        RETURN;
    END IF;
    PERFORM veil_private.forget_dropped_publications();
    FOR pub IN
        SELECT p.oid, p.pubname, p.puballtables
        FROM veil_private.publications vp JOIN pg_catalog.pg_publication p ON p.oid = vp.pubid
        ORDER BY p.pubname
        FOR UPDATE OF vp
    LOOP
        IF pub.puballtables THEN
            RAISE EXCEPTION 'pgveil: publication % publishes every table of the database, raw tables too', pub.pubname
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Drop it (DROP PUBLICATION), then SELECT veil.publish_sanitized(...) again.';
        END IF;
        FOR extra IN
            SELECT n.nspname FROM pg_catalog.pg_publication_namespace pn
            JOIN pg_catalog.pg_namespace n ON n.oid = pn.pnnspid
            WHERE pn.pnpubid = pub.oid ORDER BY n.nspname
        LOOP
            RAISE WARNING 'pgveil: publication % held every table of schema %; pgveil publications hold sanitized copies only, so it was removed',
                pub.pubname, pg_catalog.quote_ident(extra.nspname);
            EXECUTE pg_catalog.format('ALTER PUBLICATION %I DROP TABLES IN SCHEMA %I', pub.pubname, extra.nspname);
        END LOOP;
        FOR extra IN
            SELECT r.prrelid::regclass AS rel FROM pg_catalog.pg_publication_rel r
            WHERE r.prpubid = pub.oid
              AND NOT EXISTS (SELECT FROM veil_private.streams s WHERE s.target = r.prrelid)
            ORDER BY r.prrelid
        LOOP
            RAISE WARNING 'pgveil: publication % held %, which is not a sanitized copy; it was removed',
                pub.pubname, extra.rel;
            EXECUTE pg_catalog.format('ALTER PUBLICATION %I DROP TABLE %s', pub.pubname, extra.rel);
        END LOOP;
        IF veil_private.publication_missing_actions(pub.oid) <> '' THEN
            EXECUTE pg_catalog.format('ALTER PUBLICATION %I SET (publish = %L)', pub.pubname,
                                      'insert, update, delete, truncate');
        END IF;
        SELECT pg_catalog.string_agg(pg_catalog.format('ONLY %s', s.target::regclass), ', ' ORDER BY s.target)
        INTO missing
        FROM veil_private.streams s
        WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_publication_rel r WHERE r.prpubid = pub.oid AND r.prrelid = s.target);
        IF missing IS NOT NULL THEN
            EXECUTE pg_catalog.format('ALTER PUBLICATION %I ADD TABLE %s', pub.pubname, missing);
        END IF;
    END LOOP;
END
$$;

-- Refuse a publication name outside pgveil's conventions (lower-case
-- identifiers, as policy names), with one clear error.
CREATE FUNCTION veil_private.check_publication_name(name text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'pgveil: a publication needs a name'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is pgveil_sanitized.';
    END IF;
    IF name !~ '^[a-z_][a-z0-9_]*$' OR pg_catalog.octet_length(name) > 63 THEN
        RAISE EXCEPTION 'pgveil: publication names are lower-case identifiers of at most 63 characters (got %)',
            pg_catalog.quote_literal(name)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE FUNCTION veil.publish_sanitized(name text DEFAULT 'pgveil_sanitized')
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pub_oid oid;
    copies text;
    owner_role name := (SELECT n.nspowner::regrole::name FROM pg_catalog.pg_namespace n WHERE n.nspname = 'veil_private');
    problems text;
BEGIN
    PERFORM veil.require_governor();
    PERFORM veil_private.check_publication_name(publish_sanitized.name);
    PERFORM veil_private.forget_dropped_publications();
    SELECT p.oid INTO pub_oid FROM pg_catalog.pg_publication p WHERE p.pubname = publish_sanitized.name;
    IF pub_oid IS NOT NULL THEN
        IF NOT EXISTS (SELECT FROM veil_private.publications vp WHERE vp.pubid = pub_oid) THEN
            RAISE EXCEPTION 'pgveil: publication % exists already and is not pgveil''s', publish_sanitized.name
                USING ERRCODE = 'duplicate_object',
                      HINT = 'Choose another name: pgveil publishes the sanitized copies only in a publication of its own.';
        END IF;
        -- Published already: bring it in step.
        PERFORM veil_private.sync_publications();
    ELSE
        SELECT pg_catalog.string_agg(pg_catalog.format('ONLY %s', s.target::regclass), ', ' ORDER BY s.target)
        INTO copies FROM veil_private.streams s;
        EXECUTE pg_catalog.format('CREATE PUBLICATION %I', publish_sanitized.name)
            || coalesce(' FOR TABLE ' || copies, '');
        pub_oid := (SELECT p.oid FROM pg_catalog.pg_publication p WHERE p.pubname = publish_sanitized.name);
        INSERT INTO veil_private.publications (pubid) VALUES (pub_oid);
        -- Owned by the toolkit owner, as the copies are, so that any governor
        -- that streams a table may add its copy.
        IF owner_role <> CURRENT_USER
           AND pg_catalog.has_database_privilege(owner_role, pg_catalog.current_database(), 'CREATE') THEN
            EXECUTE pg_catalog.format('ALTER PUBLICATION %I OWNER TO %I', publish_sanitized.name, owner_role);
        END IF;
    END IF;
    SELECT pg_catalog.string_agg(coalesce(x."table", '') || ' ' || x.problem, '; ') INTO problems
    FROM veil_private.publication_problems() x WHERE x.publication = publish_sanitized.name;
    IF problems IS NOT NULL THEN
        RAISE EXCEPTION 'pgveil: publication % would not hold sanitized copies only: %', publish_sanitized.name, problems
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN (SELECT pg_catalog.count(*)::integer FROM pg_catalog.pg_publication_rel r WHERE r.prpubid = pub_oid);
END
$$;
COMMENT ON FUNCTION veil.publish_sanitized(text) IS
    'Create (or bring in step) a publication holding every sanitized copy and nothing else; returns how many copies it holds.';

CREATE FUNCTION veil.unpublish_sanitized(name text DEFAULT 'pgveil_sanitized')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pub_oid oid;
BEGIN
    PERFORM veil.require_governor();
    PERFORM veil_private.check_publication_name(unpublish_sanitized.name);
    SELECT p.oid INTO pub_oid
    FROM pg_catalog.pg_publication p JOIN veil_private.publications vp ON vp.pubid = p.oid
    WHERE p.pubname = unpublish_sanitized.name;
    IF pub_oid IS NULL THEN
        RAISE EXCEPTION 'pgveil: there is no pgveil publication %', unpublish_sanitized.name
            USING ERRCODE = 'undefined_object',
                  HINT = 'pgveil publications: ' || coalesce(
                      (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(p.pubname), ', ' ORDER BY p.pubname)
                       FROM veil_private.publications vp JOIN pg_catalog.pg_publication p ON p.oid = vp.pubid), 'none');
    END IF;
    EXECUTE pg_catalog.format('DROP PUBLICATION %I', unpublish_sanitized.name);
    DELETE FROM veil_private.publications vp WHERE vp.pubid = pub_oid;
END
$$;
COMMENT ON FUNCTION veil.unpublish_sanitized(text) IS
    'Drop a publication made by veil.publish_sanitized (its subscribers stop receiving changes).';

-- For governors: each pgveil publication and the copies it holds.
CREATE VIEW veil.publications AS
    SELECT p.pubname AS publication,
           coalesce((SELECT pg_catalog.array_agg(r.prrelid::regclass ORDER BY r.prrelid::regclass::text)
                     FROM pg_catalog.pg_publication_rel r WHERE r.prpubid = p.oid), '{}') AS tables,
           vp.created_at
    FROM veil_private.publications vp JOIN pg_catalog.pg_publication p ON p.oid = vp.pubid;
REVOKE ALL ON veil.publications FROM PUBLIC;

-- After ALTER PUBLICATION of a pgveil publication: refuse (and so undo)
-- anything that would make it hold more than the sanitized copies, or stop
-- publishing a kind of change.
CREATE FUNCTION veil_private.check_publications_after_ddl()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found text;
BEGIN
    IF NOT EXISTS (SELECT FROM veil_private.publications) THEN
        RETURN;
    END IF;
    SELECT pg_catalog.string_agg(
               coalesce(x."table" || ' (' || x.problem || ')', x.problem) || ' in ' || pg_catalog.quote_ident(x.publication),
               ', ')
    INTO found
    FROM veil_private.publication_problems() x
    -- A copy missing is no leak (and veil_private.sync_publications() drops
    -- strays before it adds copies); the audit reports it.
    WHERE x.problem <> 'sanitized copy not published'
      AND x.publication IN (
        SELECT p.pubname
        FROM pg_catalog.pg_event_trigger_ddl_commands() c
        JOIN pg_catalog.pg_publication p ON p.oid = CASE c.classid
            WHEN 'pg_catalog.pg_publication'::regclass THEN c.objid
            WHEN 'pg_catalog.pg_publication_rel'::regclass
                THEN (SELECT r.prpubid FROM pg_catalog.pg_publication_rel r WHERE r.oid = c.objid)
            WHEN 'pg_catalog.pg_publication_namespace'::regclass
                THEN (SELECT pn.pnpubid FROM pg_catalog.pg_publication_namespace pn WHERE pn.oid = c.objid)
            END);
    IF found IS NOT NULL THEN
        RAISE EXCEPTION 'pgveil: a pgveil publication holds every change of the sanitized copies and nothing else; refused: %', found
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'veil.stream() and veil.unstream() keep it in step; publish other tables in a publication of your own.';
    END IF;
END
$$;

CREATE FUNCTION veil_private.forget_publications_after_drop()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM veil_private.forget_dropped_publications();
END
$$;

REVOKE ALL ON FUNCTION veil_private.publication_missing_actions(oid), veil_private.publication_problems(),
    veil_private.forget_dropped_publications(), veil_private.sync_publications(),
    veil_private.check_publication_name(text), veil_private.check_publications_after_ddl(),
    veil_private.forget_publications_after_drop() FROM PUBLIC;
REVOKE ALL ON FUNCTION veil.publish_sanitized(text), veil.unpublish_sanitized(text) FROM PUBLIC;

DO $$
BEGIN
    CREATE EVENT TRIGGER veil_check_publications ON ddl_command_end WHEN TAG IN ('ALTER PUBLICATION')
        EXECUTE FUNCTION veil_private.check_publications_after_ddl();
    CREATE EVENT TRIGGER veil_forget_publications ON sql_drop WHEN TAG IN ('DROP PUBLICATION')
        EXECUTE FUNCTION veil_private.forget_publications_after_drop();
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'pgveil: this role may not create event triggers; veil_private.publication_problems() (pgveil audit) reports a pgveil publication that holds anything but sanitized copies';
END
$$;
