"""pg_anon's scan, dump and restore, run by the API's runner in a child process
(pgveil/api/runner.py) on pgveil's services; pgveil/api/pg_anon_jobs.py submits them.

Each function is ``f(params, log) -> result``: ``params["request"]`` is the request
as validated (its password included: it reaches the child through a pipe), the
result is pg_anon's result fields for the success webhook. Failures are
:class:`JobFailed` with pg_anon's error codes.

- The password is handed to libpq as ``PGPASSWORD`` in this process's environment
  (the child is the job's own): no URL, command line or message ever holds it.
- pg_anon's rules become a **temporary static policy** in the source database
  (``veil.create_policy``), named by the endpoint, dropped in a ``finally`` with
  SIGINT ignored, whatever happens (failure, cancel). pg_anon itself writes its
  ``anon_funcs`` schema into the source; pgveil writes one policy row and its rules,
  for the time of the job.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from pgveil import dump_manifest
from pgveil.api.runner import JobFailed, Log, connect
from pgveil.errors import PgveilError, server_message
from pgveil.pg_anon_dicts import (
    MetaDict,
    NoSensDict,
    ObjectRule,
    SensDict,
    dump_sens_dict,
    map_anon_rule,
    parse_meta_dict,
    parse_no_sens_dict,
    parse_sens_dict,
    parse_tables_dict,
    quote_ident,
)
from pgveil.services import dump as dump_service
from pgveil.services import restore as restore_service
from pgveil.services import scan as scan_service
from pgveil.services import scan_output
from pgveil.services.export_schema import exact_pattern

# pg_anon's default depth of a partial scan (its manual).
DEFAULT_DEPTH = 10_000
# proc_count / proc_conn_count become jobs: each is a connection, so they are bounded.
MAX_JOBS = 16
# Databases drop_db never drops: the one it works from, and the templates.
UNDROPPABLE = frozenset(("postgres", "template0", "template1"))
RESTORE_MODES = {"restore": "full", "sync-struct-restore": "schema", "sync-data-restore": "data"}


# -- connections -------------------------------------------------------------------------


def _url(params: dict[str, Any], database: str | None = None) -> str:
    """A URL without the password (libpq takes it from PGPASSWORD)."""
    host = str(params["host"])
    if host.startswith("/"):
        host = quote(host, safe="")  # a socket directory
    elif ":" in host:
        host = f"[{host}]"
    user = quote(str(params["user_login"]), safe="")
    return f"postgresql://{user}@{host}:{int(params['port'])}/{quote(database or str(params['db_name']), safe='')}"


def _use_password(params: dict[str, Any]) -> None:
    password = str(params.get("user_password") or "")
    if password:
        os.environ["PGPASSWORD"] = password
    else:
        os.environ.pop("PGPASSWORD", None)


def _require_pgveil(conn: psycopg.Connection[Any]) -> None:
    installed = conn.execute("SELECT to_regprocedure('veil.create_policy(text, text)') IS NOT NULL").fetchone()
    if not (installed and installed[0]):
        raise JobFailed(
            "SCHEMA_NOT_INITIALIZED",
            f"pgveil is not installed in database {conn.info.dbname}: install it there (pgveil install, or alembic"
            " upgrade head); pgveil's scan and dump run their rules in the source database",
        )


def _jobs(value: Any, log: Log, field: str) -> int:
    if value is None:
        return 1
    jobs = min(max(int(value), 1), MAX_JOBS)
    if jobs != value:
        log(f"{field} {value} taken as {jobs} jobs (1 to {MAX_JOBS})")
    return jobs


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Cleanup that a second Ctrl-C (a cancel) must not cut short."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _temporary_policy(conn: psycopg.Connection[Any], url: str, name: str, log: Log) -> Iterator[str]:
    """A static policy for the job's time; dropped (with its rules) however the job ends."""
    try:
        conn.execute("SELECT veil.create_policy(%s, 'static')", (name,))
    except psycopg.Error as e:
        raise JobFailed(
            "OPERATION_FAILED",
            f"could not create the job's temporary policy {name} in the source: {server_message(e)} (connect as"
            " the toolkit owner or a superuser)",
        ) from None
    log(f"temporary static policy {name} created in the source")
    try:
        yield name
    finally:
        with _sigint_ignored():
            _drop_policy(url, name, log)


