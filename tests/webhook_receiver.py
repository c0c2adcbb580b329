"""A real webhook receiver for the REST API's tests: an HTTP server on loopback, in a
thread, recording every POSTed body with its headers; tests wait on its condition
for the events they expect (no sleeps)."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Event = tuple[dict[str, Any], list[tuple[str, str]]]  # the body, the header names and values as sent


class Receiver:
    def __init__(self, failures: int = 0, tls: ssl.SSLContext | None = None) -> None:
        """``failures``: how many requests it answers 500 first; ``tls``: serve HTTPS."""
        self.events: list[Event] = []
        self.failures = failures
        self.calls = 0
        self.changed = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with outer.changed:
                    outer.calls += 1
                    if outer.calls <= outer.failures:
                        self.send_response(500)
                        self.end_headers()
                        return
                    outer.events.append((body, list(self.headers.items())))
                    outer.changed.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_port}/hook"

    def bodies(self, operation_id: str | None = None) -> list[dict[str, Any]]:
        return [b for b, _ in self.events if operation_id is None or b["operation_id"] == operation_id]

    def of(self, operation_id: str) -> list[Event]:
        return [(b, h) for b, h in self.events if b["operation_id"] == operation_id]

    def wait_for(self, count: int, operation_id: str | None = None, timeout: float = 120) -> list[dict[str, Any]]:
        """The first ``count`` bodies (of one operation), once they have come."""
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.bodies(operation_id)) >= count, timeout), self.events
            return self.bodies(operation_id)[:count]

    def final(self, operation_id: str, timeout: float = 90) -> list[dict[str, Any]]:
        """The operation's bodies once its final one (success or error) has come."""
        with self.changed:
            done = self.changed.wait_for(
                lambda: any(b["status"] != "in_progress" for b in self.bodies(operation_id)), timeout
            )
            assert done, self.events
            return self.bodies(operation_id)

    def started(self, operation_id: str, timeout: float = 60) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: bool(self.bodies(operation_id)), timeout), self.events

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()
