"""`pgveil api`: the REST API service (FastAPI on uvicorn). See docs/api.md."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from pgveil.cli_common import err, reports_errors
from pgveil.errors import PgveilError


def register(app: typer.Typer) -> None:
    """Add `api` to the `pgveil` application."""
    app.command("api")(api_command)


def _loopback(host: str) -> bool:
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False


def token_from(token_file: Path | None) -> str | None:
    """The bearer token: --token-file, else $PGVEIL_API_TOKEN."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as e:
            raise PgveilError(f"--token-file {token_file}: {e.strerror}") from None
        if not token:
            raise PgveilError(f"--token-file {token_file} is empty")
        return token
    return os.environ.get("PGVEIL_API_TOKEN") or None


@reports_errors
def api_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="Dumps (data-dir/dumps, every request's paths confined there) and the operations' record (data-dir/state).",
        ),
    ] = Path("pgveil-api"),
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="A file holding the bearer token; default: $PGVEIL_API_TOKEN.")
    ] = None,
    insecure_local: Annotated[
        bool, typer.Option("--insecure-local", help="Run without a token: only on a loopback address.")
    ] = False,
) -> None:
    """Serve pgveil's jobs over HTTP: pg_anon's stateless API and pgveil's own; OpenAPI at /docs."""
    import uvicorn

    from pgveil.api.app import create_app
    from pgveil.api.settings import ApiSettings

    token = token_from(token_file)
    if token is None:
        if not insecure_local:
            raise PgveilError(
                "no token: set PGVEIL_API_TOKEN or give --token-file (or --insecure-local on a loopback address)"
            )
        if not _loopback(host):
            raise PgveilError(f"--insecure-local serves without a token: only on a loopback address, not {host}")
        err.print("[yellow]warning:[/yellow] serving without a token (--insecure-local)")
    settings = ApiSettings(data_dir=data_dir.resolve(), token=token)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