def _drop_policy(url: str, name: str, log: Log) -> None:
    # No veil function drops a policy; its rules go with it (ON DELETE CASCADE).
    # A connection of its own: the job's may be the one that failed.
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("DELETE FROM veil_private.policies WHERE name = %s", (name,))
        log(f"temporary policy {name} dropped")
    except psycopg.Error as e:
        log(f"the temporary policy {name} could not be dropped ({server_message(e)}): drop it by hand")


# -- dictionaries ------------------------------------------------------------------------


def _format(content: str) -> Any:
    """JSON or a Python literal (pg_anon reads the latter; clients send both)."""
    try:
        json.loads(content)
    except ValueError:
        return "py"
    return "json"


def _parsed(field: str, items: Sequence[dict[str, Any]] | None, parse: Any) -> list[Any]:
    parsed = []
    for i, item in enumerate(items or ()):
        source = f"{field}[{i}] ({item.get('name')})"
        try:
            parsed.append(parse(item["content"], source, _format(item["content"])))
        except PgveilError as e:
            raise JobFailed("INVALID_DICT_FILE", str(e)) from None
    return parsed


def _sens_dict(field: str, items: Sequence[dict[str, Any]] | None) -> SensDict:
    """The sensitive dictionaries merged: their lists concatenated, in order (as pg_anon)."""
    found: list[SensDict] = _parsed(field, items, parse_sens_dict)
    return SensDict(tuple(e for d in found for e in d.entries), tuple(x for d in found for x in d.exclude), field)


def _no_sens_dict(field: str, items: Sequence[dict[str, Any]] | None) -> NoSensDict:
    found: list[NoSensDict] = _parsed(field, items, parse_no_sens_dict)
    return NoSensDict(tuple(e for d in found for e in d.entries), field)


def _tables_rules(field: str, items: Sequence[dict[str, Any]] | None) -> list[ObjectRule] | None:
    """None when the field is absent (no selection); else the rules of every dictionary."""
    if not items:
        return None
    return [rule for rules in _parsed(field, items, parse_tables_dict) for rule in rules]


def _matching(tables: Sequence[tuple[str, str]], rules: Sequence[ObjectRule]) -> list[tuple[str, str]]:
    return [(s, t) for s, t in tables if any(r.matches(s, t) for r in rules)]


# -- pg_dump / pg_restore options ----------------------------------------------------------

# The few options of pg_dump and pg_restore that mean something for pgveil's dump and
# restore: (short, long names, takes a value, the field it sets). Anything else is
# refused: pgveil runs the tools itself, and an option passed through could change
# what they write or read (--format, --file, --data-only on the wrong step...).
DUMP_OPTIONS: tuple[tuple[str | None, tuple[str, ...], bool, str], ...] = (
    ("-O", ("--no-owner",), False, "no_owner"),
    ("-x", ("--no-privileges", "--no-acl"), False, "no_privileges"),
    ("-B", ("--no-blobs", "--no-large-objects"), False, "no_large_objects"),
    ("-t", ("--table",), True, "tables"),
    ("-T", ("--exclude-table",), True, "exclude_tables"),
    ("-n", ("--schema",), True, "schemas"),
    ("-N", ("--exclude-schema",), True, "exclude_schemas"),
    ("-j", ("--jobs",), True, "jobs"),
    ("-Z", ("--compress",), True, "compress"),
)
RESTORE_OPTIONS: tuple[tuple[str | None, tuple[str, ...], bool, str], ...] = (
    ("-O", ("--no-owner",), False, "no_owner"),
    ("-x", ("--no-privileges", "--no-acl"), False, "no_privileges"),
    ("-c", ("--clean",), False, "clean"),
    ("-t", ("--table",), True, "tables"),
    ("-j", ("--jobs",), True, "jobs"),
    # What pgveil's restore always does: accepted, nothing to change.
    ("-e", ("--exit-on-error",), False, "-"),
    (None, ("--if-exists",), False, "-"),
    ("-1", ("--single-transaction",), False, "-"),
)


