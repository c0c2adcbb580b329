"""Revisions that can be undone from the catalog, not from hand-written drop lists.

From revision 0005 on, a toolkit revision runs its SQL through
:func:`upgrade`: the toolkit's objects are read from the catalog before and
after, and what the revision created, replaced or removed is written to
``veil_private.revision_log``, with the previous definition of what it
replaced or removed. :func:`downgrade` reads that log back: it drops what the
revision created and puts back what it replaced or removed, so the database
ends exactly as the revision found it.

Tracked: functions and procedures, views, triggers on the toolkit's tables
and event triggers (created, replaced or removed); tables, sequences, indexes
and types (created only: a revision that alters or drops one must say how to
undo it itself, and :func:`upgrade` refuses until it does). Generated objects
are not the revision's: the mask schemas' views, the sanitized copies, and
the stream trigger functions (``veil_private.stream_<oid>``), which the
revision regenerates with :func:`regenerate_delivered_objects`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgveil.installer import migration_connection, run_directory

TOOLKIT_SCHEMAS = ("veil", "veil_private")
LOG_TABLE = "veil_private.revision_log"

# One row per object of the toolkit's schemas: kind, identity (its name as
# SQL writes it), definition (the statement that creates it, where one
# statement can), acl and comment. Stream trigger functions are generated,
# not installed. Members of extensions (pgcrypto in veil_ext) are not ours.
SNAPSHOT = """
WITH toolkit AS (
    SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = ANY(%(schemas)s)
), not_extension AS (
    SELECT objid FROM pg_catalog.pg_depend WHERE deptype = 'e'
)
SELECT p.oid, 'routine', p.oid::pg_catalog.regprocedure::text,
       pg_catalog.pg_get_functiondef(p.oid), p.proacl::text,
       pg_catalog.obj_description(p.oid, 'pg_proc')
FROM pg_catalog.pg_proc p
WHERE p.pronamespace IN (SELECT oid FROM toolkit) AND p.prokind IN ('f', 'p')
  AND p.oid NOT IN (SELECT objid FROM not_extension)
  AND NOT (p.pronamespace = 'veil_private'::pg_catalog.regnamespace AND p.proname ~ '^stream_[0-9]+$')
