"""pg_anon 1.9's asynchronous stateless endpoints: scan, dump and restore.

Each validates its request (pg_anon's fields, unknown ones ignored; 422 as FastAPI
gives it, 400 INVALID_PATH for a path that leaves the dumps directory, 400
INVALID_CONFIG for a pg_dump/pg_restore option pgveil does not take), submits a job
to the runner, and answers 201 with ``null``; the runner sends the webhooks (in
progress, then success or error). The jobs run pgveil's services in a child process
(pgveil/api/pg_anon_job_functions.py).
"""

from __future__ import annotations

import datetime
import secrets
from enum import StrEnum
from typing import Any

from fastapi import APIRouter, Request, status
from pydantic import Field, model_validator

from pgveil.api.context import dumps_path, runner_of
from pgveil.api.models import ApiError, DbConnectionParams, DictionaryContent, WebhookFields
from pgveil.api.pg_anon_job_functions import tool_options
from pgveil.api.runner import JobSpec
from pgveil.errors import PgveilError

router = APIRouter(prefix="/api/stateless", tags=["Stateless"])

FUNCTIONS = "pgveil.api.pg_anon_job_functions"


class ScanType(StrEnum):
    full = "full"
    partial = "partial"


class DumpType(StrEnum):
    dump = "dump"
    sync_struct_dump = "sync-struct-dump"
    sync_data_dump = "sync-data-dump"


class RestoreType(StrEnum):
    restore = "restore"
    sync_struct_restore = "sync-struct-restore"
    sync_data_restore = "sync-data-restore"


class ScanRequest(WebhookFields):
    db_connection_params: DbConnectionParams
    type: ScanType = ScanType.partial
    depth: int | None = Field(default=None, ge=0)
    meta_dict_contents: list[DictionaryContent]
    sens_dict_contents: list[DictionaryContent] | None = None
    no_sens_dict_contents: list[DictionaryContent] | None = None
    need_no_sens_dict: bool = False
    proc_count: int | None = None
    proc_conn_count: int | None = None
    save_dicts: bool = False


class DumpRequest(WebhookFields):
    db_connection_params: DbConnectionParams
    type: DumpType = DumpType.dump
    sens_dict_contents: list[DictionaryContent]
    partial_tables_dict_contents: list[DictionaryContent] | None = None
    partial_tables_exclude_dict_contents: list[DictionaryContent] | None = None
    output_path: str | None = None
    pg_dump_path: str | None = None
    pg_dump_options: str | None = None
    ignore_privileges: bool = False
    proc_count: int | None = None
    proc_conn_count: int | None = None
    save_dicts: bool = False


class RestoreRequest(WebhookFields):
    db_connection_params: DbConnectionParams
    type: RestoreType = RestoreType.restore
    input_path: str
    partial_tables_dict_contents: list[DictionaryContent] | None = None
    partial_tables_exclude_dict_contents: list[DictionaryContent] | None = None
    pg_restore_path: str | None = None
    pg_restore_options: str | None = None
    drop_custom_check_constr: bool = False
    clean_db: bool = False
    drop_db: bool = False
    ignore_privileges: bool = False
    proc_conn_count: int | None = None
    proc_count: int | None = None
    save_dicts: bool = False

    @model_validator(mode="after")
    def _one_of_clean_and_drop(self) -> RestoreRequest:
        if self.clean_db and self.drop_db:
            raise ValueError("Only one of `clean_db` or `drop_db` can be set.")
        return self


def _policy_name() -> str:
    """The job's temporary policy in the source (a policy name is a lower-case identifier)."""
    return f"pgveil_api_{secrets.token_hex(8)}"


def _options(tool: str, text: str | None) -> dict[str, Any]:
    try:
        return tool_options(tool, text)
    except PgveilError as e:
        raise ApiError("INVALID_CONFIG", str(e)) from None


@router.post("/scan", status_code=status.HTTP_201_CREATED)
def scan(body: ScanRequest, request: Request) -> None:
    """pg_anon's create-dict: pgveil's scan; the success webhook carries the sensitive
    (and, when asked, the non-sensitive) dictionary."""
    data = body.model_dump(mode="json")
    runner_of(request).submit(
        JobSpec(
            kind="scan",
            function=f"{FUNCTIONS}:scan",
            request=data,
            params={"request": data, "policy": _policy_name()},
            operation_id=body.operation_id,
            webhook=body.webhook(),
            result_keys=("sens_dict_content", "no_sens_dict_content"),
        )
    )


@router.post("/dump", status_code=status.HTTP_201_CREATED)
def dump(body: DumpRequest, request: Request) -> None:
    """A pgveil dump (pg_dump's directory format) under the sensitive dictionary's rules;
    the success webhook carries its size."""
    data = body.model_dump(mode="json")
    if body.output_path is None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        data["output_path"] = f"pgveil-dump-{stamp}-{secrets.token_hex(4)}"
    output = dumps_path(request, data["output_path"])
    extra = _options("pg_dump", body.pg_dump_options)
    runner_of(request).submit(
        JobSpec(
            kind="dump",
            function=f"{FUNCTIONS}:dump",
            request=data,
            params={"request": data, "policy": _policy_name(), "output": str(output), "pg_dump": extra},
            operation_id=body.operation_id,
            webhook=body.webhook(),
            files=[str(output)],
            result_keys=("size",),
        )
    )


@router.post("/restore", status_code=status.HTTP_201_CREATED)
def restore(body: RestoreRequest, request: Request) -> None:
    """A pgveil dump of the dumps directory restored into the target database."""
    data = body.model_dump(mode="json")
    source = dumps_path(request, body.input_path)
    extra = _options("pg_restore", body.pg_restore_options)
    runner_of(request).submit(
        JobSpec(
            kind="restore",
            function=f"{FUNCTIONS}:restore",
            request=data,
            params={"request": data, "input": str(source), "pg_restore": extra},
            operation_id=body.operation_id,
            webhook=body.webhook(),
        )
    )
