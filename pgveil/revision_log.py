"""Revisions that can be undone from the catalog, not from hand-written drop lists.

From revision 0005 on, a toolkit revision runs its SQL through :func:`upgrade`
(:func:`record` for other work): the toolkit's objects are read from the
catalog before and after, and what the revision created, replaced or removed
is written to ``veil_private.revision_log``, with what it replaced or removed
as it was (definition, owner, privileges, comment). :func:`downgrade`
(:func:`undo`) reads that log back: it puts back what the revision replaced
or removed, then drops what it created, newest first, so the database ends
as the revision found it.

Restorable: functions and procedures, views (with their options), triggers
and event triggers (with their enabled state). Created only: schemas,
tables, sequences, indexes, types and aggregates; a revision that alters or
drops one of those must undo that part by hand, and :func:`upgrade` refuses
until it does. Privileges are put back by grantee as the downgrading role
grants them (a grant made by another grantor comes back as the owner's).

Generated objects are not a revision's: the mask schemas and their views, the
sanitized copies, and the stream trigger functions (``veil_private.stream_<oid>``),
which a revision that changes the compiler rebuilds with
:func:`regenerate_delivered_objects`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgveil.installer import migration_connection, run_directory

TOOLKIT_SCHEMAS = ("veil", "veil_private")
LOG_TABLE = "veil_private.revision_log"

# One row per object: oid (creation order), kind, identity (its name as SQL
# writes it), definition (the statements that recreate it, or for kinds that
# cannot be recreated, a description of its shape that shows any change),
# owner, privileges (the default ones written out, so that "default" and "the
# same, explicit" compare equal, in a fixed order) and comment. Members of extensions (pgcrypto
# in veil_ext) are not the toolkit's.
SNAPSHOT = """
WITH toolkit AS (
    SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = ANY(%(schemas)s)
), extension_member AS (
    SELECT objid FROM pg_catalog.pg_depend WHERE deptype = 'e'
)
SELECT n.oid, 'schema', pg_catalog.quote_ident(n.nspname), NULL,
       n.nspowner::pg_catalog.regrole::text,
       (SELECT pg_catalog.array_agg(i ORDER BY i::text) FROM pg_catalog.unnest(coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) AS i)::text,
       pg_catalog.obj_description(n.oid, 'pg_namespace')
FROM pg_catalog.pg_namespace n
WHERE pg_catalog.obj_description(n.oid, 'pg_namespace') = 'pgveil'
UNION ALL
SELECT p.oid, CASE p.prokind WHEN 'a' THEN 'aggregate' ELSE 'routine' END,
       p.oid::pg_catalog.regprocedure::text,
       CASE p.prokind WHEN 'a' THEN NULL ELSE pg_catalog.pg_get_functiondef(p.oid) END,
       p.proowner::pg_catalog.regrole::text,
       (SELECT pg_catalog.array_agg(i ORDER BY i::text) FROM pg_catalog.unnest(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) AS i)::text,
       pg_catalog.obj_description(p.oid, 'pg_proc')
FROM pg_catalog.pg_proc p
WHERE p.pronamespace IN (SELECT oid FROM toolkit) AND p.oid NOT IN (SELECT objid FROM extension_member)
  AND NOT (p.pronamespace = 'veil_private'::pg_catalog.regnamespace AND p.proname ~ '^stream_[0-9]+$')
