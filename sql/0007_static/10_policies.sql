-- Policies delivered 'static' (the data rewritten in place, see
-- 40_anonymize.sql) and the policy option 'uncovered'; rule checks that
-- this revision adds (JSON specs, unique-safe rules) hooked into setting a
-- rule; the masking functions this revision adds made callable from rules.

CREATE OR REPLACE VIEW veil.policies AS
    SELECT name AS policy, delivery, pass_through_unlabeled, allow_keyed_functions, security_barrier, uncovered
    FROM veil_private.policies;

-- Static delivery may use keyed functions (tokens keep keys joinable): no
-- role reads a static policy's output through anything that computes it.
CREATE OR REPLACE FUNCTION veil.create_policy(name text, delivery text DEFAULT 'views')
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM veil.require_governor();
    IF name !~ '^[a-z_][a-z0-9_]*$' THEN
        RAISE EXCEPTION 'pgveil: policy names are lower-case identifiers (got %)', pg_catalog.quote_literal(name);
    END IF;
    IF delivery NOT IN ('views', 'copy', 'static') THEN
        RAISE EXCEPTION 'pgveil: delivery is ''views'', ''copy'' or ''static'' (got %)', pg_catalog.quote_literal(delivery);
    END IF;
    INSERT INTO veil_private.policies (name, delivery, allow_keyed_functions)
    VALUES (create_policy.name, create_policy.delivery, create_policy.delivery IN ('copy', 'static'));
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'pgveil: policy % exists already', create_policy.name;
END
$$;
COMMENT ON FUNCTION veil.create_policy(text, text) IS
    'Create a policy delivered through views (masked roles), as a copy (sanitized tables) or static (data rewritten in place).';

DROP FUNCTION veil.alter_policy(text, boolean, boolean, boolean, boolean);
CREATE FUNCTION veil.alter_policy(
    policy text,
    pass_through_unlabeled boolean DEFAULT NULL,
    allow_keyed_functions boolean DEFAULT NULL,
    masked_roles_may_compute_pseudonyms boolean DEFAULT false,
    security_barrier boolean DEFAULT NULL,
    uncovered text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p veil_private.policies;
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
    IF allow_keyed_functions IS FALSE AND EXISTS (
        SELECT FROM veil_private.column_rules r WHERE r.policy = alter_policy.policy AND r.uses_keyed) THEN
        RAISE EXCEPTION 'pgveil: policy % has rules that use keyed functions; remove them first', policy;
    END IF;
    UPDATE veil_private.policies SET
        pass_through_unlabeled = coalesce(alter_policy.pass_through_unlabeled, p.pass_through_unlabeled),
        allow_keyed_functions = coalesce(alter_policy.allow_keyed_functions, p.allow_keyed_functions),
        security_barrier = coalesce(alter_policy.security_barrier, p.security_barrier),
        uncovered = coalesce(alter_policy.uncovered, p.uncovered)
    WHERE name = policy;
END
$$;
COMMENT ON FUNCTION veil.alter_policy(text, boolean, boolean, boolean, boolean, text) IS
    'Change a policy''s options; keyed functions in a views policy need an explicit acknowledgement.';
REVOKE ALL ON FUNCTION veil.alter_policy(text, boolean, boolean, boolean, boolean, text) FROM PUBLIC;

-- Functions of veil that rules may call: the masking library, never the
-- administrative API. One line per family.
CREATE OR REPLACE FUNCTION veil_private.is_masking_function(fn oid)
RETURNS boolean
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.pronamespace = 'veil'::regnamespace
       AND (p.proname ~ '^(noise|dnoise|partial|partial_email|random_[a-z_]+|hex_to_int|digest|fake_[a-z_]+|pseudo_[a-z_]+|generalize_[a-z0-9_]+|token)$'
            OR p.proname ~ '^jsonb?_mask(_keyed)?$'
            OR p.proname ~ '^unique_[a-z_]+$'
            OR p.proname ~ '^(email_with_domain|email_keep_domain|redact|redact_digits|redact_street|name_keep_initial)$')
    FROM pg_catalog.pg_proc p WHERE p.oid = fn
$$;

-- Set or remove one column rule. Besides what validate_expression checks,
-- a rule's JSON masking specs must be valid and a rule on a column under a
-- unique constraint must be injective; both are checked here, when the rule
-- is set, rather than when a delivery first fails on it.
CREATE OR REPLACE FUNCTION veil_private.set_column_rule(policy text, relid oid, attnum smallint, label text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parsed text[];
    kind text;
    checked_expression text;
    checked_keyed boolean := false;
    checked_type text;
BEGIN
    IF label IS NULL THEN
        DELETE FROM veil_private.column_rules r
        WHERE r.policy = set_column_rule.policy AND r.relid = set_column_rule.relid
          AND r.attnum = set_column_rule.attnum;
        RETURN;
    END IF;
    parsed := pg_catalog.regexp_match(label, '^\s*MASKED\s+WITH\s+(FUNCTION|VALUE)\s+(.*\S)\s*$', 'i');
    IF parsed IS NOT NULL THEN
        kind := pg_catalog.lower(parsed[1]);
        SELECT v.deparsed, v.uses_keyed, v.expression_type INTO checked_expression, checked_keyed, checked_type
        FROM veil_private.validate_expression(policy, relid, attnum, kind, parsed[2]) AS v;
        PERFORM veil_private.check_json_mask_specs(relid, attnum, checked_expression);
        PERFORM veil_private.check_unique_safe(policy, relid, attnum, kind, checked_expression);
    ELSIF label ~* '^\s*NOT\s+MASKED\s*$' THEN
        kind := 'not_masked';
    ELSE
        RAISE EXCEPTION 'pgveil: unknown column label %', pg_catalog.quote_literal(label)
            USING HINT = 'Column labels are MASKED WITH FUNCTION <call>, MASKED WITH VALUE <constant>, or NOT MASKED.';
    END IF;
    INSERT INTO veil_private.column_rules AS r
        (policy, relid, attnum, label, kind, expression, expression_type, uses_keyed)
    VALUES (policy, relid, attnum, label, kind, checked_expression, checked_type, checked_keyed)
    ON CONFLICT ON CONSTRAINT column_rules_pkey DO UPDATE
    SET label = EXCLUDED.label, kind = EXCLUDED.kind, expression = EXCLUDED.expression,
        expression_type = EXCLUDED.expression_type, uses_keyed = EXCLUDED.uses_keyed;
END
$$;
