"""pgveil's own jobs over HTTP, in the style of pg_anon's stateless API: the same
connection fields (``db_connection_params``), the same webhook fields and
payloads, the same ``{error_code, message}`` refusals.

- ``POST /api/sync``, ``/api/verify``, ``/api/anonymize`` are long: they answer
  202 Accepted with the operation's ids at once, run in the runner (a queue per
  kind beyond its limit), and report ``in_progress`` then ``success`` or
  ``error`` to ``webhook_status_url``. Unlike pg_anon's, the webhook is optional:
  ``GET /api/operations/{internal_operation_id}`` tells the same, and a 202 with
  the id (pg_anon answers 201 and ``null``, which its clients expect of its own
  paths only) is what lets a caller poll or cancel.
- ``POST /api/audit`` and ``/api/status`` read a few catalogs: they answer at
  once, 200 with pg_anon's ``{"status_id": 2, "status": "success", "content"}``.

Request checks that need no database (a confirmation, options that exclude each
other, a subset that does not parse) are 422s before anything is queued; a path
outside the dumps directory is pg_anon's 400 INVALID_PATH.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import psycopg
from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from pgveil import preflight
from pgveil.api import pgveil_job_functions as jobs
from pgveil.api.context import dumps_path, runner_of
from pgveil.api.models import ApiError, DbConnectionParams, WebhookFields, invalid, success
from pgveil.api.runner import JobSpec
from pgveil.api.security import scrub, secrets_of
from pgveil.api.store import Operation
from pgveil.api.webhooks import Webhook
from pgveil.errors import PgveilError, server_message
from pgveil.services import audit as audit_service
from pgveil.services import masking
from pgveil.services import sync as sync_service

router = APIRouter(prefix="/api", tags=["pgveil jobs"])

Uncovered = Literal["refuse", "keep", "null"]


class JobFields(BaseModel):
    """pg_anon's fields of an operation that reports by webhook, all optional here:
    without ``webhook_status_url`` the operation is followed at /api/operations;
    without ``operation_id`` its internal id stands for it."""

    model_config = ConfigDict(extra="ignore")

    operation_id: str | None = Field(default=None, min_length=1)
    webhook_status_url: str | None = Field(default=None, pattern=r"^https?://")
    webhook_metadata: Any = None
    webhook_extra_headers: dict[str, str] | None = None
    webhook_verify_ssl: bool = True

    def webhook(self) -> Webhook | None:
        if self.webhook_status_url is None:
            return None
        # pg_anon's delivery (headers lower-cased, JSON), as the core builds it.
        return WebhookFields.model_construct(**self.model_dump(include=set(WebhookFields.model_fields))).webhook()


class SyncRequest(JobFields):
    db_connection_params: DbConnectionParams = Field(description="The source database (only read).")
    target_connection_params: DbConnectionParams = Field(description="The database written to.")
    policy: str = Field(min_length=1)
    jobs: int = Field(default=1, ge=1, le=64, description="Units copied at once (one snapshot).")
    tables: list[str] = []
    exclude_tables: list[str] = []
    schemas: list[str] = []
    exclude_schemas: list[str] = []
    schema_only: bool = False
    data_only: bool = False
    truncate: bool = False
    clean: bool = False
    resume: bool = False
    uncovered: Uncovered | None = None
    no_large_objects: bool = False
    no_owner: bool = False
    no_privileges: bool = False
    subset: list[str] = Field(default=[], description='Seeds, "<schema>.<table>: <condition>".')
    subset_percent: list[str] = Field(default=[], description='Samples, "<schema>.<table>=<percent>".')
    subset_direction: Literal["up", "down", "both"] = "down"
    virtual_fk: list[str] = Field(default=[], description='"<table>(<columns>) -> <table>(<columns>)".')


class VerifyRequest(JobFields):
    db_connection_params: DbConnectionParams = Field(description="The source database (only read).")
    target_connection_params: DbConnectionParams | None = Field(default=None, description="A copy to verify.")
    archive_path: str | None = Field(default=None, description="A directory dump, relative to the dumps directory.")
    policy: str | None = None
    uncovered: Uncovered | None = None
    min_length: int = Field(default=4, ge=1)
    text_min_length: int = Field(default=8, ge=1)
    max_words: int = Field(default=3, ge=1)
    work_mem: str = Field(default="256MB", pattern=r"^[0-9]+ ?(kB|MB|GB)?$")
    pattern_rows: int = Field(default=10_000, ge=0)
    role: str | None = Field(default=None, min_length=1, description="Verify what this role can reach instead.")
    role_connection_params: DbConnectionParams | None = Field(
        default=None, description="How the role logs in (its user_login is the role when role is left out)."
    )


class AnonymizeRequest(JobFields):
    db_connection_params: DbConnectionParams = Field(description="The database rewritten in place.")
    policy: str | None = Field(default=None, min_length=1, description="Default: the database's only static policy.")
    tables: list[str] = Field(default=[], description="Default: every table.")
    uncovered: Uncovered | None = None
    dry_run: bool = False
    confirm: str | None = Field(
        default=None, description="The database's name (db_name): the rewrite is irreversible. Not for a dry run."
    )


class DatabaseRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    db_connection_params: DbConnectionParams


class AuditRequest(DatabaseRequest):
    policies: list[str] | None = Field(default=None, description="Default: every policy.")


def _submit(
    request: Request, response: Response, body: JobFields, kind: str, function: Callable[..., Any],
    params: dict[str, Any], result_keys: tuple[str, ...],
) -> dict[str, Any]:  # fmt: skip
    operation: Operation = runner_of(request).submit(
        JobSpec(
            kind=kind,
            function=f"{function.__module__}:{function.__name__}",
            request=body.model_dump(),
            params=params,
            operation_id=body.operation_id,
            webhook=body.webhook(),
            result_keys=result_keys,
        )
    )
    response.headers["Location"] = f"/api/operations/{operation.id}"
    return {"internal_operation_id": operation.id, "operation_id": operation.operation_id, "status": operation.status}


ACCEPTED = status.HTTP_202_ACCEPTED


@router.post("/sync", status_code=ACCEPTED)
def sync(request: Request, response: Response, body: SyncRequest) -> dict[str, Any]:
    """Copy a database into another with a policy's rules applied (``pgveil sync``).
    Cancelled, it keeps the units it finished: ``resume`` continues it."""
    fields = body.model_dump(exclude={"db_connection_params", "target_connection_params"})
    try:
        sync_service.check_options(jobs.sync_options(fields))
    except PgveilError as e:
        raise invalid(("body",), str(e)) from None
    params = {
        "source": body.db_connection_params.url(),
        "target": body.target_connection_params.url(),
        "options": fields,
    }
    return _submit(request, response, body, "sync", jobs.sync_job, params, jobs.SYNC_KEYS)


@router.post("/verify", status_code=ACCEPTED)
def verify(request: Request, response: Response, body: VerifyRequest) -> dict[str, Any]:
    """Show that a copy or a dump holds none of the source's values and is whole, or
    that a role cannot reach raw data (``pgveil verify``). The job succeeds when it
    could verify; ``result`` says ``pass`` or ``fail``."""
    if body.role is not None or body.role_connection_params is not None:
        if body.target_connection_params is not None or body.archive_path is not None:
            raise invalid(
                ("body", "role"),
                "a role is verified in the source database: no target_connection_params or archive_path",
            )
        if body.role_connection_params is None:
            raise invalid(("body", "role_connection_params"), "how the role logs in is required to verify a role")
        role_params = {
            "admin": body.db_connection_params.url(),
            "role": body.role or body.role_connection_params.user_login,
            "role_url": body.role_connection_params.url(),
        }
        return _submit(request, response, body, "verify", jobs.verify_role_job, role_params, jobs.VERIFY_ROLE_KEYS)
    if (body.target_connection_params is None) == (body.archive_path is None):
        raise invalid(
            ("body", "target_connection_params"), "verify one copy: give target_connection_params or archive_path"
        )
    archive = None
    if body.archive_path is not None:
        archive = dumps_path(request, body.archive_path)
        if not archive.is_dir():
            raise ApiError("INPUT_DIR_NOT_FOUND", f"no dump {body.archive_path} in the dumps directory")
    params = {
        **body.model_dump(exclude={"db_connection_params", "target_connection_params", "role_connection_params"}),
        "source": body.db_connection_params.url(),
        "target": body.target_connection_params.url() if body.target_connection_params else None,
        "archive": str(archive) if archive is not None else None,
    }
    return _submit(request, response, body, "verify", jobs.verify_job, params, jobs.VERIFY_KEYS)


@router.post("/anonymize", status_code=ACCEPTED)
def anonymize(request: Request, response: Response, body: AnonymizeRequest) -> dict[str, Any]:
    """Rewrite tables in place under a static policy, irreversibly (``pgveil
    anonymize``): ``confirm`` must be the database's name. ``dry_run`` plans only."""
    name = body.db_connection_params.db_name
    if not body.dry_run and body.confirm != name:
        raise invalid(
            ("body", "confirm"),
            f"anonymize rewrites the rows of database {name!r} irreversibly: set confirm to {name!r} to go on"
            " (or dry_run to see the plan)",
        )
    params = {
        "database": body.db_connection_params.url(),
        "policy": body.policy,
        "tables": body.tables,
        "uncovered": body.uncovered,
        "dry_run": body.dry_run,
    }
    return _submit(request, response, body, "anonymize", jobs.anonymize_job, params, jobs.ANONYMIZE_KEYS)


