"""pgveil verify --role: try, as a masked role or a consumer, the routes a curious user
would take to raw data, with marker values planted where the role must not see them.

How the markers are planted, and why nothing remains
----------------------------------------------------
Another session sees only committed rows, and a committed marker row would travel
through the stream triggers into sanitized.* and the change feed, and an UPDATE of
a real row to a marker and back loses the row's value if verify is killed in
between. So nothing is ever committed: the admin session opens one transaction,
writes a marker (``pgveil`` + 20 random hex digits, one per column) into every
guarded text or JSON column of one existing row per covered table (a row inserted
where the table is empty), lets the stream triggers copy it into sanitized.*,
then runs every route that needs the markers as the role (``SET LOCAL ROLE``, with
the role's own search_path from pg_db_role_setting, which SET ROLE does not apply),
each in a savepoint, and ROLLBACK. A rollback is the only thing that undoes all of
it whatever happens to verify: killed, the server aborts the transaction.
Notifications are sent at commit only, so the feed never hears of the markers.

The routes that depend on who the session user is (SET ROLE to the roles it is a
member of, SET SESSION AUTHORIZATION, the settings applied at login) run on the
role's own connection; they need no marker: they ask whether the role reaches
raw columns, keys or keyed functions, reading ``LIMIT 0`` so no raw value is ever
fetched.

pg_stats is checked without ANALYZE: pg_stats shows a column's row exactly when
the reader may SELECT the column, so a visible row of a guarded column is a leak
whatever the values sampled; ANALYZE would also update pg_class.reltuples and
relpages in place, which a rollback does not undo, and a single marker row
rarely reaches most_common_vals anyway.

SET ROLE is not a sandbox: code that runs as the role inside the admin session
could RESET ROLE. So no object of the role's runs there: every name in the
probes is qualified with pg_catalog except the relation names under test, and
those must resolve to objects owned by a superuser, the toolkit owner or a
covered table's owner; pg_catalog stays first in the path; markers go only into
tables whose triggers belong to those owners; only search_path is taken from the
role's settings.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psycopg
from psycopg import sql

from pgveil.errors import PgveilError, server_message

Query = str | sql.SQL | sql.Composed
REFUSED, MASKED, LEAKED = "refused", "masked", "leaked"
MARKER_PREFIX = "pgveil"
# Text-like columns take the marker as it is, JSON ones as a JSON string.
TEXT_CATEGORY = "S"
JSON_TYPES = ("json", "jsonb")
LEAK_NOTICE = "pgveil-verify-saw"
PROBE_TIMEOUTS = "SET LOCAL lock_timeout = '10s'; SET LOCAL statement_timeout = '5min'"


@dataclass(frozen=True)
class RouteResult:
    route: str  # what was tried
    outcome: str  # "refused" (PostgreSQL said no), "masked" (answered, no marker), "leaked"
    detail: str  # one line: SQLSTATE and condition, or what was seen; never a raw value


@dataclass(frozen=True)
class RoleReport:
    role: str
    kind: str  # "masked" | "consumer" | "other"
    routes: tuple[RouteResult, ...]
    # The columns that carried a marker ("public.customer.email"), and those that
    # could not, with the reason ("public.t.c: too short for a marker").
    planted: tuple[str, ...] = ()
    not_planted: tuple[str, ...] = ()

    @property
    def leaked(self) -> bool:
        return any(r.outcome == LEAKED for r in self.routes)


@dataclass
class _Column:
    name: str
    attnum: int
    guarded: bool  # masked or left out by the role's policy: its raw value must not reach the role
    kind: str | None  # "text" or "json" when it can carry a marker
    max_length: int | None


@dataclass
class _Table:
    oid: int
    schema: str
    name: str
    relkind: str
    owner: str
    columns: list[_Column]
    read: str | None  # what the role reads instead: a qualified copy, or None (its usual name)
    markers: dict[str, str] = field(default_factory=dict)  # column -> marker

    @property
    def qualified(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def base(self) -> bool:
        return self.relkind in ("r", "p")

    @property
    def guarded(self) -> list[_Column]:
        return [c for c in self.columns if c.guarded]


class _Refused(Exception):
    """A probe's statement failed: the route is refused (or leaked, if the message
    carried a marker)."""

    def __init__(self, error: psycopg.Error, leaked: bool) -> None:
        super().__init__(_condition(error))
        self.leaked = leaked


def _condition(error: psycopg.Error) -> str:
    return f"{error.sqlstate or '?'} {type(error).__name__}"


def _connect(url: str, what: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url)
    except psycopg.Error as error:
        raise PgveilError(f"cannot connect with the {what}: {server_message(error)}") from None


def verify_role(admin_url: str, role: str, role_url: str) -> RoleReport:
    """Try every route from ``role`` to raw data; see the module's docstring."""
    admin = _connect(admin_url, "admin URL")
    try:
        verifier = _Verifier(admin, role)
        verifier.check_admin()
        role_conn = _connect(role_url, f"URL of role {role}")
        try:
            return verifier.run(role_conn)
        finally:
            role_conn.close()
    finally:
        admin.close()


