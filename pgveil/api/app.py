"""The API application: its state (settings, the operations store, the job runner),
the operations endpoints, and the endpoint groups of the jobs.

- ``/api/stateless/*``: pg_anon 1.9's stateless API, same paths, fields and
  webhooks (pgveil/api/pg_anon_sync.py, pg_anon_jobs.py);
- ``/api/anonymize``, ``/api/sync``, ``/api/verify``, ``/api/audit``,
  ``/api/status``: pgveil's own jobs in the same style (pgveil/api/pgveil_jobs.py);
- ``/api/operations``: every operation the service ran (list, get, logs, cancel,
  delete), and pg_anon's ``/operation`` endpoints over the same records.
"""

from __future__ import annotations

import datetime
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

import pgveil
from pgveil.api import pg_anon_jobs, pg_anon_sync, pgveil_jobs
from pgveil.api.context import runner_of, settings_of, store_of
from pgveil.api.models import COMMON_RESPONSES, ApiError, Detail, api_error_response, invalid
from pgveil.api.runner import NotCancellable, Runner
from pgveil.api.security import REDACTED, SECRET_FIELDS, check_token, confine, redacted
from pgveil.api.settings import ApiSettings
from pgveil.api.store import FINISHED, STATUSES, Operation, Store
from pgveil.api.webhooks import pg_anon_time


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.dumps_dir.mkdir(parents=True, exist_ok=True)
        store = Store(settings.state_dir)
        store.fail_interrupted()
        runner = Runner(store, settings)
        app.state.store, app.state.runner = store, runner
        try:
            yield
        finally:
            runner.shutdown()
            store.close()

    app = FastAPI(
        title="pgveil API",
        version=pgveil.__version__,
        description="pgveil's jobs over HTTP: pg_anon 1.9's stateless API, pgveil's own jobs, and their operations.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_exception_handler(ApiError, lambda _request, exc: api_error_response(exc))
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    guarded = [Depends(check_token)]
    for router in (pg_anon_sync.router, pg_anon_jobs.router, pgveil_jobs.router):
        app.include_router(router, dependencies=guarded, responses=COMMON_RESPONSES)
    for router in (operations, pg_anon_operations):
        app.include_router(router, dependencies=guarded, responses=OPERATION_RESPONSES)
    return app


OPERATION_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Detail, "description": "No valid bearer token"},
    404: {"model": Detail, "description": "No such operation"},
    409: {"model": Detail, "description": "The operation is running, or has ended"},
}


def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body, with the inputs it repeats stripped of their secrets: a
    request missing a field would otherwise get its password back."""
    errors = []
    for error in jsonable_encoder(exc.errors()):
        if "input" in error:
            secret = any(part in SECRET_FIELDS for part in error.get("loc", ()))
            error["input"] = REDACTED if secret else redacted(error["input"])
        errors.append(error)
    return JSONResponse({"detail": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def _found(request: Request, internal: str) -> Operation:
    operation = store_of(request).get(internal)
    if operation is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no operation {internal}")
    return operation


def _delete(request: Request, operation: Operation) -> None:
    """Remove an operation's files and its record; refused while it runs or waits."""
    if operation.status not in FINISHED or runner_of(request).is_active(operation.id):
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"operation {operation.id} is {operation.status}: cancel it first"
        )
    root = settings_of(request).dumps_dir
    for name in operation.files:
        path = confine(root, name)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    store_of(request).delete(operation.id)


# -- pgveil's operations endpoints -----------------------------------------------------

operations = APIRouter(prefix="/api/operations", tags=["Operations"])


@operations.get("")
def list_operations(
    request: Request,
    kind: str | None = None,
    status_: Annotated[str | None, Query(alias="status", pattern="^(" + "|".join(STATUSES) + ")$")] = None,
    operation_id: str | None = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Operations, newest first, filtered by kind, status and the caller's operation id."""
    found, total = store_of(request).find(
        kind=kind, status=status_, operation_id=operation_id, offset=offset, limit=limit
    )
    return {"total": total, "offset": offset, "limit": limit, "operations": [o.as_dict() for o in found]}


@operations.get("/{internal_operation_id}")
def get_operation(request: Request, internal_operation_id: str) -> dict[str, Any]:
    operation = _found(request, internal_operation_id)
    return {**operation.as_dict(), "webhook_attempts": store_of(request).webhook_attempts(operation.id)}


@operations.get("/{internal_operation_id}/logs")
def operation_logs(request: Request, internal_operation_id: str) -> list[dict[str, Any]]:
    return store_of(request).logs(_found(request, internal_operation_id).id)


@operations.post("/{internal_operation_id}/cancel")
def cancel_operation(request: Request, internal_operation_id: str) -> dict[str, Any]:
    """Stop a queued or running operation (a running job gets SIGINT, as Ctrl-C)."""
    operation = _found(request, internal_operation_id)
    try:
        return runner_of(request).cancel(operation.id).as_dict()
    except NotCancellable:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"operation {operation.id} has ended ({operation.status})"
        ) from None


@operations.delete("/{internal_operation_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_operation(request: Request, internal_operation_id: str) -> Response:
    """Remove a finished operation and the files it wrote."""
    _delete(request, _found(request, internal_operation_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- pg_anon's operation endpoints, over the same records ---------------------------------

pg_anon_operations = APIRouter(prefix="/operation", tags=["pg_anon operations"])


@pg_anon_operations.get("")
def pg_anon_list(
    request: Request, date_after: datetime.date | None = None, date_before: datetime.date | None = None
) -> list[str]:
    """The operations' ids, created between the two dates (inclusive)."""
    if date_after and date_before and date_after > date_before:
        raise invalid(("query", "date_after"), "`date_after` must be less than or equal to `date_before`")
    found, _ = store_of(request).find(limit=10_000)
    return [
        o.id
        for o in found
        if (date_after is None or o.created[:10] >= date_after.isoformat())
        and (date_before is None or o.created[:10] <= date_before.isoformat())
    ]


@pg_anon_operations.get("/{internal_operation_id}")
def pg_anon_get(request: Request, internal_operation_id: str) -> dict[str, Any]:
    operation = _found(request, internal_operation_id)
    status_id = {"success": 2, "error": 3, "cancelled": 3}.get(operation.status, 4)
    return {
        "run_status": {
            "status_id": status_id,
            "status": {2: "success", 3: "error", 4: "in_progress"}[status_id],
            "started": pg_anon_time(operation.started),
            "ended": pg_anon_time(operation.ended),
        },
        "run_options": operation.request,
        "dictionaries": None,
        "extra_data": {"dump_size": operation.result["size"]}
        if operation.result and "size" in operation.result
        else None,
    }


@pg_anon_operations.delete("/{internal_operation_id}", status_code=status.HTTP_204_NO_CONTENT)
def pg_anon_delete(request: Request, internal_operation_id: str) -> Response:
    _delete(request, _found(request, internal_operation_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@pg_anon_operations.get("/{internal_operation_id}/logs")
def pg_anon_logs(
    request: Request, internal_operation_id: str, tail_lines: Annotated[int, Query(gt=0)] = 1000
) -> list[str]:
    lines = store_of(request).logs(_found(request, internal_operation_id).id)
    return [f"{line['at']} {line['message']}" for line in lines[-tail_lines:]]
