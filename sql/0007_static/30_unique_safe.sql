-- Unique-safe values: generators that are injective by construction, and the
-- check that refuses, when a rule of a static policy is set, an expression
-- that could repeat a value in a column under a PRIMARY KEY, UNIQUE
-- constraint or unique index (see docs/unique_safe.md).
--
-- The generators are keyed permutations: a Feistel network over a domain of
-- 2^w values (w the bit length of the domain size minus one), with
-- cycle-walking down to the domain itself. Each round XORs one half with a
-- pseudo-random function of the other half, which is invertible whatever the
-- function is, so the whole network is a bijection of [0, 2^w) and, walked,
-- of [0, n): distinct inputs give distinct outputs by construction, with no
-- retry and no lookup of what was already given out. The round function is
-- SHA-256 of a 32-byte round key derived from the toolkit's key (HMAC-SHA256
-- of a label naming the generator, the purpose and the domain), followed by
-- the round number and the half: a secret-prefix MAC over fixed-length input.
-- Whoever can run a generator can compute it for any value: the generators
-- are key holders' functions like token (SECURITY DEFINER, not executable by
-- PUBLIC, keyed in the sense of veil_private.is_keyed_function).

-- Keyed functions compute under the toolkit's key: oracles for whoever may
-- execute them (refused in views policies unless opted in, never granted to
-- masked roles). Defined here only, for every family of this revision.
CREATE OR REPLACE FUNCTION veil_private.is_keyed_function(fn oid)
RETURNS boolean
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.pronamespace = 'veil'::regnamespace
       AND p.proname ~ '^(token|pseudo_[a-z_]+|unique_[a-z_]+|jsonb_mask_keyed|json_mask_keyed)$'
    FROM pg_catalog.pg_proc p WHERE p.oid = fn
$$;

-- The round key of one permutation: HMAC-SHA256 under the current key of a
-- label that names the generator, the purpose (length-prefixed, so labels
-- cannot run together) and the domain.
-- (plpgsql rather than sql here and below: a SQL function that cannot be
-- inlined starts an executor per call, several times the cost.)
CREATE FUNCTION veil_private.unique_round_key(key bytea, generator text, purpose text, domain text)
RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN @pgcrypto@.hmac(pg_catalog.convert_to(
        'pgveil unique:' || generator || ':' || pg_catalog.length(purpose) || ':' || purpose || ':' || domain, 'UTF8'),
        key, 'sha256');
END
$$;

-- A keyed bijection of [0, n) (n <= 2^63 - 1): eight Feistel rounds on the
-- two halves of a w-bit block (the left one the wider by at most one bit),
-- walked until the result falls in [0, n). The walk ends: x is in [0, n)
-- and on the same cycle of the permutation of [0, 2^w), and 2^w < 2n keeps
-- the expected number of passes below two. Rounds are written out (no loop):
-- a per-call plpgsql loop cost a third more.
CREATE FUNCTION veil_private.unique_permute(x bigint, n bigint, round_key bytea)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w integer;
    wb integer;
    ma bigint;
    mb bigint;
    a bigint;
    b bigint;
    y bigint := x;
BEGIN
    IF x < 0 OR x >= n THEN
        RAISE EXCEPTION 'pgveil: unique_permute: input outside its domain';
    END IF;
    IF n <= 1 THEN
        RETURN x;
    END IF;
    w := pg_catalog.length(pg_catalog.ltrim((n - 1)::bit(64)::text, '0'));
    IF w < 2 THEN
        w := 2;
    END IF;
    wb := w / 2;
    ma := (1::bigint << (w - wb)) - 1;
    mb := (1::bigint << wb) - 1;
    LOOP
        a := y >> wb;
        b := y & mb;
        -- Round i hashes the round key, then i in the top byte of the half.
        a := a # (('x' || pg_catalog.encode(pg_catalog.substr(pg_catalog.sha256(round_key || pg_catalog.int8send(b)), 1, 8), 'hex'))::bit(64)::bigint & ma);
        b := b # (('x' || pg_catalog.encode(pg_catalog.substr(pg_catalog.sha256(round_key || pg_catalog.int8send(a | 72057594037927936)), 1, 8), 'hex'))::bit(64)::bigint & mb);
        a := a # (('x' || pg_catalog.encode(pg_catalog.substr(pg_catalog.sha256(round_key || pg_catalog.int8send(b | 144115188075855872)), 1, 8), 'hex'))::bit(64)::bigint & ma);
        b := b # (('x' || pg_catalog.encode(pg_catalog.substr(pg_catalog.sha256(round_key || pg_catalog.int8send(a | 216172782113783808)), 1, 8), 'hex'))::bit(64)::bigint & mb);
        a := a # (('x' || pg_catalog.encode(pg_catalog.substr(pg_catalog.sha256(round_key || pg_catalog.int8send(b | 288230376151711744)), 1, 8), 'hex'))::bit(64)::bigint & ma);
        b := b # (('x' || pg_catalog.encode(pg_catalog.substr(pg_catalog.sha256(round_key || pg_catalog.int8send(a | 360287970189639680)), 1, 8), 'hex'))::bit(64)::bigint & mb);
        a := a # (('x' || pg_catalog.encode(pg_catalog.substr(pg_catalog.sha256(round_key || pg_catalog.int8send(b | 432345564227567616)), 1, 8), 'hex'))::bit(64)::bigint & ma);
        b := b # (('x' || pg_catalog.encode(pg_catalog.substr(pg_catalog.sha256(round_key || pg_catalog.int8send(a | 504403158265495552)), 1, 8), 'hex'))::bit(64)::bigint & mb);
        y := (a << wb) | b;
        EXIT WHEN y < n;
    END LOOP;
    RETURN y;
