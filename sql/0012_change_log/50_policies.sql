-- Two options of policies delivered as a copy: change_log (whether their
-- streams write the change log) and on_ddl ('rebuild': pgveil's event
-- trigger rebuilds a stream in the DDL's own transaction; 'break': where no
-- event trigger could be created, DDL stops the stream instead of failing a
-- write; see 40_streams.sql). Changing either regenerates the policy's
-- stream triggers.

DROP FUNCTION veil.alter_policy(text, boolean, boolean, boolean, boolean, text);
CREATE FUNCTION veil.alter_policy(
    policy text,
    pass_through_unlabeled boolean DEFAULT NULL,
    allow_keyed_functions boolean DEFAULT NULL,
    masked_roles_may_compute_pseudonyms boolean DEFAULT false,
    security_barrier boolean DEFAULT NULL,
    uncovered text DEFAULT NULL,
    change_log boolean DEFAULT NULL,
    on_ddl text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p veil_private.policies;
    streamed oid;
BEGIN
    PERFORM veil.require_governor();
    SELECT * INTO p FROM veil_private.policies WHERE name = policy FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgveil: there is no policy %', pg_catalog.quote_literal(policy);
    END IF;
    IF allow_keyed_functions AND p.delivery = 'views' AND NOT masked_roles_may_compute_pseudonyms THEN
        RAISE EXCEPTION 'pgveil: keyed functions in policy % would let its masked roles compute the token or pseudonym of any value they guess', policy
            USING HINT = 'If that is acceptable, repeat with masked_roles_may_compute_pseudonyms => true.';
    END IF;
    IF security_barrier IS NOT NULL AND p.delivery <> 'views' THEN
        RAISE EXCEPTION 'pgveil: security_barrier applies to policies delivered through views, not %', policy;
    END IF;
    IF uncovered IS NOT NULL AND uncovered NOT IN ('refuse', 'keep', 'null') THEN
        RAISE EXCEPTION 'pgveil: uncovered is ''refuse'', ''keep'' or ''null'' (got %)', pg_catalog.quote_literal(uncovered);
    END IF;
    IF (change_log IS NOT NULL OR on_ddl IS NOT NULL) AND p.delivery <> 'copy' THEN
        RAISE EXCEPTION 'pgveil: change_log and on_ddl apply to policies delivered as a copy, not %', policy;
    END IF;
    IF on_ddl IS NOT NULL AND on_ddl NOT IN ('rebuild', 'break') THEN
        RAISE EXCEPTION 'pgveil: on_ddl is ''rebuild'' or ''break'' (got %)', pg_catalog.quote_literal(on_ddl);
    END IF;
    IF on_ddl = 'rebuild' AND p.on_ddl = 'break'
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger WHERE evtname = 'veil_rebuild_streams')
       AND EXISTS (SELECT FROM veil_private.streams s WHERE s.policy = alter_policy.policy) THEN
        RAISE EXCEPTION 'pgveil: policy % has streams, and on_ddl => ''rebuild'' needs pgveil''s DDL event trigger, which this installation lacks', policy;
    END IF;
    IF allow_keyed_functions IS FALSE AND EXISTS (
        SELECT FROM veil_private.column_rules r WHERE r.policy = alter_policy.policy AND r.uses_keyed) THEN
        RAISE EXCEPTION 'pgveil: policy % has rules that use keyed functions; remove them first', policy;
    END IF;
    UPDATE veil_private.policies SET
        pass_through_unlabeled = coalesce(alter_policy.pass_through_unlabeled, p.pass_through_unlabeled),
        allow_keyed_functions = coalesce(alter_policy.allow_keyed_functions, p.allow_keyed_functions),
        security_barrier = coalesce(alter_policy.security_barrier, p.security_barrier),
        uncovered = coalesce(alter_policy.uncovered, p.uncovered),
        change_log = coalesce(alter_policy.change_log, p.change_log),
        on_ddl = coalesce(alter_policy.on_ddl, p.on_ddl)
    WHERE name = policy;
    IF change_log IS DISTINCT FROM p.change_log AND change_log IS NOT NULL
       OR on_ddl IS DISTINCT FROM p.on_ddl AND on_ddl IS NOT NULL THEN
        FOR streamed IN SELECT s.source FROM veil_private.streams s WHERE s.policy = alter_policy.policy LOOP
            PERFORM veil_private.build_stream(streamed);
        END LOOP;
    END IF;
END
$$;
COMMENT ON FUNCTION veil.alter_policy(text, boolean, boolean, boolean, boolean, text, boolean, text) IS
    'Change a policy''s options; keyed functions in a views policy need an explicit acknowledgement.';
REVOKE ALL ON FUNCTION veil.alter_policy(text, boolean, boolean, boolean, boolean, text, boolean, text) FROM PUBLIC;
