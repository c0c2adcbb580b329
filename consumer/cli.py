"""`python -m consumer` and `pgveil consume`: a downstream service on sanitized.*."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated, NoReturn

import psycopg
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from consumer import boundary, output
from consumer.follow import Follower, first_line

out = Console()
err = Console(stderr=True)


def consume(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="DATABASE_URL",
            show_envvar=True,
            help="postgresql:// URL of a consumer role (the demo's: consumer).",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per changed row: position, table, op (upsert, delete, truncate), key, row.",
        ),
    ] = False,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.", min=0)] = None,
    resync: Annotated[
        bool,
        typer.Option(
            "--resync",
            help="Start with a full re-read: a truncate and every row of each copy, then the changes from now on.",
        ),
    ] = False,
) -> None:
    """Follow the sanitized copies through pgveil's change log: print each change (after
    proving this role cannot read the raw tables), resuming after the position this role
    acknowledged last, so that nothing is missed across reconnects and restarts."""
    if not database_url:
        _fail(
            "no database URL: pass --database-url or set DATABASE_URL to a consumer role "
            "(`pgveil demo --keep` prints the demo's)"
        )
    logging.basicConfig(
        level=logging.WARNING, handlers=[RichHandler(console=err, show_path=False)], format="%(message)s"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if duration is not None:
        timer = threading.Timer(duration, stop.set)
        timer.daemon = True
        timer.start()

    def report(b: boundary.Boundary) -> None:
        refused = ", ".join(b.refused) or "no public tables"
        err.print(
            f"boundary: connected as {b.role}; cannot read {refused} (permission denied); reading sanitized.* only",
            highlight=False,
            soft_wrap=True,
        )

    follower = Follower(
        lambda: psycopg.connect(database_url, autocommit=True, connect_timeout=5),
        output.printer(out, as_json),
        stop,
        on_boundary=report,
        resync=resync,
    )
    try:
        follower.run()
    except boundary.BoundaryError as exc:
        _fail(f"refusing to run: {exc}")
    except psycopg.Error as exc:
        # Not a lost connection (those are retried): e.g. a role that is not a
        # registered consumer. pgveil's messages carry no raw value.
        _fail(f"{first_line(exc)} (SQLSTATE {exc.sqlstate})")
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(consume)
    app(prog_name="python -m consumer")