END
$$;

-- The integer permutation every unique_int shares, for a type whose largest
-- value is cap. Without digits: a bijection of the type's values that keeps
-- the sign and the number of decimal digits (0..9, or -1..-9, is the one-digit class; the
-- longest class stops at cap; the type's smallest value, which has no
-- positive counterpart, maps to itself). With digits: a bijection of
-- [0, 10^digits) (a number of at most that many digits stays one), and a
-- seed outside it is mapped as without digits, which keeps it outside (more
-- digits, or negative): injective over every value of the type either way.
CREATE FUNCTION veil_private.unique_int(seed bigint, digits integer, purpose text, cap bigint, key bytea)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- p10[i] = 10^(i - 1)
    p10 CONSTANT bigint[] := '{1,10,100,1000,10000,100000,1000000,10000000,100000000,1000000000,10000000000,100000000000,1000000000000,10000000000000,100000000000000,1000000000000000,10000000000000000,100000000000000000,1000000000000000000}';
    m bigint;
    k integer;
    lo bigint;
    hi bigint;
    y bigint;
BEGIN
    IF seed IS NULL THEN
        RETURN NULL;
    END IF;
    IF digits IS NOT NULL THEN
        IF digits < 1 OR digits > pg_catalog.length(cap::text) - 1 THEN
            RAISE EXCEPTION 'pgveil: unique_int: digits must be between 1 and % for this type', pg_catalog.length(cap::text) - 1;
        END IF;
        IF seed >= 0 AND seed < p10[digits + 1] THEN
            RETURN veil_private.unique_permute(seed, p10[digits + 1],
                veil_private.unique_round_key(key, 'int', coalesce(purpose, ''), 'below ' || digits));
        END IF;
    END IF;
    IF seed = -cap - 1 THEN
        RETURN seed;
    END IF;
    m := pg_catalog.abs(seed);
    k := pg_catalog.length(m::text);
    -- The one-digit class is 0..9, or -1..-9 for a negative seed (0 has one sign).
    lo := CASE WHEN k > 1 THEN p10[k] WHEN seed < 0 THEN 1 ELSE 0 END;
    hi := CASE WHEN k >= pg_catalog.length(cap::text) THEN cap ELSE p10[k + 1] - 1 END;
    y := lo + veil_private.unique_permute(m - lo, hi - lo + 1,
        veil_private.unique_round_key(key, 'int', coalesce(purpose, ''), 'digits ' || k || ' from ' || lo || ' up to ' || cap));
    RETURN CASE WHEN seed < 0 THEN -y ELSE y END;
END
$$;

CREATE FUNCTION veil.unique_int(seed bigint, digits integer DEFAULT NULL, purpose text DEFAULT '')
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN veil_private.unique_int(seed, digits, purpose, 9223372036854775807,
                                   (SELECT k.key FROM veil_private.keys k WHERE k.is_current));
END
$$;
COMMENT ON FUNCTION veil.unique_int(bigint, integer, text) IS
    'A keyed bijection of bigint keeping sign and digit count (or of [0, 10^digits)): unique-safe (key holders only).';

CREATE FUNCTION veil.unique_int(seed integer, digits integer DEFAULT NULL, purpose text DEFAULT '')
RETURNS integer
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN veil_private.unique_int(seed, digits, purpose, 2147483647,
                                   (SELECT k.key FROM veil_private.keys k WHERE k.is_current));
END
$$;
COMMENT ON FUNCTION veil.unique_int(integer, integer, text) IS
    'A keyed bijection of integer keeping sign and digit count (or of [0, 10^digits)): unique-safe (key holders only).';

CREATE FUNCTION veil.unique_int(seed smallint, digits integer DEFAULT NULL, purpose text DEFAULT '')
RETURNS smallint
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN veil_private.unique_int(seed, digits, purpose, 32767,
                                   (SELECT k.key FROM veil_private.keys k WHERE k.is_current));
END
$$;
COMMENT ON FUNCTION veil.unique_int(smallint, integer, text) IS
    'A keyed bijection of smallint keeping sign and digit count (or of [0, 10^digits)): unique-safe (key holders only).';

-- The character classes of a unique_text format: 9 or # a digit, A or ? an
-- upper-case letter, a a lower-case letter, X an upper-case letter or digit,
-- x a lower-case letter or digit; \ makes the next character literal; every
-- other character is literal. Returns the alphabet of each position (NULL
-- for a literal, whose character is in literal) and the number of values.
CREATE FUNCTION veil_private.unique_format(format text, OUT alphabets text[], OUT literals text[], OUT capacity numeric)
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i integer := 1;
    c text;
    alphabet text;
