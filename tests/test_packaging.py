"""A non-editable install carries the SQL and the migrations, and installs from anywhere."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(*argv, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_wheel_installs_the_toolkit_from_another_directory(tmp_path, bare):
    uv = [sys.executable, "-m", "uv"]
    run(*uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(REPO), cwd=REPO)
    wheel = next((tmp_path / "dist").glob("pgveil-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "pgveil/_bundled/sql/foundation.sql" in names
    assert "pgveil/_bundled/migrations/env.py" in names
    assert "pgveil/_bundled/migrations/versions/0001_foundation.py" in names

    venv = tmp_path / "venv"
    run(*uv, "venv", "--python", sys.executable, str(venv), cwd=tmp_path)
    run(*uv, "pip", "install", "--python", str(venv / "bin" / "python"), str(wheel), cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    installed = run(str(venv / "bin" / "pgveil"), "install", "--database-url", bare.url, cwd=elsewhere)
    assert "pgveil 0.1.0 installed" in installed.stdout
    assert bare.scalar("SELECT veil.version()") == "0.1.0"
    # The demo application is for checkouts only.
    assert bare.scalar("SELECT to_regclass('public.customer')") is None

    run(str(venv / "bin" / "pgveil"), "uninstall", "--database-url", bare.url, cwd=elsewhere)
    assert bare.scalar("SELECT to_regnamespace('veil')") is None