UNION ALL
SELECT c.oid, CASE c.relkind WHEN 'v' THEN 'view' WHEN 'S' THEN 'sequence' WHEN 'i' THEN 'index' ELSE 'table' END,
       c.oid::pg_catalog.regclass::text,
       CASE c.relkind
           WHEN 'v' THEN pg_catalog.format('CREATE OR REPLACE VIEW %%s AS %%s', c.oid::pg_catalog.regclass,
                                           pg_catalog.pg_get_viewdef(c.oid))
           WHEN 'i' THEN pg_catalog.pg_get_indexdef(c.oid)
           -- A table's shape, to notice that a revision altered it.
           ELSE (SELECT pg_catalog.string_agg(pg_catalog.format('%%I %%s %%s', a.attname,
                            pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull), ', ' ORDER BY a.attnum)
                 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
       END,
       c.relacl::text, pg_catalog.obj_description(c.oid, 'pg_class')
FROM pg_catalog.pg_class c
WHERE c.relnamespace IN (SELECT oid FROM toolkit) AND c.relkind IN ('r', 'p', 'v', 'S', 'i')
  AND c.oid NOT IN (SELECT objid FROM not_extension)
  -- An index of a constraint is its table's.
  AND c.oid NOT IN (SELECT k.conindid FROM pg_catalog.pg_constraint k)
UNION ALL
SELECT t.oid, 'type', t.oid::pg_catalog.regtype::text, NULL, t.typacl::text, NULL
FROM pg_catalog.pg_type t
WHERE t.typnamespace IN (SELECT oid FROM toolkit) AND t.typtype IN ('c', 'd', 'e')
  AND t.typrelid NOT IN (SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relkind <> 'c')
  AND t.oid NOT IN (SELECT objid FROM not_extension)
UNION ALL
SELECT g.oid, 'trigger', pg_catalog.format('%%I ON %%s', g.tgname, g.tgrelid::pg_catalog.regclass),
       pg_catalog.pg_get_triggerdef(g.oid), NULL, NULL
FROM pg_catalog.pg_trigger g JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid
WHERE c.relnamespace IN (SELECT oid FROM toolkit) AND NOT g.tgisinternal
UNION ALL
SELECT e.oid, 'event trigger', pg_catalog.quote_ident(e.evtname),
       pg_catalog.format('CREATE EVENT TRIGGER %%I ON %%I%%s EXECUTE FUNCTION %%s()', e.evtname, e.evtevent,
           (SELECT ' WHEN TAG IN (' || pg_catalog.string_agg(pg_catalog.quote_literal(tag), ', ') || ')'
            FROM pg_catalog.unnest(e.evttags) AS tag),
           e.evtfoid::pg_catalog.regproc),
       NULL, NULL
FROM pg_catalog.pg_event_trigger e JOIN pg_catalog.pg_proc p ON p.oid = e.evtfoid
WHERE p.pronamespace IN (SELECT oid FROM toolkit)
"""

# Created objects are dropped in this order (dependents first), each kind
# newest first (by oid: a view built on another is dropped before it);
# replaced or removed ones are put back in the reverse order.
DROP_ORDER = ("event trigger", "trigger", "view", "routine", "index", "table", "sequence", "type")
DROP_STATEMENT = {
    "event trigger": "DROP EVENT TRIGGER {}",
    "trigger": "DROP TRIGGER {}",
    "view": "DROP VIEW {}",
    "routine": "DROP ROUTINE {}",
    "index": "DROP INDEX IF EXISTS {}",  # gone with its table, if the revision created both
    "table": "DROP TABLE {}",
    "sequence": "DROP SEQUENCE IF EXISTS {}",  # gone with the table that owns it
    "type": "DROP TYPE {}",
}
RESTORABLE = ("routine", "view", "trigger", "event trigger")
ACL_TARGET = {"routine": "ROUTINE", "view": "TABLE"}


@dataclass(frozen=True)
class CatalogObject:
    oid: int = field(compare=False)  # creation order; not part of what the object is
    kind: str
    identity: str
    definition: str | None
    acl: str | None
    comment: str | None


def snapshot(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], CatalogObject]:
    """The toolkit's objects, keyed by (kind, identity), with names fully qualified."""
    # With only pg_catalog on the path, identities and definitions print
    # every other name schema-qualified. Local to the migration's transaction,
    # and put back at once.
    row = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()
    previous_path = row[0] if row else ""
    conn.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog', true)")
    rows = conn.execute(SNAPSHOT, {"schemas": list(TOOLKIT_SCHEMAS)}).fetchall()
    conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (previous_path,))
    return {(r[1], r[2]): CatalogObject(*r) for r in rows}


@dataclass(frozen=True)
class Change:
    change: str  # created, replaced, removed
    object: CatalogObject  # for replaced and removed: as it was before the revision


def changes(before: dict[tuple[str, str], CatalogObject],
            after: dict[tuple[str, str], CatalogObject]) -> list[Change]:
    """What a revision did, with what it replaced or removed as it was."""
    found = [Change("created", after[key]) for key in after.keys() - before.keys()]
    for key, old in before.items():
        new = after.get(key)
        if new is None:
            found.append(Change("removed", old))
        elif new != old:
            found.append(Change("replaced", old))
    unrestorable = [c for c in found if c.change != "created" and c.object.kind not in RESTORABLE]
    if unrestorable:
        names = ", ".join(f"{c.object.kind} {c.object.identity} ({c.change})" for c in unrestorable)
        raise RuntimeError(
            f"pgveil: this revision changed objects that the revision log cannot restore: {names}; "
            "write that part of its downgrade by hand"
        )
    return sorted(found, key=lambda c: (c.change, c.object.oid))