class _Verifier:
    role_conn: psycopg.Connection[Any]

    def __init__(self, admin: psycopg.Connection[Any], role: str) -> None:
        self.admin = admin
        self.role = role
        self.notices: list[str] = []
        self.markers: list[str] = []
        admin.add_notice_handler(self._notice)

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if (diag.message_primary or "").startswith(LEAK_NOTICE):
            self.notices.append(diag.message_primary or "")

    # -- setup -----------------------------------------------------------------

    def _one(self, query: Query, params: Any = ()) -> Any:
        row = self.admin.execute(query, params).fetchone()
        return None if row is None else row[0]

    def check_admin(self) -> None:
        """The toolkit is installed, the role exists, the admin may read the catalog and
        SET ROLE to the role."""
        a = self.admin
        a.execute("SET LOCAL search_path = pg_catalog, pg_temp")
        if self._one("SELECT to_regnamespace('veil_private')") is None:
            raise PgveilError("pgveil is not installed in the admin URL's database")
        row = a.execute("SELECT oid, rolsuper FROM pg_roles WHERE rolname = %s", (self.role,)).fetchone()
        if row is None:
            raise PgveilError(f"there is no role {self.role}")
        self.role_oid, self.role_super = int(row[0]), bool(row[1])
        try:
            readable = self._one("SELECT has_table_privilege('veil_private.column_rules', 'SELECT')")
        except psycopg.Error:
            readable = False
        if not readable:
            raise PgveilError("the admin URL's user cannot read pgveil's catalog: use the toolkit owner or a superuser")
        try:
            with a.transaction():
                a.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(self.role)))
                raise psycopg.Rollback()
        except psycopg.Error:
            raise PgveilError(
                f"the admin URL's user cannot SET ROLE {self.role}: use a superuser, or GRANT {self.role} to it"
            ) from None

    def _check_role_conn(self) -> None:
        """The role URL logs in as the role, into the admin URL's database."""
        a = self.admin
        try:
            who = self.role_conn.execute(
                "SELECT session_user, current_database(), pg_postmaster_start_time()"
            ).fetchone()
            self.role_conn.rollback()
        except psycopg.Error as error:
            raise PgveilError(f"the role's connection failed: {server_message(error)}") from None
        assert who is not None
        if who[0] != self.role:
            raise PgveilError(f"the role URL logs in as {who[0]}, not {self.role}")
        here = a.execute("SELECT current_database(), pg_postmaster_start_time()").fetchone()
        if here is None or tuple(who[1:]) != tuple(here):
            raise PgveilError("the role URL and the admin URL reach different databases")

    def _load(self) -> None:
        """What pgveil knows of the role, the tables it must not read raw, and trust."""
        self.masked_policy: str | None = self._one(
            "SELECT policy FROM veil_private.masked_roles WHERE roleid = %s", (self.role_oid,)
        )
        consumer = bool(
            self._one("SELECT EXISTS (SELECT FROM veil_private.consumers WHERE roleid = %s)", (self.role_oid,))
        )
        self.kind = "masked" if self.masked_policy else "consumer" if consumer else "other"
        self.owner = str(self._one("SELECT veil_private.toolkit_owner()"))
        # Covered relations, with the policies deciding which of their columns are guarded.
        if self.masked_policy:
            covered = self.admin.execute(
                "SELECT r, ARRAY[%s]::text[], NULL::regclass FROM veil_private.masked_relations(%s) r",
                (self.masked_policy, self.masked_policy),
            ).fetchall()
        else:
            covered = self.admin.execute(
                """
                SELECT t.relid, CASE WHEN s.source IS NOT NULL THEN ARRAY[s.policy]
                                     ELSE (SELECT array_agg(DISTINCT r.policy) FROM veil_private.column_rules r
                                           WHERE r.relid = t.relid) END,
                       CASE WHEN %s THEN s.target::regclass END
                FROM (SELECT source FROM veil_private.streams UNION SELECT relid FROM veil_private.column_rules) t(relid)
                LEFT JOIN veil_private.streams s ON s.source = t.relid
                WHERE EXISTS (SELECT FROM pg_class c WHERE c.oid = t.relid)""",
                (consumer,),
            ).fetchall()
        self.tables: list[_Table] = []
        for relid, policies, copy in covered:
            row = self.admin.execute(
                "SELECT n.nspname, c.relname, c.relkind, c.relowner::regrole::text FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
                (relid,),
            ).fetchone()
            assert row is not None
            columns = [
                _Column(name, attnum, guarded, kind, maxlen)
                for name, attnum, guarded, kind, maxlen in self.admin.execute(
                    """
                SELECT a.attname, a.attnum,
                       EXISTS (SELECT FROM veil_private.policies p WHERE p.name = ANY(%s) AND
                               coalesce((SELECT r.kind <> 'not_masked' FROM veil_private.column_rules r
                                         WHERE r.policy = p.name AND r.relid = a.attrelid AND r.attnum = a.attnum),
                                        NOT p.pass_through_unlabeled)),
                       CASE WHEN a.attgenerated <> '' THEN NULL
                            WHEN bt.typname IN ('json', 'jsonb') THEN 'json'
                            WHEN bt.typcategory = %s AND bt.typname NOT IN ('name', 'char') THEN 'text' END,
                       CASE WHEN a.atttypmod > 4 AND bt.typname IN ('varchar', 'bpchar') THEN a.atttypmod - 4 END
                FROM pg_attribute a
                JOIN pg_type t ON t.oid = a.atttypid
                JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
                WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
                    (policies, TEXT_CATEGORY, relid),
                ).fetchall()
            ]
            self.tables.append(_Table(int(relid), row[0], row[1], row[2], row[3], columns, copy))
        self.tables.sort(key=lambda t: t.label)
        self.trusted = (
            {self.owner}
            | {t.owner for t in self.tables}
            | {r[0] for r in self.admin.execute("SELECT rolname FROM pg_roles WHERE rolsuper").fetchall()}
        )
        self.trusted.discard(self.role)
        # The role's own search_path: this database's setting, else its own, else the
        # database's, else the default (as PostgreSQL applies them at login).
        self.role_path = str(
            self._one(
                """
            SELECT coalesce(veil_private.role_setting(%(r)s, veil_private.this_database(), 'search_path'),
                            veil_private.role_setting(%(r)s, 0, 'search_path'),
                            veil_private.role_setting(0, veil_private.this_database(), 'search_path'),
                            (SELECT boot_val FROM pg_settings WHERE name = 'search_path'))""",
                {"r": self.role_oid},
            )
        )

    # -- markers ---------------------------------------------------------------

    def _plant(self) -> tuple[list[str], list[str]]:
        planted: list[str] = []
        skipped: list[str] = []
        pending: list[_Table] = []
        for t in self.tables:
            columns = [c for c in t.guarded if c.kind]
            if not t.base or not columns:
                continue
            foreign = self.admin.execute(
                "SELECT DISTINCT p.proowner::regrole::text FROM pg_trigger g JOIN pg_proc p ON p.oid = g.tgfoid"
                " WHERE g.tgrelid = %s AND NOT g.tgisinternal",
                (t.oid,),
            ).fetchall()
            untrusted = sorted(r[0] for r in foreign if r[0] not in self.trusted)
            if untrusted:
                skipped += [
                    f"{t.label}.{c.name}: a trigger function of {', '.join(untrusted)} would run as the admin"
                    for c in columns
                ]
                continue
            for c in columns:
                if c.max_length is not None and c.max_length < 16:
                    skipped.append(f"{t.label}.{c.name}: too short for a marker")
                    continue
                hex_digits = secrets.token_hex(10)[: (c.max_length or 26) - len(MARKER_PREFIX)]
                t.markers[c.name] = MARKER_PREFIX + hex_digits
            if t.markers:
                pending.append(t)
        # An empty table gets an inserted row; tables referencing it may need its row
        # first, so inserts are retried while some succeed.
        empty: list[_Table] = []
        for t in pending:
            if not self._update_row(t, skipped):
                empty.append(t)
        failures: dict[str, str] = {}
        while empty:
            progress = False
            for t in list(empty):
                error = self._insert_row(t)
                if error is None:
                    empty.remove(t)
                    progress = True
                else:
                    failures[t.label] = error
            if not progress:
                break
        for t in empty:
            skipped += [f"{t.label}.{c}: no row could be inserted ({failures[t.label]})" for c in t.markers]
            t.markers.clear()
        for t in pending:
            planted += [f"{t.label}.{c}" for c in t.markers]
        return planted, skipped

    def _marker_value(self, t: _Table, column: str) -> sql.Composable:
        c = next(c for c in t.columns if c.name == column)
        value = sql.Literal(t.markers[column])
        return sql.SQL("pg_catalog.to_jsonb({}::pg_catalog.text)").format(value) if c.kind == "json" else value

    def _update_row(self, t: _Table, skipped: list[str]) -> bool:
        """Marker into each column of one existing row (each in a savepoint: a CHECK
        may refuse one). False when the table has no row that is free to lock."""
        found = self.admin.execute(
            sql.SQL("SELECT tableoid, ctid FROM {} LIMIT 1 FOR UPDATE SKIP LOCKED").format(t.qualified)
        ).fetchone()
        if found is None:
            return False
        tableoid, ctid = found
        for column in list(t.markers):
            try:
                with self.admin.transaction():
                    moved = self.admin.execute(
                        sql.SQL(
                            "UPDATE {} SET {} = {} WHERE tableoid = %s::oid AND ctid = %s::tid RETURNING ctid"
                        ).format(t.qualified, sql.Identifier(column), self._marker_value(t, column)),
                        (tableoid, ctid),
                    ).fetchone()
                assert moved is not None
                ctid = moved[0]
            except psycopg.Error as error:
                skipped.append(f"{t.label}.{column}: refused ({_condition(error)})")
                del t.markers[column]
        return True

    def _insert_row(self, t: _Table) -> str | None:
        """One row built to satisfy NOT NULL and single-column foreign keys, with
        serial and identity values taken past the column's maximum so that no
        sequence advances (nextval is never rolled back). None, or why not."""
        needed = self.admin.execute(
            """
            SELECT a.attname, a.attidentity <> '' OR pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%%',
                   d.adbin IS NULL AND a.attnotnull AND a.attidentity = '', t.typcategory,
                   (SELECT format('SELECT %%I FROM %%s LIMIT 1', fa.attname, k.confrelid::regclass)
                    FROM pg_constraint k JOIN pg_attribute fa ON fa.attrelid = k.confrelid AND fa.attnum = k.confkey[1]
                    WHERE k.conrelid = a.attrelid AND k.contype = 'f' AND k.conkey = ARRAY[a.attnum] LIMIT 1)
            FROM pg_attribute a
            JOIN pg_type t ON t.oid = a.atttypid
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''""",
            (t.oid,),
        ).fetchall()
        names: list[sql.Composable] = []
        values: list[sql.Composable] = []
        overriding = False
        for name, sequenced, required, category, reference in needed:
            if name in t.markers:
                value: sql.Composable = self._marker_value(t, name)
            elif reference is not None and (required or sequenced):
                value = sql.SQL("({})").format(sql.SQL(reference))
            elif sequenced:
                value = sql.SQL("(SELECT coalesce(pg_catalog.max({0}), 0) + 1 FROM {1})").format(
                    sql.Identifier(name), t.qualified
                )
                overriding = True
            elif required:
                fill = {"N": "0", "S": "'pgveil'", "B": "false", "D": "pg_catalog.now()"}.get(category)
                if fill is None:
                    return f"no value for column {name}"
                value = sql.SQL(fill)
            else:
                continue
            names.append(sql.Identifier(name))
            values.append(value)
        statement = sql.SQL("INSERT INTO {} ({}) {}VALUES ({})").format(
            t.qualified,
            sql.SQL(", ").join(names),
            sql.SQL("OVERRIDING SYSTEM VALUE " if overriding else ""),
            sql.SQL(", ").join(values),
        )
        try:
            with self.admin.transaction():
                self.admin.execute(statement)
        except psycopg.Error as error:
            return _condition(error)
        return None

    def _seen(self, text: str) -> bool:
        text = text.lower()
        return any(m[len(MARKER_PREFIX) :] in text for m in self.markers)

    @property
    def pattern(self) -> str:
        # Hex digits only: safe inside a regular expression and a literal.
        return "|".join(m[len(MARKER_PREFIX) :] for m in self.markers) or "^$x"

    # -- running as the role in the admin session ---------------------------------

    @contextmanager
    def _as_role(self, path: str | None = None) -> Iterator[None]:
        """Run as the role in a savepoint that is always rolled back; pg_catalog stays
        first (see the module's docstring) unless ``path`` names it itself."""
        search_path = path if path is not None else f"pg_catalog, {self.role_path}"
        try:
            with self.admin.transaction():
                self.admin.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(self.role)))
                self.admin.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (search_path,))
                yield
                raise psycopg.Rollback()
        except psycopg.Error as error:
            raise _Refused(error, self._seen(str(error))) from None

    def _route(self, route: str, probe: Callable[[], tuple[str, str]]) -> RouteResult:
        self.notices.clear()
        try:
            outcome, detail = probe()
        except _Refused as refused:
            outcome = LEAKED if refused.leaked else REFUSED
            detail = f"a marker in the error message ({refused})" if refused.leaked else str(refused)
        return RouteResult(route, outcome, detail)

    def _resolve(self, name: sql.Composable) -> tuple[int | None, str]:
        """What a relation name resolves to as the role, and whether its owner is trusted."""
        with self._as_role():
            oid = self._one(
                sql.SQL("SELECT pg_catalog.to_regclass({})::pg_catalog.oid").format(
                    sql.Literal(name.as_string(self.admin))
                )
            )
        if oid is None:
            return None, "does not resolve"
        owner = str(self._one("SELECT relowner::regrole::text FROM pg_class WHERE oid = %s", (oid,)))
        return int(oid), owner

    def _count_markers(self, relation: sql.Composable, column: str | None = None) -> int:
        target = (
            sql.SQL("x::pg_catalog.text")
            if column is None
            else sql.SQL("x.{}::pg_catalog.text").format(sql.Identifier(column))
        )
        return int(
            self._one(
                sql.SQL(
                    "SELECT pg_catalog.count(*) FROM {} AS x WHERE pg_catalog.textregexeq(pg_catalog.lower({}), {})"
                ).format(relation, target, sql.Literal(self.pattern))
            )
        )

    def _read_outcome(self, rows: int, raw: _Table | None, columns: list[_Column]) -> tuple[str, str]:
        if rows:
            return LEAKED, f"{rows} row(s) carry a marker"
        if raw is not None and columns:
            guarded = ", ".join(c.name for c in columns)
            return LEAKED, f"answered from the raw table: guarded column(s) {guarded} as stored"
        return MASKED, "answered; no marker"

    def _select_qualified(self, t: _Table) -> tuple[str, str]:
        try:
            with self._as_role(path="pg_catalog"):
                rows = self._count_markers(t.qualified)
            return self._read_outcome(rows, t if t.base else None, t.guarded)
        except _Refused as whole:
            # A column privilege lets a column be read even when SELECT * is refused.
            readable: list[_Column] = []
            rows = 0
            for c in t.guarded:
                try:
                    with self._as_role(path="pg_catalog"):
                        rows += self._count_markers(t.qualified, c.name)
                    readable.append(c)
                except _Refused:
                    continue
            if not readable:
                raise whole
            return self._read_outcome(rows, t, readable)

    def _copy(self, t: _Table) -> tuple[str, str]:
        def copy(statement: sql.Composed) -> bool:
            seen = False
            tail = ""
            with self._as_role(path="pg_catalog"), self.admin.cursor().copy(statement) as out:
                for block in out:
                    text = tail + bytes(block).decode(errors="replace")
                    seen = seen or self._seen(text)
                    tail = text[-40:]
            return seen

        source = t.qualified if t.base else sql.SQL("(SELECT * FROM {})").format(t.qualified)
        try:
            seen = copy(sql.SQL("COPY {} TO STDOUT").format(source))
            readable = t.guarded if t.base else []
        except _Refused as whole:
            readable = []
            seen = False
            for c in t.guarded if t.base else []:
                try:
                    seen = copy(sql.SQL("COPY {} ({}) TO STDOUT").format(t.qualified, sql.Identifier(c.name))) or seen
                    readable.append(c)
                except _Refused:
                    continue
            if not readable:
                raise whole
        return self._read_outcome(int(seen), t if t.base else None, readable)

    def _pg_stats(self, t: _Table) -> tuple[str, str]:
        with self._as_role():
            visible = self.admin.execute(
                "SELECT attname::pg_catalog.text, pg_catalog.concat(most_common_vals::pg_catalog.text,"
                " histogram_bounds::pg_catalog.text, most_common_elems::pg_catalog.text)"
                " FROM pg_catalog.pg_stats"
                " WHERE schemaname OPERATOR(pg_catalog.=) %s AND tablename OPERATOR(pg_catalog.=) %s",
                (t.schema, t.name),
            ).fetchall()
            extended = int(
                self._one(
                    "SELECT pg_catalog.count(*) FROM pg_catalog.pg_stats_ext"
                    " WHERE schemaname OPERATOR(pg_catalog.=) %s AND tablename OPERATOR(pg_catalog.=) %s",
                    (t.schema, t.name),
                )
            )
        guarded = {c.name for c in t.guarded}
        shown = sorted({name for name, _ in visible if name in guarded})
        if any(self._seen(values or "") for _, values in visible):
            return LEAKED, "a marker among the statistics"
        if shown or extended:
            what = ", ".join(shown) if shown else f"{extended} extended statistics object(s)"
            return LEAKED, f"statistics of guarded column(s) visible: {what} (sampled stored values)"
        return MASKED, "no statistics row of a guarded column is visible"

    def _usual_name(self, t: _Table) -> sql.Composable:
        if t.read is not None:
            return sql.SQL(t.read)  # a regclass's text: quoted and qualified as needed
        return sql.Identifier(t.name)

    def _read_usual(self, t: _Table, probe: Callable[[sql.Composable, int], tuple[str, str]]) -> tuple[str, str]:
        name = self._usual_name(t)
        oid, owner = self._resolve(name)
        if oid is None:
            return REFUSED, f"{name.as_string(self.admin)} does not resolve for the role"
        if owner not in self.trusted:
            return self._untrusted_read(name, owner)
        return probe(name, oid)

    def _untrusted_read(self, name: sql.Composable, owner: str) -> tuple[str, str]:
        """A name resolving to an object of an untrusted owner is never run in the admin
        session; the role's own connection reads it, without fetching a row."""
        text = name.as_string(self.admin)
        try:
            self.role_conn.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(name))
        except psycopg.Error as error:
            return REFUSED, f"{text} is {owner}'s, read on the role's connection: {_condition(error)}"
        finally:
            self.role_conn.rollback()
        return MASKED, f"{text} resolves to an object of {owner}, read on the role's connection (no marker there)"

    def _own_read(self, t: _Table) -> tuple[str, str]:
        def probe(name: sql.Composable, oid: int) -> tuple[str, str]:
            with self._as_role():
                rows = self._count_markers(name)
            raw = t if oid == t.oid else None
            return self._read_outcome(rows, raw, t.guarded)

        return self._read_usual(t, probe)

    def _leaky_where(self, t: _Table) -> tuple[str, str]:
        def probe(name: sql.Composable, oid: int) -> tuple[str, str]:
            columns = [
                r[0]
                for r in self.admin.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped"
                    " ORDER BY attnum",
                    (oid,),
                ).fetchall()
            ]
            if not columns:
                return MASKED, "answered; the relation has no column"
            calls = sql.SQL(" AND ").join(
                sql.SQL("pg_temp.pgveil_leak({}, x.{}::pg_catalog.text)").format(sql.Literal(c), sql.Identifier(c))
                for c in columns
            )
            with self._as_role():
                self.admin.execute(self._leak_function())
                self._one(sql.SQL("SELECT pg_catalog.count(*) FROM {} AS x WHERE {}").format(name, calls))
            if self.notices:
                seen = sorted({n.split()[-1] for n in self.notices})
                return LEAKED, f"the function saw a marker in {', '.join(seen)}"
            return MASKED, f"the function saw {len(columns)} column(s), no marker"

        return self._read_usual(t, probe)

    def _leak_function(self) -> sql.Composed:
        # What an attacker's function does, except that it reports only whether it saw
        # a marker (a notice per row of a large table would flood the session).
        body = (
            "BEGIN IF pg_catalog.textregexeq(pg_catalog.lower(seen), "
            f"'{self.pattern}') THEN RAISE NOTICE '{LEAK_NOTICE} %', label; END IF; RETURN true; END"
        )
        return sql.SQL(
            "CREATE FUNCTION pg_temp.pgveil_leak(label pg_catalog.text, seen pg_catalog.text)"
            " RETURNS pg_catalog.bool LANGUAGE plpgsql COST 0.0000001 AS {}"
        ).format(sql.Literal(body))

    def _explain(self, t: _Table) -> tuple[str, str]:
        def probe(name: sql.Composable, oid: int) -> tuple[str, str]:
            with self._as_role():
                plan = "\n".join(
                    str(r[0])
                    for r in self.admin.execute(
                        sql.SQL("EXPLAIN (ANALYZE, VERBOSE, COSTS OFF) SELECT * FROM {}").format(name)
                    ).fetchall()
                )
            if self._seen(plan):
                return LEAKED, "a marker in the plan"
            return MASKED, "answered; no marker in the plan"

        return self._read_usual(t, probe)

    def _changed_path(self, path: str) -> tuple[str, str]:
        outcomes: list[tuple[str, str]] = []
        for t in self.tables:
            if not t.base:
                continue
            name = sql.Identifier(t.name)
            with self._as_role(path=path):
                oid = self._one(
                    sql.SQL("SELECT pg_catalog.to_regclass({})::pg_catalog.oid").format(
                        sql.Literal(name.as_string(self.admin))
                    )
                )
            if oid != t.oid:
                continue  # another schema's object of that name: not what this route is about
            try:
                with self._as_role(path=path):
                    rows = self._count_markers(name)
                outcomes.append(self._read_outcome(rows, t, t.guarded))
            except _Refused as refused:
                outcomes.append((LEAKED if refused.leaked else REFUSED, str(refused)))
        return _combine(outcomes, "no covered table resolves by name")

    def _creatable_schemas(self) -> list[str]:
        return [
            r[0]
            for r in self.admin.execute(
                "SELECT nspname FROM pg_namespace WHERE has_schema_privilege(%s, oid, 'CREATE')"
                " AND nspname NOT LIKE 'pg\\_%%' AND nspname <> 'information_schema' ORDER BY nspname",
                (self.role,),
            ).fetchall()
        ]

    def _shadow(self, schema: str) -> tuple[str, str]:
        """Objects named like the covered tables, like the functions the role's views
        call and (in pg_temp) like the types pgveil's functions use, ahead on the role's
        path; then the role's usual reads. All rolled back with the savepoint."""
        functions = self.admin.execute(
            """
            SELECT DISTINCT p.proname, pg_get_function_identity_arguments(p.oid), format_type(p.prorettype, NULL)
            FROM pg_depend d JOIN pg_rewrite w ON w.oid = d.objid AND d.classid = 'pg_rewrite'::regclass
            JOIN pg_proc p ON p.oid = d.refobjid AND d.refclassid = 'pg_proc'::regclass
            WHERE w.ev_class = ANY(%s) AND p.pronargs > 0 AND p.proargtypes[0] = 'text'::regtype
              AND p.prorettype = 'text'::regtype""",
            ([t.oid for t in self.tables] + [o for o in self._read_oids()],),
        ).fetchall()
        created = denied = 0
        outcomes: list[tuple[str, str]] = []
        path = f"pg_catalog, {sql.Identifier(schema).as_string(self.admin)}, {self.role_path}"
        try:
            with self._as_role(path=path):
                for t in self.tables:
                    if not t.base:
                        continue
                    try:
                        with self.admin.transaction():
                            self.admin.execute(
                                sql.SQL("CREATE VIEW {} AS SELECT * FROM {}").format(
                                    sql.Identifier(schema, t.name), t.qualified
                                )
                            )
                        created += 1
                    except psycopg.Error:
                        denied += 1
                for name, arguments, returns in functions:
                    try:
                        with self.admin.transaction():
                            self.admin.execute(
                                sql.SQL("CREATE FUNCTION {}({}) RETURNS {} LANGUAGE sql AS 'SELECT $1'").format(
                                    sql.Identifier(schema, name), sql.SQL(arguments), sql.SQL(returns)
                                )
                            )
                        created += 1
                    except psycopg.Error:
                        denied += 1
                if schema == "pg_temp":
                    self.admin.execute(self._leak_function())
                    for type_name in ("text", "json", "jsonb"):
                        self.admin.execute(
                            sql.SQL(
                                "CREATE DOMAIN pg_temp.{0} AS pg_catalog.{0}"
                                " CHECK (pg_temp.pgveil_leak('domain', VALUE::pg_catalog.text))"
                            ).format(sql.Identifier(type_name))
                        )
                    created += 3
                if not created:
                    return REFUSED, f"CREATE denied ({denied} object(s))"
                for t in self.tables:
                    if not t.base:
                        continue
                    try:
                        with self.admin.transaction():
                            rows = self._count_markers(sql.Identifier(t.name))
                        outcomes.append(self._read_outcome(rows, None, []))
                    except psycopg.Error as error:
                        outcomes.append((LEAKED if self._seen(str(error)) else REFUSED, _condition(error)))
                if self._one("SELECT pg_catalog.has_function_privilege('veil.follows_changes()', 'EXECUTE')"):
                    self._one("SELECT veil.follows_changes()")
        except _Refused as refused:
            outcomes.append((LEAKED if refused.leaked else REFUSED, str(refused)))
        if self.notices:
            outcomes.append((LEAKED, "a shadowing object saw a marker"))
        outcome, detail = _combine(outcomes, "nothing to read")
        return outcome, f"{created} object(s) created, {denied} denied; reads: {detail}"

    def _read_oids(self) -> list[int]:
        oids: list[int] = []
        for t in self.tables:
            oid, owner = self._resolve(self._usual_name(t))
            if oid is not None and owner in self.trusted:
                oids.append(oid)
        return oids

    def _change_rule(self) -> tuple[str, str]:
        policy = self.masked_policy or next(
            iter(self._one("SELECT array_agg(DISTINCT policy ORDER BY policy) FROM veil_private.column_rules") or []),
            "mask",
        )
        target = next((t for t in self.tables if t.markers), None)
        column = f"{target.label}.{next(iter(target.markers))}" if target else None
        attempts = [("ROLE", self.role, None)] + ([("COLUMN", column, "NOT MASKED")] if column else [])
        outcomes: list[tuple[str, str]] = []
        for object_type, name, value in attempts:
            try:
                with self._as_role():
                    self.admin.execute("SELECT veil.security_label(%s, %s, %s, %s)", (policy, object_type, name, value))
                    rows = sum(self._count_markers(self._usual_name(t)) for t in self.tables if t.markers)
                outcomes.append(
                    (LEAKED, f"{object_type} rule changed; {rows} marker row(s) then read")
                    if rows
                    else (MASKED, f"{object_type} rule changed; no marker then read")
                )
            except _Refused as refused:
                outcomes.append((LEAKED if refused.leaked else REFUSED, f"{object_type}: {refused}"))
        return _combine(outcomes, "nothing to change")

    def _keyed(self) -> tuple[str, str]:
        executable = [
            r[0]
            for r in self.admin.execute(
                "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE veil_private.is_keyed_function(p.oid)"
                " AND has_function_privilege(%s, p.oid, 'EXECUTE') ORDER BY 1",
                (self.role,),
            ).fetchall()
        ]
        opt_in = self._one(
            "SELECT allow_keyed_functions FROM veil_private.policies WHERE name = %s", (self.masked_policy,)
        )
        try:
            with self._as_role():
                self._one("SELECT veil.token('pgveil-verify-probe', '')")
        except _Refused as refused:
            if not executable:
                return REFUSED, f"veil.token: {refused}"
        note = f" (policy {self.masked_policy} opts in to keyed functions)" if opt_in else ""
        shown = ", ".join(executable[:5]) + (f" and {len(executable) - 5} more" if len(executable) > 5 else "")
        return LEAKED, f"the role computes tokens itself (dictionary attacks): {shown or 'veil.token'}{note}"

    def _veil_private(self) -> tuple[str, str]:
        usage = bool(self._one("SELECT has_schema_privilege(%s, 'veil_private', 'USAGE')", (self.role,)))
        readable = [
            r[0]
            for r in self.admin.execute(
                "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relnamespace = 'veil_private'::regnamespace"
                " AND c.relkind IN ('r', 'v', 'm', 'p') AND has_table_privilege(%s, c.oid, 'SELECT') ORDER BY 1",
                (self.role,),
            ).fetchall()
        ]
        try:
            with self._as_role():
                self._one("SELECT pg_catalog.count(*) FROM veil_private.keys")
        except _Refused as refused:
            if not (usage and readable):
                return REFUSED, f"veil_private.keys: {refused}"
            return LEAKED, f"readable: {', '.join(readable)}"
        return LEAKED, "the token keys are readable" + (f"; also {', '.join(readable)}" if readable else "")

    # -- on the role's own connection -------------------------------------------

    def _settings(self, keys: list[str]) -> tuple[str, str]:
        c = self.role_conn
        try:
            values = [f"{n}={s}" for n, s in c.execute("SELECT name, setting FROM pg_catalog.pg_settings").fetchall()]
            values += [
                str(r[0])
                for r in c.execute("SELECT pg_catalog.unnest(setconfig) FROM pg_catalog.pg_db_role_setting").fetchall()
            ]
            names = sorted({v.split("=", 1)[0] for v in values if v.startswith("pgveil.")})
            for name in names:
                row = c.execute("SELECT pg_catalog.current_setting(%s, true)", (name,)).fetchone()
                values.append(f"{name}={row[0] if row else ''}")
        except psycopg.Error as error:
            return REFUSED, _condition(error)
        finally:
            c.rollback()
        text = "\n".join(values).lower()
        if any(k in text for k in keys):
            return LEAKED, "a token key in a setting the role can read"
        return MASKED, f"{len(values)} setting(s) read, no key; pgveil settings seen: {len(names)}"

    def _set_role(self, target: str) -> tuple[str, str]:
        c = self.role_conn
        try:
            c.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(target)))
        except psycopg.Error as error:
            c.rollback()
            return REFUSED, _condition(error)
        reached: list[str] = []
        try:
            for t in self.tables:
                if t.guarded:
                    try:
                        with c.transaction():
                            c.execute(
                                sql.SQL("SELECT {} FROM {} LIMIT 0").format(
                                    sql.SQL(", ").join(sql.Identifier(g.name) for g in t.guarded), t.qualified
                                )
                            )
                        reached.append(t.label)
                    except psycopg.Error:
                        continue
            try:
                with c.transaction():
                    c.execute("SELECT key FROM veil_private.keys LIMIT 0")
                reached.append("veil_private.keys")
            except psycopg.Error:
                pass
            keyed = c.execute(
                "SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p"
                " WHERE p.pronamespace OPERATOR(pg_catalog.=) pg_catalog.to_regnamespace('veil')"
                " AND p.proname OPERATOR(pg_catalog.=) 'token'"
                " AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE')"
            ).fetchone()
            if keyed and keyed[0]:
                reached.append("veil.token")
        finally:
            c.rollback()
        if reached:
            return LEAKED, f"as {target}: raw columns or keys of {', '.join(reached)}"
        return MASKED, f"allowed; {target} reads no guarded column, key or keyed function"

    def _session_authorization(self) -> tuple[str, str]:
        c = self.role_conn
        try:
            c.execute(sql.SQL("SET LOCAL SESSION AUTHORIZATION {}").format(sql.Identifier(self.owner)))
        except psycopg.Error as error:
            return REFUSED, _condition(error)
        finally:
            c.rollback()
        return LEAKED, f"the role can become {self.owner}, which holds the keys"

    # -- the whole check ----------------------------------------------------------

    def run(self, role_conn: psycopg.Connection[Any]) -> RoleReport:
        self.role_conn = role_conn
        self._check_role_conn()
        self._load()
        keys = [
            str(k).lower()
            for row in self.admin.execute(
                "SELECT encode(key, 'hex'), rtrim(encode(key, 'base64'), '=') FROM veil_private.keys"
            ).fetchall()
            for k in row
        ]
        members = [
            r[0]
            for r in self.admin.execute(
                "SELECT rolname FROM pg_roles WHERE oid <> %s AND pg_has_role(%s, oid, 'MEMBER') ORDER BY 1",
                (self.role_oid, self.role_oid),
            ).fetchall()
        ]
        self.admin.execute(PROBE_TIMEOUTS)
        planted, not_planted = self._plant()
        self.markers = [m for t in self.tables for m in t.markers.values()]
        routes: list[RouteResult] = []
        for t in self.tables:
            routes.append(self._route(f"SELECT {t.label} (qualified)", partial(self._select_qualified, t)))
            routes.append(self._route(f"COPY {t.label} TO STDOUT", partial(self._copy, t)))
            if t.base:
                routes.append(self._route(f"pg_stats on {t.label}", partial(self._pg_stats, t)))
        for t in self.tables:
            if not t.base:
                continue
            usual = t.read or t.name
            routes.append(self._route(f"SELECT {usual} (the role's own read)", partial(self._own_read, t)))
            routes.append(self._route(f"leaky function in WHERE on {usual}", partial(self._leaky_where, t)))
            routes.append(self._route(f"EXPLAIN (ANALYZE, VERBOSE) on {usual}", partial(self._explain, t)))
        schemas = sorted({t.schema for t in self.tables if t.base})
        for path in (", ".join([*schemas, "pg_catalog"]), ", ".join(["pg_catalog", *schemas])):
            routes.append(self._route(f"search_path changed to {path}", partial(self._changed_path, path)))
        for schema in ["pg_temp", *self._creatable_schemas()]:
            routes.append(self._route(f"shadowing object in {schema}", partial(self._shadow, schema)))
        routes.append(self._route("change a rule (veil.security_label)", self._change_rule))
        routes.append(self._route("veil.token() / keyed functions", self._keyed))
        routes.append(self._route("veil_private", self._veil_private))
        self.admin.rollback()
        # Session-user routes, on the role's own connection.
        routes.append(self._route("settings (pgveil.*)", partial(self._settings, keys)))
        for member in members:
            routes.append(self._route(f"SET ROLE {member}", partial(self._set_role, member)))
        for other in sorted({self.owner, *(t.owner for t in self.tables)} - set(members) - {self.role}):
            routes.append(self._route(f"SET ROLE {other} (not a member)", partial(self._set_role, other)))
        routes.append(self._route(f"SET SESSION AUTHORIZATION {self.owner}", self._session_authorization))
        return RoleReport(self.role, self.kind, tuple(routes), tuple(planted), tuple(not_planted))


def _combine(outcomes: list[tuple[str, str]], empty: str) -> tuple[str, str]:
    """One outcome for a route tried several times: leaked if any leaked, else masked
    if any answered, else refused; the detail of the first of that outcome."""
    if not outcomes:
        return MASKED, empty
    for wanted in (LEAKED, MASKED, REFUSED):
        found = [d for o, d in outcomes if o == wanted]
        if found:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            return wanted, found[0] + more
    return outcomes[0]
