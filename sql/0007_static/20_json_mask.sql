-- JSON masking: veil.jsonb_mask(document, spec) and veil.json_mask(document,
-- spec) mask parts of a JSON document; veil.jsonb_mask_keyed and
-- veil.json_mask_keyed also offer the keyed masks (token, pseudo). The spec
-- format is described in docs/json_masking.md; in brief:
--
--   {"paths":       {"$.customer.email": "partial_email", "$.items[*].note": "remove"},
--    "keys":        {"phone": {"fake": "phone"}, "ssn": {"token": "ssn"}},
--    "ignore_keys": ["internal"],
--    "keep_values": ["n/a", ""]}
--
-- A spec is checked when the rule is set (veil_private.check_json_mask_specs,
-- called by veil_private.set_column_rule): a rule whose spec is not a valid
-- constant is refused. At run time nothing in a document makes the
-- expression fail: values of an unexpected type, nulls, missing paths, deep
-- nesting and large documents are all masked or left as the spec says, so a
-- rule on a streamed table never makes the application's write fail.
--
-- Privilege split: a function that uses the toolkit's key is an oracle for
-- whoever may execute it. veil.jsonb_mask and veil.json_mask never use the
-- key (token and pseudo masks are refused in their specs); they run with the
-- caller's rights and every role may execute them, like veil.partial. The
-- _keyed variants run as the toolkit owner, are not executable by PUBLIC and
-- count as keyed functions (veil_private.is_keyed_function), so a views
-- policy uses them only after the same opt-in as veil.token. The engine
-- functions (veil.jsonb_mask_*) compute from their arguments and the public
-- dictionaries only, and the unkeyed variants need them with the caller's
-- rights: a token or pseudonym they are asked for is computed by veil.token
-- / veil.pseudo_*, whose own privileges decide. The engine is STABLE, its
-- fake values drawn from a seed argument; the public functions draw that
-- seed at random per call and are VOLATILE.
--
-- Speed: a document is rebuilt only along the paths the spec reaches; a key
-- searched at any depth is first looked for with one jsonpath test
-- (@?), and a subtree is descended into only if it holds one. See
-- bench/json_mask.py.

-- Deepest level the engine descends to. Below it, a value that a key at any
-- depth or a leaf-by-leaf mask would have to inspect is replaced by null:
-- masked rather than left unread (and no recursion deep enough to exhaust
-- the stack).
CREATE FUNCTION veil.jsonb_mask_max_depth()
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 64 $$;
COMMENT ON FUNCTION veil.jsonb_mask_max_depth() IS
    'JSON masking descends this many levels; a value below it that a mask must inspect becomes null.';

-- A path of the spec as the text[] of its steps, as jsonb_set and #> take
-- them (an array index is its number, on an object the key of that name),
-- with NULL for a wildcard (every element of a list, every member of an
-- object). NULL when the text is not a path.
--   $.a.b   $."key with spaces".c   $.list[*].x   $.list[0]   $.obj.*   root['a']['b']
CREATE FUNCTION veil.jsonb_mask_path(path text)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rest text;
    steps text[] := '{}';
    consumed integer := 0;
    m text[];
BEGIN
    -- The common case without a query: names, [n] and [*].
    IF path ~ '^\$(\.[A-Za-z_][A-Za-z0-9_]*|\[\*\]|\[[0-9]{1,9}\])*$' THEN
        rest := pg_catalog.regexp_replace(pg_catalog.substr(path, 2), '\[(\*|[0-9]+)\]', '.\1', 'g');
        RETURN pg_catalog.string_to_array(pg_catalog.substr(rest, 2), '.', '*');
    END IF;
    IF path LIKE '$%' THEN
        rest := pg_catalog.substr(path, 2);
    ELSIF path LIKE 'root%' THEN
        rest := pg_catalog.substr(path, 5);
    ELSE
        RETURN NULL;
    END IF;
    FOR m IN
        SELECT r FROM pg_catalog.regexp_matches(rest,
            '(\.([A-Za-z_][A-Za-z0-9_$-]*)|\."((?:[^"\\]|\\.)*)"|\[''((?:[^''\\]|\\.)*)''\]|\["((?:[^"\\]|\\.)*)"\]|\[([0-9]{1,9})\]|\[\*\]|\.\*)',
            'g') AS r
    LOOP
        consumed := consumed + pg_catalog.length(m[1]);
        steps := steps || CASE
            WHEN m[2] IS NOT NULL THEN m[2]
            WHEN m[3] IS NOT NULL THEN pg_catalog.regexp_replace(m[3], '\\(.)', '\1', 'g')
            WHEN m[4] IS NOT NULL THEN pg_catalog.regexp_replace(m[4], '\\(.)', '\1', 'g')
            WHEN m[5] IS NOT NULL THEN pg_catalog.regexp_replace(m[5], '\\(.)', '\1', 'g')
            WHEN m[6] IS NOT NULL THEN m[6]::integer::text
            END;
    END LOOP;
    IF consumed <> pg_catalog.length(rest) THEN
        RETURN NULL;
    END IF;
    RETURN steps;