BEGIN
    alphabets := '{}';
    literals := '{}';
    capacity := 1;
    WHILE i <= pg_catalog.length(format) LOOP
        c := pg_catalog.substr(format, i, 1);
        alphabet := CASE c
            WHEN '9' THEN '0123456789' WHEN '#' THEN '0123456789'
            WHEN 'A' THEN 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' WHEN '?' THEN 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'
            WHEN 'a' THEN 'abcdefghijklmnopqrstuvwxyz'
            WHEN 'X' THEN '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ'
            WHEN 'x' THEN '0123456789abcdefghijklmnopqrstuvwxyz' END;
        IF c = '\' AND i < pg_catalog.length(format) THEN
            i := i + 1;
            c := pg_catalog.substr(format, i, 1);
            alphabet := NULL;
        END IF;
        alphabets := alphabets || alphabet;
        literals := literals || CASE WHEN alphabet IS NULL THEN c END;
        IF alphabet IS NOT NULL THEN
            capacity := capacity * pg_catalog.length(alphabet);
        END IF;
        i := i + 1;
    END LOOP;
    IF capacity > 9223372036854775807 THEN
        RAISE EXCEPTION 'pgveil: unique_text: a format holds at most 2^63 - 1 values (this one holds about %)',
            pg_catalog.to_char(capacity, '9.9EEEE');
    END IF;
    IF capacity < 2 THEN
        RAISE EXCEPTION 'pgveil: unique_text: the format has no character class (9 # A ? a X x)';
    END IF;
END
$$;

-- A text of the given format (see unique_format): seeds 0 .. capacity - 1
-- map one to one onto the format's values. A seed outside that range has no
-- value left for it: an error, never a repeated value.
CREATE FUNCTION veil.unique_text(seed bigint, format text, purpose text DEFAULT '')
RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f record;
    y bigint;
    out text := '';
    i integer;
    size integer;
BEGIN
    f := veil_private.unique_format(format);
    IF seed < 0 OR seed >= f.capacity THEN
        RAISE EXCEPTION 'pgveil: unique_text: seed outside 0 .. % (the number of values of its format, minus one)', f.capacity - 1
            USING HINT = 'Use a longer format, or seeds from 0 up (e.g. a row number).';
    END IF;
    y := veil_private.unique_permute(seed, f.capacity::bigint, veil_private.unique_round_key(
        (SELECT k.key FROM veil_private.keys k WHERE k.is_current), 'text', purpose, format));
    -- Mixed radix, last position least significant.
    FOR i IN REVERSE pg_catalog.cardinality(f.alphabets) .. 1 LOOP
        IF f.alphabets[i] IS NULL THEN
            out := f.literals[i] || out;
        ELSE
            size := pg_catalog.length(f.alphabets[i]);
            out := pg_catalog.substr(f.alphabets[i], 1 + (y % size)::integer, 1) || out;
            y := y / size;
        END IF;
    END LOOP;
    RETURN out;
END
$$;
COMMENT ON FUNCTION veil.unique_text(bigint, text, text) IS
    'The seed-th value of format (9/# digit, A/? upper, a lower, X/x alphanumeric) under a keyed permutation: unique-safe (key holders only).';

-- Digits of a phone number under a keyed permutation; every other character,
-- and the count and positions of the digits, kept. Values of different
-- layouts differ in their layout, which is kept, so outputs of distinct
-- inputs always differ; the layout and the kept leading digits are part of
-- the round key, so one number written two ways is not recognisable. Up to
-- 18 permuted digits form one block; up to 36 form two blocks in a two-round
-- Feistel network of the blocks themselves (the tail permuted under a key
-- that depends on the head, then the head under one that depends on the new
-- tail), still a bijection.
CREATE FUNCTION veil.unique_phone(phone text, keep_digits integer DEFAULT 0, purpose text DEFAULT '')
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key bytea;
    digits text;
    separators text[];
    nd integer;
    kept integer;
    m integer;
    head text;
    tail text;
    tweak text;
    out text;
    i integer;
BEGIN
    IF phone IS NULL THEN
        RETURN NULL;
    END IF;
    digits := pg_catalog.regexp_replace(phone, '[^0-9]', '', 'g');
    nd := pg_catalog.length(digits);
    kept := LEAST(GREATEST(coalesce(keep_digits, 0), 0), nd);
    m := nd - kept;
    IF m = 0 THEN
        RETURN phone;
    END IF;
    IF m > 36 THEN
        RAISE EXCEPTION 'pgveil: unique_phone: more than 36 digits to permute';
    END IF;
    SELECT k.key INTO key FROM veil_private.keys k WHERE k.is_current;
    tweak := pg_catalog.regexp_replace(phone, '[0-9]', '9', 'g') || ':' || pg_catalog.left(digits, kept);
    head := pg_catalog.substr(digits, kept + 1, GREATEST(m - 18, 0));
    tail := pg_catalog.right(digits, LEAST(m, 18));
    tail := pg_catalog.lpad(veil_private.unique_permute(tail::bigint, (10::numeric ^ pg_catalog.length(tail))::bigint,
                veil_private.unique_round_key(key, 'phone', coalesce(purpose, ''), tweak || ':' || head))::text,
            pg_catalog.length(tail), '0');
    IF head <> '' THEN
        head := pg_catalog.lpad(veil_private.unique_permute(head::bigint, (10::numeric ^ pg_catalog.length(head))::bigint,
                    veil_private.unique_round_key(key, 'phone head', coalesce(purpose, ''), tweak || ':' || tail))::text,
                pg_catalog.length(head), '0');
    END IF;
    digits := pg_catalog.left(digits, kept) || head || tail;
    -- Put the digits back between the separators, in order.
    separators := pg_catalog.regexp_split_to_array(phone, '[0-9]');
    out := separators[1];
    FOR i IN 1 .. nd LOOP
        out := out || pg_catalog.substr(digits, i, 1) || separators[i + 1];
    END LOOP;
    RETURN out;
