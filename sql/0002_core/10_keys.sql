-- The token key store. Keys are 32 bytes from pgcrypto's CSPRNG, kept in a
-- table only the toolkit owner can read; they never appear in a setting, a
-- function body, a log line or a message. Several versions may exist while
-- tokens are re-keyed; exactly one is current.

CREATE TABLE veil_private.keys (
    version    integer PRIMARY KEY,
    key        bytea       NOT NULL CHECK (pg_catalog.length(key) = 32),
    is_current boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX keys_one_current ON veil_private.keys (is_current) WHERE is_current;
REVOKE ALL ON veil_private.keys FROM PUBLIC;

INSERT INTO veil_private.keys (version, key, is_current)
VALUES (1, @pgcrypto@.gen_random_bytes(32), true);

-- What the owner may see of the keys: versions and dates, never the bytes.
CREATE VIEW veil.key_versions AS
    SELECT version, is_current, created_at FROM veil_private.keys;
REVOKE ALL ON veil.key_versions FROM PUBLIC;

CREATE FUNCTION veil.rotate_key()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_version integer;
BEGIN
    -- Serialize rotations: two concurrent ones must not both become current.
    LOCK TABLE veil_private.keys IN SHARE ROW EXCLUSIVE MODE;
    SELECT coalesce(max(version), 0) + 1 INTO new_version FROM veil_private.keys;
    UPDATE veil_private.keys SET is_current = false WHERE is_current;
    INSERT INTO veil_private.keys (version, key, is_current)
    VALUES (new_version, @pgcrypto@.gen_random_bytes(32), true);
    RETURN new_version;
END
$$;
COMMENT ON FUNCTION veil.rotate_key() IS
    'Make a new random key current and return its version; older keys stay until retired.';

CREATE FUNCTION veil.retire_key(key_version integer)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    LOCK TABLE veil_private.keys IN SHARE ROW EXCLUSIVE MODE;
    IF NOT EXISTS (SELECT FROM veil_private.keys WHERE version = key_version) THEN
        RAISE EXCEPTION 'pgveil: there is no key version %', key_version;
    END IF;
    IF EXISTS (SELECT FROM veil_private.keys WHERE version = key_version AND is_current) THEN
        RAISE EXCEPTION 'pgveil: key version % is current and cannot be retired', key_version
            USING HINT = 'Rotate first: SELECT veil.rotate_key()';
    END IF;
    DELETE FROM veil_private.keys WHERE version = key_version;
END
$$;
COMMENT ON FUNCTION veil.retire_key(integer) IS
    'Destroy an old key version. Tokens made with it can no longer be reproduced.';

CREATE FUNCTION veil.unrotate_key()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    newest integer;
    previous integer;
BEGIN
    LOCK TABLE veil_private.keys IN SHARE ROW EXCLUSIVE MODE;
    SELECT version INTO newest FROM veil_private.keys WHERE is_current;
    SELECT max(version) INTO previous FROM veil_private.keys WHERE version < newest;
    IF previous IS NULL THEN
        RAISE EXCEPTION 'pgveil: no earlier key version remains to return to';
    END IF;
    DELETE FROM veil_private.keys WHERE version = newest;
    UPDATE veil_private.keys SET is_current = true WHERE version = previous;
    RETURN previous;
END
$$;
COMMENT ON FUNCTION veil.unrotate_key() IS
    'Undo the last rotation: destroy the current key and make the previous one current again.';

REVOKE ALL ON FUNCTION veil.rotate_key(), veil.retire_key(integer), veil.unrotate_key() FROM PUBLIC;
