"""Where pgveil connects: ``--database-url``, else ``DATABASE_URL``, else the sandbox."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from pgveil import sandbox
from pgveil.errors import PgveilError


def validate_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise PgveilError(
            f"database URL must start with postgresql:// (got {parts.scheme or url!r}) — "
            "e.g. postgresql://user:password@host:5432/dbname"
        )
    return url


def database_url(explicit: str | None = None) -> str:
    """The target database URL; raises PgveilError with the fix when there is none."""
    url = explicit or os.environ.get("DATABASE_URL")
    if url:
        return validate_url(url)
    running = sandbox.status()
    if running is not None:
        return running.url
    raise PgveilError(
        "DATABASE_URL is not set and no sandbox is running — set DATABASE_URL=postgresql://… "
        "or start one with `pgveil sandbox start`"
    )


def sqlalchemy_url(url: str) -> str:
    """The same URL for SQLAlchemy's psycopg 3 dialect."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg://{rest}"
