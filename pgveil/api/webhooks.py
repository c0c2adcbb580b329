"""Webhooks: an operation's status POSTed to the caller's URL, as pg_anon's API does.

Events of one operation are delivered in order (in_progress before success or
error) by one thread per operation; each is tried up to ``webhook_attempts``
times while the receiver fails (no answer, or 5xx), waiting ``webhook_backoff``
seconds, then twice that, and so on, and every attempt is recorded (``webhook_attempts`` of the store). Extra headers go
with every request and are kept in memory only: they often carry an API key.
"""

from __future__ import annotations

import datetime
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from pgveil.api.settings import ApiSettings
from pgveil.api.store import ERROR, IN_PROGRESS, SUCCESS, Operation, Store

# pg_anon's numeric status codes.
STATUS_IDS = {SUCCESS: 2, ERROR: 3, IN_PROGRESS: 4}


@dataclass(frozen=True)
class Webhook:
    url: str
    metadata: Any = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    verify_ssl: bool = True


def pg_anon_time(value: str | None) -> str | None:
    """A store's timestamp as pg_anon writes one: UTC, seconds, "+00:00"."""
    if value is None:
        return None
    moment = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)
    return moment.isoformat(timespec="seconds")


def payload(
    operation: Operation, status: str, result: dict[str, Any] | None = None, result_keys: tuple[str, ...] = ()
) -> dict[str, Any]:
    """pg_anon's webhook body: every key present (null when it has no value), the
    result's keys (``result_keys``: the kind's) only filled on success. A cancelled
    operation is reported as an error."""
    reported = status if status in STATUS_IDS else ERROR
    ended = reported != IN_PROGRESS
    body: dict[str, Any] = {
        "operation_id": operation.operation_id,
        "internal_operation_id": operation.id,
        "status_id": STATUS_IDS[reported],
        "status": reported,
        "webhook_metadata": operation.request.get("webhook_metadata"),
        "started": pg_anon_time(operation.started) if ended else None,
        "ended": pg_anon_time(operation.ended) if ended else None,
        "error": operation.error if reported == ERROR else None,
        "error_code": operation.error_code if reported == ERROR else None,
        "run_options": operation.request if ended else None,
    }
    for key in result_keys:
        body[key] = (result or {}).get(key) if reported == SUCCESS else None
    if reported == SUCCESS:
        body.update({k: v for k, v in (result or {}).items() if k not in body})
    return body


class Delivery:
    """One operation's webhook events, sent in order by a thread of their own."""

    def __init__(self, store: Store, settings: ApiSettings, internal: str, webhook: Webhook) -> None:
        self._store, self._settings, self._internal, self._webhook = store, settings, internal, webhook
        self._events: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"webhook-{internal[:8]}", daemon=True)
        self._thread.start()

    def send(self, event: str, body: dict[str, Any]) -> None:
        self._events.put((event, body))

    def close(self) -> None:
        """No more events: the thread ends once the queued ones are delivered."""
        self._events.put(None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        with httpx.Client(verify=self._webhook.verify_ssl, timeout=self._settings.webhook_timeout) as client:
            while (item := self._events.get()) is not None:
                self._deliver(client, *item)

    def _deliver(self, client: httpx.Client, event: str, body: dict[str, Any]) -> None:
        wait = self._settings.webhook_backoff
        for attempt in range(1, self._settings.webhook_attempts + 1):
            try:
                response = client.post(self._webhook.url, json=body, headers=self._webhook.extra_headers)
                # As pg_anon: a receiver's error (5xx) is retried; any other answer is its
                # verdict on the payload, which a retry would not change.
                failed = response.status_code >= 500
                self._store.webhook_attempt(
                    self._internal, event, attempt, response.status_code, "server error" if failed else None
                )
                if not failed:
                    return
            except (httpx.HTTPError, httpx.InvalidURL, UnicodeError, ValueError) as e:
                # No answer, or a URL no request can be made to (it was only checked for its scheme).
                self._store.webhook_attempt(self._internal, event, attempt, None, type(e).__name__)
            if attempt < self._settings.webhook_attempts:
                time.sleep(wait)
                wait *= 2