def tool_options(tool: str, text: str | None) -> dict[str, Any]:
    """pg_dump_options / pg_restore_options read into the fields they set; a
    PgveilError names the first option pgveil does not take."""
    spec = DUMP_OPTIONS if tool == "pg_dump" else RESTORE_OPTIONS
    found: dict[str, Any] = {}
    try:
        words = shlex.split(text or "")
    except ValueError as e:
        raise PgveilError(f"{tool}_options: {e}") from None
    supported = ", ".join(" / ".join(([s] if s else []) + list(longs)) for s, longs, _, _ in spec)
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        name, value = word, None
        if word.startswith("--") and "=" in word:
            name, value = word.split("=", 1)
        elif not word.startswith("--") and len(word) > 2 and word.startswith("-"):
            name, value = word[:2], word[2:]
        option = next((o for o in spec if name == o[0] or name in o[1]), None)
        if option is None:
            raise PgveilError(
                f"{tool}_options: {name} is not an option pgveil's {'dump' if tool == 'pg_dump' else 'restore'}"
                f" takes (it runs {tool} itself); supported: {supported}"
            )
        _, _, takes_value, field = option
        if takes_value and value is None:
            if i >= len(words):
                raise PgveilError(f"{tool}_options: {name} needs a value")
            value = words[i]
            i += 1
        if not takes_value and value is not None:
            raise PgveilError(f"{tool}_options: {name} takes no value")
        if field in ("jobs", "compress"):
            low, high = (1, MAX_JOBS) if field == "jobs" else (0, 9)
            if value is None or not value.isdigit() or not low <= int(value) <= high:
                raise PgveilError(f"{tool}_options: {name} takes a number from {low} to {high}")
            found[field] = int(value)
        elif field in ("tables", "exclude_tables", "schemas", "exclude_schemas"):
            found.setdefault(field, []).append(value)
        elif field != "-":
            found[field] = True
    return found


# -- scan --------------------------------------------------------------------------------


def _expression(label: str) -> str:
    """A pgveil label as the rule of a pg_anon sensitive dictionary (its function call or
    value, which map_anon_rule maps back to the same label)."""
    for prefix in ("MASKED WITH FUNCTION ", "MASKED WITH VALUE "):
        if label.startswith(prefix):
            return label[len(prefix) :]
    return label


def scan(params: dict[str, Any], log: Log) -> dict[str, Any]:
    """pg_anon's create-dict: pgveil's scan under a temporary static policy (so that its
    proposals are the rules a stateless dump will apply, checked as such)."""
    request = params["request"]
    connection = request["db_connection_params"]
    _use_password(connection)
    metas: list[MetaDict] = _parsed("meta_dict_contents", request["meta_dict_contents"], parse_meta_dict)
    sens = _sens_dict("sens_dict_contents", request.get("sens_dict_contents"))
    no_sens = _no_sens_dict("no_sens_dict_contents", request.get("no_sens_dict_contents"))
    if request.get("proc_conn_count") is not None:
        log("proc_conn_count is ignored: pgveil's scan reads each table on one connection")
    mode = request.get("type") or "partial"
    options = scan_service.ScanOptions(
        policy=params["policy"],
        mode=mode,
        sample=request.get("depth") or DEFAULT_DEPTH,
        jobs=_jobs(request.get("proc_count"), log, "proc_count"),
        meta_dicts=tuple(metas),
        sens_dict=sens if sens.entries or sens.exclude else None,
        no_sens_dict=no_sens if no_sens.entries else None,
    )
    url = _url(connection)
    with connect(url, autocommit=True) as conn:
        _require_pgveil(conn)
        for meta in metas:
            try:
                meta.check_server_regexes(conn)
            except PgveilError as e:
                raise JobFailed("INVALID_DICT_FILE", str(e)) from None
        with _temporary_policy(conn, url, params["policy"], log):
            log(f"scanning ({mode}{'' if mode == 'full' else f', {options.sample} rows a table'})")
            report = scan_service.scan(conn, options, lambda table, rows, tables: log(f"scanned {table}"), url=url)
    if not report.columns:
        raise JobFailed("NO_OBJECTS_FOR_SCAN", f"database {report.database} has no table column to scan")
    ruled = [c for c in report.sensitive if c.rule]
    log(f"{len(report.columns)} columns: {len(report.sensitive)} sensitive, {len(report.skipped)} tables skipped")
    for c in report.sensitive:
        if not c.rule:
            log(f"{c.qualified} is sensitive but no rule was accepted: it is left out of the dictionary")
    for problem in report.unmapped:
        log(f"a pg_anon rule was not mapped: {problem}")
    return {
        "sens_dict_content": dump_sens_dict((c.schema, c.table, c.column, _expression(c.rule or "")) for c in ruled),
        "no_sens_dict_content": scan_output.no_sens_dictionary(report) if request.get("need_no_sens_dict") else None,
    }


