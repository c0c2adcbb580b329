"""pgveil's own jobs as the API runs them: each in a child process (see runner.py),
given plain data (the connections as libpq strings, the options as JSON values),
calling the service as the CLI command does, and returning the result the
operation keeps and its success webhook carries. No value of the databases and
no secret goes into a log line or a result.

Kept apart from the endpoints (pgveil_jobs.py) so that a child imports the
services it runs, not the web framework.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pgveil import preflight
from pgveil.api.runner import JobFailed, Log, connect
from pgveil.services import static, subset, verify, verify_role
from pgveil.services import sync as sync_service
from pgveil.services.verify_leaks import LeakOptions

# The keys of each kind's result: every webhook carries them (null until success).
SYNC_KEYS = ("policy", "ok", "seconds", "tables", "rows", "units", "snapshot_at", "checks", "left_out")
ANONYMIZE_KEYS = ("policy", "dry_run", "tables", "tables_rewritten", "rows", "planned")
VERIFY_KEYS = (
    "mode", "result", "pgveil_verify", "pgveil_version", "checked_at", "source", "searched", "policy",
    "rules_hash", "uncovered", "leak_scan", "checks", "timings",
)  # fmt: skip
VERIFY_ROLE_KEYS = ("mode", "result", "role", "kind", "routes", "planted", "not_planted", "leaked")


def sync_options(fields: Mapping[str, Any]) -> sync_service.SyncOptions:
    """The sync's options from a request's fields (the CLI's options, by their names
    with underscores); a subset that does not parse raises PgveilError."""
    return sync_service.SyncOptions(
        policy=fields["policy"],
        jobs=fields["jobs"],
        tables=tuple(fields["tables"]),
        exclude_tables=tuple(fields["exclude_tables"]),
        schemas=tuple(fields["schemas"]),
        exclude_schemas=tuple(fields["exclude_schemas"]),
        schema_only=fields["schema_only"],
        data_only=fields["data_only"],
        truncate=fields["truncate"],
        clean=fields["clean"],
        resume=fields["resume"],
        uncovered=fields["uncovered"],
        no_large_objects=fields["no_large_objects"],
        no_owner=fields["no_owner"],
        no_privileges=fields["no_privileges"],
        subset=subset.Subset(
            tuple(subset.parse_condition(c) for c in fields["subset"]),
            tuple(subset.parse_percent(p) for p in fields["subset_percent"]),
            fields["subset_direction"],
            tuple(subset.parse_virtual_key(k) for k in fields["virtual_fk"]),
        ),
    )


def reachable(url: str) -> None:
    """Each database is reached first, so a login that fails is DB_CONNECTION_FAILED."""
    connect(url).close()


def sync_job(params: dict[str, Any], log: Log) -> dict[str, Any]:
    """POST /api/sync: ``source``, ``target`` (libpq strings), ``options`` (the
    request's fields). A count or constraint that does not check out fails the job,
    as it makes the CLI exit 1."""
    reachable(params["source"])
    reachable(params["target"])
    options = sync_options(params["options"])

    def progress(p: sync_service.Progress) -> None:
        if p.phase and p.units is not None:
            log(f"{p.phase}: {p.units} units, {p.units_done_before or 0} done before")
        elif p.phase:
            log(p.phase)
        elif p.unit_done:
            log(f"unit done: {p.table}")

    result = sync_service.sync(params["source"], params["target"], options, progress)
    summary = result.as_dict()
    if result.count_mismatches:
        raise JobFailed(
            "ROW_COUNT_MISMATCH",
            "rows in the target differ from the rows sent: " + ", ".join(summary["checks"]["count_mismatches"]),
        )
    if result.invalid_constraints:
        raise JobFailed(
            "VALIDATION_FAILED", "constraints not valid in the target: " + ", ".join(result.invalid_constraints)
        )
    log(f"synced {len(result.tables)} tables, {result.rows} rows in {result.units} units")
    return summary


def anonymize_job(params: dict[str, Any], log: Log) -> dict[str, Any]:
    """POST /api/anonymize: ``database`` (a libpq string), ``policy`` (None: the
    database's only static policy), ``tables``, ``uncovered``, ``dry_run``."""
    reachable(params["database"])
    tables = params["tables"]
    with preflight.connect(params["database"], autocommit=True) as conn:
        policy = params["policy"] or static.default_policy(conn)
        if params["dry_run"]:
            planned = static.plan(conn, policy, tables, params["uncovered"])
            log(f"planned {len(planned)} tables under policy {policy}; nothing changed")
            return {"policy": policy, "dry_run": True, "planned": [p.as_dict() for p in planned]}

        def unit_done(unit: list[static.AnonymizedTable]) -> None:
            for t in unit:
                log(f"{t.table}: {t.rows} rows rewritten" if t.rewritten else f"{t.table}: nothing to change")

        done = static.anonymize(conn, policy, tables, params["uncovered"], unit_done)
    rewritten = [t for t in done if t.rewritten]
    return {
        "policy": policy,
        "dry_run": False,
        "tables": [t.as_dict() for t in done],
        "tables_rewritten": len(rewritten),
        "rows": sum(t.rows for t in rewritten),
    }


def verify_job(params: dict[str, Any], log: Log) -> dict[str, Any]:
    """POST /api/verify of a copy: ``source``, and ``target`` (a libpq string) or
    ``archive`` (an absolute path inside the dumps directory, ``archive_path`` as the
    request named it); the policy, ``uncovered`` and the leak options. A report
    that fails is the job's result, not its failure."""
    reachable(params["source"])
    if params["target"] is not None:
        reachable(params["target"])
    options = verify.VerifyOptions(
        source=params["source"],
        target=params["target"],
        archive=Path(params["archive"]) if params["archive"] is not None else None,
        policy=params["policy"],
        uncovered=params["uncovered"],
        leaks=LeakOptions(
            min_length=params["min_length"],
            text_min_length=params["text_min_length"],
            max_tokens=params["max_words"],
            work_mem=params["work_mem"],
        ),
        pattern_rows=params["pattern_rows"],
    )
    report = verify.verify(options).as_dict()
    if params["archive"] is not None:
        # The dump as the caller named it, not where the service keeps it.
        report["searched"] = f"archive {params['archive_path']}"
    log(
        f"{report['result']}: {len(report['leak_scan']['leaks'])} leaks,"
        f" {sum(1 for c in report['checks'] if c['status'] == 'fail')} failed checks"
    )
    return {"mode": "copy", **report}


def verify_role_job(params: dict[str, Any], log: Log) -> dict[str, Any]:
    """POST /api/verify of a role: ``admin`` and ``role_url`` (libpq strings), ``role``."""
    reachable(params["admin"])
    report = verify_role.verify_role(params["admin"], params["role"], params["role_url"])
    leaked = [r for r in report.routes if r.outcome == verify_role.LEAKED]
    log(f"{len(leaked)} of {len(report.routes)} routes reached raw data")
    return {
        "mode": "role",
        "result": "fail" if report.leaked else "pass",
        **dataclasses.asdict(report),
        "leaked": report.leaked,
    }
