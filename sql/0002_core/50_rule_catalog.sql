-- The rule catalog: policies, and rules keyed by object identity.
--
-- A rule names its object by oid (table oid + column number, role oid,
-- schema oid), so renaming keeps the rule. Column expressions are stored with
-- column references as placeholders "veil@col@<attnum>" (see 52_validation),
-- so renaming a referenced column does not break them either. Dropping an
-- object removes its rules (event trigger in 55_drop_cleanup.sql).

CREATE TABLE veil_private.policies (
    name                   text PRIMARY KEY CHECK (name ~ '^[a-z_][a-z0-9_]*$'),
    -- views: read through generated views by masked roles (dynamic masking);
    -- copy: materialized by the toolkit owner (the sanitized copy).
    delivery               text    NOT NULL CHECK (delivery IN ('views', 'copy')),
    -- anon-style "unlabeled columns pass through" instead of privacy by default.
    pass_through_unlabeled boolean NOT NULL DEFAULT false,
    -- Rules may use keyed functions (token, pseudo_*). Views make them oracles
    -- for the masked roles, so a views policy needs an explicit opt-in.
    allow_keyed_functions  boolean NOT NULL DEFAULT false,
    -- Views generated WITH (security_barrier). Off by default: mask views
    -- filter no rows and every column is its rule's expression, so a user's
    -- function in WHERE only ever sees masked values either way; but
    -- PostgreSQL uses no statistics through a security_barrier view and
    -- pushes no join into one (a point lookup joined to it scans it all).
    security_barrier       boolean NOT NULL DEFAULT false
);
INSERT INTO veil_private.policies (name, delivery, allow_keyed_functions) VALUES
    ('mask', 'views', false),
    ('sanitized', 'copy', true);

CREATE TABLE veil_private.column_rules (
    policy     text     NOT NULL REFERENCES veil_private.policies ON DELETE CASCADE,
    relid      oid      NOT NULL,
    attnum     smallint NOT NULL,
    label      text     NOT NULL,
    kind       text     NOT NULL CHECK (kind IN ('function', 'value', 'not_masked')),
    -- Deparsed by PostgreSQL, column references as "veil@col@<attnum>";
    -- NULL for NOT MASKED.
    expression text,
    -- The expression's own type (before any cast to the column's type).
    expression_type text,
    uses_keyed boolean  NOT NULL DEFAULT false,
    PRIMARY KEY (policy, relid, attnum)
);

CREATE TABLE veil_private.role_rules (
    policy text NOT NULL REFERENCES veil_private.policies ON DELETE CASCADE,
    roleid oid  NOT NULL,
    PRIMARY KEY (policy, roleid)
);

CREATE TABLE veil_private.schema_rules (
    policy text NOT NULL REFERENCES veil_private.policies ON DELETE CASCADE,
    nspid  oid  NOT NULL,
    PRIMARY KEY (policy, nspid)
);
REVOKE ALL ON veil_private.policies, veil_private.column_rules, veil_private.role_rules,
    veil_private.schema_rules FROM PUBLIC;