UNION ALL
SELECT c.oid, CASE c.relkind WHEN 'v' THEN 'view' WHEN 'S' THEN 'sequence' WHEN 'i' THEN 'index' ELSE 'table' END,
       c.oid::pg_catalog.regclass::text,
       CASE c.relkind
           WHEN 'v' THEN pg_catalog.format('CREATE OR REPLACE VIEW %%s%%s AS %%s', c.oid::pg_catalog.regclass,
                             ' WITH (' || pg_catalog.array_to_string(c.reloptions, ', ') || ')',
                             pg_catalog.pg_get_viewdef(c.oid))
           WHEN 'i' THEN pg_catalog.pg_get_indexdef(c.oid)
           -- A table's shape, to notice that a revision altered it.
           ELSE (SELECT pg_catalog.string_agg(pg_catalog.format('%%I %%s %%s %%s %%s', a.attname,
                            pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attcollation,
                            pg_catalog.pg_get_expr(d.adbin, d.adrelid)), ', ' ORDER BY a.attnum)
                 FROM pg_catalog.pg_attribute a
                 LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
                || coalesce((SELECT '; ' || pg_catalog.string_agg(pg_catalog.format('%%I %%s', k.conname,
                                 pg_catalog.pg_get_constraintdef(k.oid)), ', ' ORDER BY k.conname)
                             FROM pg_catalog.pg_constraint k WHERE k.conrelid = c.oid), '')
       END,
       c.relowner::pg_catalog.regrole::text,
       (SELECT pg_catalog.array_agg(i ORDER BY i::text) FROM pg_catalog.unnest(coalesce(c.relacl, pg_catalog.acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) AS i)::text,
       pg_catalog.obj_description(c.oid, 'pg_class')
FROM pg_catalog.pg_class c
WHERE c.relnamespace IN (SELECT oid FROM toolkit) AND c.relkind IN ('r', 'p', 'v', 'S', 'i')
  AND c.oid NOT IN (SELECT objid FROM extension_member)
  -- An index of a constraint is part of its table's shape.
  AND c.oid NOT IN (SELECT k.conindid FROM pg_catalog.pg_constraint k)
UNION ALL
SELECT t.oid, 'type', t.oid::pg_catalog.regtype::text,
       pg_catalog.concat_ws(' ', t.typtype, t.typbasetype::pg_catalog.regtype,
           (SELECT pg_catalog.string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
            FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid),
           (SELECT pg_catalog.string_agg(pg_catalog.pg_get_constraintdef(k.oid), ',' ORDER BY k.conname)
            FROM pg_catalog.pg_constraint k WHERE k.contypid = t.oid),
           (SELECT pg_catalog.string_agg(a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod), ','
                                         ORDER BY a.attnum)
            FROM pg_catalog.pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0)),
       t.typowner::pg_catalog.regrole::text,
       (SELECT pg_catalog.array_agg(i ORDER BY i::text) FROM pg_catalog.unnest(coalesce(t.typacl, pg_catalog.acldefault('T', t.typowner))) AS i)::text,
       pg_catalog.obj_description(t.oid, 'pg_type')
FROM pg_catalog.pg_type t
WHERE t.typnamespace IN (SELECT oid FROM toolkit) AND t.typtype IN ('c', 'd', 'e', 'r', 'm')
  AND t.typrelid NOT IN (SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relkind <> 'c')
  AND t.oid NOT IN (SELECT objid FROM extension_member)
UNION ALL
SELECT g.oid, 'trigger', pg_catalog.format('%%I ON %%s', g.tgname, g.tgrelid::pg_catalog.regclass),
       pg_catalog.pg_get_triggerdef(g.oid)
       || CASE g.tgenabled WHEN 'O' THEN ''
              ELSE pg_catalog.format('; ALTER TABLE %%s %%s TRIGGER %%I', g.tgrelid::pg_catalog.regclass,
                       CASE g.tgenabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA' ELSE 'ENABLE ALWAYS' END,
                       g.tgname) END,
       NULL, NULL, NULL
FROM pg_catalog.pg_trigger g JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid
WHERE c.relnamespace IN (SELECT oid FROM toolkit) AND NOT g.tgisinternal
UNION ALL
SELECT e.oid, 'event trigger', pg_catalog.quote_ident(e.evtname),
       pg_catalog.format('CREATE EVENT TRIGGER %%I ON %%I%%s EXECUTE FUNCTION %%s()', e.evtname, e.evtevent,
           (SELECT ' WHEN TAG IN (' || pg_catalog.string_agg(pg_catalog.quote_literal(tag), ', ') || ')'
            FROM pg_catalog.unnest(e.evttags) AS tag),
           e.evtfoid::pg_catalog.regproc)
       || CASE e.evtenabled WHEN 'O' THEN ''
              ELSE pg_catalog.format('; ALTER EVENT TRIGGER %%I %%s', e.evtname,
                       CASE e.evtenabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA' ELSE 'ENABLE ALWAYS' END)
          END,
       e.evtowner::pg_catalog.regrole::text, NULL, pg_catalog.obj_description(e.oid, 'pg_event_trigger')
FROM pg_catalog.pg_event_trigger e JOIN pg_catalog.pg_proc p ON p.oid = e.evtfoid
WHERE p.pronamespace IN (SELECT oid FROM toolkit)
"""

# How a created object is dropped. Indexes and sequences may be gone with
# their table already.
DROP_STATEMENT = {
    "schema": "DROP SCHEMA {}",
    "routine": "DROP ROUTINE {}",
    "aggregate": "DROP AGGREGATE {}",
    "view": "DROP VIEW {}",
    "table": "DROP TABLE {}",
    "sequence": "DROP SEQUENCE IF EXISTS {}",
    "index": "DROP INDEX IF EXISTS {}",
    "type": "DROP TYPE {}",
    "trigger": "DROP TRIGGER {}",
    "event trigger": "DROP EVENT TRIGGER {}",
}
# What can be put back, in this order (views and triggers call routines),
# with the words that name it in ALTER … OWNER, GRANT and COMMENT.
RESTORE_ORDER = ("routine", "view", "trigger", "event trigger")
OBJECT_WORD = {"routine": "ROUTINE", "view": "VIEW", "trigger": "TRIGGER", "event trigger": "EVENT TRIGGER"}


@dataclass(frozen=True)
class CatalogObject:
    oid: int = field(compare=False)  # creation order; not part of what the object is
    kind: str
    identity: str
    definition: str | None
    owner: str | None
    acl: str | None
    comment: str | None


@dataclass(frozen=True)
class Change:
    change: str  # created, replaced, removed
    object: CatalogObject  # for replaced and removed: as it was before the revision


@contextmanager
def catalog_search_path(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Only pg_catalog on the search path, so that the catalog prints every other
    name schema-qualified; local to the transaction, and put back after."""
    row = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()
    conn.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog', true)")
    try:
        yield
    finally:
        conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (row[0] if row else "",))


def snapshot(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], CatalogObject]:
    """The toolkit's objects, keyed by (kind, identity)."""
    with catalog_search_path(conn):
        rows = conn.execute(SNAPSHOT, {"schemas": list(TOOLKIT_SCHEMAS)}).fetchall()
    return {(r[1], r[2]): CatalogObject(*r) for r in rows}