# -- dump --------------------------------------------------------------------------------


def _labels(sens: SensDict) -> list[tuple[str, str]]:
    """(schema.table.column, pgveil label) of every rule; INVALID_DICT_FILE for the first
    that has no pgveil equivalent, before anything is written."""
    labels = []
    for entry in sens.entries:
        where = f"sens_dict_contents: {entry.schema}.{entry.table}"
        if entry.sql_condition is not None:
            raise JobFailed(
                "INVALID_DICT_FILE",
                f"{where}: sql_condition is not supported by pgveil's dump (it dumps whole tables, or subsets closed"
                " under foreign keys: pgveil dump --subset)",
            )
        for column, rule in entry.fields.items():
            # "SQL:" marks a raw expression that pg_anon does not cast; pgveil casts every rule's result.
            mapped = map_anon_rule(rule.removeprefix("SQL:"), column)
            if mapped.label is None:
                raise JobFailed("INVALID_DICT_FILE", f"{where}.{column}: the rule cannot be mapped: {mapped.problem}")
            qualified = ".".join(quote_ident(p) for p in (entry.schema, entry.table, column))
            labels.append((qualified, mapped.label))
    return labels


def _user_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    rows = conn.execute(scan_service.TABLES, scan_service.USER_TABLE_PARAMS).fetchall()
    return [(str(schema), str(name)) for _, schema, name, _ in rows]


def _check_output(output: Path) -> bool:
    """True when ``output`` holds an earlier pgveil dump (replaced, as pg_anon replaces its
    own); anything else there is refused."""
    if not output.exists() or (output.is_dir() and not any(output.iterdir())):
        return False
    if output.is_dir():
        try:
            dump_manifest.read(output)
            return True
        except PgveilError:
            pass
    raise JobFailed(
        "OUTPUT_DIR_NOT_EMPTY",
        f"output_path {output.name} exists and is not a pgveil dump: choose another path (only an earlier"
        " pgveil dump is replaced)",
    )


