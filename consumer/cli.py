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
from consumer.follow import Follower

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
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per changed row.")] = False,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.", min=0)] = None,
    margin: Annotated[
        float,
        typer.Option(
            help="After a reconnect, re-read rows changed up to this many seconds before the newest seen.", min=0
        ),
    ] = 5.0,
) -> None:
    """Follow the sanitized copies: print each change as it arrives (after proving this
    role cannot read the raw tables), and catch up after a dropped connection."""
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
        margin=margin,
    )
    try:
        follower.run()
    except boundary.BoundaryError as exc:
        _fail(f"refusing to run: {exc}")
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
