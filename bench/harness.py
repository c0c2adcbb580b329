"""What every benchmark needs: a database of its own with pgveil installed.

On $DATABASE_URL's server when set (its user must be able to create
databases), else on a sandbox cluster started for the run and removed after
(durable, that is with fsync on, when the benchmark measures commits).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from pgveil import migrate, sandbox


def report(label: str, value: float, unit: str, target: str, ok: bool) -> bool:
    """One result line: the figure, its target, and whether it was met."""
    print(f"{label:58} {value:8.2f}{unit}  target {target:8} {'ok' if ok else 'MISSED'}")
    return ok


def database_url(url: str, dbname: str) -> str:
    """The URL of another database of the same server (query parameters kept)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


@contextmanager
def bench_database(prefix: str, with_demo: bool = False, durable: bool = False) -> Iterator[str]:
    """Yield the URL of a fresh database with the toolkit (and the demo application,
    if asked) installed; drop it afterwards."""
    root = None
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        root = Path(tempfile.mkdtemp(prefix="pgveil-bench-"))
        server_url = sandbox.start(root, durable=durable).url
    dbname = f"{prefix}_{secrets.token_hex(3)}"
    try:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        try:
            url = database_url(server_url, dbname)
            migrate.upgrade(url, with_demo=with_demo)
            yield url
            if with_demo:  # the demo's roles are cluster-wide: its downgrade drops those it created
                migrate.downgrade(url, with_demo=True)
        finally:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
    finally:
        if root is not None:
            sandbox.stop(root)
            root.rmdir()
