"""The demo application's commands on the `pgveil` command line: `demo`, `load`, `consume`.

The only toolkit module that imports the demo application (``demo``, ``loader``,
``consumer``); :mod:`pgveil.cli` attaches it when those are importable, as in a
checkout. A wheel ships neither them nor this module.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from consumer.cli import consume
from demo import flow
from loader.cli import load
from pgveil import sandbox
from pgveil.cli_common import err, out, reports_errors, target_url


@reports_errors
def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Leave the sandbox running afterwards.")] = False,
) -> None:
    """Install pgveil and the demo application, run live traffic, and show what each role sees."""
    started_here = False
    try:
        url = None
        if not _database_url_given():
            started_here = sandbox.status() is None
            url = sandbox.start().url
            err.print(f"sandbox: {url}", highlight=False)
        url = target_url(url)
        urls = flow.run(url, out)
        if keep or not started_here:
            out.print("log in as the demo's roles (passwords are new each run):")
            for role, role_url in urls.items():
                out.print(f"  {role}: {role_url}", highlight=False, soft_wrap=True)
    finally:
        if started_here and not keep:
            sandbox.stop()
            err.print("sandbox stopped (use --keep to explore it)")


def _database_url_given() -> bool:
    return bool(os.environ.get("DATABASE_URL"))


def register(app: typer.Typer) -> None:
    """Add the demo application's commands to ``app``."""
    app.command("demo")(demo)
    # The demo application's two programs, also runnable as python -m loader / consumer.
    app.command("load")(load)
    app.command("consume")(consume)
