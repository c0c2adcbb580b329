-- Consumers of the change log: each registered role has one acknowledged
-- position, its own. A role reads and acknowledges for itself (its
-- current_user, the default) or for a role the session's login is a member
-- of; never for another consumer.

-- Register: the consumer starts at the current horizon (it reads the copies
-- for what came before).
CREATE OR REPLACE FUNCTION veil.grant_consumer(role_name name)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pg_catalog.pg_roles;
    leaks text;
BEGIN
    PERFORM veil.require_governor();
    SELECT * INTO r FROM pg_catalog.pg_roles WHERE rolname = role_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgveil: there is no role %', role_name;
    END IF;
    IF r.rolsuper THEN
        RAISE EXCEPTION 'pgveil: % is a superuser and reads everything; a consumer must not', role_name;
    END IF;
    IF pg_catalog.pg_has_role(role_name, (SELECT nspowner FROM pg_catalog.pg_namespace WHERE nspname = 'veil_private'), 'USAGE') THEN
        RAISE EXCEPTION 'pgveil: % is (or inherits) the toolkit owner, which holds the keys; a consumer must not', role_name;
    END IF;
    SELECT pg_catalog.string_agg(x.source::text, ', ') INTO leaks FROM veil_private.readable_sources(role_name) x;
    IF leaks IS NOT NULL THEN
        RAISE EXCEPTION 'pgveil: % can read source table(s) %, directly or through a role it belongs to', role_name, leaks
            USING HINT = 'Revoke those privileges (or the membership) first: a consumer reads sanitized.* only.';
    END IF;
    INSERT INTO veil_private.consumers (roleid, acked_xid) VALUES (r.oid, veil_private.change_log_horizon())
    ON CONFLICT DO NOTHING;
    PERFORM veil_private.grant_copies(role_name);
END
$$;

-- The caller's registration, checked: the role exists, the session's login
-- may act for it, it is registered, and (unless resyncing) the log still
-- holds everything after its position.
CREATE FUNCTION veil_private.consumer_state(consumer name, lock_row boolean, resyncing boolean)
RETURNS veil_private.consumers
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    role_id oid := (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = consumer);
    state veil_private.consumers;
    log_state veil_private.change_log_state;
BEGIN
    IF role_id IS NULL THEN
        RAISE EXCEPTION 'pgveil: there is no role %', coalesce(pg_catalog.quote_ident(consumer), 'NULL')
            USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT pg_catalog.pg_has_role(SESSION_USER, role_id, 'MEMBER') THEN
        RAISE EXCEPTION 'pgveil: % may not read or acknowledge the changes of consumer %', SESSION_USER, consumer
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF lock_row THEN
        SELECT * INTO state FROM veil_private.consumers c WHERE c.roleid = role_id FOR UPDATE;
    ELSE
        SELECT * INTO state FROM veil_private.consumers c WHERE c.roleid = role_id;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgveil: % is not a registered consumer', consumer
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A governor registers it: SELECT veil.grant_consumer(...).';
    END IF;
    SELECT * INTO log_state FROM veil_private.change_log_state;
    IF NOT resyncing AND (state.acked_xid, state.acked_seq) < (log_state.trimmed_xid, log_state.trimmed_seq) THEN
        RAISE EXCEPTION 'pgveil: consumer % fell behind the change log''s retention: entries it had not acknowledged were trimmed', consumer
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'SELECT veil.resync_consumer(); then re-read every copy, and continue with veil.changes().';
    END IF;
    RETURN state;
END
$$;

-- The copies a role may read, by name.
CREATE FUNCTION veil_private.readable_copies(role_id oid)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(pg_catalog.array_agg(c.relname::text), '{}')
    FROM pg_catalog.pg_class c
    WHERE c.relnamespace = 'sanitized'::pg_catalog.regnamespace AND c.relkind = 'r'
      AND pg_catalog.has_table_privilege(role_id, c.oid, 'SELECT')
$$;

