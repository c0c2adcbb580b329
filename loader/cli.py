"""`python -m loader` and `pgveil load`: application traffic against the demo schema."""

from __future__ import annotations

import json
import random
import signal
import threading
from collections.abc import Callable
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from loader import runner, seed
from loader.fakes import Fakes, LocaleError
from loader.mix import DEFAULT_MIX, KINDS, MixError, parse_mix

out = Console()
err = Console(stderr=True)


def _positive(name: str, unit: str) -> Callable[[float | None], float | None]:
    def check(value: float | None) -> float | None:
        if value is not None and not value > 0:
            raise typer.BadParameter(f"must be > 0 ({unit}), got {value}", param_hint=name)
        return value

    return check


def _mix(value: str) -> dict[str, float]:
    try:
        return parse_mix(value)
    except MixError as exc:
        raise typer.BadParameter(str(exc), param_hint="--mix") from None


def load(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="DATABASE_URL",
            show_envvar=True,
            help="postgresql:// URL of the application's role (the demo's: app), never a superuser.",
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Target writes per second (rows inserted, updated or deleted); default: as fast as possible.",
            callback=_positive("--rate", "writes per second"),
        ),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds.", callback=_positive("--duration", "seconds"))
    ] = None,
    count: Annotated[
        int | None, typer.Option(help="Stop after this many writes.", callback=_positive("--count", "writes"))
    ] = None,
    connections: Annotated[int, typer.Option(help="Concurrent connections (one worker each).", min=1, max=64)] = 2,
    batch: Annotated[int, typer.Option(help="Writes per transaction.", min=1, max=10_000)] = 20,
    mix: Annotated[
        str, typer.Option(help="Relative weights of the kinds of events: " + ", ".join(KINDS) + ".")
    ] = DEFAULT_MIX,
    seed_rows: Annotated[
        int,
        typer.Option(
            "--seed-rows", help="First insert this many customers (each with an address and a payment) by COPY.", min=0
        ),
    ] = 0,
    seed_value: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same traffic.")] = 0,
    locale: Annotated[str, typer.Option(help="Faker locale of names and addresses.")] = "en_US",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No live view.")] = False,
) -> None:
    """Play the demo application: inserts, updates and deletes at a chosen rate, until
    --duration or --count is reached or Ctrl-C (batches in flight finish or roll back)."""
    shares = _mix(mix)
    if not database_url:
        raise _fail(
            "no database URL: pass --database-url or set DATABASE_URL to the application's "
            "role (`pgveil demo --keep` prints the demo's)"
        )
    try:
        fakes = Fakes(seed_value, locale)
    except LocaleError as exc:
        raise typer.BadParameter(str(exc), param_hint="--locale") from None
    settings = runner.Settings(database_url, shares, rate, duration, count, connections, batch, seed_value)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # docker stop: end like Ctrl-C
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
            role = runner.check_role(conn)
            if seed_rows:
                err.print(f"seeding {seed_rows} customers as {role} …")
                seeded = seed.seed(conn, seed_rows, fakes, random.Random(seed_value), stop)
                err.print(f"seeded {seeded} customers")
    except (runner.LoaderError, psycopg.Error) as exc:
        raise _fail(str(exc).strip().splitlines()[0]) from None
    except KeyboardInterrupt:
        raise _fail("interrupted while seeding (the chunk in flight was rolled back)") from None
    stats = _run(settings, fakes, stop, live=not quiet and err.is_terminal)
    summary = stats.summary()
    summary["interrupted"] = stop.is_set() and stats.fatal is None
    if as_json:
        print(json.dumps(summary))
    else:
        out.print(summary_table(summary, rate))
    if stats.fatal:
        raise _fail(stats.fatal)


def _run(settings: runner.Settings, fakes: Fakes, stop: threading.Event, live: bool) -> runner.Stats:
    if not live:
        return runner.run(settings, fakes, stop)
    with Live(console=err, refresh_per_second=4, transient=True) as view:
        return runner.run(
            settings, fakes, stop, on_tick=lambda stats: view.update(summary_table(stats.summary(), settings.rate))
        )


def summary_table(summary: dict[str, Any], rate: float | None) -> Table:
    title = "loader: interrupted" if summary.get("interrupted") else "loader"
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    target = f" (target {rate:g})" if rate else ""
    table.add_row("elapsed", f"{summary['elapsed_s']:.1f} s")
    table.add_row("writes committed", f"{summary['writes']}")
    table.add_row("writes/s", f"{summary['writes_per_s']:.0f}{target}")
    table.add_row("transactions", f"{summary['transactions']}")
    latency = summary["latency_ms"]
    if latency["p50"] is not None:
        table.add_row(
            "latency p50 / p95 / p99", f"{latency['p50']:.1f} / {latency['p95']:.1f} / {latency['p99']:.1f} ms"
        )
    for kind, events in sorted(summary["events"].items()):
        table.add_row(f"  {kind}", f"{events} events, {summary['writes_by_kind'].get(kind, 0)} writes")
    failed = sum(summary["failed"].values())
    if failed:
        detail = ", ".join(f"{code}: {n}" for code, n in summary["failed"].items())
        table.add_row("failed (rolled back, not rerun)", f"{failed} ({detail})")
    if summary["reconnects"]:
        table.add_row("reconnects", str(summary["reconnects"]))
        table.add_row("rerun (known not committed)", str(summary["retried"]))
        table.add_row("committed (confirmed after reconnect)", str(summary["confirmed_after_reconnect"]))
    if summary["lost"] or summary["reconnects"]:
        table.add_row("lost (fate unknown, not rerun)", f"{summary['lost']} ({summary['lost_writes']} writes)")
    return table


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(load)
    app(prog_name="python -m loader")
