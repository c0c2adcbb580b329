"""Locate the SQL toolkit and the Alembic environment.

In a checkout they are the top-level ``sql/`` and ``migrations/``; an installed
wheel carries them under ``pgveil/_bundled/``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent

# Alembic's record of the applied toolkit revisions, apart from an
# application's own alembic_version.
VERSION_TABLE = "pgveil_version"


def _locate(name: str) -> Path:
    for candidate in (_PACKAGE / "_bundled" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"pgveil's {name}/ directory is missing from this installation")


def sql_dir() -> Path:
    return _locate("sql")


def migrations_dir() -> Path:
    return _locate("migrations")


def toolkit_versions_dir() -> Path:
    """Revisions that install the toolkit itself (what `pgveil install` applies)."""
    return migrations_dir() / "versions"


def demo_versions_dir() -> Path:
    """Revisions of the demo application (repository checkouts only)."""
    return migrations_dir() / "demo"


def read_sql(relative: str) -> str:
    return (sql_dir() / relative).read_text(encoding="utf-8")