def changes(before: dict[tuple[str, str], CatalogObject], after: dict[tuple[str, str], CatalogObject]) -> list[Change]:
    """What a revision did, with what it replaced or removed as it was; refuses what cannot be undone."""
    found = [Change("created", after[key]) for key in after.keys() - before.keys()]
    for key, old in before.items():
        new = after.get(key)
        if new is None:
            found.append(Change("removed", old))
        elif new != old:
            found.append(Change("replaced", old))
    unrestorable = [c for c in found if c.change != "created" and c.object.kind not in RESTORE_ORDER]
    if unrestorable:
        names = ", ".join(f"{c.object.kind} {c.object.identity} ({c.change})" for c in unrestorable)
        raise RuntimeError(
            f"pgveil: this revision changed objects that the revision log cannot restore: {names}; "
            "write that part of its downgrade by hand"
        )
    return sorted(found, key=lambda c: (c.change, c.object.oid))


COLUMNS = "change, object_oid, kind, identity, definition, owner, acl, comment"


def record(conn: psycopg.Connection[Any], revision: str, run: Callable[[], None]) -> None:
    """Run a revision's work and log what it changed in the toolkit's schemas."""
    before = snapshot(conn)
    run()
    found = changes(before, snapshot(conn))
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {LOG_TABLE} (revision, position, {COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    revision,
                    position,
                    c.change,
                    c.object.oid,
                    c.object.kind,
                    c.object.identity,
                    c.object.definition,
                    c.object.owner,
                    c.object.acl,
                    c.object.comment,
                )
                for position, c in enumerate(found)
            ],
        )


def logged_changes(conn: psycopg.Connection[Any], revision: str) -> list[Change]:
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM {LOG_TABLE} WHERE revision = %s ORDER BY position", (revision,)
    ).fetchall()
    return [Change(r[0], CatalogObject(*r[1:])) for r in rows]


def undo(conn: psycopg.Connection[Any], revision: str) -> None:
    """Undo what :func:`record` logged for a revision."""
    logged = logged_changes(conn, revision)
    # The log table itself may be among what the revision created: forget first.
    conn.execute(f"DELETE FROM {LOG_TABLE} WHERE revision = %s", (revision,))
    with catalog_search_path(conn):
        # Put back first: a replaced trigger or view may call what the
        # revision created, and must let go of it before it is dropped.
        for kind in RESTORE_ORDER:
            for c in logged:
                if c.change != "created" and c.object.kind == kind:
                    restore(conn, c.object)
        # Newest first: a table's default or a trigger goes before the function it calls.
        for obj in sorted((c.object for c in logged if c.change == "created"), key=lambda o: o.oid, reverse=True):
            conn.execute(sql.SQL(DROP_STATEMENT[obj.kind]).format(sql.SQL(obj.identity)))


