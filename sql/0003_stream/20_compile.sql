-- Rules compiled into the SQL of generated set-based statements.
--
-- Inside a generated statement a rule is written out, not called per row
-- where that matters: veil.token(v, p) becomes the HMAC expression itself,
-- with the current key and its token prefix read once per statement (joined
-- as veil_key). Every other rule is its expression as PostgreSQL deparsed it.

-- The top-level arguments of "f(a, b, ...)" as deparsed by PostgreSQL.
CREATE FUNCTION veil_private.split_arguments(call text)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    args text[] := '{}';
    depth integer := 0;
    quote text;
    start integer;
    ch text;
BEGIN
    start := pg_catalog.strpos(call, '(') + 1;
    FOR i IN start .. pg_catalog.length(call) - 1 LOOP
        ch := pg_catalog.substr(call, i, 1);
        IF quote IS NOT NULL THEN
            IF ch = quote THEN quote := NULL; END IF;  -- a doubled quote reopens at once
        ELSIF ch IN ('''', '"') THEN
            quote := ch;
        ELSIF ch = '(' THEN
            depth := depth + 1;
        ELSIF ch = ')' THEN
            depth := depth - 1;
        ELSIF ch = ',' AND depth = 0 THEN
            args := args || pg_catalog.btrim(pg_catalog.substr(call, start, i - start));
            start := i + 1;
        END IF;
    END LOOP;
    RETURN args || pg_catalog.btrim(pg_catalog.substr(call, start, pg_catalog.length(call) - start));
END
$$;

-- A rule that is one veil.token(...) call: the only function rule a copy's
-- key may have, and the one compiled inline.
CREATE FUNCTION veil_private.is_token_rule(expression text)
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT expression ~ '^veil\.token\(.*\)$' $$;

-- The SQL of one copy column, reading the source row as row_alias.
CREATE FUNCTION veil_private.compiled_column(policy text, relid oid, attnum smallint, row_alias text)
RETURNS text
LANGUAGE plpgsql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r veil_private.column_rules;
    rendered text;
    args text[];
    message text;
    mac text;
BEGIN
    SELECT * INTO r FROM veil_private.column_rules c
    WHERE c.policy = compiled_column.policy AND c.relid = compiled_column.relid
      AND c.attnum = compiled_column.attnum;
    IF r.kind = 'not_masked' THEN
        RETURN pg_catalog.quote_ident(row_alias) || '.' || pg_catalog.quote_ident(
            (SELECT a.attname FROM pg_catalog.pg_attribute a WHERE a.attrelid = relid AND a.attnum = compiled_column.attnum));
    END IF;
    rendered := veil_private.render_expression(r.expression, relid, row_alias);
    IF veil_private.is_token_rule(r.expression) THEN
        args := veil_private.split_arguments(rendered);
        IF pg_catalog.cardinality(args) = 1 THEN
            args := args || '''''::text'::text;
        END IF;
        -- Must equal veil_private.hmac_token(); tests hold them together.
        -- In a UTF8 database the text is its UTF-8 bytes already, and hmac()
        -- takes it and the hex key as they are; elsewhere both are converted.
        -- (Compiled for this database's encoding: the one form correct in
        -- every encoding converts each token, about 5% of a bulk insert.)
        -- Tokens collate "C", their byte order: the sort before the copy's
        -- insert and its index then compare them by memcmp and abbreviated
        -- keys rather than strcoll.
        message := pg_catalog.format('pg_catalog.length(%2$s) || '':'' || %2$s || %1$s', args[1], args[2]);
        IF pg_catalog.getdatabaseencoding() = 'UTF8' THEN
            mac := pg_catalog.format('@pgcrypto@.hmac(%s, veil_key.hmac_key, ''sha256'')', message);
        ELSE
            mac := pg_catalog.format('@pgcrypto@.hmac(pg_catalog.convert_to(%s, ''UTF8''),'
                                     ' pg_catalog.convert_to(veil_key.hmac_key, ''UTF8''), ''sha256'')', message);
        END IF;
        RETURN pg_catalog.format(
            '((veil_key.prefix || pg_catalog.split_part(pg_catalog.encode(%s, ''base64''), ''='', 1))'
            ' COLLATE pg_catalog."C")', mac);
    END IF;
    RETURN rendered;
END
$$;
REVOKE ALL ON FUNCTION veil_private.split_arguments(text), veil_private.is_token_rule(text),
    veil_private.compiled_column(text, oid, smallint, text) FROM PUBLIC;
