-- Subsets closed under foreign keys (pgveil dump/sync --subset): which rows
-- of the exported tables are kept, computed in the database on the export's
-- snapshot by one recursive query that every table's export query carries.
--
-- A row is named by (tableoid, ctid): the leaf it lives in and its place
-- there, which a snapshot keeps fixed and any table has (no key needed).
-- Seeds are the rows a condition or a sample picks. An edge is a foreign key
-- (as declared: on a partitioned table, between its leaves) or a virtual one
-- the DBA names. 'up' keeps the seeds and every row they reference,
-- transitively; 'down' first adds every row referencing a kept row,
-- transitively, then every row all of those reference ('down' never follows
-- a parent back down to its other children); 'both' follows edges either way
-- until nothing changes. The recursive UNION keeps each row once, so cycles
-- (self-references, several cycles among tables) end without being broken.
-- Tables linked to no seeded table keep all their rows.

-- The exported tables (leaves) holding rel's rows: rel itself, or the
-- exported leaves of a partitioned table.
CREATE FUNCTION veil_private.subset_leaves(rel oid, relations oid[])
RETURNS SETOF oid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT rel WHERE rel = ANY (relations)
    UNION
    SELECT t.relid FROM pg_catalog.pg_partition_tree(rel) AS t WHERE t.relid = ANY (relations) AND t.isleaf
$$;

-- The relation a subset or virtual key names, refused unless exported.
CREATE FUNCTION veil_private.subset_relation(name text, relations oid[], purpose text)
RETURNS oid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel oid := pg_catalog.to_regclass(name);
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'pgveil: % names %, which does not exist', purpose, pg_catalog.quote_literal(name);
    END IF;
    IF NOT EXISTS (SELECT FROM veil_private.subset_leaves(rel, relations)) THEN
        RAISE EXCEPTION 'pgveil: % names %, which is not among the tables exported', purpose, rel::regclass;
    END IF;
    RETURN rel;
END
$$;

-- The edges among the exported tables: foreign keys as declared, and the
-- virtual keys ([{"child", "child_columns", "parent", "parent_columns"}]),
-- each with its join condition of c (child) and p (parent).
CREATE FUNCTION veil_private.subset_edges(relations oid[], virtual_keys jsonb)
RETURNS TABLE (child oid, parent oid, joined text, label text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v jsonb;
    c oid;
    p oid;
    cc text[];
    pc text[];
    purpose text;
BEGIN
    RETURN QUERY
        SELECT k.conrelid, k.confrelid,
               (SELECT pg_catalog.string_agg(pg_catalog.format('p.%I OPERATOR(%I.%s) c.%I', b.attname,
                                             o.nspname, o.oprname, a.attname), ' AND ' ORDER BY x.n)
                FROM ROWS FROM (pg_catalog.unnest(k.conkey), pg_catalog.unnest(k.confkey), pg_catalog.unnest(k.conpfeqop))
                     WITH ORDINALITY AS x(conattnum, confattnum, op, n)
                JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = x.conattnum
                JOIN pg_catalog.pg_attribute b ON b.attrelid = k.confrelid AND b.attnum = x.confattnum
                JOIN pg_catalog.pg_operator op ON op.oid = x.op
                JOIN LATERAL (SELECT n.nspname, op.oprname FROM pg_catalog.pg_namespace n
                              WHERE n.oid = op.oprnamespace) AS o ON true),
               pg_catalog.format('foreign key %I of %s', k.conname, k.conrelid::regclass)
        FROM veil_private.foreign_keys_touching(relations) AS k
        WHERE EXISTS (SELECT FROM veil_private.subset_leaves(k.conrelid, relations))
          AND EXISTS (SELECT FROM veil_private.subset_leaves(k.confrelid, relations));
    FOR v IN SELECT * FROM pg_catalog.jsonb_array_elements(coalesce(virtual_keys, '[]')) LOOP
        purpose := pg_catalog.format('the virtual foreign key %s(%s) -> %s(%s)', v->>'child',
                                     (SELECT pg_catalog.string_agg(e, ', ') FROM pg_catalog.jsonb_array_elements_text(v->'child_columns') e),
                                     v->>'parent',
                                     (SELECT pg_catalog.string_agg(e, ', ') FROM pg_catalog.jsonb_array_elements_text(v->'parent_columns') e));
        c := veil_private.subset_relation(v->>'child', relations, purpose);
        p := veil_private.subset_relation(v->>'parent', relations, purpose);
        SELECT pg_catalog.array_agg(e) INTO cc FROM pg_catalog.jsonb_array_elements_text(v->'child_columns') e;
        SELECT pg_catalog.array_agg(e) INTO pc FROM pg_catalog.jsonb_array_elements_text(v->'parent_columns') e;
        IF cc IS NULL OR pc IS NULL OR pg_catalog.cardinality(cc) <> pg_catalog.cardinality(pc) THEN
            RAISE EXCEPTION 'pgveil: % does not name as many columns on each side', purpose;
        END IF;
        FOR i IN 1 .. pg_catalog.cardinality(cc) LOOP
            IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = c AND a.attname = cc[i]
                           AND a.attnum > 0 AND NOT a.attisdropped) THEN
                RAISE EXCEPTION 'pgveil: % names column %, which % does not have', purpose, pg_catalog.quote_ident(cc[i]), c::regclass;
            END IF;
            IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = p AND a.attname = pc[i]
                           AND a.attnum > 0 AND NOT a.attisdropped) THEN
                RAISE EXCEPTION 'pgveil: % names column %, which % does not have', purpose, pg_catalog.quote_ident(pc[i]), p::regclass;
            END IF;
        END LOOP;
        RETURN QUERY SELECT c, p,
            (SELECT pg_catalog.string_agg(pg_catalog.format('p.%I OPERATOR(pg_catalog.=) c.%I', pc[i], cc[i]), ' AND ')
             FROM pg_catalog.generate_subscripts(cc, 1) AS i),
            purpose;
    END LOOP;