@contextmanager
def _database(body: DatabaseRequest) -> Iterator[psycopg.Connection[Any]]:
    """A synchronous endpoint's connection; failures as pg_anon's 400s, with no
    secret of the request in their message."""
    secrets = secrets_of(body.model_dump())
    try:
        conn = preflight.connect(body.db_connection_params.url())
    except PgveilError as e:
        raise ApiError("DB_CONNECTION_FAILED", scrub(str(e), secrets)) from None
    try:
        with conn:
            yield conn
    except PgveilError as e:
        raise ApiError("OPERATION_FAILED", scrub(str(e), secrets)) from None
    except psycopg.Error as e:
        raise ApiError("DB_QUERY_FAILED", scrub(server_message(e), secrets)) from None


def _json(data: dict[str, Any]) -> Any:
    # As the CLI's --json prints it: values JSON lacks (timestamps) as text.
    return json.loads(json.dumps(data, default=str))


@router.post("/audit")
def audit(body: AuditRequest) -> dict[str, Any]:
    """Everything that should stop a deployment (``pgveil audit``): coverage,
    masking, streams needing a backfill. ``content.ok`` is false when there are
    problems."""
    with _database(body) as conn:
        report = audit_service.audit(conn, body.policies)
    return success(_json(report.as_dict()))


@router.post("/status")
def status_(body: DatabaseRequest) -> dict[str, Any]:
    """Policies, masked roles and tables, streams, and problems (``pgveil status``)."""
    with _database(body) as conn:
        report = masking.status(conn)
    return success(_json(report.as_dict()))