END
$$;
COMMENT ON FUNCTION veil.unique_phone(text, integer, text) IS
    'The phone number with its digits (after keep_digits) under a keyed permutation, layout kept: unique-safe (key holders only).';

-- unique_email and unique_name: dictionary names, picked by a keyed MAC of
-- the seed, decorate a part that alone makes the value unique. For a bigint
-- seed that part is its unique_int (sign and digit count kept), a bijection.
-- A text seed has no short injective encoding: its part is the full
-- HMAC-SHA256 (43 characters of base64 with - and _ for + and /, as unique as
-- a token). The keyed work is in veil_private functions that take the key,
-- so a generated statement can read the key once (as tokens do); the veil
-- functions read the current key per call.

-- Names for a seed: one query, two index lookups in the dictionary.
CREATE FUNCTION veil_private.unique_names(seed text, key bytea, OUT first_name text, OUT last_name text)
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    mac bytea := @pgcrypto@.hmac(pg_catalog.convert_to('pgveil unique:names:' || seed, 'UTF8'), key, 'sha256');
    fi bigint := ('x' || pg_catalog.encode(pg_catalog.substr(mac, 1, 8), 'hex'))::bit(64)::bigint & 9223372036854775807;
    li bigint := ('x' || pg_catalog.encode(pg_catalog.substr(mac, 9, 8), 'hex'))::bit(64)::bigint & 9223372036854775807;
BEGIN
    SELECT f.value, l.value INTO first_name, last_name
    FROM veil.dictionaries fs, veil.dictionaries ls, veil.dictionary f, veil.dictionary l
    WHERE fs.name = 'first_name' AND ls.name = 'last_name'
      AND f.name = 'first_name' AND f.id = 1 + (fi % fs.size)::integer
      AND l.name = 'last_name' AND l.id = 1 + (li % ls.size)::integer;
END
$$;

CREATE FUNCTION veil_private.unique_email(seed bigint, domain text, purpose text, key bytea)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n record;
BEGIN
    IF seed IS NULL THEN
        RETURN NULL;
    END IF;
    n := veil_private.unique_names(seed::text, key);
    -- Lower-case ASCII letters of each name; the number after the last '.'
    -- of the local part is the unique part.
    RETURN coalesce(NULLIF(pg_catalog.left(pg_catalog.regexp_replace(pg_catalog.lower(n.first_name), '[^a-z]+', '', 'g'), 12), ''), 'user')
        || '.' || coalesce(NULLIF(pg_catalog.left(pg_catalog.regexp_replace(pg_catalog.lower(n.last_name), '[^a-z]+', '', 'g'), 12), ''), 'user')
        || '.' || veil_private.unique_int(seed, NULL, 'email:' || coalesce(purpose, ''), 9223372036854775807, key)
        || '@' || coalesce(domain, 'example.com');
END
$$;

CREATE FUNCTION veil_private.unique_email(seed text, domain text, purpose text, key bytea)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF seed IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN coalesce(NULLIF(pg_catalog.left(pg_catalog.regexp_replace(pg_catalog.lower(
                (veil_private.unique_names(seed, key)).first_name), '[^a-z]+', '', 'g'), 12), ''), 'user')
        || '.' || pg_catalog.translate(pg_catalog.split_part(pg_catalog.encode(@pgcrypto@.hmac(pg_catalog.convert_to(
                'pgveil unique:email:' || pg_catalog.length(coalesce(purpose, '')) || ':' || coalesce(purpose, '') || seed, 'UTF8'),
                key, 'sha256'), 'base64'), '=', 1), '+/', '-_')
        || '@' || coalesce(domain, 'example.com');
END
$$;

CREATE FUNCTION veil_private.unique_name(seed bigint, purpose text, key bytea)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n record;
BEGIN
    IF seed IS NULL THEN
        RETURN NULL;
    END IF;
    n := veil_private.unique_names(seed::text, key);
    RETURN n.first_name || ' ' || n.last_name || ' '
        || veil_private.unique_int(seed, NULL, 'name:' || coalesce(purpose, ''), 9223372036854775807, key);
END
$$;

CREATE FUNCTION veil_private.unique_name(seed text, purpose text, key bytea)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n record;
BEGIN
    IF seed IS NULL THEN
        RETURN NULL;
    END IF;
    n := veil_private.unique_names(seed, key);
    RETURN n.first_name || ' ' || n.last_name || ' '
        || pg_catalog.translate(pg_catalog.split_part(pg_catalog.encode(@pgcrypto@.hmac(pg_catalog.convert_to(
                'pgveil unique:name:' || pg_catalog.length(coalesce(purpose, '')) || ':' || coalesce(purpose, '') || seed, 'UTF8'),
                key, 'sha256'), 'base64'), '=', 1), '+/', '-_');