-- One statement, one snapshot: the horizon and the entries are read together.
CREATE FUNCTION veil.changes(max_entries integer DEFAULT 1000, consumer name DEFAULT CURRENT_USER)
RETURNS TABLE ("position" text, copy text, op text, rows bigint, keys json)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    state veil_private.consumers;
BEGIN
    IF max_entries IS NULL OR max_entries < 1 THEN
        RAISE EXCEPTION 'pgveil: max_entries must be a positive number' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    state := veil_private.consumer_state(consumer, false, false);
    RETURN QUERY
        SELECT veil_private.position_text(l.xid, l.seq), l.copy, l.op, l.rows, l.keys
        FROM veil_private.change_log l
        WHERE (l.xid, l.seq) > (state.acked_xid, state.acked_seq)
          AND l.xid < veil_private.change_log_horizon()
          AND l.copy = ANY (veil_private.readable_copies(state.roleid))
        ORDER BY l.xid, l.seq
        LIMIT max_entries;
END
$$;
COMMENT ON FUNCTION veil.changes(integer, name) IS
    'Change-log entries after the consumer''s acknowledged position, in position order.';

CREATE FUNCTION veil.acknowledge(change_position text, consumer name DEFAULT CURRENT_USER)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    state veil_private.consumers := veil_private.consumer_state(consumer, true, false);
    target record := veil_private.parse_position(change_position);
BEGIN
    IF (target.xid, target.seq) = (state.acked_xid, state.acked_seq) THEN
        RETURN;  -- acknowledged again after a reconnect
    END IF;
    IF (target.xid, target.seq) < (state.acked_xid, state.acked_seq) THEN
        RAISE EXCEPTION 'pgveil: position % lies before the position consumer % acknowledged (%)', change_position, consumer,
            veil_private.position_text(state.acked_xid, state.acked_seq)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (
        SELECT FROM veil_private.change_log l
        WHERE l.xid = target.xid AND l.seq = target.seq
          AND l.xid < veil_private.change_log_horizon()
          AND l.copy = ANY (veil_private.readable_copies(state.roleid))) THEN
        RAISE EXCEPTION 'pgveil: consumer % never received position %', consumer, change_position
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Acknowledge the position of an entry veil.changes() returned.';
    END IF;
    UPDATE veil_private.consumers c SET acked_xid = target.xid, acked_seq = target.seq, acked_at = pg_catalog.now()
    WHERE c.roleid = state.roleid;
END
$$;
COMMENT ON FUNCTION veil.acknowledge(text, name) IS
    'Record that the consumer has processed every change-log entry up to this position.';

CREATE FUNCTION veil.consumer_position(consumer name DEFAULT CURRENT_USER)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    state veil_private.consumers := veil_private.consumer_state(consumer, false, true);
BEGIN
    RETURN veil_private.position_text(state.acked_xid, state.acked_seq);
END
$$;
COMMENT ON FUNCTION veil.consumer_position(name) IS 'The change-log position the consumer acknowledged last.';

-- Start over: the position becomes the current horizon. Every change before
-- it is in the copies for a read that begins after this call's transaction
-- has committed.
CREATE FUNCTION veil.resync_consumer(consumer name DEFAULT CURRENT_USER)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    state veil_private.consumers := veil_private.consumer_state(consumer, true, true);
    horizon xid8 := veil_private.change_log_horizon();
BEGIN
    UPDATE veil_private.consumers c SET acked_xid = horizon, acked_seq = 0, acked_at = pg_catalog.now()
    WHERE c.roleid = state.roleid;
    RETURN veil_private.position_text(horizon, 0);
END
$$;
COMMENT ON FUNCTION veil.resync_consumer(name) IS
    'Move the consumer to the current horizon; it must then re-read every copy.';

CREATE VIEW veil.change_consumers AS
    SELECT c.roleid::regrole AS role,
           veil_private.position_text(c.acked_xid, c.acked_seq) AS "position",
           c.acked_at AS acknowledged_at, c.registered_at,
           (c.acked_xid, c.acked_seq) < (s.trimmed_xid, s.trimmed_seq) AS behind_retention
    FROM veil_private.consumers c, veil_private.change_log_state s;
REVOKE ALL ON veil.change_consumers FROM PUBLIC;

REVOKE ALL ON FUNCTION veil_private.consumer_state(name, boolean, boolean),
    veil_private.readable_copies(oid) FROM PUBLIC;
-- Every role may call these; they act only for a registered consumer the
-- session's login is (a member of).
GRANT EXECUTE ON FUNCTION veil.changes(integer, name), veil.acknowledge(text, name),
    veil.consumer_position(name), veil.resync_consumer(name) TO PUBLIC;