-- The stored expression with current column names, qualified by row_alias
-- when one is given (generated statements read several relations).
CREATE FUNCTION veil_private.render_expression(expression text, relid oid, row_alias text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT attnum, attname FROM pg_catalog.pg_attribute
        WHERE attrelid = relid AND attnum > 0 AND NOT attisdropped
    LOOP
        expression := pg_catalog.replace(expression, pg_catalog.format('"veil@col@%s"', col.attnum),
            coalesce(pg_catalog.quote_ident(row_alias) || '.', '') || pg_catalog.quote_ident(col.attname));
    END LOOP;
    RETURN expression;
END
$$;
REVOKE ALL ON FUNCTION veil_private.render_expression(text, oid, text) FROM PUBLIC;

CREATE VIEW veil.policies AS
    SELECT name AS policy, delivery, pass_through_unlabeled, allow_keyed_functions, security_barrier
    FROM veil_private.policies;

-- Every rule by current names. Rules of objects that no longer exist (only
-- possible where pgveil could not install its drop event trigger) are hidden.
CREATE VIEW veil.rules AS
    SELECT r.policy, 'COLUMN'::text AS object_type,
           n.nspname AS schema_name, c.relname AS table_name, a.attname AS column_name,
           NULL::name AS role_name, r.label, r.kind,
           veil_private.render_expression(r.expression, r.relid) AS expression
    FROM veil_private.column_rules r
    JOIN pg_catalog.pg_class c ON c.oid = r.relid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_catalog.pg_attribute a ON a.attrelid = r.relid AND a.attnum = r.attnum AND NOT a.attisdropped
    UNION ALL
    SELECT r.policy, 'ROLE', NULL, NULL, NULL, ro.rolname, 'MASKED', NULL, NULL
    FROM veil_private.role_rules r JOIN pg_catalog.pg_roles ro ON ro.oid = r.roleid
    UNION ALL
    SELECT r.policy, 'SCHEMA', n.nspname, NULL, NULL, NULL, 'TRUSTED', NULL, NULL
    FROM veil_private.schema_rules r JOIN pg_catalog.pg_namespace n ON n.oid = r.nspid;
REVOKE ALL ON veil.policies, veil.rules FROM PUBLIC;

-- Only the toolkit owner (the owner of veil_private), its members, and
-- superusers govern policy. In veil, so that anyone else is told so plainly.
CREATE FUNCTION veil.require_governor()
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner_name name := (SELECT nspowner::regrole::name FROM pg_catalog.pg_namespace
                        WHERE nspname = 'veil_private');
BEGIN
    IF NOT pg_catalog.pg_has_role(CURRENT_USER, owner_name, 'MEMBER')
       AND NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER) THEN
        RAISE EXCEPTION 'pgveil: only the toolkit owner (%) or a superuser may change policy', owner_name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

CREATE FUNCTION veil.create_policy(name text, delivery text DEFAULT 'views')
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM veil.require_governor();
    IF name !~ '^[a-z_][a-z0-9_]*$' THEN
        RAISE EXCEPTION 'pgveil: policy names are lower-case identifiers (got %)', pg_catalog.quote_literal(name);
    END IF;
    IF delivery NOT IN ('views', 'copy') THEN
        RAISE EXCEPTION 'pgveil: delivery is ''views'' or ''copy'' (got %)', pg_catalog.quote_literal(delivery);
    END IF;
    INSERT INTO veil_private.policies (name, delivery, allow_keyed_functions)
    VALUES (create_policy.name, create_policy.delivery, create_policy.delivery = 'copy');
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'pgveil: policy % exists already', create_policy.name;
END
$$;
COMMENT ON FUNCTION veil.create_policy(text, text) IS
    'Create a policy delivered through views (masked roles) or as a copy (sanitized tables).';

CREATE FUNCTION veil.alter_policy(
    policy text,
    pass_through_unlabeled boolean DEFAULT NULL,
    allow_keyed_functions boolean DEFAULT NULL,
    masked_roles_may_compute_pseudonyms boolean DEFAULT false,
    security_barrier boolean DEFAULT NULL)
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
    IF allow_keyed_functions IS FALSE AND EXISTS (
        SELECT FROM veil_private.column_rules r WHERE r.policy = alter_policy.policy AND r.uses_keyed) THEN
        RAISE EXCEPTION 'pgveil: policy % has rules that use keyed functions; remove them first', policy;
    END IF;
    UPDATE veil_private.policies SET
        pass_through_unlabeled = coalesce(alter_policy.pass_through_unlabeled, p.pass_through_unlabeled),
        allow_keyed_functions = coalesce(alter_policy.allow_keyed_functions, p.allow_keyed_functions),
        security_barrier = coalesce(alter_policy.security_barrier, p.security_barrier)
    WHERE name = policy;
END
$$;
COMMENT ON FUNCTION veil.alter_policy(text, boolean, boolean, boolean, boolean) IS
    'Change a policy''s options; keyed functions in a views policy need an explicit acknowledgement.';

REVOKE ALL ON FUNCTION veil.create_policy(text, text),
    veil.alter_policy(text, boolean, boolean, boolean, boolean) FROM PUBLIC;