END
$$;

REVOKE ALL ON FUNCTION veil_private.unique_round_key(bytea, text, text, text),
    veil_private.unique_permute(bigint, bigint, bytea),
    veil_private.unique_int(bigint, integer, text, bigint, bytea),
    veil_private.unique_format(text), veil_private.unique_names(text, bytea),
    veil_private.unique_email(bigint, text, text, bytea), veil_private.unique_email(text, text, text, bytea),
    veil_private.unique_name(bigint, text, bytea), veil_private.unique_name(text, text, bytea) FROM PUBLIC;

-- first.last.<unique_int of the seed>@domain.
CREATE FUNCTION veil.unique_email(seed bigint, domain text DEFAULT 'example.com', purpose text DEFAULT '')
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN veil_private.unique_email(seed, domain, purpose, (SELECT k.key FROM veil_private.keys k WHERE k.is_current));
END
$$;
COMMENT ON FUNCTION veil.unique_email(bigint, text, text) IS
    'first.last.<keyed bijection of seed>@domain: unique-safe (key holders only).';

-- first.<HMAC of the seed>@domain, for a text seed (e.g. the address itself).
CREATE FUNCTION veil.unique_email(seed text, domain text DEFAULT 'example.com', purpose text DEFAULT '')
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN veil_private.unique_email(seed, domain, purpose, (SELECT k.key FROM veil_private.keys k WHERE k.is_current));
END
$$;
COMMENT ON FUNCTION veil.unique_email(text, text, text) IS
    'first.<keyed HMAC of seed>@domain: unique-safe (key holders only).';

-- 'First Last <unique_int of the seed>' (a text seed: its HMAC instead).
CREATE FUNCTION veil.unique_name(seed bigint, purpose text DEFAULT '')
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN veil_private.unique_name(seed, purpose, (SELECT k.key FROM veil_private.keys k WHERE k.is_current));
END
$$;
COMMENT ON FUNCTION veil.unique_name(bigint, text) IS
    'First Last <keyed bijection of seed>: unique-safe (key holders only).';

CREATE FUNCTION veil.unique_name(seed text, purpose text DEFAULT '')
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN veil_private.unique_name(seed, purpose, (SELECT k.key FROM veil_private.keys k WHERE k.is_current));
END
$$;
COMMENT ON FUNCTION veil.unique_name(text, text) IS
    'First Last <keyed HMAC of seed>: unique-safe (key holders only).';

REVOKE ALL ON FUNCTION veil.unique_int(bigint, integer, text), veil.unique_int(integer, integer, text),
    veil.unique_int(smallint, integer, text), veil.unique_text(bigint, text, text),
    veil.unique_phone(text, integer, text), veil.unique_email(bigint, text, text),
    veil.unique_email(text, text, text), veil.unique_name(bigint, text), veil.unique_name(text, text) FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- The check.
--
-- Rules read the original row, so what a rule does to one unique index is
-- decided by the rules of that index's own columns. Each column's rule is
-- classified:
--   identity    NOT MASKED (or no rule, kept): the output determines the
--               column's original value
--   determines  veil.token or a veil.unique_* generator whose seed is one
--               column (s) of the row, the other arguments constants: the
--               output determines s's original value
--   null        MASKED WITH VALUE NULL (or no rule, policy uncovered = null)
--   other       anything else: may repeat a value
-- A unique index U keeps holding when (a) it treats NULLs as distinct and one
-- of its columns becomes NULL on every row, or (b) the columns whose original
-- values U's outputs determine include every column of a key K of the table
-- (a PRIMARY KEY or plain unique index: no expression, no predicate, valid):
-- two rows with equal outputs then had equal values of K, so they are one
-- row. When U treats NULLs as distinct, a row with a NULL in K has a NULL
-- output (the generators are strict) and conflicts with no row; when U
-- treats NULLs as not distinct, K must too, or have only NOT NULL columns.
-- For a single-column U on c this is: c's rule is NOT MASKED, NULL, or
-- injective in c or in a column that is unique by itself. For a composite U,
-- a rule that repeats values on one column is safe exactly when the other
-- columns keep a key. Unique indexes over expressions are not analysed: a
-- rule on a column one reads must be NOT MASKED (an expression may turn NULL
-- or distinct values into equal ones).
-- ---------------------------------------------------------------------------

-- What the output of one column's rule determines (see above).
CREATE FUNCTION veil_private.unique_rule_effect(relid oid, attnum smallint, kind text, expression text,
    OUT effect text, OUT seed smallint)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    call text[];
    arg text[];
    seed_type oid;
