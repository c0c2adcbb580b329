"""Running the API's jobs: each in a child process, a few of a kind at once.

A job is a function of the services' callers, ``module:function(params, log) ->
result``, run in a child process (pgveil/api/child.py): its parameters (database
passwords among them) reach it through a pipe, never a file or its command line; it can be
cancelled with SIGINT, which the services answer as they answer Ctrl-C (a dump
removes its partial output, a sync keeps its finished units), and killed if it
does not stop; and nothing it does can take the service down. Jobs of a kind
beyond the kind's limit wait in a queue, in the order they came.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgveil import preflight
from pgveil.api.security import redacted, scrub, secrets_of
from pgveil.api.settings import ApiSettings
from pgveil.api.store import CANCELLED, ERROR, IN_PROGRESS, QUEUED, SUCCESS, Operation, Store
from pgveil.api.webhooks import Delivery, Webhook, payload
from pgveil.errors import PgveilError

# What a job may call to say how it is doing: one line, no data value.
Log = Callable[[str], None]

# The child's interpreter: the service's own, so it has the same pgveil.
CHILD = [sys.executable, "-m", "pgveil.api.child"]


@dataclass
class JobSpec:
    kind: str
    # "module:function", called in the child as function(params, log) -> dict.
    function: str
    # The request as validated, JSON data (secrets included): given to the child, recorded redacted.
    request: dict[str, Any]
    # What the function is called with (by default the request).
    params: dict[str, Any] | None = None
    operation_id: str | None = None
    webhook: Webhook | None = None
    # Files the job writes (absolute, inside the dumps directory): removed with the operation.
    files: list[str] = field(default_factory=list)
    # The result's keys its webhooks always carry (null until success), as pg_anon's do.
    result_keys: tuple[str, ...] = ()


class NotCancellable(Exception):
    pass


class JobFailed(PgveilError):
    """A job's failure with a machine-readable code (pg_anon's error_code)."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A job's connection; one that fails is pg_anon's DB_CONNECTION_FAILED, told apart
    from the job's own failures (preflight's message: where, and the fix)."""
    try:
        return preflight.connect(url, **kwargs)
    except PgveilError as e:
        raise JobFailed("DB_CONNECTION_FAILED", str(e)) from None


@dataclass
class _Job:
    spec: JobSpec
    operation: Operation
    secrets: list[str]
    delivery: Delivery | None
    process: subprocess.Popen[str] | None = None


class Runner:
    def __init__(self, store: Store, settings: ApiSettings) -> None:
        self._store, self._settings = store, settings
        self._lock = threading.Lock()
        self._queued: dict[str, deque[_Job]] = {}
        self._running: dict[str, _Job] = {}
        self._cancelled: set[str] = set()
        self._threads: list[threading.Thread] = []

    # -- submitting ---------------------------------------------------------------

    def submit(self, spec: JobSpec) -> Operation:
        """Record the operation (queued) and start it when its kind has a free slot."""
        record = redacted(spec.request)
        operation = self._store.create(
            spec.kind, spec.operation_id, record, spec.files, spec.webhook.url if spec.webhook else None
        )
        delivery = Delivery(self._store, self._settings, operation.id, spec.webhook) if spec.webhook else None
        job = _Job(spec, operation, secrets_of(spec.request), delivery)
        with self._lock:
            self._queued.setdefault(spec.kind, deque()).append(job)
        self._pump(spec.kind)
        return self._store.get(operation.id) or operation

    def _pump(self, kind: str) -> None:
        with self._lock:
            running = sum(1 for j in self._running.values() if j.spec.kind == kind)
            waiting = self._queued.get(kind, deque())
            while waiting and running < self._settings.limit(kind):
                job = waiting.popleft()
                self._running[job.operation.id] = job
                running += 1
                thread = threading.Thread(
                    target=self._run, args=(job,), name=f"job-{job.operation.id[:8]}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    # -- running ------------------------------------------------------------------

    def _run(self, job: _Job) -> None:
        internal = job.operation.id
        try:
            if not self._store.start(internal):
                return
            self._notify(job, IN_PROGRESS)
            process = subprocess.Popen(
                CHILD, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            with self._lock:
                job.process = process
                cancelled_meanwhile = internal in self._cancelled
            if cancelled_meanwhile:
                self._interrupt(process)
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(
                json.dumps({"function": job.spec.function, "params": job.spec.params or job.spec.request})
            )
            process.stdin.close()
            outcome: dict[str, Any] | None = None
            for line in process.stdout:
                message = json.loads(line)
                if "log" in message:
                    self._store.log(internal, scrub(message["log"], job.secrets))
                else:
                    outcome = message
            process.wait()
            self._finish(job, outcome, process.returncode)
        except Exception as e:  # noqa: BLE001 - the operation must end recorded, whatever went wrong here
            self._store.finish(
                internal, ERROR, error=f"internal error ({type(e).__name__})", error_code="INTERNAL_ERROR"
            )
            self._notify(job, ERROR)
        finally:
            with self._lock:
                self._running.pop(internal, None)
                self._cancelled.discard(internal)
            self._pump(job.spec.kind)
            if job.delivery:
                job.delivery.close()
                # The job's thread waits for its last webhook, so that a shutdown (which
                # waits for the jobs' threads) does not close the store under a delivery.
                job.delivery.join(self._settings.delivery_time)

    def _finish(self, job: _Job, outcome: dict[str, Any] | None, exitcode: int | None) -> None:
        internal = job.operation.id
        kind = outcome["outcome"] if outcome else None
        if internal in self._cancelled or kind == "cancelled":
            self._store.finish(internal, CANCELLED, error="cancelled", error_code="cancelled")
        elif outcome is not None and kind == "success":
            result = json.loads(scrub(json.dumps(outcome.get("result") or {}), job.secrets))
            self._store.finish(internal, SUCCESS, result=result)
        elif outcome is not None:
            error = scrub(str(outcome.get("error")), job.secrets)
            self._store.finish(internal, ERROR, error=error, error_code=outcome.get("error_code"))
        else:
            self._store.finish(
                internal, ERROR, error=f"the job's process ended without an outcome (exit code {exitcode})",
                error_code="INTERNAL_ERROR",
            )  # fmt: skip
        operation = self._store.get(internal)
        if operation is not None:
            self._notify(job, operation.status, operation)

    def _notify(self, job: _Job, status: str, operation: Operation | None = None) -> None:
        if job.delivery is None:
            return
        current = operation or self._store.get(job.operation.id) or job.operation
        job.delivery.send(status, payload(current, status, current.result, job.spec.result_keys))

    # -- cancelling -----------------------------------------------------------------

    def cancel(self, internal: str) -> Operation:
        """Stop an operation: a queued one is dropped, a running one gets SIGINT (and is
        killed after the grace period). A finished one cannot be."""
        with self._lock:
            for waiting in self._queued.values():
                for job in list(waiting):
                    if job.operation.id == internal:
                        waiting.remove(job)
                        self._store.finish(internal, CANCELLED, error="cancelled", error_code="cancelled")
                        self._notify(job, CANCELLED)
                        if job.delivery:
                            job.delivery.close()
                        found = self._store.get(internal)
                        assert found is not None
                        return found
            running = self._running.get(internal)
            if running is None:
                raise NotCancellable(internal)
            self._cancelled.add(internal)
            process = running.process
        if process is not None:
            self._interrupt(process)
        found = self._store.get(internal)
        assert found is not None
        return found

    def _interrupt(self, process: subprocess.Popen[str]) -> None:
        try:
            process.send_signal(signal.SIGINT)
        except ProcessLookupError:
            return

        def kill_if_alive() -> None:
            try:
                process.wait(self._settings.cancel_grace)
            except subprocess.TimeoutExpired:
                process.kill()

        threading.Thread(target=kill_if_alive, daemon=True).start()

    def is_active(self, internal: str) -> bool:
        with self._lock:
            return internal in self._running or any(
                j.operation.id == internal for q in self._queued.values() for j in q
            )

    def shutdown(self) -> None:
        """Service stopping: queued jobs are dropped, running ones interrupted; the store
        marks them failed (here, or on the next start if this is cut short)."""
        with self._lock:
            queued = [j for q in self._queued.values() for j in q]
            self._queued.clear()
            running = list(self._running.values())
        for job in queued:
            self._store.finish(job.operation.id, ERROR, error="the API service stopped", error_code="service_stopped")
        for job in running:
            with self._lock:
                self._cancelled.add(job.operation.id)
            if job.process is not None:
                self._interrupt(job.process)
        for thread in list(self._threads):
            thread.join(self._settings.cancel_grace + self._settings.delivery_time)


__all__ = [
    "CANCELLED",
    "ERROR",
    "IN_PROGRESS",
    "QUEUED",
    "SUCCESS",
    "JobFailed",
    "connect",
    "JobSpec",
    "Log",
    "NotCancellable",
    "Runner",
]
