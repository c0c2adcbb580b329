"""What every `pgveil` command shares: its consoles, one-line errors, and the target URL."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

import psycopg
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pgveil import config, sandbox
from pgveil.errors import PgveilError, server_message

out = Console()
err = Console(stderr=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="postgresql:// URL; default: $DATABASE_URL, else the sandbox."),
]

# A long job's bar: what, how far, how long, how much longer.
PROGRESS_COLUMNS = (
    TextColumn("{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeElapsedColumn(),
    TextColumn("ETA"),
    TimeRemainingColumn(),
)

# Exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130

P = ParamSpec("P")
R = TypeVar("R")


def target_url(explicit: str | None = None) -> str:
    """The command's database: --database-url, else DATABASE_URL, else the running sandbox.
    Resolved here, once; everything below gets the URL."""
    return config.database_url(explicit, fallback=sandbox.running_url)


def report_error(message: str) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except PgveilError as exc:
            report_error(str(exc))
        except psycopg.Error as exc:
            report_error(server_message(exc))
        except Exception as exc:
            message = _migration_failure(exc)
            if message is None:
                raise
            report_error(message)
        raise typer.Exit(1)

    return wrapper


def _migration_failure(exc: Exception) -> str | None:
    """Alembic's own errors, and database errors as SQLAlchemy wraps them in a
    migration. Checked through sys.modules: a command that never migrated never
    imported them, and every command is spared their import time (a second)."""
    alembic_util = sys.modules.get("alembic.util")
    if alembic_util is not None and isinstance(exc, alembic_util.CommandError):
        return str(exc)
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.DBAPIError):
        return server_message(exc.orig or exc)
    return None
