"""A job of the API, in its own process: ``python -m pgveil.api.child``.

Reads ``{"function": "module:function", "params": {...}}`` as JSON from stdin
(secrets reach it through the pipe, never a file or the command line), runs the
function, and writes JSON lines to stdout: ``{"log": line}`` while it runs, then
one ``{"outcome": "success"|"error"|"cancelled", ...}``. SIGINT is Ctrl-C: the
services clean up and the outcome is "cancelled".
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

import psycopg

from pgveil.errors import PgveilError, server_message

# The protocol's stream: the process's stdout as it started. Everything else that
# writes to file descriptor 1 (a client program a service runs) goes to stderr.
_protocol = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)


def _send(message: dict[str, Any]) -> None:
    _protocol.write(json.dumps(message) + "\n")
    _protocol.flush()


def main() -> None:
    job = json.loads(sys.stdin.read())
    module, _, name = job["function"].partition(":")
    try:
        function = getattr(importlib.import_module(module), name)
        result = function(job["params"], lambda line: _send({"log": str(line)}))
        _send({"outcome": "success", "result": result})
    except KeyboardInterrupt:
        _send({"outcome": "cancelled"})
    except PgveilError as e:
        _send({"outcome": "error", "error": str(e), "error_code": getattr(e, "error_code", "OPERATION_FAILED")})
    except psycopg.Error as e:
        _send({"outcome": "error", "error": server_message(e), "error_code": "DB_QUERY_FAILED"})
    except Exception as e:  # noqa: BLE001 - any failure is the operation's error; its text may quote data
        _send({"outcome": "error", "error": f"internal error ({type(e).__name__})", "error_code": "INTERNAL_ERROR"})


if __name__ == "__main__":
    main()