END
$$;
COMMENT ON FUNCTION veil.jsonb_mask_path(text) IS
    'A JSON masking path as the text[] of its steps (NULL for a wildcard); NULL if it is not a path.';

-- What is wrong with one mask of a spec (NULL if nothing).
CREATE FUNCTION veil.jsonb_mask_mask_error(mask jsonb, allow_keyed boolean)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind text;
    arg jsonb;
BEGIN
    IF mask IS NULL THEN
        RETURN 'a mask is missing';
    END IF;
    IF pg_catalog.jsonb_typeof(mask) = 'string' THEN
        kind := mask OPERATOR(pg_catalog.#>>) '{}';
        IF kind IN ('null', 'remove', 'partial_email') THEN
            RETURN NULL;
        ELSIF kind = 'token' THEN
            IF NOT allow_keyed THEN
                RETURN 'the mask "token" uses the key: use veil.jsonb_mask_keyed (or json_mask_keyed)';
            END IF;
            RETURN NULL;
        END IF;
        RETURN pg_catalog.format('unknown mask %s (masks: "null", "remove", "partial_email", "token", {"value": ...}, '
                                 '{"fake": dictionary}, {"pseudo": dictionary}, {"token": purpose}, '
                                 '{"partial": [prefix, padding, suffix]})', mask);
    END IF;
    IF pg_catalog.jsonb_typeof(mask) <> 'object'
       OR (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(mask)) <> 1 THEN
        RETURN pg_catalog.format('a mask is a string or an object with one member (got %s)', mask);
    END IF;
    SELECT k INTO kind FROM pg_catalog.jsonb_object_keys(mask) AS k;
    arg := mask OPERATOR(pg_catalog.->) kind;
    CASE kind
    WHEN 'value' THEN
        RETURN NULL;
    WHEN 'fake' THEN
        IF pg_catalog.jsonb_typeof(arg) <> 'string' THEN
            RETURN pg_catalog.format('{"fake": ...} names a dictionary (got %s)', arg);
        END IF;
        IF NOT EXISTS (SELECT FROM veil.dictionaries d WHERE d.name = arg OPERATOR(pg_catalog.#>>) '{}') THEN
            RETURN pg_catalog.format('there is no dictionary %s (see veil.dictionaries)', arg);
        END IF;
        RETURN NULL;
    WHEN 'pseudo' THEN
        IF NOT allow_keyed THEN
            RETURN 'the mask {"pseudo": ...} uses the key: use veil.jsonb_mask_keyed (or json_mask_keyed)';
        END IF;
        IF pg_catalog.jsonb_typeof(arg) <> 'string'
           OR (arg OPERATOR(pg_catalog.#>>) '{}') NOT IN ('first_name', 'last_name', 'email', 'phone', 'address',
                                                         'city', 'country', 'company', 'iban') THEN
            RETURN pg_catalog.format('{"pseudo": ...} names one of first_name, last_name, email, phone, address, '
                                     'city, country, company, iban (got %s)', arg);
        END IF;
        RETURN NULL;
    WHEN 'token' THEN
        IF NOT allow_keyed THEN
            RETURN 'the mask {"token": ...} uses the key: use veil.jsonb_mask_keyed (or json_mask_keyed)';
        END IF;
        IF pg_catalog.jsonb_typeof(arg) <> 'string' THEN
            RETURN pg_catalog.format('{"token": ...} takes the purpose, a string (got %s)', arg);
        END IF;
        RETURN NULL;
    WHEN 'partial' THEN
        IF pg_catalog.jsonb_typeof(arg) <> 'array' OR pg_catalog.jsonb_array_length(arg) <> 3
           OR pg_catalog.jsonb_typeof(arg OPERATOR(pg_catalog.->) 0) <> 'number'
           OR pg_catalog.jsonb_typeof(arg OPERATOR(pg_catalog.->) 1) <> 'string'
           OR pg_catalog.jsonb_typeof(arg OPERATOR(pg_catalog.->) 2) <> 'number'
           OR (arg OPERATOR(pg_catalog.->>) 0) !~ '^[0-9]{1,6}$'
           OR (arg OPERATOR(pg_catalog.->>) 2) !~ '^[0-9]{1,6}$' THEN
            RETURN pg_catalog.format('{"partial": [prefix, padding, suffix]} takes two counts from 0 to 999999 '
                                     'around a padding string (got %s)', arg);
        END IF;
        RETURN NULL;
    ELSE
        RETURN pg_catalog.format('unknown mask %s (masks: "null", "remove", "partial_email", "token", {"value": ...}, '
                                 '{"fake": dictionary}, {"pseudo": dictionary}, {"token": purpose}, '
                                 '{"partial": [prefix, padding, suffix]})', mask);
    END CASE;
END
$$;

-- Everything wrong with a spec, one message each; an empty array if it is
-- valid. allow_keyed: whether token and pseudo masks may be used (the
-- _keyed variants).
CREATE FUNCTION veil.jsonb_mask_spec_errors(spec jsonb, allow_keyed boolean DEFAULT false)
RETURNS text[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    errors text[] := '{}';
    member record;
    steps text[];
    problem text;
    ignored text[] := '{}';
BEGIN
    IF spec IS NULL OR pg_catalog.jsonb_typeof(spec) <> 'object' THEN
        RETURN ARRAY[pg_catalog.format('a spec is a JSON object (got %s)', coalesce(spec::text, 'NULL'))];
    END IF;
    FOR member IN SELECT k FROM pg_catalog.jsonb_object_keys(spec) AS k
                  WHERE k NOT IN ('paths', 'keys', 'ignore_keys', 'keep_values') LOOP
        errors := errors || pg_catalog.format('unknown member %s (a spec has paths, keys, ignore_keys, keep_values)',
                                              pg_catalog.to_jsonb(member.k));
    END LOOP;

    IF spec ? 'ignore_keys' THEN
        IF pg_catalog.jsonb_typeof(spec -> 'ignore_keys') <> 'array'
           OR EXISTS (SELECT FROM pg_catalog.jsonb_array_elements(spec -> 'ignore_keys') e
                      WHERE pg_catalog.jsonb_typeof(e) <> 'string') THEN
            errors := errors || 'ignore_keys is an array of key names (strings)'::text;
        ELSE
            ignored := ARRAY(SELECT pg_catalog.jsonb_array_elements_text(spec -> 'ignore_keys'));
        END IF;
    END IF;
    IF spec ? 'keep_values' AND (pg_catalog.jsonb_typeof(spec -> 'keep_values') <> 'array'
           OR EXISTS (SELECT FROM pg_catalog.jsonb_array_elements(spec -> 'keep_values') e
                      WHERE pg_catalog.jsonb_typeof(e) IN ('object', 'array'))) THEN
        errors := errors || 'keep_values is an array of scalars (strings, numbers, booleans, null)'::text;
    END IF;

    IF spec ? 'paths' THEN
        IF pg_catalog.jsonb_typeof(spec -> 'paths') <> 'object' THEN
            errors := errors || 'paths is an object: {"$.path": mask, ...}'::text;
        ELSE
            FOR member IN SELECT * FROM pg_catalog.jsonb_each(spec -> 'paths') LOOP
                steps := veil.jsonb_mask_path(member.key);
                IF steps IS NULL THEN
                    errors := errors || pg_catalog.format('%s is not a path (write $.key, $."any key", $.list[*], $.list[0], $.object.* or root[''key''])',
                                                          pg_catalog.to_jsonb(member.key));
                    CONTINUE;
                END IF;
                IF steps = '{}'::text[] AND member.value = '"remove"'::jsonb THEN
                    errors := errors || pg_catalog.format('path %s is the whole document, which cannot be removed', pg_catalog.to_jsonb(member.key));
                END IF;
                IF steps OPERATOR(pg_catalog.&&) ignored THEN
                    errors := errors || pg_catalog.format('path %s goes through a key of ignore_keys', pg_catalog.to_jsonb(member.key));
                END IF;
                problem := veil.jsonb_mask_mask_error(member.value, allow_keyed);
                IF problem IS NOT NULL THEN
                    errors := errors || pg_catalog.format('path %s: %s', pg_catalog.to_jsonb(member.key), problem);
                END IF;
            END LOOP;
        END IF;
    END IF;
    IF spec ? 'keys' THEN
        IF pg_catalog.jsonb_typeof(spec -> 'keys') <> 'object' THEN
            errors := errors || 'keys is an object: {"key name": mask, ...}'::text;
        ELSE
            FOR member IN SELECT * FROM pg_catalog.jsonb_each(spec -> 'keys') LOOP
                IF member.key = ANY (ignored) THEN
                    errors := errors || pg_catalog.format('key %s is both masked and in ignore_keys', pg_catalog.to_jsonb(member.key));
                END IF;
                problem := veil.jsonb_mask_mask_error(member.value, allow_keyed);
                IF problem IS NOT NULL THEN
                    errors := errors || pg_catalog.format('key %s: %s', pg_catalog.to_jsonb(member.key), problem);
                END IF;
            END LOOP;
        END IF;
    END IF;
    IF pg_catalog.cardinality(errors) = 0
       AND coalesce((SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(spec -> 'paths')), 0)
         + coalesce((SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(spec -> 'keys')), 0) = 0 THEN
        errors := errors || 'the spec masks nothing: give paths or keys'::text;
    END IF;
    RETURN errors;
END
$$;
COMMENT ON FUNCTION veil.jsonb_mask_spec_errors(jsonb, boolean) IS
    'What is wrong with a JSON masking spec, one message per problem (empty if it is valid).';

-- The value at a target masked: the new value, or NULL for "remove".
-- "null", "remove" and {"value": ...} replace it whole, whatever it is. The
-- masks that compute from the value (partial, partial_email, fake, token,
-- pseudo) apply to a scalar's text (a number or boolean gives a string) and
-- to each scalar inside a list or object, keys of ignore_keys and values of
-- keep_values left alone; JSON null stays null. Written as plain
-- expressions, no query, for the common case of one scalar.
CREATE FUNCTION veil.jsonb_mask_value(v jsonb, mask jsonb, ignored text[], keep jsonb, depth integer, seed bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind text := pg_catalog.jsonb_typeof(v);
    t text;
    arg jsonb;
BEGIN
    IF kind IN ('object', 'array') THEN
        IF pg_catalog.jsonb_typeof(mask) = 'string' AND mask OPERATOR(pg_catalog.<@) '["null", "remove"]'::jsonb THEN
            RETURN CASE WHEN mask = '"null"'::jsonb THEN 'null'::jsonb END;
        ELSIF mask ? 'value' THEN
            RETURN mask OPERATOR(pg_catalog.->) 'value';
        ELSIF depth >= veil.jsonb_mask_max_depth() THEN
            RETURN 'null'::jsonb;
        ELSIF kind = 'object' THEN
            -- OFFSET 0 keeps each value masked once: a flattened subquery
            -- would compute it in WHERE and again in the aggregate, twice
            -- per level, 2^depth in all.
            RETURN coalesce((
                SELECT pg_catalog.jsonb_object_agg(e.key, m.value)
                FROM pg_catalog.jsonb_each(v) AS e
                CROSS JOIN LATERAL (SELECT CASE WHEN e.key = ANY (ignored) THEN e.value
                                                ELSE veil.jsonb_mask_value(e.value, mask, ignored, keep, depth + 1, seed) END AS value
                                    OFFSET 0) AS m
                WHERE m.value IS NOT NULL), '{}'::jsonb);
        END IF;
        RETURN coalesce((
            SELECT pg_catalog.jsonb_agg(m.value ORDER BY e.n)
            FROM pg_catalog.jsonb_array_elements(v) WITH ORDINALITY AS e(value, n)
            CROSS JOIN LATERAL (SELECT veil.jsonb_mask_value(e.value, mask, ignored, keep, depth + 1, seed) AS value OFFSET 0) AS m
            WHERE m.value IS NOT NULL), '[]'::jsonb);
    END IF;
    IF keep IS NOT NULL AND keep OPERATOR(pg_catalog.@>) pg_catalog.jsonb_build_array(v) THEN
        RETURN v;
    END IF;
    IF pg_catalog.jsonb_typeof(mask) = 'string' THEN
        CASE mask OPERATOR(pg_catalog.#>>) '{}'
        WHEN 'null' THEN RETURN 'null'::jsonb;
        WHEN 'remove' THEN RETURN NULL;
        ELSE NULL;
        END CASE;
    ELSIF mask ? 'value' THEN
        RETURN mask OPERATOR(pg_catalog.->) 'value';
    END IF;
    t := v OPERATOR(pg_catalog.#>>) '{}';
    IF t IS NULL THEN
        RETURN v;  -- JSON null: nothing to hide
    END IF;
    IF mask ? 'partial' THEN
        -- veil.partial written out (same result, no call)
        arg := mask OPERATOR(pg_catalog.->) 'partial';
        RETURN pg_catalog.to_jsonb(pg_catalog.substr(t, 1, (arg OPERATOR(pg_catalog.->>) 0)::integer)
            || (arg OPERATOR(pg_catalog.->>) 1)
            || pg_catalog.substr(t, pg_catalog.length(t) - (arg OPERATOR(pg_catalog.->>) 2)::integer + 1,
                                 (arg OPERATOR(pg_catalog.->>) 2)::integer));
    ELSIF mask = '"partial_email"'::jsonb THEN
        RETURN pg_catalog.to_jsonb(veil.partial_email(t));
    ELSIF mask ? 'fake' THEN
        -- A dictionary value at a position drawn from the call's random seed
        -- and the value: random per call (no caller can reproduce a pick),
        -- the same for equal values within one document.
        RETURN pg_catalog.to_jsonb((
            SELECT d.value FROM veil.dictionary d
            WHERE d.name = mask OPERATOR(pg_catalog.->>) 'fake'
              AND d.id = (SELECT 1 + ((pg_catalog.hashtextextended(t, seed) & 9223372036854775807) % s.size)::integer
                          FROM veil.dictionaries s WHERE s.name = mask OPERATOR(pg_catalog.->>) 'fake')));
    ELSIF mask = '"token"'::jsonb THEN
        RETURN pg_catalog.to_jsonb(veil.token(t, ''));
    ELSIF mask ? 'token' THEN
        RETURN pg_catalog.to_jsonb(veil.token(t, mask OPERATOR(pg_catalog.->>) 'token'));
    ELSIF mask ? 'pseudo' THEN
        RETURN pg_catalog.to_jsonb(CASE mask OPERATOR(pg_catalog.->>) 'pseudo'
            WHEN 'first_name' THEN veil.pseudo_first_name(t)
            WHEN 'last_name' THEN veil.pseudo_last_name(t)
            WHEN 'email' THEN veil.pseudo_email(t)
            WHEN 'phone' THEN veil.pseudo_phone(t)
            WHEN 'address' THEN veil.pseudo_address(t)
            WHEN 'city' THEN veil.pseudo_city(t)
            WHEN 'country' THEN veil.pseudo_country(t)
            WHEN 'company' THEN veil.pseudo_company(t)
            WHEN 'iban' THEN veil.pseudo_iban(t)
            END);
    END IF;
    RETURN 'null'::jsonb;  -- not reached with a valid spec; masked all the same
END
$$;
COMMENT ON FUNCTION veil.jsonb_mask_value(jsonb, jsonb, text[], jsonb, integer, bigint) IS
    'Engine of veil.jsonb_mask: the value at a target masked (NULL means removed).';

-- One path of the spec applied to node from step i (1-based) on: node with
-- the values the path reaches masked, or NULL if the mask removes node
-- itself. Up to the first wildcard the path is followed with #> and
-- jsonb_set (no query); at a wildcard the list or object there is rebuilt
-- element by element.
CREATE FUNCTION veil.jsonb_mask_at(node jsonb, steps text[], i integer, mask jsonb, ignored text[], keep jsonb, seed bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wildcard integer := pg_catalog.array_position(steps, NULL, i);
    prefix text[];
    container jsonb;
    rebuilt jsonb;
    member jsonb;
    masked jsonb;
    key text;
BEGIN
    IF wildcard IS NULL THEN
        prefix := steps[i:];
        IF pg_catalog.cardinality(prefix) = 0 THEN
            RETURN veil.jsonb_mask_value(node, mask, ignored, keep, i, seed);
        END IF;
        member := node OPERATOR(pg_catalog.#>) prefix;
        IF member IS NULL THEN
            RETURN node;
        END IF;
        masked := veil.jsonb_mask_value(member, mask, ignored, keep, i + pg_catalog.cardinality(prefix), seed);
        IF masked IS NULL THEN
            RETURN node OPERATOR(pg_catalog.#-) prefix;
        END IF;
        RETURN pg_catalog.jsonb_set(node, prefix, masked);
    END IF;
    prefix := steps[i:wildcard - 1];
    container := node OPERATOR(pg_catalog.#>) prefix;
    -- Short lists and objects in a loop of expressions; longer ones in one
    -- query (appending one by one would copy the list each time: n^2).
    IF pg_catalog.jsonb_typeof(container) = 'array' AND pg_catalog.jsonb_array_length(container) <= 8 THEN
        rebuilt := '[]';
        FOR n IN 0 .. pg_catalog.jsonb_array_length(container) - 1 LOOP
            masked := veil.jsonb_mask_at(container OPERATOR(pg_catalog.->) n, steps, wildcard + 1, mask, ignored, keep, seed);
            IF masked IS NOT NULL THEN
                rebuilt := rebuilt OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(masked);
            END IF;
        END LOOP;
    ELSIF pg_catalog.jsonb_typeof(container) = 'array' THEN
        rebuilt := coalesce((
            SELECT pg_catalog.jsonb_agg(m.value ORDER BY e.n) FILTER (WHERE m.value IS NOT NULL)
            FROM pg_catalog.jsonb_array_elements(container) WITH ORDINALITY AS e(value, n)
            CROSS JOIN LATERAL (SELECT veil.jsonb_mask_at(e.value, steps, wildcard + 1, mask, ignored, keep, seed) AS value
                                OFFSET 0) AS m), '[]'::jsonb);
    ELSIF pg_catalog.jsonb_typeof(container) = 'object' THEN
        rebuilt := coalesce((
            SELECT pg_catalog.jsonb_object_agg(e.key, m.value) FILTER (WHERE m.value IS NOT NULL)
            FROM pg_catalog.jsonb_each(container) AS e
            CROSS JOIN LATERAL (SELECT CASE WHEN e.key = ANY (ignored) THEN e.value
                                            ELSE veil.jsonb_mask_at(e.value, steps, wildcard + 1, mask, ignored, keep, seed) END AS value
                                OFFSET 0) AS m), '{}'::jsonb);
    ELSE
        RETURN node;
    END IF;
    IF pg_catalog.cardinality(prefix) = 0 THEN
        RETURN rebuilt;
    END IF;
    RETURN pg_catalog.jsonb_set(node, prefix, rebuilt);
END
$$;
COMMENT ON FUNCTION veil.jsonb_mask_at(jsonb, text[], integer, jsonb, text[], jsonb, bigint) IS
    'Engine of veil.jsonb_mask: one path applied (NULL means removed).';

-- The spec's keys masked wherever they occur below node. finder is a
-- jsonpath that matches when a subtree holds one of the keys: only those
-- subtrees are descended into.
CREATE FUNCTION veil.jsonb_mask_keys(node jsonb, keys jsonb, finder jsonpath, ignored text[], keep jsonb, depth integer, seed bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    changed jsonb;
    removed text[];
BEGIN
    IF depth >= veil.jsonb_mask_max_depth() THEN
        RETURN 'null'::jsonb;  -- too deep to inspect: masked, not left unread
    END IF;
    IF pg_catalog.jsonb_typeof(node) = 'object' THEN
        -- One query: the members that hold a key (or are one) masked,
        -- merged back in one || (and one - for those removed).
        SELECT pg_catalog.jsonb_object_agg(c.key, c.value) FILTER (WHERE c.value IS NOT NULL),
               pg_catalog.array_agg(c.key) FILTER (WHERE c.value IS NULL)
        INTO changed, removed
        FROM (SELECT e.key, CASE WHEN keys ? e.key
                                 THEN veil.jsonb_mask_value(e.value, keys OPERATOR(pg_catalog.->) e.key, ignored, keep, depth + 1, seed)
                                 ELSE veil.jsonb_mask_keys(e.value, keys, finder, ignored, keep, depth + 1, seed) END AS value
              FROM pg_catalog.jsonb_each(node) AS e
              WHERE NOT e.key = ANY (coalesce(ignored, '{}'))
                AND (keys ? e.key OR (pg_catalog.jsonb_typeof(e.value) IN ('object', 'array')
                                      AND e.value OPERATOR(pg_catalog.@?) finder))
              OFFSET 0) AS c;
        IF removed IS NOT NULL THEN
            node := node OPERATOR(pg_catalog.-) removed;
        END IF;
        IF changed IS NOT NULL THEN
            node := node OPERATOR(pg_catalog.||) changed;
        END IF;
    ELSIF pg_catalog.jsonb_typeof(node) = 'array' THEN
        node := (SELECT pg_catalog.jsonb_agg(c.value ORDER BY c.n)
                 FROM (SELECT e.n, CASE WHEN pg_catalog.jsonb_typeof(e.value) IN ('object', 'array')
                                             AND e.value OPERATOR(pg_catalog.@?) finder
                                        THEN veil.jsonb_mask_keys(e.value, keys, finder, ignored, keep, depth + 1, seed)
                                        ELSE e.value END AS value
                       FROM pg_catalog.jsonb_array_elements(node) WITH ORDINALITY AS e(value, n)
                       OFFSET 0) AS c);
    END IF;
    RETURN node;
END
$$;
COMMENT ON FUNCTION veil.jsonb_mask_keys(jsonb, jsonb, jsonpath, text[], jsonb, integer, bigint) IS
    'Engine of veil.jsonb_mask: keys masked at any depth.';

-- The whole spec applied to a document: keys at any depth first, then the
-- paths (in the order jsonb keeps the members of "paths": shorter first).
CREATE FUNCTION veil.jsonb_mask_apply(document jsonb, spec jsonb, seed bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ignored text[];
    keep jsonb := spec OPERATOR(pg_catalog.->) 'keep_values';
    keys jsonb := spec OPERATOR(pg_catalog.->) 'keys';
    paths jsonb;
    finder jsonpath;
BEGIN
    IF document IS NULL THEN
        RETURN NULL;
    END IF;
    -- Decompressed once here rather than at each use below (#> with an
    -- empty path returns its argument as it was detoasted).
    document := document OPERATOR(pg_catalog.#>) '{}';
    IF spec ? 'ignore_keys' THEN
        ignored := ARRAY(SELECT pg_catalog.jsonb_array_elements_text(spec OPERATOR(pg_catalog.->) 'ignore_keys'));
    END IF;
    IF keys IS NOT NULL AND keys <> '{}'::jsonb THEN
        -- Does a subtree hold one of the keys? Lax mode: a list's objects
        -- are looked into as well. The keys are quoted as JSON strings,
        -- which jsonpath reads alike.
        finder := CASE WHEN (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(keys)) = 1
            THEN ('lax $.**.' || (SELECT pg_catalog.to_jsonb(k)::text FROM pg_catalog.jsonb_object_keys(keys) AS k))::jsonpath
            ELSE ('lax $.** ? (' || (SELECT pg_catalog.string_agg('exists(@.' || pg_catalog.to_jsonb(k)::text || ')', ' || ')
                                     FROM pg_catalog.jsonb_object_keys(keys) AS k) || ')')::jsonpath END;
        IF document OPERATOR(pg_catalog.@?) finder THEN
            document := veil.jsonb_mask_keys(document, keys, finder, ignored, keep, 0, seed);
        END IF;
    END IF;
    paths := pg_catalog.jsonb_path_query_array(spec, 'lax $.paths.keyvalue()');
    FOR n IN 0 .. pg_catalog.jsonb_array_length(paths) - 1 LOOP
        document := coalesce(veil.jsonb_mask_at(document,
                                                veil.jsonb_mask_path(paths OPERATOR(pg_catalog.->) n OPERATOR(pg_catalog.->>) 'key'),
                                                1, paths OPERATOR(pg_catalog.->) n OPERATOR(pg_catalog.->) 'value', ignored, keep, seed),
                             'null'::jsonb);
    END LOOP;
    RETURN document;
END
$$;
COMMENT ON FUNCTION veil.jsonb_mask_apply(jsonb, jsonb, bigint) IS
    'Engine of veil.jsonb_mask: a whole spec applied to a document.';

-- The random seed of one call of the public functions: the engine below is
-- a STABLE function of it (so its statements run without a snapshot each,
-- measured 5x faster), the public functions are VOLATILE because of it.
CREATE FUNCTION veil.jsonb_mask_seed()
RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT (pg_catalog.random() * 9007199254740991)::bigint $$;
COMMENT ON FUNCTION veil.jsonb_mask_seed() IS 'Engine of veil.jsonb_mask: a random seed for the fake picks of one call.';

CREATE FUNCTION veil.jsonb_mask(document jsonb, spec jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Token and pseudo masks are for the keyed variant; a rule's spec was
    -- checked when it was set, so this only ever refuses a direct call.
    IF spec::text ~ '"(token|pseudo)"' AND pg_catalog.cardinality(veil.jsonb_mask_spec_errors(spec, false)) > 0 THEN
        RAISE EXCEPTION 'pgveil: invalid JSON mask spec: %',
            pg_catalog.array_to_string(veil.jsonb_mask_spec_errors(spec, false), '; ');
    END IF;
    RETURN veil.jsonb_mask_apply(document, spec, veil.jsonb_mask_seed());
END
$$;
COMMENT ON FUNCTION veil.jsonb_mask(jsonb, jsonb) IS
    'document with the values that spec names masked (paths, keys at any depth; fake, partial, null, remove, constants). See docs/json_masking.md.';

CREATE FUNCTION veil.jsonb_mask_keyed(document jsonb, spec jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil.jsonb_mask_apply(document, spec, veil.jsonb_mask_seed()); END $$;
COMMENT ON FUNCTION veil.jsonb_mask_keyed(jsonb, jsonb) IS
    'veil.jsonb_mask with the keyed masks too (token, pseudo): key holders only.';
REVOKE ALL ON FUNCTION veil.jsonb_mask_keyed(jsonb, jsonb) FROM PUBLIC;

-- json in, json out (as jsonb prints it: keys sorted, duplicates merged,
-- insignificant whitespace gone). jsonb refuses some json texts: \u0000
-- escapes become \ufffd first, so the rule still masks; any other escape
-- jsonb cannot hold (a lone surrogate such as \ud800, or a non-ASCII escape
-- in a database not encoded in UTF8) makes the whole document JSON null,
-- masked entirely, rather than an error that would quote it and fail the
-- write. (Parallel restricted: the exception blocks are subtransactions,
-- which a parallel worker may not start.)
CREATE FUNCTION veil.json_mask_document(document json)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN document::jsonb;
EXCEPTION WHEN untranslatable_character OR invalid_text_representation OR invalid_parameter_value
              OR character_not_in_repertoire THEN
    BEGIN
        RETURN pg_catalog.replace(document::text, '\u0000', '\ufffd')::jsonb;
    EXCEPTION WHEN untranslatable_character OR invalid_text_representation OR invalid_parameter_value
                  OR character_not_in_repertoire THEN
        RETURN 'null'::jsonb;
    END;
END
$$;
COMMENT ON FUNCTION veil.json_mask_document(json) IS
    'Engine of veil.json_mask: a json document as jsonb (\u0000 escapes replaced).';

CREATE FUNCTION veil.json_mask(document json, spec jsonb)
RETURNS json
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN veil.jsonb_mask(veil.json_mask_document(document), spec)::json;
END
$$;
COMMENT ON FUNCTION veil.json_mask(json, jsonb) IS 'veil.jsonb_mask for json documents.';

CREATE FUNCTION veil.json_mask_keyed(document json, spec jsonb)
RETURNS json
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil.jsonb_mask_apply(veil.json_mask_document(document), spec, veil.jsonb_mask_seed())::json; END $$;
COMMENT ON FUNCTION veil.json_mask_keyed(json, jsonb) IS
    'veil.jsonb_mask_keyed for json documents: key holders only.';
REVOKE ALL ON FUNCTION veil.json_mask_keyed(json, jsonb) FROM PUBLIC;

-- The _keyed variants use the key: they are keyed functions like token and
-- pseudo_* (refused in views policies without the opt-in; granted to masked
-- roles with it, by veil_private.set_mask_access). This revision defines
-- veil_private.is_keyed_function once, for all its families, in
-- 30_unique_safe.sql; it lists jsonb_mask_keyed and json_mask_keyed.

-- Called by veil_private.set_column_rule with the rule's expression as
-- PostgreSQL deparsed it: every call of veil.jsonb_mask, json_mask,
-- jsonb_mask_keyed or json_mask_keyed in it must have a constant spec that
-- is valid (token and pseudo masks only in the _keyed variants). Raises one
-- error naming every problem; changes nothing.
CREATE FUNCTION veil_private.check_json_mask_specs(relid oid, attnum smallint, expression text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    i integer := 1;
    ch text;
    quote text;
    call_start integer;
    depth integer;
    fn text;
    args text[];
    literal text[];
    spec jsonb;
    errors text[];
    column_name text;
BEGIN
    IF expression IS NULL OR expression !~ 'veil\.jsonb?_mask' THEN
        RETURN;
    END IF;
    SELECT pg_catalog.quote_ident(a.attname) INTO column_name
    FROM pg_catalog.pg_attribute a WHERE a.attrelid = relid AND a.attnum = check_json_mask_specs.attnum;
    n := pg_catalog.length(expression);
    -- Walk the text outside quotes; at each call of one of the four, take
    -- the call up to its closing parenthesis and check its second argument.
    WHILE i <= n LOOP
        ch := pg_catalog.substr(expression, i, 1);
        IF quote IS NOT NULL THEN
            IF ch = quote THEN quote := NULL; END IF;  -- a doubled quote reopens at once
        ELSIF ch IN ('''', '"') THEN
            quote := ch;
        ELSE
            fn := (pg_catalog.regexp_match(pg_catalog.substr(expression, i, 24), '^veil\.(jsonb?_mask(?:_keyed)?)\('))[1];
            IF fn IS NOT NULL AND (i = 1 OR pg_catalog.substr(expression, i - 1, 1) !~ '[A-Za-z0-9_."]') THEN
                call_start := i;
                depth := 0;
                quote := NULL;
                FOR j IN i .. n LOOP
                    ch := pg_catalog.substr(expression, j, 1);
                    IF quote IS NOT NULL THEN
                        IF ch = quote THEN quote := NULL; END IF;
                    ELSIF ch IN ('''', '"') THEN
                        quote := ch;
                    ELSIF ch = '(' THEN
                        depth := depth + 1;
                    ELSIF ch = ')' THEN
                        depth := depth - 1;
                        IF depth = 0 THEN
                            args := veil_private.split_arguments(pg_catalog.substr(expression, call_start, j - call_start + 1));
                            EXIT;
                        END IF;
                    END IF;
                END LOOP;
                quote := NULL;
                -- The spec as PostgreSQL deparses a constant: '...'::jsonb
                -- (E'...' when standard_conforming_strings is off).
                literal := pg_catalog.regexp_match(coalesce(args[2], ''),
                    '^(?:spec\s*=>\s*)?(E?)''((?:[^'']|'''')*)''::jsonb$');
                IF pg_catalog.cardinality(args) <> 2 OR literal IS NULL THEN
                    RAISE EXCEPTION 'pgveil: rule rejected for %.%: the spec of veil.% must be a constant (''{...}''::jsonb)',
                        relid::regclass, column_name, fn
                        USING HINT = 'Write the spec in the rule itself, e.g. veil.jsonb_mask(payload, ''{"keys": {"email": "partial_email"}}''::jsonb).';
                END IF;
                literal[2] := pg_catalog.replace(literal[2], '''''', '''');
                IF literal[1] = 'E' THEN
                    literal[2] := pg_catalog.regexp_replace(literal[2], '\\(.)', '\1', 'g');
                END IF;
                spec := literal[2]::jsonb;
                errors := veil.jsonb_mask_spec_errors(spec, fn LIKE '%keyed');
                IF pg_catalog.cardinality(errors) > 0 THEN
                    RAISE EXCEPTION 'pgveil: rule rejected for %.%: invalid JSON mask spec: %',
                        relid::regclass, column_name, pg_catalog.array_to_string(errors, '; ')
                        USING HINT = 'See docs/json_masking.md; SELECT veil.jsonb_mask_spec_errors(spec) lists the problems.';
                END IF;
                i := i + pg_catalog.length(fn) + 5;
                CONTINUE;
            END IF;
        END IF;
        i := i + 1;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION veil_private.check_json_mask_specs(oid, smallint, text) FROM PUBLIC;