BEGIN
    effect := 'other';
    IF kind = 'not_masked' THEN
        effect := 'identity';
        seed := attnum;
        RETURN;
    END IF;
    IF kind = 'value' THEN
        IF expression ~* '^\(*NULL(::[a-z0-9_ ."]+(\([0-9, ]*\))?)?\)*$' THEN
            effect := 'null';
        END IF;
        RETURN;
    END IF;
    IF kind IS DISTINCT FROM 'function' THEN
        RETURN;
    END IF;
    call := pg_catalog.regexp_match(expression,
        '^veil\.(token|unique_int|unique_text|unique_phone|unique_email|unique_name)\((.*)\)$');
    IF call IS NULL THEN
        RETURN;
    END IF;
    -- The seed: a column, or a column cast to text, varchar or an integer type.
    arg := pg_catalog.regexp_match(call[2],
        '^(?:\("veil@col@([0-9]+)"\)::(text|character varying|bigint|integer|smallint)|"veil@col@([0-9]+)"())(.*)$');
    IF arg IS NULL THEN
        RETURN;
    END IF;
    -- Every other argument a constant: string literals (with a cast), numbers, NULL.
    IF arg[5] !~ '^(, (''([^'']|'''')*''(::[a-z ]+)?|NULL(::[a-z ]+)?|\(?-?[0-9]+(\.[0-9]+)?\)?(::[a-z ]+)?))*$'
       OR arg[5] ~ 'veil@col@' THEN
        RETURN;
    END IF;
    seed := coalesce(arg[1], arg[3])::smallint;
    SELECT a.atttypid INTO seed_type FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = relid AND a.attnum = seed AND NOT a.attisdropped;
    IF seed_type IS NULL THEN
        seed := NULL;
        RETURN;
    END IF;
    -- An integer cast of a non-integer column rounds: not injective.
    IF arg[2] IN ('bigint', 'integer', 'smallint')
       AND seed_type NOT IN ('pg_catalog.int2'::regtype, 'pg_catalog.int4'::regtype, 'pg_catalog.int8'::regtype) THEN
        seed := NULL;
        RETURN;
    END IF;
    effect := 'determines';
END
$$;

-- The longest text a unique-safe rule can produce, when it can be bounded
-- (NULL: no bound known; the rule is then refused on a column of bounded
-- length, which an explicit cast would silently truncate).
CREATE FUNCTION veil_private.unique_rule_max_length(relid oid, expression text)
RETURNS integer
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn text := pg_catalog.substring(expression, '^veil\.([a-z_]+)\(');
    literal text[];
    names integer;
    seed_len integer;
BEGIN
    SELECT coalesce(max(pg_catalog.length(d.value)) FILTER (WHERE d.name = 'first_name'), 0)
         + coalesce(max(pg_catalog.length(d.value)) FILTER (WHERE d.name = 'last_name'), 0)
    INTO names FROM veil.dictionary d WHERE d.name IN ('first_name', 'last_name');
    -- The second argument when it is a string literal (format, domain).
    literal := pg_catalog.regexp_match(expression, '^veil\.[a-z_]+\([^,]*, ''((?:[^'']|'''')*)''');
    CASE fn
    WHEN 'token' THEN
        RETURN 56;                                  -- v<version>:<43>
    WHEN 'unique_int' THEN
        RETURN 20;
    WHEN 'unique_text' THEN
        RETURN pg_catalog.length(pg_catalog.replace(literal[1], '''''', ''''));
    WHEN 'unique_email' THEN
        RETURN 12 + 1 + 12 + 1 + 43 + 1 + coalesce(pg_catalog.length(pg_catalog.replace(literal[1], '''''', '''')),
                                                   CASE WHEN expression ~ '^veil\.unique_email\([^,]*\)$' THEN 11 END);
    WHEN 'unique_name' THEN
        RETURN names + 2 + 43;
    WHEN 'unique_phone' THEN
        -- As long as the seed; bounded when the seed's column is.
        SELECT CASE WHEN a.atttypmod > 4 AND a.atttypid IN ('pg_catalog.varchar'::regtype, 'pg_catalog.bpchar'::regtype)
                    THEN a.atttypmod - 4 END
        INTO seed_len FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = relid
          AND a.attnum = pg_catalog.substring(expression, '"veil@col@([0-9]+)"')::smallint;
        RETURN seed_len;
    ELSE
        RETURN NULL;
    END CASE;
END
$$;

-- The unique-safe rule to suggest for a column, by what it holds.
CREATE FUNCTION veil_private.unique_safe_suggestion(relid oid, attnum smallint)
RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN a.atttypid IN ('pg_catalog.int2'::regtype, 'pg_catalog.int4'::regtype, 'pg_catalog.int8'::regtype)
            THEN pg_catalog.format('veil.unique_int(%I)', a.attname)
        WHEN a.attname ~* 'mail' THEN pg_catalog.format('veil.unique_email(%I)', a.attname)
        WHEN a.attname ~* '(phone|mobile|tel|fax)' THEN pg_catalog.format('veil.unique_phone(%I)', a.attname)
        WHEN a.attname ~* '(name|login|user|handle)' THEN pg_catalog.format('veil.unique_name(%I)', a.attname)
        ELSE pg_catalog.format('veil.unique_text(<integer key>, <format>)', a.attname)
        END || pg_catalog.format(', veil.token(%s, %L)',
                                 CASE WHEN a.atttypid IN ('pg_catalog.text'::regtype, 'pg_catalog.varchar'::regtype)
                                      THEN pg_catalog.quote_ident(a.attname)
                                      ELSE pg_catalog.quote_ident(a.attname) || '::text' END,
                                 a.attname)
    FROM pg_catalog.pg_attribute a WHERE a.attrelid = relid AND a.attnum = unique_safe_suggestion.attnum
$$;

-- The effect of the rule a column has in the catalog (none: uncovered decides).
CREATE FUNCTION veil_private.unique_column_effect(policy text, relid oid, attnum smallint, uncovered text,
    OUT effect text, OUT seed smallint)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    SELECT cr.kind, cr.expression INTO r FROM veil_private.column_rules cr
    WHERE cr.policy = unique_column_effect.policy AND cr.relid = unique_column_effect.relid
      AND cr.attnum = unique_column_effect.attnum;
    IF NOT FOUND THEN
        effect := CASE uncovered WHEN 'null' THEN 'null' ELSE 'identity' END;
        seed := attnum;
        RETURN;
    END IF;
    SELECT e.effect, e.seed INTO effect, seed
    FROM veil_private.unique_rule_effect(relid, attnum, r.kind, r.expression) e;
END
$$;

-- The problem a rule (kind, expression as validate_expression deparses it;
-- kind NULL: the column has no rule) of a static policy would cause with the
-- unique indexes of its column, the other columns' rules being those of the
-- catalog; NULL when there is none. uncovered overrides the policy's option
-- for columns without a rule. Policies not delivered static: always NULL.
CREATE FUNCTION veil_private.unique_safe_problem(policy text, relid oid, attnum smallint, kind text, expression text,
                                                 uncovered text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p veil_private.policies;
    u record;
    col record;
    effect record;
    other record;
    determined smallint[];
    all_null boolean;
    has_expression_of_column boolean;
    safe boolean;
    max_len integer;
    column_name text;
    what text;
    reason text;
BEGIN
    SELECT * INTO p FROM veil_private.policies pp WHERE pp.name = policy;
    IF NOT FOUND OR p.delivery <> 'static' THEN
        RETURN NULL;
    END IF;
    uncovered := coalesce(uncovered, p.uncovered);
    SELECT pg_catalog.format('%s.%I', relid::regclass, a.attname) INTO column_name
    FROM pg_catalog.pg_attribute a WHERE a.attrelid = relid AND a.attnum = unique_safe_problem.attnum;

    FOR u IN
        SELECT i.indexrelid, i.indnkeyatts, i.indnullsnotdistinct,
               (i.indkey::smallint[])[0:i.indnkeyatts - 1] AS keys,
               i.indexprs IS NOT NULL AS has_expressions,
               c.conname, c.contype,
               (SELECT ic.relname FROM pg_catalog.pg_class ic WHERE ic.oid = i.indexrelid) AS index_name
        FROM pg_catalog.pg_index i
        LEFT JOIN pg_catalog.pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
                                             AND c.contype IN ('p', 'u')
        WHERE i.indrelid = relid AND i.indisunique
        ORDER BY i.indexrelid
    LOOP
        has_expression_of_column := u.has_expressions AND EXISTS (
            SELECT FROM pg_catalog.pg_depend d
            WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = u.indexrelid
              AND d.refobjid = relid AND d.refobjsubid = attnum AND d.deptype = 'a'
              AND NOT (attnum = ANY (u.keys)));
        CONTINUE WHEN NOT (attnum = ANY (u.keys) OR has_expression_of_column);
        what := CASE u.contype WHEN 'p' THEN 'primary key ' WHEN 'u' THEN 'unique constraint ' ELSE 'unique index ' END
             || pg_catalog.quote_ident(coalesce(u.conname, u.index_name));
        IF kind IS NULL THEN
            SELECT CASE uncovered WHEN 'null' THEN 'null' ELSE 'identity' END AS effect, attnum AS seed INTO effect;
        ELSE
            SELECT e.effect, e.seed INTO effect FROM veil_private.unique_rule_effect(relid, attnum, kind, expression) e;
        END IF;

        IF u.has_expressions THEN
            IF effect.effect <> 'identity' OR effect.seed <> attnum THEN
                reason := 'it has expressions over the column, through which pgveil cannot tell whether a rule keeps values distinct';
                RETURN pg_catalog.format('pgveil: the rule for %s would put %s at risk: %s', column_name, what, reason)
                    || '; drop the index before anonymizing and recreate it after, or leave the column NOT MASKED';
            END IF;
            CONTINUE;
        END IF;

        -- The columns U's outputs determine, and whether one is NULL everywhere.
        determined := '{}';
        all_null := false;
        FOR col IN SELECT k AS attnum FROM pg_catalog.unnest(u.keys) AS k LOOP
            IF col.attnum = attnum THEN
                other := effect;
            ELSE
                SELECT e.effect, e.seed INTO other FROM veil_private.unique_column_effect(policy, relid, col.attnum, uncovered) e;
            END IF;
            IF other.effect = 'null' THEN
                all_null := true;
            ELSIF other.effect IN ('identity', 'determines') THEN
                determined := determined || other.seed;
            END IF;
        END LOOP;

        IF all_null AND NOT u.indnullsnotdistinct THEN
            CONTINUE;
        END IF;
        safe := EXISTS (
            SELECT FROM pg_catalog.pg_index k
            WHERE k.indrelid = relid AND k.indisunique AND k.indisvalid
              AND k.indexprs IS NULL AND k.indpred IS NULL
              AND (k.indkey::smallint[])[0:k.indnkeyatts - 1] <@ determined
              AND (NOT u.indnullsnotdistinct OR k.indnullsnotdistinct
                   OR NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                                  WHERE a.attrelid = relid AND a.attnum = ANY ((k.indkey::smallint[])[0:k.indnkeyatts - 1])
                                    AND NOT a.attnotnull)));
        IF NOT safe THEN
            reason := CASE
                WHEN effect.effect = 'null' THEN 'it treats NULLs as not distinct, so NULL is one value'
                WHEN effect.effect = 'determines' THEN 'the rule''s seed is not a column that is unique by itself'
                WHEN kind = 'value' THEN 'a constant is one value for every row'
                ELSE pg_catalog.format('%s can give two rows the same value',
                                       coalesce(pg_catalog.substring(expression, '^([a-z_]+\.[a-z_0-9]+)\('), 'the expression'))
                END;
            IF pg_catalog.cardinality(u.keys) > 1 AND effect.effect NOT IN ('identity', 'determines') THEN
                reason := reason || ', and the other columns of the index do not hold a key of the table';
            END IF;
            RETURN pg_catalog.format('pgveil: the rule for %s can repeat values under %s (%s); use a unique-safe rule such as %s',
                column_name, what, reason, veil_private.unique_safe_suggestion(relid, attnum));
        END IF;
    END LOOP;

    -- A column of bounded length truncates (an explicit cast does): the
    -- generator's longest value must fit.
    SELECT e.effect, e.seed INTO effect FROM veil_private.unique_rule_effect(relid, attnum, kind, expression) e;
    IF effect.effect = 'determines' AND EXISTS (
        SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = relid AND i.indisunique
          AND attnum = ANY ((i.indkey::smallint[])[0:i.indnkeyatts - 1])) THEN
        SELECT CASE WHEN a.atttypmod > 4 AND a.atttypid IN ('pg_catalog.varchar'::regtype, 'pg_catalog.bpchar'::regtype)
                    THEN a.atttypmod - 4 END
        INTO max_len FROM pg_catalog.pg_attribute a WHERE a.attrelid = relid AND a.attnum = unique_safe_problem.attnum;
        IF max_len IS NOT NULL
           AND coalesce(veil_private.unique_rule_max_length(relid, expression), 2147483647) > max_len THEN
            RETURN pg_catalog.format(
                'pgveil: the rule for %s can give values longer than the column''s %s characters, which a cast would truncate into repeats; use a shorter unique-safe rule (veil.unique_text with a format of at most %s characters, veil.unique_int) or widen the column',
                column_name, max_len, max_len);
        END IF;
    END IF;
    -- A unique_text format must be valid (checked now rather than on the first row).
    IF effect.effect = 'determines' AND expression ~ '^veil\.unique_text\(' THEN
        PERFORM veil_private.unique_format(pg_catalog.replace(
            (pg_catalog.regexp_match(expression, '^veil\.[a-z_]+\([^,]*, ''((?:[^'']|'''')*)'''))[1], '''''', ''''));
    END IF;
    RETURN NULL;
END
$$;

-- The hook veil_private.set_column_rule calls after validating a rule: one
-- clear error when the rule could repeat a value under a unique index of its
-- column, in a policy delivered static. Static anonymization calls it too,
-- for every column, before it rewrites a table (constraints can be added
-- after a rule is set).
CREATE FUNCTION veil_private.check_unique_safe(policy text, relid oid, attnum smallint, kind text, expression text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem text := veil_private.unique_safe_problem(policy, relid, attnum, kind, expression);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION USING MESSAGE = problem,
            HINT = 'Unique-safe rules: NOT MASKED; MASKED WITH VALUE NULL; veil.token or a veil.unique_* generator '
                   'seeded with the column itself or with a column that is unique by itself (docs/unique_safe.md).';
    END IF;
END
$$;

-- Every problem of one table under a static policy, for a run of static
-- anonymization: each column under a unique index, with its rule (or none,
-- then uncovered decides). No rows: the table's unique indexes will hold.
CREATE FUNCTION veil_private.unique_safe_problems(policy text, relid oid, uncovered text DEFAULT NULL)
RETURNS TABLE (attnum smallint, problem text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.attnum, x.problem
    FROM pg_catalog.pg_attribute a
    LEFT JOIN veil_private.column_rules r
           ON r.policy = unique_safe_problems.policy AND r.relid = a.attrelid AND r.attnum = a.attnum
    CROSS JOIN LATERAL (SELECT veil_private.unique_safe_problem(unique_safe_problems.policy, a.attrelid, a.attnum,
                                                                r.kind, r.expression, unique_safe_problems.uncovered) AS problem) x
    WHERE a.attrelid = unique_safe_problems.relid AND a.attnum > 0 AND NOT a.attisdropped
      AND x.problem IS NOT NULL
    ORDER BY a.attnum
$$;

REVOKE ALL ON FUNCTION veil_private.unique_rule_effect(oid, smallint, text, text),
    veil_private.unique_rule_max_length(oid, text), veil_private.unique_safe_suggestion(oid, smallint),
    veil_private.unique_column_effect(text, oid, smallint, text),
    veil_private.unique_safe_problem(text, oid, smallint, text, text, text),
    veil_private.check_unique_safe(text, oid, smallint, text, text),
    veil_private.unique_safe_problems(text, oid, text) FROM PUBLIC;
