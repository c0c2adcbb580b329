"""What an endpoint reaches through its request: the service's settings, store and
runner, and the dumps directory its paths are confined to."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request

from pgveil.api.models import ApiError
from pgveil.api.runner import Runner
from pgveil.api.security import PathRefused, confine
from pgveil.api.settings import ApiSettings
from pgveil.api.store import Store


def store_of(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def runner_of(request: Request) -> Runner:
    return request.app.state.runner  # type: ignore[no-any-return]


def settings_of(request: Request) -> ApiSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def dumps_path(request: Request, requested: str) -> Path:
    """A path a request names, under the dumps directory (a leading '/' is its root, as
    in pg_anon); pg_anon's 400 INVALID_PATH when it would leave it or is the root."""
    root = settings_of(request).dumps_dir
    try:
        path = confine(root, requested.lstrip("/"))
    except PathRefused:
        raise ApiError("INVALID_PATH", f"Invalid path: {requested}") from None
    if path == root.resolve():
        raise ApiError("INVALID_PATH", f"Invalid path: {requested}")
    return path