def upgrade(revision: str, directory: str | None = None) -> None:
    """From an Alembic revision: run ``sql/<directory>/`` and log what it changed."""
    conn = migration_connection()
    before = snapshot(conn)
    run_directory(directory or revision)
    found = changes(before, snapshot(conn))
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {LOG_TABLE} (revision, position, change, object_oid, kind, identity, definition, acl, comment)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(revision, position, c.change, c.object.oid, c.object.kind, c.object.identity, c.object.definition,
              c.object.acl, c.object.comment) for position, c in enumerate(found)],
        )


def logged_changes(conn: psycopg.Connection[Any], revision: str) -> list[Change]:
    rows = conn.execute(
        f"SELECT change, object_oid, kind, identity, definition, acl, comment FROM {LOG_TABLE}"
        " WHERE revision = %s ORDER BY position",
        (revision,),
    ).fetchall()
    return [Change(r[0], CatalogObject(*r[1:])) for r in rows]


def downgrade(revision: str) -> None:
    """From an Alembic revision: undo what :func:`upgrade` logged for it."""
    conn = migration_connection()
    logged = logged_changes(conn, revision)
    # The log table itself may be among what the revision created: forget first.
    conn.execute(f"DELETE FROM {LOG_TABLE} WHERE revision = %s", (revision,))
    created = [c.object for c in logged if c.change == "created"]
    for kind in DROP_ORDER:
        for obj in sorted((o for o in created if o.kind == kind), key=lambda o: o.oid, reverse=True):
            conn.execute(sql.SQL(DROP_STATEMENT[kind]).format(sql.SQL(obj.identity)))
    restored = [c.object for c in logged if c.change != "created"]
    for kind in reversed(DROP_ORDER):
        for obj in (o for o in restored if o.kind == kind):
            _restore(conn, obj)


def _restore(conn: psycopg.Connection[Any], obj: CatalogObject) -> None:
    """Put back an object as it was: its definition, privileges and comment."""
    if obj.kind in ("trigger", "event trigger"):
        # No CREATE OR REPLACE for these: a replaced one is dropped first.
        conn.execute(sql.SQL("DROP {} IF EXISTS {}").format(sql.SQL(obj.kind.upper()), sql.SQL(obj.identity)))
    assert obj.definition is not None
    conn.execute(obj.definition.encode())
    target = ACL_TARGET.get(obj.kind)
    if target is None:
        return
    name = sql.SQL(obj.identity)
    conn.execute(sql.SQL("REVOKE ALL ON {} {} FROM PUBLIC").format(sql.SQL(target), name))
    if obj.acl is None:
        # The default privileges: a routine is executable by PUBLIC.
        if obj.kind == "routine":
            conn.execute(sql.SQL("GRANT EXECUTE ON ROUTINE {} TO PUBLIC").format(name))
    else:
        grants = conn.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(r.rolname) END,"
            " a.privilege_type, a.is_grantable"
            " FROM pg_catalog.aclexplode(%s::pg_catalog.aclitem[]) a"
            " LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee"
            " WHERE a.grantee <> a.grantor",
            (obj.acl,),
        ).fetchall()
        for grantee, privilege, grantable in grants:
            conn.execute(sql.SQL("GRANT {} ON {} {} TO {}{}").format(
                sql.SQL(privilege), sql.SQL(target), name, sql.SQL(grantee),
                sql.SQL(" WITH GRANT OPTION" if grantable else "")))
    conn.execute(sql.SQL("COMMENT ON {} {} IS {}").format(
        sql.SQL("VIEW" if obj.kind == "view" else "ROUTINE"), name, sql.Literal(obj.comment)))


def regenerate_delivered_objects() -> None:
    """From an Alembic revision: rebuild every stream's trigger function and every
    mask view with the compiler as it now is (after a revision changed it, either way)."""
    conn = migration_connection()
    conn.execute(
        "SELECT veil_private.build_stream(s.source) FROM veil_private.streams s ORDER BY s.source"
    )
    conn.execute(
        "SELECT veil_private.refresh_views_policy(p.name) FROM veil_private.policies p"
        " WHERE p.delivery = 'views' ORDER BY p.name"
    )
