"""The layering is a checked contract: `lint-imports` keeps it, and breaks on a forbidden import."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pgveil", "demo", "loader", "consumer")
# pgveil's presentation layer: the CLI, the only modules that may import typer and
# rich, and the REST API (the package api), which has a contract of its own.
CLI_MODULES = {
    "__main__",
    "cli",
    "cli_common",
    "cli_demo",
    "cli_scan",
    "cli_review",
    "cli_audit",
    "cli_dump",
    "cli_restore",
    "cli_export",
    "cli_sync",
    "cli_verify",
    "cli_verify_html",
    "cli_change_log",
    "cli_report",
    "cli_api",
    "api",
}


def lint_imports(cwd: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """Run `lint-imports` on the project in ``cwd`` (its pyproject.toml, its packages)."""
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    for contract in contracts:
        command += ["--contract", contract]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def test_the_repository_keeps_every_contract() -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Contracts: {len(contracts())} kept, 0 broken." in done.stdout


def test_every_module_below_the_cli_is_forbidden_typer_and_rich() -> None:
    """A new pgveil module is a service or core module unless it is declared part of the CLI."""
    modules = {path.stem for path in (REPO / "pgveil").glob("*.py")} - {"__init__"}
    modules |= {path.parent.name for path in (REPO / "pgveil").glob("*/__init__.py")}
    expected = {f"pgveil.{name}" for name in modules - CLI_MODULES}
    assert set(contracts()["services-without-cli"]["source_modules"]) == expected


# One forbidden import per contract: the file it goes into, the line, the contract it breaks.
VIOLATIONS = {
    "services import the demo application": (
        "pgveil/services/install.py",
        "from demo import roles",
        "toolkit-without-demo",
    ),
    "core imports the loader": ("pgveil/migrate.py", "import loader.fakes", "toolkit-without-demo"),
    "a service renders with rich": ("pgveil/services/keys.py", "import rich.console", "services-without-cli"),
    "core imports typer": ("pgveil/preflight.py", "import typer", "services-without-cli"),
    "a service uses the CLI's console": (
        "pgveil/services/masking.py",
        "from pgveil.cli_common import out",
        "services-without-cli",
    ),
    "URL resolution finds the sandbox": ("pgveil/config.py", "from pgveil import sandbox", "sandbox-at-entry-points"),
    "a service starts the sandbox": (
        "pgveil/services/streaming.py",
        "from pgveil import sandbox",
        "sandbox-at-entry-points",
    ),
    "core imports a service": ("pgveil/errors.py", "from pgveil.services import keys", "toolkit-layers"),
    "a module in no layer": ("pgveil/unplaced.py", "from pgveil.services import keys", "toolkit-layers"),
    "the API renders with rich": ("pgveil/api/store.py", "import rich.console", "api-without-cli"),
    "a service answers HTTP": ("pgveil/services/audit.py", "import fastapi", "services-without-http"),
    "the loader imports the demo flow": ("loader/runner.py", "from demo import flow", "programs-apart"),
    "the consumer imports the loader": ("consumer/output.py", "from loader import fakes", "programs-apart"),
    "the demo imports the CLI": ("demo/roles.py", "from pgveil import cli_common", "demo-without-cli"),
}


@pytest.mark.parametrize("violation", VIOLATIONS, ids=list(VIOLATIONS))
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, violation: str) -> None:
    relative, line, contract = VIOLATIONS[violation]
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    assert lint_imports(tmp_path, contract).returncode == 0, "the copy keeps the contract before the change"

    target = tmp_path / relative
    before = target.read_text() if target.exists() else '"""A new module."""\n'
    target.write_text(before + f"\n{line}  # the forbidden import\n")
    done = lint_imports(tmp_path, contract)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Contracts: 0 kept, 1 broken." in done.stdout, done.stdout
    assert "BROKEN" in done.stdout, done.stdout
    assert relative.removesuffix(".py").replace("/", ".") in done.stdout, done.stdout