END
$$;

-- FROM item reading a relation's own rows (a partitioned table: its leaves').
CREATE FUNCTION veil_private.subset_from(rel oid)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN c.relkind = 'p' THEN '' ELSE 'ONLY ' END || rel::regclass::text
    FROM pg_catalog.pg_class c WHERE c.oid = rel
$$;

-- For a partitioned table read under alias: the condition (after joiner)
-- keeping the rows of its exported partitions; nothing for a table read ONLY.
CREATE FUNCTION veil_private.subset_exported(alias text, rel oid, relations oid[], joiner text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN c.relkind = 'p'
                THEN joiner || pg_catalog.format('%I.tableoid = ANY (%L::oid[])', alias, relations) ELSE '' END
    FROM pg_catalog.pg_class c WHERE c.oid = rel
$$;

-- The subset of the exported tables: one row per table keeping only some of
-- its rows. Tables not returned keep all their rows. Two ways to keep them:
-- - self-contained: with_clause (defining veil_kept(rel, tid), the same for
--   every table) before the export query, and condition on src (the table's
--   alias there): the selection is evaluated by each table's query;
-- - stored: store_places (the same for every table) run once in the reading
--   session's transaction keeps each table's places in a transaction-local
--   setting, pgveil.kept_<oid>, the only state a read-only transaction can
--   keep; then stored_condition reads them. The selection is evaluated once
--   per session, and nothing is written to the database.
-- subsets: [{"table", "condition"} | {"table", "percent"}]. Refuses, before
-- anything is read, a condition that does not compile or could differ
-- between two evaluations, a table that is not exported, a percent outside
-- (0, 100], a virtual key naming a missing table or column.
CREATE FUNCTION veil.subset(tables regclass[], subsets jsonb, direction text DEFAULT 'down',
                            virtual_keys jsonb DEFAULT '[]')
RETURNS TABLE (relid oid, with_clause text, condition text, store_places text, stored_condition text)
-- VOLATILE: it runs EXPLAIN to try what it builds.
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    relations oid[];
    s jsonb;
    rel oid;
    seed text;
    seeds text[] := '{}';
    seeded oid[] := '{}';
    percent numeric;
    edge record;
    ups text[] := '{}';
    downs text[] := '{}';
    restricted oid[];
    grown oid[];
    leaf oid;
    kept text;
    purpose text;
BEGIN
    PERFORM veil.require_governor();
    IF direction IS NULL OR direction NOT IN ('up', 'down', 'both') THEN
        RAISE EXCEPTION 'pgveil: the subset direction is up, down or both (got %)', coalesce(pg_catalog.quote_literal(direction), 'NULL');
    END IF;
    SELECT coalesce(pg_catalog.array_agg(DISTINCT t::oid), '{}') INTO relations FROM pg_catalog.unnest(tables) AS t;
    FOR s IN SELECT * FROM pg_catalog.jsonb_array_elements(coalesce(subsets, '[]')) LOOP
        purpose := pg_catalog.format('the subset of %s', s->>'table');
        rel := veil_private.subset_relation(s->>'table', relations, purpose);
        IF s ? 'percent' THEN
            percent := (s->>'percent')::numeric;
            IF percent IS NULL OR percent <= 0 OR percent > 100 THEN
                RAISE EXCEPTION 'pgveil: the subset of % keeps a percentage in (0, 100] (got %)', rel::regclass, coalesce(s->>'percent', 'NULL');
            END IF;
            -- Which rows a seeded sample picks depends on their place only: the
            -- same in every evaluation on one snapshot.
            seed := pg_catalog.format('SELECT s.tableoid, s.ctid FROM %s AS s TABLESAMPLE BERNOULLI (%s) REPEATABLE (0)',
                                      veil_private.subset_from(rel), percent);
        ELSE
            IF coalesce(pg_catalog.btrim(s->>'condition'), '') = '' THEN
                RAISE EXCEPTION 'pgveil: the subset of % has no condition', rel::regclass;
            END IF;
            IF veil_private.calls_volatile(pg_catalog.lower(s->>'condition')) THEN
                RAISE EXCEPTION 'pgveil: the subset condition on % calls a volatile function: it would pick other rows each time it is evaluated', rel::regclass
                    USING HINT = 'Use --subset-percent for a sample.';
            END IF;
            seed := pg_catalog.format('SELECT s.tableoid, s.ctid FROM %s AS s WHERE (%s)',
                                      veil_private.subset_from(rel), s->>'condition');
        END IF;
        seed := seed || veil_private.subset_exported('s', rel, relations, CASE WHEN s ? 'percent' THEN ' WHERE ' ELSE ' AND ' END);
        BEGIN
            EXECUTE 'EXPLAIN ' || seed;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'pgveil: the subset condition on % is not valid: %', rel::regclass, SQLERRM
                USING HINT = 'A condition is a boolean SQL expression on the table''s columns, its functions schema-qualified.';
        END;
        seeds := seeds || seed;
        seeded := seeded || rel;
    END LOOP;
    IF pg_catalog.cardinality(seeds) = 0 THEN
        RETURN;
    END IF;

    -- Each edge followed up (from a child's row to the rows it references)
    -- and down (from a parent's row to the rows referencing it), one branch
    -- per leaf the row may live in.
    restricted := ARRAY(SELECT DISTINCT l FROM pg_catalog.unnest(seeded) AS r, veil_private.subset_leaves(r, relations) AS l);
    FOR edge IN SELECT * FROM veil_private.subset_edges(relations, virtual_keys) LOOP
        FOR leaf IN SELECT * FROM veil_private.subset_leaves(edge.child, relations) LOOP
            ups := ups || (pg_catalog.format(
                'SELECT p.tableoid, p.ctid FROM ONLY %s AS c JOIN %s AS p ON %s WHERE k.rel = %s::oid AND c.ctid = k.tid',
                leaf::regclass, veil_private.subset_from(edge.parent), edge.joined, leaf)
                || veil_private.subset_exported('p', edge.parent, relations, ' AND '));
        END LOOP;
        FOR leaf IN SELECT * FROM veil_private.subset_leaves(edge.parent, relations) LOOP
            downs := downs || (pg_catalog.format(
                'SELECT c.tableoid, c.ctid FROM ONLY %s AS p JOIN %s AS c ON %s WHERE k.rel = %s::oid AND p.ctid = k.tid',
                leaf::regclass, veil_private.subset_from(edge.child), edge.joined, leaf)
                || veil_private.subset_exported('c', edge.child, relations, ' AND '));
        END LOOP;
        BEGIN
            EXECUTE pg_catalog.format('EXPLAIN SELECT FROM %s AS c JOIN %s AS p ON %s',
                                      veil_private.subset_from(edge.child), veil_private.subset_from(edge.parent), edge.joined);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'pgveil: % cannot be followed: %', edge.label, SQLERRM;
        END;
    END LOOP;

    -- The tables linked to a seeded one, in either direction, transitively.
    LOOP
        grown := ARRAY(
            SELECT DISTINCT l FROM veil_private.subset_edges(relations, virtual_keys) AS e,
                   LATERAL (SELECT * FROM veil_private.subset_leaves(e.child, relations)
                            UNION SELECT * FROM veil_private.subset_leaves(e.parent, relations)) AS l(l)
            WHERE EXISTS (SELECT FROM veil_private.subset_leaves(e.child, relations) x WHERE x = ANY (restricted))
               OR EXISTS (SELECT FROM veil_private.subset_leaves(e.parent, relations) x WHERE x = ANY (restricted))
            UNION SELECT * FROM pg_catalog.unnest(restricted));
        EXIT WHEN pg_catalog.cardinality(grown) = pg_catalog.cardinality(restricted);
        restricted := grown;
    END LOOP;

    kept := 'WITH RECURSIVE veil_seed(rel, tid) AS (' || pg_catalog.array_to_string(seeds, ' UNION ') || ')';
    IF direction = 'both' THEN
        kept := kept || ', ' || veil_private.subset_fixpoint('veil_kept', 'veil_seed', ups || downs);
    ELSIF direction = 'down' THEN
        kept := kept || ', ' || veil_private.subset_fixpoint('veil_down', 'veil_seed', downs)
                     || ', ' || veil_private.subset_fixpoint('veil_kept', 'veil_down', ups);
    ELSE
        kept := kept || ', ' || veil_private.subset_fixpoint('veil_kept', 'veil_seed', ups);
    END IF;
    -- An array of row places is read by a TID scan: the cost of the rows
    -- kept, not of the table.
    RETURN QUERY
        SELECT r, kept,
               pg_catalog.format('src.ctid = ANY (ARRAY(SELECT k.tid FROM veil_kept AS k WHERE k.rel = %s::oid))', r),
               kept || ' SELECT pg_catalog.count(pg_catalog.set_config(''pgveil.kept_'' || g.rel, g.places::text, true))'
                    || ' FROM (SELECT k.rel, pg_catalog.array_agg(k.tid) AS places FROM veil_kept AS k GROUP BY k.rel) AS g',
               -- A table none of whose rows is kept has no setting: NULL, no row.
               pg_catalog.format('src.ctid = ANY (pg_catalog.current_setting(%L, true)::tid[])', 'pgveil.kept_' || r)
        FROM pg_catalog.unnest(restricted) AS r
        ORDER BY r;
END
$$;
COMMENT ON FUNCTION veil.subset(regclass[], jsonb, text, jsonb) IS
    'Which rows of the exported tables a subset keeps, closed under foreign keys (pgveil dump/sync --subset).';

-- name(rel, tid): the rows of start, then the rows the branches reach from a
-- row k of name, until none is new.
CREATE FUNCTION veil_private.subset_fixpoint(name text, start text, branches text[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.format('%I(rel, tid) AS (SELECT x.rel, x.tid FROM %I AS x', name, start)
        || CASE WHEN pg_catalog.cardinality(branches) = 0 THEN ')'
                ELSE pg_catalog.format(' UNION SELECT e.rel, e.tid FROM %I AS k CROSS JOIN LATERAL (%s) AS e(rel, tid))',
                                       name, pg_catalog.array_to_string(branches, ' UNION ALL ')) END
$$;

REVOKE ALL ON FUNCTION veil_private.subset_leaves(oid, oid[]), veil_private.subset_relation(text, oid[], text),
    veil_private.subset_edges(oid[], jsonb), veil_private.subset_from(oid),
    veil_private.subset_exported(text, oid, oid[], text),
    veil_private.subset_fixpoint(text, text, text[]), veil.subset(regclass[], jsonb, text, jsonb) FROM PUBLIC;
