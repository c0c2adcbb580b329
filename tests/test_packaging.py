"""A non-editable install carries the SQL and the migrations, and installs from anywhere.

The wheel is the toolkit only: the demo application (its revisions, its SQL,
the loader, the consumer, the demo flow and their CLI wiring) stays in the checkout.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_COMMANDS = ("demo", "load", "consume")
TOOLKIT_COMMANDS = (
    "preflight",
    "install",
    "uninstall",
    "anonymize",
    "scan",
    "view-fields",
    "view-data",
    "audit",
    "dump",
    "restore",
    "sync",
    "verify",
    "report",
    "change-log",
    "api",
    "backfill",
    "rotate-key",
    "status",
    "refresh",
    "sandbox",
)


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def listed_commands(help_text: str) -> set[str]:
    """The command names in the Commands panel of `pgveil --help`."""
    panel = help_text.split("Commands", 1)[1]
    return {
        line.strip("│ ").split()[0]
        for line in panel.splitlines()
        if line.startswith("│ ") and not line.startswith("│  ") and line.strip("│ ")
    }


@pytest.mark.slow
def test_wheel_installs_the_toolkit_from_another_directory(tmp_path: Path, bare) -> None:
    uv = [sys.executable, "-m", "uv"]
    run(*uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(REPO), cwd=REPO)
    wheel = next((tmp_path / "dist").glob("pgveil-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("pgveil/_bundled/sql/") and n.endswith(".sql") for n in names)
    assert "pgveil/_bundled/migrations/env.py" in names
    assert "pgveil/_bundled/migrations/versions/0001_foundation.py" in names
    assert "pgveil/services/install.py" in names
    # The demo application is for checkouts only.
    demo = [
        n
        for n in names
        if n.startswith(
            (
                "pgveil/_bundled/migrations/demo/",
                "pgveil/_bundled/sql/demo/",
                "loader/",
                "consumer/",
                "demo/",
                "pgveil/cli_demo",
            )
        )
    ]
    assert demo == [], demo

    venv = tmp_path / "venv"
    run(*uv, "venv", "--python", sys.executable, str(venv), cwd=tmp_path)
    run(*uv, "pip", "install", "--python", str(venv / "bin" / "python"), str(wheel), cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pgveil = str(venv / "bin" / "pgveil")
    helped = run(pgveil, "--help", cwd=elsewhere)
    assert listed_commands(helped.stdout) == set(TOOLKIT_COMMANDS), helped.stdout

    installed = run(pgveil, "install", "--database-url", bare.url, cwd=elsewhere)
    assert "pgveil 0.1.0 installed" in installed.stdout
    assert bare.scalar("SELECT veil.version()") == "0.1.0"
    assert bare.scalar("SELECT to_regclass('public.customer')") is None

    run(pgveil, "uninstall", "--database-url", bare.url, cwd=elsewhere)
    assert bare.scalar("SELECT to_regnamespace('veil')") is None
    assert bare.scalar("SELECT to_regclass('public.pgveil_version')") is None


def test_a_checkout_lists_the_demo_commands_too() -> None:
    helped = run(sys.executable, "-m", "pgveil", "--help", cwd=REPO)
    assert listed_commands(helped.stdout) == set(TOOLKIT_COMMANDS + DEMO_COMMANDS), helped.stdout


def test_without_the_demo_application_the_cli_has_the_toolkit_commands_only() -> None:
    """What a wheel sees, without building one: the demo application (or its wiring) cannot be imported."""
    for missing in ("demo", "loader", "consumer", "pgveil.cli_demo"):
        hide = f"import sys; sys.modules[{missing!r}] = None; sys.argv = ['pgveil', '--help']; "
        helped = run(sys.executable, "-c", hide + "from pgveil.cli import app; app(prog_name='pgveil')", cwd=REPO)
        assert listed_commands(helped.stdout) == set(TOOLKIT_COMMANDS), helped.stdout
