"""Database URLs: which one to use, checked, and as SQLAlchemy wants it.

The target is the explicit URL (``--database-url``, ``-x database_url=…``),
else ``DATABASE_URL``, else whatever the entry point's ``fallback`` gives.
Entry points resolve it once and pass the URL down; the fallback (the running
sandbox, for the demo and a checkout's ``alembic upgrade head``) is theirs to
choose, so nothing here knows of the sandbox.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import urlsplit

from pgveil.errors import PgveilError

ENVIRONMENT_VARIABLE = "DATABASE_URL"


def validate_url(url: str) -> str:
    """``url`` itself when it is a postgresql:// URL; PgveilError naming the fix otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise PgveilError(
            f"database URL must start with postgresql:// (got {parts.scheme or url!r}) — "
            "e.g. postgresql://user:password@host:5432/dbname"
        )
    return url


def database_url(explicit: str | None = None, *, fallback: Callable[[], str] | None = None) -> str:
    """The target database URL: ``explicit``, else ``$DATABASE_URL``, else ``fallback()``.

    ``fallback`` raises PgveilError with the fix when it has no URL either;
    without one, a missing URL is that error here.
    """
    url = explicit or os.environ.get(ENVIRONMENT_VARIABLE)
    if url:
        return validate_url(url)
    if fallback is not None:
        return validate_url(fallback())
    raise PgveilError(
        f"{ENVIRONMENT_VARIABLE} is not set — set {ENVIRONMENT_VARIABLE}=postgresql://user:password@host:5432/dbname"
    )


def sqlalchemy_url(url: str) -> str:
    """The same URL for SQLAlchemy's psycopg 3 dialect."""
    _scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg://{rest}"