def _put_in_place(staged: Path, output: Path, replaces: bool, log: Log) -> None:
    """The complete dump (written beside the output) takes the output's place."""
    if replaces:
        aside = output.with_name(f"{staged.name}-replaced")
        output.rename(aside)
        staged.rename(output)
        shutil.rmtree(aside)
        log("the earlier pgveil dump at output_path was replaced")
        return
    if output.is_dir():
        output.rmdir()
    staged.rename(output)


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def dump(params: dict[str, Any], log: Log) -> dict[str, Any]:
    """pg_anon's dump: the sensitive dictionary's rules as a temporary static policy
    (``uncovered`` keep: pg_anon dumps unnamed columns as they are), then pgveil's dump."""
    request = params["request"]
    connection = request["db_connection_params"]
    _use_password(connection)
    output = Path(params["output"])
    policy = params["policy"]
    sens = _sens_dict("sens_dict_contents", request["sens_dict_contents"])
    labels = _labels(sens)
    include = _tables_rules("partial_tables_dict_contents", request.get("partial_tables_dict_contents"))
    exclude = _tables_rules("partial_tables_exclude_dict_contents", request.get("partial_tables_exclude_dict_contents"))
    extra = params["pg_dump"]
    for ignored in ("pg_dump_path", "proc_conn_count"):
        if request.get(ignored) is not None:
            log(f"{ignored} is ignored: pgveil runs the pg_dump on its PATH, one connection per job")
    replaces = _check_output(output)
    kind = request.get("type") or "dump"
    url = _url(connection)
    with connect(url, autocommit=True) as conn:
        _require_pgveil(conn)
        tables = _user_tables(conn)
        chosen = [exact_pattern(s, t) for s, t in _matching(tables, include)] if include is not None else []
        if include is not None and not chosen:
            raise JobFailed("NO_OBJECTS_FOR_DUMP", "partial_tables_dict_contents matches no table of the source")
        left_out = _matching(tables, exclude or []) + [(s, t) for s, t in tables if sens.is_excluded(s, t)]
        privileges = bool(request.get("ignore_privileges"))
        options = dump_service.DumpOptions(
            policy=policy,
            output=output.with_name(f"{output.name}.{policy}"),
            jobs=extra.get("jobs") or _jobs(request.get("proc_count"), log, "proc_count"),
            compress=extra.get("compress"),
            tables=(*chosen, *extra.get("tables", ())),
            exclude_tables=(*sorted({exact_pattern(s, t) for s, t in left_out}), *extra.get("exclude_tables", ())),
            schemas=tuple(extra.get("schemas", ())),
            exclude_schemas=tuple(extra.get("exclude_schemas", ())),
            uncovered="keep",
            no_large_objects=bool(extra.get("no_large_objects")),
            no_owner=privileges or bool(extra.get("no_owner")),
            no_privileges=privileges or bool(extra.get("no_privileges")),
            schema_only=kind == "sync-struct-dump",
            data_only=kind == "sync-data-dump",
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        with _temporary_policy(conn, url, policy, log):
            try:
                with conn.transaction():
                    for qualified, label in labels:
                        conn.execute("SELECT veil.security_label(%s, 'COLUMN', %s, %s)", (policy, qualified, label))
            except psycopg.Error as e:
                raise JobFailed("INVALID_DICT_FILE", f"sens_dict_contents: {server_message(e)}") from None
            log(f"{len(labels)} rules set; dumping ({kind}, {options.jobs} jobs)")
            try:
                result = dump_service.dump(url, options)
            except PgveilError as e:
                raise JobFailed("DUMP_FAILED", str(e).replace(str(output.parent) + "/", "")) from None
    try:
        with _sigint_ignored():
            _put_in_place(result.output, output, replaces, log)
    finally:
        # Only when the job stopped between the dump and its move: never a dump half in place.
        shutil.rmtree(result.output, ignore_errors=True)
    tables_dumped = result.manifest.tables
    log(f"dumped {len(tables_dumped)} tables, {sum(t.rows for t in tables_dumped)} rows")
    return {"size": _tree_size(output)}


# -- restore ------------------------------------------------------------------------------


def _recreate(connection: dict[str, Any], manifest: dump_manifest.Manifest, log: Log) -> None:
    """drop_db: the target made again, empty, with its encoding and locale. The new
    database is created under a scratch name first, and takes the target's name only
    once the target is dropped: a refusal (other sessions, privileges) changes nothing."""
    name = str(connection["db_name"])
    if name in UNDROPPABLE:
        raise JobFailed("RESTORE_FAILED", f"drop_db does not drop database {name}: restore into another database")
    with connect(_url(connection, "postgres"), autocommit=True) as conn:
        version = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
        if version // 10000 < manifest.source_major:
            raise JobFailed(
                "VERSION_INCOMPATIBLE",
                f"the dump comes from PostgreSQL {manifest.source_major} and the target server is PostgreSQL"
                f" {version // 10000}: restoring into an older major version is not supported",
            )
        row = conn.execute(
            "SELECT pg_catalog.pg_encoding_to_char(encoding), datcollate, datctype, datistemplate"
            " FROM pg_catalog.pg_database WHERE datname = %s",
            (name,),
        ).fetchone()
        if row is not None and row[3]:
            raise JobFailed("RESTORE_FAILED", f"drop_db does not drop database {name}: it is a template")
        scratch = f"{name[:40]}_pgveil_{os.getpid()}"
        create = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(scratch))
        if row is not None:
            create += sql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(*map(sql.Literal, row[:3]))
        try:
            conn.execute(create)
        except psycopg.Error as e:
            raise JobFailed("RESTORE_FAILED", f"drop_db: could not create a database ({server_message(e)})") from None
        try:
            if row is not None:
                conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(scratch), sql.Identifier(name))
            )
        except psycopg.Error as e:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(scratch)))
            raise JobFailed(
                "RESTORE_FAILED",
                f"drop_db: could not drop database {name} ({server_message(e)}); it was left as it was",
            ) from None
    log(f"database {name} dropped and created again, empty")