def upgrade(revision: str) -> None:
    """From an Alembic revision: run ``sql/<revision>/`` and log what it changed."""
    record(migration_connection(), revision, lambda: run_directory(revision))


def downgrade(revision: str) -> None:
    """From an Alembic revision: undo what its upgrade logged."""
    undo(migration_connection(), revision)


def restore(conn: psycopg.Connection[Any], obj: CatalogObject) -> None:
    """Put back a routine, view, trigger or event trigger as it was: definition, owner, privileges, comment."""
    assert obj.definition is not None
    name = sql.SQL(obj.identity)
    word = sql.SQL(OBJECT_WORD[obj.kind])
    if obj.kind in ("trigger", "event trigger"):
        # No CREATE OR REPLACE for these.
        conn.execute(sql.SQL("DROP {} IF EXISTS {}").format(word, name))
        conn.execute(obj.definition.encode())
    else:
        try:
            with conn.transaction():
                conn.execute(obj.definition.encode())
        except (
            psycopg.errors.InvalidFunctionDefinition,
            psycopg.errors.InvalidTableDefinition,
            psycopg.errors.FeatureNotSupported,
            psycopg.errors.DatatypeMismatch,
        ):
            # A changed result type, parameter name or view column: only a new object will do.
            conn.execute(sql.SQL("DROP {} {}").format(word, name))
            conn.execute(obj.definition.encode())
    current = conn.execute(
        "SELECT o.owner, o.acl FROM (" + SNAPSHOT + ") AS o(oid, kind, identity, definition, owner, acl, comment)"
        " WHERE o.kind = %(kind)s AND o.identity = %(identity)s",
        {"schemas": list(TOOLKIT_SCHEMAS), "kind": obj.kind, "identity": obj.identity},
    ).fetchone()
    assert current is not None, f"{obj.kind} {obj.identity} was not restored"
    if obj.owner is not None and current[0] != obj.owner:
        conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(word, name, sql.SQL(obj.owner)))
    if obj.acl is not None and current[1] != obj.acl:
        _grant_exactly(conn, obj, current[1])
    if obj.kind != "trigger" or obj.comment is not None:
        conn.execute(sql.SQL("COMMENT ON {} {} IS {}").format(word, name, sql.Literal(obj.comment)))


def _grant_exactly(conn: psycopg.Connection[Any], obj: CatalogObject, current_acl: str) -> None:
    """Revoke every privilege on obj, then grant the recorded ones again, grantee by grantee."""
    target = sql.SQL("ROUTINE" if obj.kind == "routine" else "TABLE")
    name = sql.SQL(obj.identity)
    grants = (
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(r.rolname) END AS grantee,"
        " a.privilege_type, a.is_grantable FROM pg_catalog.aclexplode(%s::pg_catalog.aclitem[]) a"
        " LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee"
    )
    for (grantee,) in conn.execute(f"SELECT DISTINCT g.grantee FROM ({grants}) AS g", (current_acl,)).fetchall():
        conn.execute(sql.SQL("REVOKE ALL ON {} {} FROM {} CASCADE").format(target, name, sql.SQL(grantee)))
    for grantee, privilege, grantable in conn.execute(grants, (obj.acl,)).fetchall():
        conn.execute(
            sql.SQL("GRANT {} ON {} {} TO {}{}").format(
                sql.SQL(privilege), target, name, sql.SQL(grantee), sql.SQL(" WITH GRANT OPTION" if grantable else "")
            )
        )


def regenerate_delivered_objects() -> None:
    """From an Alembic revision: rebuild every stream's trigger function and every
    mask view with the compiler as it now is (after a revision changed it, either way)."""
    conn = migration_connection()
    conn.execute("SELECT veil_private.build_stream(s.source) FROM veil_private.streams s ORDER BY s.source")
    conn.execute(
        "SELECT veil_private.refresh_views_policy(p.name) FROM veil_private.policies p"
        " WHERE p.delivery = 'views' ORDER BY p.name"
    )
