"""The key store and keyed tokens: deterministic, versioned, and secret."""

from __future__ import annotations

import re

import psycopg
import pytest

TOKEN = re.compile(r"^v(\d+):[A-Za-z0-9+/]{43}$")
KEYED_FUNCTIONS = [
    "veil.token(text, text)",
    "veil.pseudo_first_name(anyelement)",
    "veil.pseudo_last_name(anyelement)",
    "veil.pseudo_email(anyelement)",
    "veil.pseudo_city(anyelement)",
    "veil.pseudo_company(anyelement)",
    "veil.rotate_key()",
    "veil.retire_key(integer)",
    "veil.unrotate_key()",
]


def test_token_is_deterministic_per_value_and_purpose(toolkit):
    a1 = toolkit.scalar("SELECT veil.token('alice@example.com', 'customer')")
    a2 = toolkit.scalar("SELECT veil.token('alice@example.com', 'customer')")
    assert a1 == a2
    assert TOKEN.match(a1)
    assert toolkit.scalar("SELECT veil.token('alice@example.com', 'payment')") != a1
    assert toolkit.scalar("SELECT veil.token('bob@example.com', 'customer')") != a1
    # purpose and value cannot run together
    assert toolkit.scalar("SELECT veil.token('bc', 'a')") != toolkit.scalar("SELECT veil.token('c', 'ab')")
    assert toolkit.scalar("SELECT veil.token(NULL)") is None


def test_token_is_hmac_sha256_under_the_current_key(toolkit):
    # The toolkit template had no pgcrypto, so pgveil created it in veil_ext.
    mac = toolkit.scalar(
        "SELECT rtrim(encode(veil_ext.hmac(convert_to('8:customer' || 'x', 'UTF8'),"
        " convert_to(encode(key, 'hex'), 'UTF8'), 'sha256'), 'base64'), '=')"
        " FROM veil_private.keys WHERE is_current"
    )
    assert toolkit.scalar("SELECT veil.token('x', 'customer')") == f"v1:{mac}"


def test_rotation_changes_tokens_and_records_the_version(toolkit):
    before = toolkit.scalar("SELECT veil.token('x')")
    assert toolkit.scalar("SELECT veil.rotate_key()") == 2
    after = toolkit.scalar("SELECT veil.token('x')")
    assert after != before
    assert toolkit.scalar("SELECT veil.token_key_version(%s)", (after,)) == 2
    assert toolkit.scalar("SELECT veil.token_key_version(%s)", (before,)) == 1
    assert toolkit.scalar("SELECT veil.token_key_version('not a token')") is None
    assert [r[0] for r in toolkit.execute("SELECT version FROM veil.key_versions ORDER BY 1")] == [1, 2]


def test_retire_key_destroys_old_versions_only(toolkit):
    toolkit.execute("SELECT veil.rotate_key()")
    with pytest.raises(psycopg.errors.RaiseException, match="current and cannot be retired"):
        toolkit.execute("SELECT veil.retire_key(2)")
    with pytest.raises(psycopg.errors.RaiseException, match="no key version 7"):
        toolkit.execute("SELECT veil.retire_key(7)")
    toolkit.execute("SELECT veil.retire_key(1)")
    assert toolkit.scalar("SELECT array_agg(version) FROM veil_private.keys") == [2]


def test_unrotate_returns_to_the_previous_key(toolkit):
    before = toolkit.scalar("SELECT veil.token('x')")
    toolkit.execute("SELECT veil.rotate_key()")
    assert toolkit.scalar("SELECT veil.unrotate_key()") == 1
    assert toolkit.scalar("SELECT veil.token('x')") == before


def test_keys_are_32_random_bytes_and_differ_between_installs(toolkit, bare):
    from pgveil import migrate

    assert toolkit.scalar("SELECT length(key) FROM veil_private.keys WHERE is_current") == 32
    migrate.upgrade(bare.url)
    assert bare.scalar("SELECT key FROM veil_private.keys") != toolkit.scalar("SELECT key FROM veil_private.keys")


@pytest.mark.parametrize("function", KEYED_FUNCTIONS)
def test_a_plain_role_cannot_execute_keyed_functions(toolkit, function):
    plain = toolkit.role("plain")
    name, args = function.split("(", 1)
    call = {
        "text, text)": "('alice', '')",
        "anyelement)": "('alice'::text)",
        "integer)": "(1)",
        ")": "()",
    }[args]
    with plain.connect() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"SELECT {name}{call}")


def test_a_plain_role_cannot_read_the_key_by_any_catalog_route(toolkit):
    plain = toolkit.role("plain")
    key_hex = toolkit.scalar("SELECT encode(key, 'hex') FROM veil_private.keys WHERE is_current")
    with plain.connect(autocommit=True) as conn:
        for attempt in (
            "SELECT * FROM veil_private.keys",
            "SELECT * FROM veil.key_versions",
            "SELECT * FROM veil_private.installation",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(attempt)
        # Not in settings, function bodies, or statistics.
        settings = conn.execute("SELECT string_agg(setting, ' ') FROM pg_settings").fetchone()[0]
        bodies = conn.execute("SELECT string_agg(prosrc, ' ') FROM pg_proc").fetchone()[0]
        stats = conn.execute("SELECT string_agg(most_common_vals::text, ' ') FROM pg_stats").fetchone()[0] or ""
        for text in (settings, bodies, stats):
            assert key_hex not in text
        custom = conn.execute(
            "SELECT count(*) FROM pg_settings WHERE name LIKE 'veil%' OR name LIKE 'pgveil%'"
        ).fetchone()[0]
        assert custom == 0


def test_the_key_never_appears_in_error_messages(toolkit):
    key_hex = toolkit.scalar("SELECT encode(key, 'hex') FROM veil_private.keys WHERE is_current")
    for bad in ("SELECT veil.retire_key(1)", "SELECT veil.token_key_version(1)"):
        try:
            toolkit.execute(bad)
        except psycopg.Error as exc:
            assert key_hex not in str(exc)
            assert key_hex not in str(exc.diag.context or "")
