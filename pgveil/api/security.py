"""Who may call the API, where its files may go, and what of a request is never kept.

- Every operation needs ``Authorization: Bearer <token>`` (compared in constant
  time). The OpenAPI schema and its page are public: they hold no data.
- A path a request names is relative to the service's dumps directory and must
  stay inside it once resolved (no ``..``, no absolute path elsewhere, no symlink
  out).
- A request is recorded with every secret replaced (database passwords, webhook
  headers, which often carry an API key), and every secret it carried is scrubbed
  from logs and errors before they are stored.
"""

from __future__ import annotations

import hmac
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import HTTPException, Request, status

REDACTED = "***"
# Request fields whose values are secrets, wherever they occur in a request.
SECRET_FIELDS = frozenset({"user_password", "password", "webhook_extra_headers"})


class PathRefused(ValueError):
    """A path outside the dumps directory."""


def check_token(request: Request) -> None:
    """FastAPI dependency: the bearer token, unless the service runs --insecure-local."""
    expected: str | None = request.app.state.settings.token
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid bearer token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


def confine(root: Path, requested: str) -> Path:
    """The path ``requested`` names under ``root``; refused when it would leave it."""
    if not requested or "\0" in requested:
        raise PathRefused("an empty path")
    pure = PurePosixPath(requested)
    if ".." in pure.parts:
        raise PathRefused(f"{requested!r} contains '..'")
    base = root.resolve()
    candidate = Path(requested) if pure.is_absolute() else base / requested
    resolved = candidate.resolve()
    if resolved != base and not resolved.is_relative_to(base):
        raise PathRefused(f"{requested!r} is outside the dumps directory")
    return resolved


def redacted(value: Any) -> Any:
    """A copy of a request with its secrets replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if k in SECRET_FIELDS and v is not None else redacted(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def secrets_of(value: Any) -> list[str]:
    """Every secret string a request carries (to scrub from logs and errors)."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k in SECRET_FIELDS:
                found += [str(x) for x in (v.values() if isinstance(v, dict) else [v]) if x]
            else:
                found += secrets_of(v)
    elif isinstance(value, list):
        for v in value:
            found += secrets_of(v)
    return [s for s in found if len(s) >= 3]


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text