def restore(params: dict[str, Any], log: Log) -> dict[str, Any]:
    """pg_anon's restore: pgveil's restore of a pgveil directory dump under the dumps directory."""
    request = params["request"]
    connection = request["db_connection_params"]
    _use_password(connection)
    source = Path(params["input"])
    shown = request["input_path"]
    if not source.exists():
        raise JobFailed("INPUT_DIR_NOT_FOUND", f"input_path {shown}: no such dump")
    if not source.is_dir():
        raise JobFailed("INVALID_FILE_FORMAT", f"input_path {shown} is not a directory: a pgveil directory dump is")
    try:
        archive = restore_service.open_archive(source)
    except PgveilError as e:
        raise JobFailed("INVALID_FILE_FORMAT", str(e).replace(str(source), f"input_path {shown}")) from None
    assert archive.toc is not None
    in_archive = sorted({(str(e.namespace), str(e.tag)) for e in archive.toc.entries if e.desc == "TABLE"})
    include = _tables_rules("partial_tables_dict_contents", request.get("partial_tables_dict_contents"))
    exclude = _tables_rules("partial_tables_exclude_dict_contents", request.get("partial_tables_exclude_dict_contents"))
    chosen = _matching(in_archive, include) if include is not None else []
    if include is not None and not chosen:
        raise JobFailed("NO_OBJECTS_FOR_DUMP", "partial_tables_dict_contents matches no table of the dump")
    extra = params["pg_restore"]
    for ignored in ("pg_restore_path", "proc_count"):
        if request.get(ignored) is not None:
            log(f"{ignored} is ignored: pgveil runs the pg_restore on its PATH; proc_conn_count sets its jobs")
    if request.get("drop_custom_check_constr"):
        log("drop_custom_check_constr is ignored: CHECK constraints are restored as dumped")
    mode = RESTORE_MODES[request.get("type") or "restore"]
    drop = bool(request.get("drop_db"))
    privileges = bool(request.get("ignore_privileges"))
    options = restore_service.RestoreOptions(
        mode=mode,
        tables=tuple(f"{quote_ident(s)}.{quote_ident(t)}" for s, t in chosen) + tuple(extra.get("tables", ())),
        exclude_tables=tuple(f"{quote_ident(s)}.{quote_ident(t)}" for s, t in _matching(in_archive, exclude or [])),
        jobs=extra.get("jobs") or _jobs(request.get("proc_conn_count"), log, "proc_conn_count"),
        clean=bool(request.get("clean_db")) or bool(extra.get("clean")),
        no_owner=privileges or bool(extra.get("no_owner")),
        no_privileges=privileges or bool(extra.get("no_privileges")),
    )
    if drop and options.clean:
        raise JobFailed("RESTORE_FAILED", "Only one of `clean_db` or `drop_db` can be set.")
    if drop and mode == "data":
        raise JobFailed(
            "RESTORE_FAILED",
            "drop_db with sync-data-restore would leave an empty database without the tables the data goes into",
        )
    try:
        restore_service.check_options(options)
    except PgveilError as e:
        raise JobFailed("RESTORE_FAILED", str(e)) from None
    url = _url(connection)
    if drop:
        _recreate(connection, archive.manifest, log)
    else:
        with connect(url, autocommit=True) as conn:
            if mode != "data" and not options.clean:
                counts = restore_service.contents(conn)
                if any(counts.values()):
                    held = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
                    raise JobFailed(
                        "DB_NOT_EMPTY",
                        f"database {conn.info.dbname} is not empty (it holds {held}): set clean_db or drop_db, or"
                        " restore into an empty database",
                    )
    try:
        result = restore_service.restore(source, url, options, log)
    except PgveilError as e:
        raise JobFailed("RESTORE_FAILED", str(e).replace(str(source), f"input_path {shown}")) from None
    for t in result.tables:
        log(f"{t.schema}.{t.table}: {t.restored} rows restored, {t.expected} in the dump")
    if not result.ok:
        names = ", ".join(f"{t.schema}.{t.table}" for t in result.mismatches)
        raise JobFailed("ROW_COUNT_MISMATCH", f"row counts differ from the dump's manifest: {names}")
    return {}
